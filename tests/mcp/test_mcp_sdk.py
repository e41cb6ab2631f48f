"""`hecate mcp` against the official Python MCP SDK (mcp 2.x), a client
written outside this project: initialize, list tools, call `terminal`,
bad arguments, a long command with progress (carrying its newest output),
the job tools (`job_list`, `job_output`, `job_kill`), and the unpinned
mode; on the local backend and, where the kernel allows it, the sandbox
backend.

Run: pytest tests/mcp (HECATE_BIN overrides target/debug/hecate).
"""

import json
import os
import pathlib
import subprocess

import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

ROOT = pathlib.Path(__file__).resolve().parents[2]
HECATE = os.environ.get("HECATE_BIN", str(ROOT / "target" / "debug" / "hecate"))


def sandbox_available() -> bool:
    run = subprocess.run(
        [HECATE, "--backend", "sandbox", "exec", "--", "true"],
        capture_output=True,
        timeout=60,
    )
    return run.returncode == 0


BACKENDS = ["local"] + (["sandbox"] if sandbox_available() else [])


@pytest.fixture
def anyio_backend():
    return "asyncio"


def params(tmp_path, backend, *extra):
    env = dict(os.environ)
    env.update(HECATE_BACKEND=backend, HECATE_LOCAL_ROOT=str(tmp_path / "root"))
    return StdioServerParameters(command=HECATE, args=["mcp", *extra], env=env)


TOOLS = ["terminal", "job_output", "job_kill", "job_list"]


def tool_result(res):
    assert len(res.content) == 1 and res.content[0].type == "text"
    return json.loads(res.content[0].text)


@pytest.mark.anyio
@pytest.mark.parametrize("backend", BACKENDS)
async def test_initialize_list_and_call(tmp_path, backend):
    async with stdio_client(params(tmp_path, backend)) as (r, w):
        async with ClientSession(r, w) as s:
            init = await s.initialize()
            assert init.server_info.name == "hecate"
            tools = (await s.list_tools()).tools
            assert [t.name for t in tools] == TOOLS
            props = tools[0].input_schema["properties"]
            assert "command" in props and "task_id" not in props
            for t in tools:
                assert "task_id" not in t.input_schema["properties"], t.name

            res = await s.call_tool("terminal", {"command": "mkdir -p d && cd d && echo hi"})
            out = tool_result(res)
            assert not res.is_error
            assert out["output"] == "hi" and out["exit_code"] == 0

            res = await s.call_tool("terminal", {"command": "basename $PWD; exit 3"})
            out = tool_result(res)
            assert not res.is_error, "a non-zero exit is not a tool error"
            assert out["exit_code"] == 3 and out["output"] == "d"

            res = await s.call_tool("terminal", {"command": "sleep 5", "timeout": 0.3})
            out = tool_result(res)
            assert out["timed_out"] is True and out["exit_code"] == 124


@pytest.mark.anyio
async def test_bad_arguments_are_error_results_and_the_server_goes_on(tmp_path):
    async with stdio_client(params(tmp_path, "local")) as (r, w):
        async with ClientSession(r, w) as s:
            await s.initialize()
            for bad in [{}, {"command": ""}, {"command": "ls", "bogus": 1},
                        {"command": "ls", "timeout": -1},
                        {"command": "ls", "task_id": "someone-else"}]:
                res = await s.call_tool("terminal", bad)
                assert res.is_error, bad
                out = tool_result(res)
                assert out["error_kind"] == "invalid_input", (bad, out)
                assert out["exit_code"] == -1
            with pytest.raises(Exception):
                await s.call_tool("no_such_tool", {})
            res = await s.call_tool("terminal", {"command": "echo ok"})
            assert tool_result(res)["output"] == "ok"


@pytest.mark.anyio
async def test_a_long_command_reports_progress(tmp_path):
    seen = []

    async def progress(p, total, message):
        seen.append((p, total, message))

    async with stdio_client(params(tmp_path, "local", "--progress-ms", "200")) as (r, w):
        async with ClientSession(r, w) as s:
            await s.initialize()
            res = await s.call_tool(
                "terminal", {"command": "sleep 1.5; echo done", "timeout": 30},
                progress_callback=progress)
            assert tool_result(res)["output"] == "done"
    assert len(seen) >= 3, seen
    values = [p for p, _, _ in seen]
    assert values == sorted(values) and values[0] > 0, seen
    assert all(total == 30 for _, total, _ in seen), seen


@pytest.mark.anyio
async def test_progress_carries_the_newest_output(tmp_path):
    seen = []

    async def progress(p, total, message):
        seen.append(message)

    command = "echo first; sleep 0.6; echo second; sleep 0.6"
    async with stdio_client(params(tmp_path, "local", "--progress-ms", "100")) as (r, w):
        async with ClientSession(r, w) as s:
            await s.initialize()
            res = await s.call_tool("terminal", {"command": command},
                                    progress_callback=progress)
            assert tool_result(res)["output"] == "first\nsecond"
    newest = [m.split("newest output: ", 1)[1] for m in seen if "newest output: " in m]
    assert "first" in newest and "second" in newest, seen
    assert newest.index("first") < newest.index("second"), seen


@pytest.mark.anyio
@pytest.mark.parametrize("backend", BACKENDS)
async def test_job_tools_follow_list_and_kill_a_background_job(tmp_path, backend):
    async with stdio_client(params(tmp_path, backend)) as (r, w):
        async with ClientSession(r, w) as s:
            await s.initialize()
            res = await s.call_tool("terminal", {
                "command": "for i in 1 2 3; do echo line$i; sleep 0.2; done",
                "background": True})
            out = tool_result(res)
            assert not res.is_error and out["exit_code"] == 0, out
            job_id = int(out["job"]["id"])

            res = await s.call_tool("job_list", {})
            listed = tool_result(res)
            assert not res.is_error
            assert [j["id"] for j in listed["jobs"]] == [job_id], listed

            # Follow it from offset 0 with waits until it exited.
            text, offset = "", 0
            for _ in range(100):
                res = await s.call_tool("job_output",
                                        {"job_id": job_id, "offset": offset, "wait": 10})
                got = tool_result(res)
                assert not res.is_error, got
                assert got["offset"] == offset and got["missed_bytes"] == 0, got
                text += got["output"] + "\n"
                offset = got["next_offset"]
                if got["job"]["state"] == "exited" and not got["more"]:
                    break
            assert got["job"]["exit_code"] == 0 and got["exit_code"] == 0, got
            assert [w for w in text.split() if w.startswith("line")] == \
                ["line1", "line2", "line3"], text
            assert "[job %d exited with code 0]" % job_id in text, text
            assert offset == len("line1\nline2\nline3\n"), got

            res = await s.call_tool("terminal", {"command": "sleep 1000", "background": True})
            long_id = int(tool_result(res)["job"]["id"])
            assert long_id == job_id + 1
            res = await s.call_tool("job_kill", {"job_id": long_id})
            killed = tool_result(res)
            assert not res.is_error and killed["job"]["state"] == "killed", killed
            res = await s.call_tool("job_list", {})
            states = {j["id"]: j["state"] for j in tool_result(res)["jobs"]}
            assert states == {job_id: "exited", long_id: "killed"}, states

            # Bad arguments and unknown jobs: error results; the server goes on.
            for name, bad in [("job_output", {}), ("job_output", {"job_id": 0}),
                              ("job_output", {"job_id": job_id, "wait": -1}),
                              ("job_output", {"job_id": job_id, "offset": "x"}),
                              ("job_kill", {"job_id": job_id, "bogus": 1}),
                              ("job_list", {"task_id": "someone-else"}),
                              ("job_kill", {"job_id": 99})]:
                res = await s.call_tool(name, bad)
                assert res.is_error, (name, bad)
                out = tool_result(res)
                assert out["error"] and out["exit_code"] == -1, (name, bad, out)
            res = await s.call_tool("job_list", {})
            assert len(tool_result(res)["jobs"]) == 2


@pytest.mark.anyio
async def test_allow_task_ids_gives_the_unpinned_schema(tmp_path):
    async with stdio_client(params(tmp_path, "local", "--allow-task-ids")) as (r, w):
        async with ClientSession(r, w) as s:
            await s.initialize()
            tools = (await s.list_tools()).tools
            assert [t.name for t in tools] == TOOLS
            for t in tools:
                assert "task_id" in t.input_schema["properties"], t.name
            await s.call_tool("terminal", {"command": "echo a > f", "task_id": "a"})
            res = await s.call_tool("terminal", {"command": "cat f", "task_id": "b"})
            assert tool_result(res)["exit_code"] != 0, "tasks have separate files"
            res = await s.call_tool("terminal", {"command": "cat f", "task_id": "a"})
            assert tool_result(res)["output"] == "a"
            await s.call_tool("terminal", {"command": "sleep 1000", "task_id": "a",
                                           "background": True})
            res = await s.call_tool("job_list", {"task_id": "b"})
            assert tool_result(res)["jobs"] == []
            res = await s.call_tool("job_list", {"task_id": "a"})
            [job] = tool_result(res)["jobs"]
            res = await s.call_tool("job_kill", {"job_id": job["id"], "task_id": "a"})
            assert tool_result(res)["job"]["state"] == "killed"
