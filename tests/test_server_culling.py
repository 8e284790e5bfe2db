"""Server tier: idle kernels give their GPU memory back and keep their variables (the real
Jupyter server with short timeouts, real kernels, the fake NVML placing them on a GPU)."""

from __future__ import annotations

import json
import logging

import pytest
from tornado.httpclient import HTTPClientError

pytest.importorskip("pytest_jupyter")
pytest_plugins = ["pytest_jupyter.jupyter_server"]

import test_server  # noqa: E402  (the server tier's helpers and fixtures)
from test_server import (  # noqa: E402
    GIB,
    kernel_pid,
    run_and_read,
    run_in_kernel,
    start_notebook_kernel,
    wait_for,
)

two_gpus = test_server.two_gpus
IDLE_SECONDS = 3


@pytest.fixture
def jp_server_config(jp_server_config):  # type: ignore[no-untyped-def]
    """Kernels idle for 3 s that hold 1 GiB or more are culled; a look every 0.3 s."""
    culling = {"metrics_interval": 0.3, "cull_idle_seconds": IDLE_SECONDS, "cull_min_bytes": GIB}
    return {**jp_server_config, "VramMagic": culling}


async def waiting_for(jp_fetch, notebook: str) -> dict | None:  # type: ignore[no-untyped-def]
    response = await jp_fetch("vram", "waiting", params={"path": notebook})
    return json.loads(response.body)["snapshot"]


async def output_of(jp_serverapp, kernel_id: str, code: str) -> str:  # type: ignore[no-untyped-def]
    """What a cell prints (its stdout), run as a notebook would run it."""
    client = jp_serverapp.kernel_manager.get_kernel(kernel_id).client()
    client.start_channels()
    printed: list[str] = []
    try:
        await client.execute_interactive(
            code,
            timeout=60,
            output_hook=lambda msg: printed.append(msg["content"].get("text", "")),
        )
    finally:
        client.stop_channels()
    return "".join(printed)


async def test_idle_kernels_are_snapshotted_then_shut_down_and_restored_on_reopening(
    jp_fetch, jp_serverapp, two_gpus, tmp_path, monkeypatch, caplog
):
    monkeypatch.setenv("VRAM_MAGIC_SNAPSHOT_DIR", str(tmp_path / "snapshots"))  # the kernels'
    caplog.set_level(logging.INFO)
    manager = jp_serverapp.kernel_manager
    ids = {}
    for name in ("idle", "busy", "small", "broken"):
        ids[name] = (await start_notebook_kernel(jp_fetch, f"{name}.ipynb"))["kernel"]["id"]
    await run_in_kernel(jp_serverapp, ids["idle"], "import torch\nweights = torch.arange(6.0)")
    await run_in_kernel(
        jp_serverapp,
        ids["broken"],
        "import vram_magic\nvram_magic.settings.snapshot_dir = '/proc/no-snapshots-here'",
    )
    first, _ = two_gpus["devices"]
    sizes = {"idle": 5 * GIB, "busy": 5 * GIB, "small": GIB // 2, "broken": 2 * GIB}
    first["compute_processes"] = [
        {"pid": kernel_pid(jp_serverapp, ids[name]), "usedGpuMemory": size}
        for name, size in sizes.items()
    ]
    busy = manager.get_kernel(ids["busy"]).client()
    busy.start_channels()
    busy.execute(f"import time; time.sleep({IDLE_SECONDS * 4})")

    async def culled() -> bool:
        return ids["idle"] not in manager

    await wait_for(culled, timeout=60)
    await wait_for(lambda: test_server._true_soon("snapshot failed" in caplog.text))
    busy.stop_channels()

    assert ids["busy"] in manager, "never a busy kernel"
    assert ids["small"] in manager, "never one holding less than cull_min_bytes"
    assert ids["broken"] in manager, "never one whose snapshot failed"
    assert f"kernel {ids['broken']} (broken.ipynb)" in caplog.text
    assert "gave back 5.00 GiB" in caplog.text
    waiting = await waiting_for(jp_fetch, "idle.ipynb")
    assert waiting is not None
    assert waiting["names"] >= 2  # torch, weights
    assert await waiting_for(jp_fetch, "small.ipynb") is None

    # the notebook opened again: a new kernel, told at %load_ext; one request restores
    reopened = (await start_notebook_kernel(jp_fetch, "idle.ipynb"))["kernel"]["id"]
    said = await output_of(jp_serverapp, reopened, "%load_ext vram_magic")
    assert f"wait in snapshot {waiting['id']}" in said
    response = await jp_fetch(
        "vram", "kernels", reopened, "restore-waiting", method="POST", body="", request_timeout=120
    )
    assert "weights" in json.loads(response.body)["restored"]
    assert await run_and_read(jp_serverapp, reopened, "weights.tolist()") == str(
        [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]
    )
    assert await waiting_for(jp_fetch, "idle.ipynb") is None


@pytest.mark.parametrize(
    ("method", "parts"),
    [("GET", ("waiting",)), ("POST", ("kernels", "any", "restore-waiting"))],
)
async def test_anonymous_requests_are_refused(jp_fetch, two_gpus, method, parts):
    body = "" if method == "POST" else None
    with pytest.raises(HTTPClientError) as refused:
        await jp_fetch(
            "vram",
            *parts,
            method=method,
            body=body,
            params={"path": "idle.ipynb"},
            headers={"Authorization": ""},
        )
    assert refused.value.code == 403
