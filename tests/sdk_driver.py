"""Drives the simulator with the official MorphCloud Python SDK (0.1.116).

Run by tests/simulator.rs (python_sdk_accepts_the_simulator) with
MORPH_BASE_URL / MORPH_API_KEY pointing at a SimServer. Exits non-zero on
the first mismatch; prints "SDK OK" at the end.
"""

import asyncio
import os

from morphcloud.api import ApiError, MorphCloudClient


def expect_api_error(status, fn):
    try:
        fn()
    except ApiError as err:
        assert err.status_code == status, (err.status_code, str(err))
        return err
    raise AssertionError(f"expected ApiError {status}")


def main():
    client = MorphCloudClient(api_key=os.environ["MORPH_API_KEY"])

    inst = client.instances.start("snapshot_defv9tjg", ttl_seconds=1200, ttl_action="stop")
    assert inst.status.value == "ready", inst.status
    assert inst.id.startswith("morphvm_")

    res = inst.exec("echo hello; echo oops >&2; exit 3")
    assert (res.exit_code, res.stdout, res.stderr) == (3, "hello\n", "oops\n"), res
    res = inst.exec(["echo", "a  b", "c"])
    assert res.stdout == "a b c\n", res

    inst.set_metadata({"task_id": "t1", "owner": "sdk"})
    assert inst.metadata == {"task_id": "t1", "owner": "sdk"}, inst.metadata
    found = client.instances.list(metadata={"task_id": "t1"})
    assert [i.id for i in found] == [inst.id], found
    assert client.instances.list(metadata={"task_id": "nope"}) == []
    page = client.instances.list_paginated(page=1, limit=10, metadata={"owner": "sdk"})
    assert page.total == 1 and [i.id for i in page.instances] == [inst.id], page

    inst.set_ttl(600, ttl_action="pause")
    again = client.instances.get(inst.id)
    assert again.ttl.ttl_seconds == 600 and again.ttl.ttl_action == "pause", again.ttl

    out, err = [], []
    res = inst.exec(
        "printf 'l1\\nl2\\n'; echo e1 >&2; exit 5",
        on_stdout=out.append,
        on_stderr=err.append,
    )
    assert (res.exit_code, res.stdout, res.stderr) == (5, "l1\nl2\n", "e1\n"), res
    assert "".join(out) == "l1\nl2\n" and "".join(err) == "e1\n", (out, err)

    async def run_async():
        other = await client.instances.astart("snapshot_defv9tjg", metadata={"k": "v"})
        res = await other.aexec("echo async")
        assert res.stdout == "async\n", res
        await other.astop()

    asyncio.run(run_async())

    inst.stop()
    err = expect_api_error(404, inst.stop)
    assert "404" in str(err) and err.detail == "Instance not found", str(err)
    expect_api_error(404, lambda: inst.exec("true"))

    bad = MorphCloudClient(api_key="wrong-key")
    expect_api_error(401, lambda: bad.instances.get("morphvm_whatever"))
    print("SDK OK")


if __name__ == "__main__":
    main()
