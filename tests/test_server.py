"""Server tier: the real Jupyter server with the vram_magic extension (pytest-jupyter).

The server's NVML is a fake built from a two-GPU recording, to which the tests add the PIDs of a
real kernel started by the server, of a process of another user, and of a process that does not
exist here (a host PID seen from a container).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time

import pytest
from fake_nvml import fake_session, load_recording
from tornado.httpclient import HTTPClientError

from vram_magic.readings import nvml

pytest.importorskip("pytest_jupyter")
pytest_plugins = ["pytest_jupyter.jupyter_server"]

GIB = 2**30
NOBODY = 65534


@pytest.fixture
def two_gpus():  # type: ignore[no-untyped-def]
    """The recording's live state; the server reads it on every request."""
    session = fake_session(load_recording("two_gpus_other_processes"))
    previous = nvml.set_default_session(session)
    yield session.fake.recording
    nvml.set_default_session(previous)


@pytest.fixture
def other_user():  # type: ignore[no-untyped-def]
    """A real process of another user: started as nobody when we are root, else init."""
    if os.geteuid() != 0:
        yield 1
        return
    process = subprocess.Popen(["sleep", "60"], user=NOBODY)
    yield process.pid
    process.kill()
    process.wait()


async def get(jp_fetch, *parts: str) -> dict:  # type: ignore[no-untyped-def]
    response = await jp_fetch("vram", *parts)
    assert response.code == 200
    return json.loads(response.body)


async def start_notebook_kernel(jp_fetch, path: str = "work/train.ipynb") -> dict:  # type: ignore[no-untyped-def]
    body = json.dumps({"path": path, "type": "notebook", "kernel": {"name": "python3"}})
    response = await jp_fetch("api", "sessions", method="POST", body=body, request_timeout=120)
    return json.loads(response.body)


def kernel_pid(jp_serverapp, kernel_id: str) -> int:  # type: ignore[no-untyped-def]
    return jp_serverapp.kernel_manager.get_kernel(kernel_id).provisioner.pid


async def test_devices_list_this_users_processes_and_fold_the_others(
    jp_fetch, jp_serverapp, two_gpus, other_user
):
    session = await start_notebook_kernel(jp_fetch)
    kernel_id = session["kernel"]["id"]
    pid = kernel_pid(jp_serverapp, kernel_id)
    first, second = two_gpus["devices"]
    first["compute_processes"] = [
        {"pid": pid, "usedGpuMemory": 5 * GIB},
        {"pid": other_user, "usedGpuMemory": 7 * GIB},
        {"pid": 999_999_999, "usedGpuMemory": 1 * GIB},  # not in our PID namespace
    ]
    second["compute_processes"] = [{"pid": "self", "usedGpuMemory": 2 * GIB}]

    body = await get(jp_fetch, "devices")

    assert body["reason"] is None
    gpu0, gpu1 = body["devices"]
    assert gpu0["name"] == "NVIDIA A100-SXM4-40GB"
    assert gpu0["uuid"] == first["uuid"]
    assert (gpu0["total"], gpu0["used"], gpu0["free"]) == (
        first["memory"]["total"],
        first["memory"]["used"],
        first["memory"]["free"],
    )
    assert gpu0["utilization"] == 91
    assert gpu0["processes"] == [
        {"pid": pid, "bytes": 5 * GIB, "name": gpu0["processes"][0]["name"], "kernel_id": kernel_id}
    ]
    assert gpu0["processes"][0]["name"].startswith("python")
    assert gpu0["other_users"] == {"count": 2, "bytes": 8 * GIB}
    assert str(other_user) not in json.dumps(gpu0)  # no pid, name or command of other users
    assert gpu1["processes"][0]["pid"] == os.getpid()
    assert gpu1["processes"][0]["kernel_id"] is None


async def test_kernels_are_named_by_their_notebook_and_sorted_by_bytes(
    jp_fetch, jp_serverapp, two_gpus
):
    small = await start_notebook_kernel(jp_fetch, "small.ipynb")
    large = await start_notebook_kernel(jp_fetch, "work/large.ipynb")
    small_pid = kernel_pid(jp_serverapp, small["kernel"]["id"])
    large_pid = kernel_pid(jp_serverapp, large["kernel"]["id"])
    first, second = two_gpus["devices"]
    first["compute_processes"] = [
        {"pid": small_pid, "usedGpuMemory": 1 * GIB},
        {"pid": large_pid, "usedGpuMemory": 3 * GIB},
    ]
    second["compute_processes"] = [{"pid": large_pid, "usedGpuMemory": 4 * GIB}]

    body = await get(jp_fetch, "kernels")

    rows = body["kernels"]
    assert [row["id"] for row in rows] == [large["kernel"]["id"], small["kernel"]["id"]]
    assert rows[0]["session"] == {"path": "work/large.ipynb", "name": "large.ipynb"}
    assert rows[0]["pid"] == large_pid
    assert rows[0]["bytes"] == 7 * GIB
    assert {(d["uuid"], d["bytes"], d["source"]) for d in rows[0]["devices"]} == {
        (first["uuid"], 3 * GIB, "nvml"),
        (second["uuid"], 4 * GIB, "nvml"),
    }
    assert rows[1]["bytes"] == 1 * GIB
    assert rows[0]["vram_magic"] is None  # vram_magic not loaded in that kernel


async def run_in_kernel(jp_serverapp, kernel_id: str, code: str) -> None:  # type: ignore[no-untyped-def]
    """Execute ``code`` as a notebook cell would, and wait until the server sees the kernel idle
    again (its state follows the kernel's status messages, which may trail the reply)."""
    kernel = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    client = kernel.client()
    client.start_channels()
    try:
        msg_id = client.execute(code)
        while True:
            reply = await client.get_shell_msg(timeout=60)
            if reply["parent_header"].get("msg_id") == msg_id:
                break
    finally:
        client.stop_channels()
    await wait_for(lambda: _true_soon(kernel.execution_state in {"idle", "starting"}))


async def test_free_runs_in_the_kernel_and_the_list_follows(jp_fetch, jp_serverapp, two_gpus):
    session = await start_notebook_kernel(jp_fetch)
    kernel_id = session["kernel"]["id"]
    stranding = (
        "import torch\n"
        "def train():\n"
        "    activations = torch.ones(8 * 2**20)  # 32 MiB, kept alive by the traceback\n"
        "    raise ValueError('boom')\n"
        "train()"
    )
    await run_in_kernel(jp_serverapp, kernel_id, stranding)
    await run_in_kernel(jp_serverapp, kernel_id, "weights = torch.zeros(4 * 2**20)")
    row = (await get(jp_fetch, "kernels"))["kernels"][0]
    assert row["vram_magic"] is None

    response = await jp_fetch(
        "vram", "kernels", kernel_id, "free", method="POST", body="", request_timeout=120
    )

    body = json.loads(response.body)
    assert body["kernel_id"] == kernel_id
    assert body["freed"] >= 32 * 2**20
    assert "sys.last_value" in body["text"]
    row = (await get(jp_fetch, "kernels"))["kernels"][0]
    assert row["vram_magic"] is not None, "free loads vram_magic, whose status file appears"
    assert row["vram_magic"]["top"] == [{"name": "weights", "bytes": 16 * 2**20}]
    again = json.loads(
        (
            await jp_fetch(
                "vram", "kernels", kernel_id, "free", method="POST", body="", request_timeout=120
            )
        ).body
    )
    assert again["freed"] == 0
    history = await run_and_read(jp_serverapp, kernel_id, "len(In)")
    assert history == "3", "In holds '' and the two cells: the free requests left no trace"


async def run_and_read(jp_serverapp, kernel_id: str, expression: str) -> str:  # type: ignore[no-untyped-def]
    from vram_magic.server.kernel_call import evaluate

    return await evaluate(
        jp_serverapp.kernel_manager.get_kernel(kernel_id), f"str({expression})", 30
    )


async def test_free_refuses_a_busy_kernel(jp_fetch, jp_serverapp, two_gpus):
    session = await start_notebook_kernel(jp_fetch)
    kernel_id = session["kernel"]["id"]
    await run_in_kernel(jp_serverapp, kernel_id, "started = True")
    kernel = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    client = kernel.client()
    client.start_channels()
    await client.wait_for_ready(timeout=30)
    client.execute("import time; time.sleep(4)")
    await wait_for(lambda: _true_soon(kernel.execution_state == "busy"))
    with pytest.raises(HTTPClientError) as refused:
        await jp_fetch(
            "vram", "kernels", kernel_id, "free", method="POST", body="", request_timeout=120
        )
    client.stop_channels()
    assert refused.value.code == 409
    assert "busy" in json.loads(refused.value.response.body)["message"]


async def test_unknown_kernels_are_404(jp_fetch, two_gpus):
    for action in ("free", "restart"):
        with pytest.raises(HTTPClientError) as unknown:
            await jp_fetch(
                "vram",
                "kernels",
                "no-such-kernel",
                action,
                method="POST",
                body="",
                request_timeout=120,
            )
        assert unknown.value.code == 404


async def test_restart_and_restore_from_the_server(jp_fetch, jp_serverapp, two_gpus):
    session = await start_notebook_kernel(jp_fetch)
    kernel_id = session["kernel"]["id"]
    before = kernel_pid(jp_serverapp, kernel_id)
    await run_in_kernel(
        jp_serverapp, kernel_id, "import torch\nweights = torch.arange(6.0)\nsteps = [1, 2]"
    )

    response = await jp_fetch(
        "vram", "kernels", kernel_id, "restart", method="POST", body="", request_timeout=120
    )

    body = json.loads(response.body)
    assert kernel_pid(jp_serverapp, kernel_id) != before, "a new process"
    assert set(body["snapshot"]["saved"]) >= {"torch", "weights", "steps"}
    assert set(body["restore"]["restored"]) >= {"torch", "weights", "steps"}
    assert "weights" in body["text"]
    assert await run_and_read(jp_serverapp, kernel_id, "weights.tolist() + steps") == str(
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 1, 2]
    )
    assert await run_and_read(jp_serverapp, kernel_id, "len(In)") == "1", "a fresh history"


async def test_a_restart_the_kernel_asks_for_is_carried_out_once(jp_fetch, jp_serverapp, two_gpus):
    session = await start_notebook_kernel(jp_fetch)
    kernel_id = session["kernel"]["id"]
    await run_in_kernel(jp_serverapp, kernel_id, "%load_ext vram_magic\nanswer = 42")
    with pytest.raises(HTTPClientError) as malformed:
        await jp_fetch("vram", "kernels", kernel_id, "restart", method="POST", body="[1, 2")
    assert malformed.value.code == 400
    with pytest.raises(HTTPClientError) as unasked:
        await jp_fetch(
            "vram", "kernels", kernel_id, "restart", method="POST", body='{"request": "made-up"}'
        )
    assert unasked.value.code == 409
    client = jp_serverapp.kernel_manager.get_kernel(kernel_id).client()
    client.start_channels()
    client.execute("%vram restart")  # snapshots, asks, then waits to be restarted

    async def requested() -> str | None:
        row = (await get(jp_fetch, "kernels"))["kernels"][0]
        return (row["vram_magic"] or {}).get("restart_request")

    request = await wait_for(requested)
    body = json.dumps({"request": request})
    response = await jp_fetch(
        "vram", "kernels", kernel_id, "restart", method="POST", body=body, request_timeout=120
    )
    client.stop_channels()
    assert "answer" in json.loads(response.body)["restore"]["restored"]
    assert await run_and_read(jp_serverapp, kernel_id, "answer") == "42"
    with pytest.raises(HTTPClientError) as again:
        await jp_fetch(
            "vram", "kernels", kernel_id, "restart", method="POST", body=body, request_timeout=120
        )
    assert again.value.code == 409


@pytest.mark.parametrize(
    ("method", "parts"),
    [
        ("GET", ("devices",)),
        ("GET", ("kernels",)),
        ("POST", ("kernels", "any", "free")),
        ("POST", ("kernels", "any", "restart")),
    ],
)
async def test_anonymous_requests_are_refused(jp_fetch, two_gpus, method, parts):
    body = "" if method == "POST" else None
    with pytest.raises(HTTPClientError) as refused:
        await jp_fetch("vram", *parts, method=method, body=body, headers={"Authorization": ""})
    assert refused.value.code == 403


async def test_no_gpu_with_the_real_nvml(jp_fetch):
    previous = nvml.set_default_session(nvml.NvmlSession())
    try:
        devices = await get(jp_fetch, "devices")
        kernels = await get(jp_fetch, "kernels")
    finally:
        nvml.set_default_session(previous)
    assert devices["devices"] == []
    assert devices["reason"].startswith("no NVIDIA GPU")
    assert kernels["kernels"] == []


async def _true_soon(value: bool) -> bool:
    return value


async def wait_for(condition, timeout: float = 30):  # type: ignore[no-untyped-def]
    """The first true value ``condition()`` gives within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = await condition()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError("condition not met in time")
