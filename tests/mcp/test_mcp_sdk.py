"""`hecate mcp` against the official Python MCP SDK (mcp 2.x), a client
written outside this project: initialize, list tools, call `terminal`,
bad arguments, a long command with progress, and the unpinned mode; on
the local backend and, where the kernel allows it, the sandbox backend.

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
            assert [t.name for t in tools] == ["terminal"]
            props = tools[0].input_schema["properties"]
            assert "command" in props and "task_id" not in props

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
async def test_allow_task_ids_gives_the_unpinned_schema(tmp_path):
    async with stdio_client(params(tmp_path, "local", "--allow-task-ids")) as (r, w):
        async with ClientSession(r, w) as s:
            await s.initialize()
            tools = (await s.list_tools()).tools
            assert "task_id" in tools[0].input_schema["properties"]
            await s.call_tool("terminal", {"command": "echo a > f", "task_id": "a"})
            res = await s.call_tool("terminal", {"command": "cat f", "task_id": "b"})
            assert tool_result(res)["exit_code"] != 0, "tasks have separate files"
            res = await s.call_tool("terminal", {"command": "cat f", "task_id": "a"})
            assert tool_result(res)["output"] == "a"
