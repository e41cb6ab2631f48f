"""Figures for BENCHMARKS.md (Service: the Python drop-in), three runs each.

    python/bench.py [--runs 3] [--original-python PATH]

Run with the venv python/ci.sh made (the extension built with
`maturin develop --release` for figures). Needs target/release/hecate (the
simulator and the local backend's launcher). Measures:

1. per-call overhead over the Rust handle on the no-op backend: the same
   tool call through `terminal_hecate_tool` from Python and through the
   Rust handle on the runtime's own thread (`_native._bench_handle`), one
   task, calls in sequence;
2. throughput of 16 Python threads (one task each) vs 16 concurrent loops
   on the Rust handle, local backend, `true`;
3. against `hecate sim` (instances ready at the first poll): 16 cold tasks
   at once (16 threads, each task's first call), and warm calls (`true` on
   a ready task); with --original-python, the original tool
   (/work/shared/reference or $ORIGINAL_TOOL) run by that interpreter (one
   with `morphcloud` installed) against the same simulator.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import threading
import time

import terminal_hecate
from terminal_hecate import _native, terminal_hecate_tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HECATE = os.environ.get("HECATE_BENCH_BIN") or os.path.join(ROOT, "target", "release", "hecate")
ORIGINAL = os.environ.get(
    "ORIGINAL_TOOL",
    os.path.join(os.path.dirname(ROOT), "..", "shared", "reference", "terminal_hecate_tool.py"),
)


def mmm(values, fmt="{:.1f}"):
    vals = sorted(values)
    return "min {} / median {} / max {}".format(
        fmt.format(vals[0]), fmt.format(statistics.median(vals)), fmt.format(vals[-1])
    )


def reset_env(**env):
    terminal_hecate.shutdown()
    for key in list(os.environ):
        if key.startswith("HECATE_") or key.startswith("MORPH_"):
            del os.environ[key]
    os.environ.update(env)


def python_calls(calls, task):
    start = time.perf_counter()
    for _ in range(calls):
        r = terminal_hecate_tool("true", task_id=task)
        if '"error":null' not in r:
            raise RuntimeError(r)
    return time.perf_counter() - start


def python_threads(threads, calls, prefix):
    barrier = threading.Barrier(threads + 1)
    failures = []

    def worker(n):
        barrier.wait()
        for _ in range(calls):
            r = terminal_hecate_tool("true", task_id=f"{prefix}{n}")
            if '"error":null' not in r:
                failures.append(r)

    ts = [threading.Thread(target=worker, args=(n,)) for n in range(threads)]
    for t in ts:
        t.start()
    barrier.wait()
    start = time.perf_counter()
    for t in ts:
        t.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(failures[0])
    return elapsed


def overhead(runs, calls=20000):
    print(f"\n## per-call overhead, no-op backend ({calls} calls in sequence, one task)")
    # The provider is the no-op one; the configuration must still be valid
    # (the drop-in defaults to the morph backend, which needs a key).
    reset_env(HECATE_BACKEND="local", HECATE_LAUNCHER=HECATE)
    _native._start_noop_runtime()
    python_calls(2000, "warm-py")
    _native._bench_handle("true", 2000, 1, "warm-rust-")
    added, py_us, rust_us = [], [], []
    for run in range(runs):
        rust = _native._bench_handle("true", calls, 1, f"rust-{run}-") / calls * 1e6
        py = python_calls(calls, f"py-{run}") / calls * 1e6
        rust_us.append(rust)
        py_us.append(py)
        added.append(py - rust)
        print(f"run {run + 1}: rust handle {rust:.1f} us/call, drop-in {py:.1f} us/call, added {py - rust:.1f} us")
    print("rust handle us/call:", mmm(rust_us))
    print("drop-in us/call:    ", mmm(py_us))
    print("added us/call:      ", mmm(added))
    terminal_hecate.shutdown()


def throughput(runs, calls=200, threads=16):
    print(f"\n## 16 threads vs the Rust handle, local backend ({threads} tasks x {calls} calls of `true`)")
    reset_env(HECATE_BACKEND="local", HECATE_LAUNCHER=HECATE)
    python_threads(threads, 10, "warm-")
    _native._bench_handle("true", 10, threads, "warm-")
    ratios, py_rate, rust_rate = [], [], []
    total = calls * threads
    for run in range(runs):
        rust = total / _native._bench_handle("true", calls, threads, "warm-")
        py = total / python_threads(threads, calls, "warm-")
        rust_rate.append(rust)
        py_rate.append(py)
        ratios.append(py / rust)
        print(f"run {run + 1}: rust handle {rust:.0f} calls/s, 16 python threads {py:.0f} calls/s, ratio {py / rust:.2f}")
    print("rust handle calls/s:", mmm(rust_rate, "{:.0f}"))
    print("python calls/s:     ", mmm(py_rate, "{:.0f}"))
    print("ratio:              ", mmm(ratios, "{:.2f}"))
    terminal_hecate.shutdown()


def start_sim():
    proc = subprocess.Popen(
        [HECATE, "sim", "--port", "0", "--workers", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "HECATE_SIM_API_KEY": "sim-bench-key"},
    )
    values = dict(proc.stdout.readline().strip().split("=", 1) for _ in range(2))
    return proc, values["MORPH_BASE_URL"], values["MORPH_API_KEY"]


# The same measurement, run in a separate interpreter for either module
# (the drop-in or the original tool loaded from its file).
SIM_SCRIPT = r"""
import importlib.util, json, sys, threading, time
which, path, run, warm_calls = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
if which == "original":
    spec = importlib.util.spec_from_file_location("terminal_hecate_original", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
else:
    import terminal_hecate as mod
tool = mod.terminal_hecate_tool
results = [None] * 16
barrier = threading.Barrier(17)
def worker(n):
    barrier.wait()
    results[n] = json.loads(tool("echo ready", task_id=f"cold-{run}-{n}"))
ts = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
for t in ts: t.start()
barrier.wait()
start = time.perf_counter()
for t in ts: t.join()
cold = time.perf_counter() - start
assert all(r["output"] == "ready" for r in results), results
start = time.perf_counter()
for _ in range(warm_calls):
    r = json.loads(tool("true", task_id=f"cold-{run}-0"))
    assert r["exit_code"] == 0, r
warm = (time.perf_counter() - start) / warm_calls
for n in range(16):
    mod.cleanup_vm(f"cold-{run}-{n}")
print(json.dumps({"cold_s": cold, "warm_ms": warm * 1e3}))
"""


def on_sim(runs, python, which, warm_calls):
    proc, base, key = start_sim()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HECATE_", "MORPH_"))}
    env.update(MORPH_BASE_URL=base, MORPH_API_KEY=key, MORPH_CONFIG_PATH="/nonexistent")
    out = []
    try:
        for run in range(runs):
            res = subprocess.run(
                [python, "-c", SIM_SCRIPT, which, ORIGINAL, str(run), str(warm_calls)],
                env=env,
                capture_output=True,
                text=True,
                timeout=600,
            )
            lines = [l for l in res.stdout.splitlines() if l.startswith("{")]
            if res.returncode != 0 or not lines:
                raise RuntimeError(f"{which} run failed: {res.stdout[-2000:]} {res.stderr[-2000:]}")
            out.append(json.loads(lines[-1]))
            print(f"{which} run {run + 1}: 16 cold tasks {out[-1]['cold_s']:.2f} s, warm call {out[-1]['warm_ms']:.2f} ms")
    finally:
        proc.terminate()
        proc.wait()
    return out


def simulator(runs, original_python):
    print("\n## against hecate sim (ready at the first poll): 16 cold tasks at once, warm calls")
    mine = on_sim(runs, sys.executable, "dropin", 200)
    print("drop-in 16 cold tasks s:", mmm([r["cold_s"] for r in mine], "{:.2f}"))
    print("drop-in warm call ms:   ", mmm([r["warm_ms"] for r in mine], "{:.2f}"))
    if original_python:
        orig = on_sim(runs, original_python, "original", 50)
        print("original 16 cold tasks s:", mmm([r["cold_s"] for r in orig], "{:.2f}"))
        print("original warm call ms:   ", mmm([r["warm_ms"] for r in orig], "{:.2f}"))
        ratios = [m["warm_ms"] / o["warm_ms"] for m, o in zip(mine, orig)]
        print("warm call ratio drop-in/original:", mmm(ratios, "{:.3f}"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--original-python")
    ap.add_argument("--only", choices=["overhead", "throughput", "sim"])
    args = ap.parse_args()
    if args.only in (None, "overhead"):
        overhead(args.runs)
    if args.only in (None, "throughput"):
        throughput(args.runs)
    if args.only in (None, "sim"):
        simulator(args.runs, args.original_python)


if __name__ == "__main__":
    main()
