"""The drop-in against the original tool's contract: names, signatures,
result keys and types, the original's call patterns on the project's
MorphCloud simulator, threads, fork, interrupt, cleanup and exit."""

import inspect
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import pytest

import terminal_hecate
from terminal_hecate import (
    TERMINAL_HECATE_DESCRIPTION,
    check_hecate_requirements,
    cleanup_vm,
    terminal_hecate_tool,
)

from conftest import env_for_child, hecate_bin, wait_until


def run(command, **kwargs):
    return json.loads(terminal_hecate_tool(command, **kwargs))


def assert_original_shape(result):
    """The keys and types the original's results have."""
    assert isinstance(result["output"], str)
    assert type(result["exit_code"]) is int
    assert result["error"] is None or isinstance(result["error"], str)
    if result["error"] is not None:
        assert result["exit_code"] == -1
        assert result["status"] in ("error", "disabled")


def test_names_and_signatures_are_the_originals():
    sig = inspect.signature(terminal_hecate_tool)
    assert [(p.name, p.default) for p in sig.parameters.values()] == [
        ("command", inspect.Parameter.empty),
        ("background", False),
        ("timeout", None),
        ("task_id", None),
    ]
    assert list(inspect.signature(cleanup_vm).parameters) == ["task_id"]
    assert list(inspect.signature(check_hecate_requirements).parameters) == []
    assert isinstance(TERMINAL_HECATE_DESCRIPTION, str)
    assert "background" in TERMINAL_HECATE_DESCRIPTION


def test_a_missing_key_is_the_originals_disabled_result(clean_env):
    raw = terminal_hecate_tool("echo hi")
    assert isinstance(raw, str)
    result = json.loads(raw)
    assert_original_shape(result)
    assert result["output"] == ""
    assert result["exit_code"] == -1
    assert result["status"] == "disabled"
    assert "MORPH_API_KEY environment variable not set" in result["error"]


def test_check_hecate_requirements(clean_env, capsys, sim):
    assert check_hecate_requirements() is False
    assert "Missing required environment variables: MORPH_API_KEY" in capsys.readouterr().out
    clean_env.setenv("MORPH_API_KEY", sim.api_key)
    assert check_hecate_requirements() is True
    clean_env.setenv("HECATE_VM_TTL_SECONDS", "soon")
    assert check_hecate_requirements() is False
    assert "HECATE_VM_TTL_SECONDS" in capsys.readouterr().out


def test_the_originals_call_patterns_on_the_simulator(on_sim):
    # Without HECATE_BACKEND the drop-in runs on MorphCloud (here: the simulator).
    result = run("echo hello; ls -la")
    assert_original_shape(result)
    assert result["exit_code"] == 0 and result["error"] is None
    assert result["output"].startswith("hello")
    assert on_sim.instances_of("default"), "the command ran on the simulator"

    result = run("echo out; echo err >&2; exit 3", task_id="t-calls")
    assert_original_shape(result)
    assert (result["exit_code"], result["error"]) == (3, None)
    assert "out" in result["output"] and "err" in result["output"]

    # Files persist between the calls of a task, not across tasks.
    assert run("echo kept > f.txt", task_id="t-calls")["exit_code"] == 0
    assert run("cat f.txt", task_id="t-calls")["output"] == "kept"
    assert run("cat f.txt", task_id="t-other")["exit_code"] != 0

    result = run("sleep 30", timeout=1, task_id="t-calls")
    assert_original_shape(result)
    assert result["exit_code"] == 124 and result["error"] is None

    result = run("sleep 0.2; echo bg-done", background=True, task_id="t-calls")
    assert_original_shape(result)
    assert (result["exit_code"], result["error"]) == (0, None)

    # A bad argument is a result, never an exception.
    for bad in (dict(timeout=-5), dict(timeout="soon"), dict(task_id=7)):
        result = run("echo hi", **bad)
        assert_original_shape(result)
        assert result["error"] is not None and result["status"] == "error"
    result = json.loads(terminal_hecate_tool(42))
    assert result["error"] and "command must be a string" in result["error"]


def test_environment_variables_of_the_original_are_honoured(on_sim):
    on_sim_env = on_sim
    os.environ["HECATE_DEFAULT_SNAPSHOT_ID"] = "snapshot_pytest"
    os.environ["HECATE_VM_TTL_SECONDS"] = "600"
    try:
        assert run("true", task_id="t-env")["exit_code"] == 0
        [inst] = on_sim_env.instances_of("t-env")
        assert inst["refs"]["snapshot_id"] == "snapshot_pytest"
    finally:
        del os.environ["HECATE_DEFAULT_SNAPSHOT_ID"]
        del os.environ["HECATE_VM_TTL_SECONDS"]


def test_sixteen_threads_each_on_its_own_task(on_sim):
    results = {}
    errors = []

    def worker(n):
        try:
            task = f"fan-{n}"
            out = [run(f"echo {n} >> log; cat log | wc -l", task_id=task) for _ in range(5)]
            results[n] = out
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for n in range(16):
        assert [r["output"] for r in results[n]] == ["1", "2", "3", "4", "5"], n
        assert all(r["exit_code"] == 0 and r["error"] is None for r in results[n])
        assert len(on_sim.instances_of(f"fan-{n}")) == 1


def test_cleanup_vm_stops_the_tasks_instance(on_sim, capsys):
    assert run("echo x > mine", task_id="t-clean")["exit_code"] == 0
    assert len(on_sim.instances_of("t-clean")) == 1
    cleanup_vm("t-clean")
    assert "Manually terminated VM for task: t-clean" in capsys.readouterr().out
    assert on_sim.instances_of("t-clean") == []
    # The next call gets a fresh instance: the file is gone.
    assert run("cat mine", task_id="t-clean")["exit_code"] != 0
    cleanup_vm("never-used")
    assert capsys.readouterr().out == ""


def test_a_forked_child_gets_its_own_runtime_and_leaves_the_parents_alone(on_sim):
    assert run("echo parent > p.txt", task_id="t-parent")["exit_code"] == 0
    [parent_inst] = on_sim.instances_of("t-parent")
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        code = 1
        try:
            os.close(read_fd)
            child = run("echo child", task_id="t-child")
            # The child's shutdown stops the child's instances only.
            clean = terminal_hecate.shutdown()
            os.write(write_fd, json.dumps({"result": child, "clean": clean}).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(write_fd)
    with os.fdopen(read_fd) as pipe:
        report = json.loads(pipe.read() or "{}")
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert report["result"]["output"] == "child" and report["clean"] is True
    # The child's runtime was not the parent's, and its instance is stopped.
    assert on_sim.instances_of("t-child") == []
    # The parent's instance and runtime are untouched.
    [still] = on_sim.instances_of("t-parent")
    assert still["id"] == parent_inst["id"]
    assert run("cat p.txt", task_id="t-parent")["output"] == "parent"


CHILD_INTERRUPT = textwrap.dedent(
    """
    import json, sys, time
    from terminal_hecate import terminal_hecate_tool
    print(json.loads(terminal_hecate_tool("true", task_id="t-int"))["exit_code"], flush=True)
    start = time.monotonic()
    try:
        terminal_hecate_tool("sleep 61.25; echo finished", task_id="t-int")
        print("NOT INTERRUPTED", flush=True)
    except KeyboardInterrupt:
        print("INTERRUPTED %.2f" % (time.monotonic() - start), flush=True)
        # The task goes on with a fresh instance.
        again = json.loads(terminal_hecate_tool("echo again", task_id="t-int"))
        print(again["output"].splitlines()[0], again["instance_restarted"], flush=True)
    """
)


def sleepers():
    """Pids of processes running the interrupt test's sleep."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().split(b"\0")[:2] == [b"sleep", b"61.25"]:
                        found.append(int(pid))
            except OSError:
                pass
    return found


def test_ctrl_c_raises_keyboard_interrupt_and_kills_the_command(sim):
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD_INTERRUPT],
        env=env_for_child(sim),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline().strip() == "0"
        wait_until("the sleep to start", sleepers)
        child.send_signal(signal.SIGINT)
        out, err = child.communicate(timeout=30)
    finally:
        if child.poll() is None:
            child.kill()
    lines = out.splitlines()
    assert lines and lines[0].startswith("INTERRUPTED"), (out, err)
    assert float(lines[0].split()[1]) < 30
    assert lines[1] == "again True", (out, err)
    assert child.returncode == 0, err
    wait_until("the interrupted command to be killed", lambda: not sleepers(), limit=10)


def test_interpreter_exit_stops_every_instance(sim):
    script = textwrap.dedent(
        """
        from terminal_hecate import terminal_hecate_tool
        for task in ("exit-a", "exit-b"):
            terminal_hecate_tool("echo hi", task_id=task)
        terminal_hecate_tool("sleep 600", background=True, task_id="exit-a")
        print("ran", flush=True)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", script],
        env=env_for_child(sim),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0 and out.stdout.strip() == "ran", out
    assert sim.instances_of("exit-a") == [] and sim.instances_of("exit-b") == []


def test_the_local_backend_when_asked_for(clean_env):
    clean_env.setenv("HECATE_BACKEND", "local")
    clean_env.setenv("HECATE_LAUNCHER", hecate_bin())
    result = run("echo local; pwd")
    assert_original_shape(result)
    assert result["exit_code"] == 0 and result["output"].startswith("local")
