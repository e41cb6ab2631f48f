"""Fixtures: the project's MorphCloud simulator (`hecate sim`, started as a
subprocess on 127.0.0.1 port 0) and a clean Hecate environment per test.

The drop-in keeps one runtime per process and reads the environment when it
starts one, so each test shuts the runtime down before and after it runs.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

import pytest

import terminal_hecate

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def hecate_bin():
    """The `hecate` binary (python/ci.sh sets HECATE_TEST_BIN)."""
    path = os.environ.get("HECATE_TEST_BIN") or os.path.join(ROOT, "target", "debug", "hecate")
    if not os.access(path, os.X_OK):
        pytest.fail(f"no hecate binary at {path}: run `cargo build --bin hecate` (python/ci.sh does)")
    return path


class Sim:
    """A running `hecate sim` and a small client of its API."""

    def __init__(self, proc, base_url, api_key):
        self.proc = proc
        self.base_url = base_url
        self.api_key = api_key

    def instances(self):
        """The simulator's live instances (the API's list)."""
        req = urllib.request.Request(
            f"{self.base_url}/instance",
            headers={"Authorization": f"Bearer {self.api_key}"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)["data"]

    def instances_of(self, task_id):
        return [i for i in self.instances() if i["metadata"].get("hecate_task_id") == task_id]


def start_sim(*extra):
    proc = subprocess.Popen(
        [hecate_bin(), "sim", "--port", "0", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "HECATE_SIM_API_KEY": "sim-pytest-key"},
    )
    values = {}
    while len(values) < 2:
        line = proc.stdout.readline()
        if not line:
            proc.kill()
            raise RuntimeError("hecate sim ended before printing its address")
        key, _, value = line.strip().partition("=")
        values[key] = value
    return Sim(proc, values["MORPH_BASE_URL"], values["MORPH_API_KEY"])


def stop_sim(sim):
    sim.proc.send_signal(signal.SIGINT)
    try:
        sim.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        sim.proc.kill()
        sim.proc.wait()


@pytest.fixture(scope="session")
def sim():
    sim = start_sim()
    yield sim
    stop_sim(sim)


# Variables a test environment must not inherit.
_CLEARED = [k for k in os.environ if k.startswith("HECATE_") and k != "HECATE_TEST_BIN"] + [
    "MORPH_API_KEY",
    "MORPH_BASE_URL",
]


@pytest.fixture
def clean_env(monkeypatch):
    """No Hecate or MorphCloud variables, and no runtime running."""
    terminal_hecate.shutdown()
    for key in _CLEARED:
        monkeypatch.delenv(key, raising=False)
    yield monkeypatch
    terminal_hecate.shutdown()


@pytest.fixture
def on_sim(clean_env, sim):
    """The original's environment (MORPH_API_KEY, no HECATE_BACKEND) pointed
    at the simulator."""
    clean_env.setenv("MORPH_API_KEY", sim.api_key)
    clean_env.setenv("MORPH_BASE_URL", sim.base_url)
    clean_env.setenv("HECATE_MORPH_POLL_MS", "20")
    return sim


def env_for_child(sim):
    """The environment for a Python subprocess using the drop-in on `sim`."""
    env = {k: v for k, v in os.environ.items() if k not in _CLEARED}
    env.update(
        MORPH_API_KEY=sim.api_key,
        MORPH_BASE_URL=sim.base_url,
        HECATE_MORPH_POLL_MS="20",
        PYTHONPATH=os.pathsep.join(sys.path),
    )
    return env


def wait_until(what, cond, limit=20.0):
    """Polls `cond` every 20 ms for up to `limit` seconds (a poll of other
    processes, not a synchronisation)."""
    until = time.monotonic() + limit
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() > until:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)
