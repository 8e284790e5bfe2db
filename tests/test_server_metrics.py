"""Server tier: vram_magic's series on the real Jupyter server's /metrics (pytest-jupyter).

The kernels are real; the server's NVML is the fake built from a two-GPU recording, to which the
tests add the kernels' PIDs and a process of another user.
"""

from __future__ import annotations

import json
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tornado.httpclient import HTTPClientError

from vram_magic.protocol.kernel_status import KernelDevice, KernelStatus, status_path, write_status

pytest.importorskip("pytest_jupyter")
pytest_plugins = ["pytest_jupyter.jupyter_server"]

import test_server  # noqa: E402  (the server tier's helpers and fixtures)
from test_server import GIB, kernel_pid, run_in_kernel, start_notebook_kernel, wait_for  # noqa: E402

two_gpus = test_server.two_gpus
other_user = test_server.other_user


@pytest.fixture
def jp_server_config(jp_server_config):  # type: ignore[no-untyped-def]
    """The server tier's config, collecting the series five times a second."""
    return {**jp_server_config, "VramMagic": {"metrics_interval": 0.2, "hostname": "node-7"}}


async def scrape(jp_fetch) -> dict[str, list]:  # type: ignore[no-untyped-def]
    """Series name -> [(labels, value)], vram_magic's only."""
    response = await jp_fetch("metrics")
    found: dict[str, list] = {}
    for family in text_string_to_metric_families(response.body.decode()):
        for sample in family.samples:
            if sample.name.startswith("vram_magic_"):
                found.setdefault(sample.name, []).append((sample.labels, sample.value))
    return found


def values(series: dict[str, list], name: str, **labels: str) -> list[float]:
    return [
        value
        for found, value in series.get(name, [])
        if all(found.get(k) == v for k, v in labels.items())
    ]


async def test_series_for_kernels_with_vram_magic_and_the_gpus(
    jp_fetch, jp_serverapp, two_gpus, other_user
):
    loaded = (await start_notebook_kernel(jp_fetch, "work/train.ipynb"))["kernel"]["id"]
    bare = (await start_notebook_kernel(jp_fetch, "eval.ipynb"))["kernel"]["id"]
    await run_in_kernel(jp_serverapp, loaded, "%load_ext vram_magic\nimport torch\n%vram limit 1MB")
    await run_in_kernel(jp_serverapp, loaded, "x = torch.ones(2**20)  # 4 MB: out of memory")
    first, _ = two_gpus["devices"]
    first["compute_processes"] = [
        {"pid": kernel_pid(jp_serverapp, loaded), "usedGpuMemory": 5 * GIB},
        {"pid": kernel_pid(jp_serverapp, bare), "usedGpuMemory": 3 * GIB},
        {"pid": other_user, "usedGpuMemory": 7 * GIB},
    ]

    async def scraped() -> dict | None:
        series = await scrape(jp_fetch)
        held = values(series, "vram_magic_kernel_gpu_memory_bytes", kernel_id=loaded)
        return series if held and values(series, "vram_magic_kernel_oom_total") == [1] else None

    series = await wait_for(scraped)

    (info,) = series["vram_magic_kernel_info"]
    assert info[0]["kernel_id"] == loaded
    assert info[0]["notebook"] == "work/train.ipynb"
    assert info[0]["host"] == "node-7"
    assert info[0]["user"]
    ((labels, held),) = series["vram_magic_kernel_gpu_memory_bytes"]
    assert (labels["gpu_uuid"], labels["source"], held) == (first["uuid"], "nvml", 5 * GIB)
    assert values(series, "vram_magic_kernel_gpu_memory_peak_bytes") == [5 * GIB]
    (idle,) = values(series, "vram_magic_kernel_idle_seconds")
    assert 0 <= idle < 60
    assert bare not in json.dumps(series), "no series for a kernel without vram_magic"
    total = values(series, "vram_magic_gpu_memory_total_bytes", UUID=first["uuid"])
    assert total == [first["memory"]["total"]]
    gpu_labels = series["vram_magic_gpu_memory_used_bytes"][0][0]
    assert gpu_labels.keys() == {"UUID", "Hostname", "gpu", "modelName"}
    assert gpu_labels["Hostname"] == "node-7"
    others = values(series, "vram_magic_gpu_other_users_memory_bytes", UUID=first["uuid"])
    assert others[0] >= 7 * GIB  # the recording's own other processes besides
    assert str(other_user) not in json.dumps(series), "no PID of another user"


async def test_the_peak_since_the_last_scrape_and_torchs_figures(jp_fetch, jp_serverapp, two_gpus):
    """A kernel's status file (what vram_magic in a CUDA kernel writes) tells a peak of 9 GiB:
    the next scrape shows it, the one after only what the kernel holds once the peak is gone."""
    kernel_id = (await start_notebook_kernel(jp_fetch))["kernel"]["id"]
    kernel = jp_serverapp.kernel_manager.get_kernel(kernel_id)
    pid = kernel_pid(jp_serverapp, kernel_id)
    first, _ = two_gpus["devices"]
    first["compute_processes"] = [{"pid": pid, "usedGpuMemory": 5 * GIB}]

    def status(peak: int | None) -> None:
        device = KernelDevice("cuda:0", first["uuid"], 3 * GIB, 4 * GIB, 5 * GIB, peak)
        write_status(
            status_path(kernel.connection_file),
            KernelStatus(pid, time.time(), (device,), (), None, None, 2),
        )

    status(9 * GIB)

    async def peak_is(expected: int):  # type: ignore[no-untyped-def]
        series = await scrape(jp_fetch)
        peaks = values(series, "vram_magic_kernel_gpu_memory_peak_bytes", kernel_id=kernel_id)
        return series if peaks == [expected] else None

    series = await wait_for(lambda: peak_is(9 * GIB))
    assert values(series, "vram_magic_kernel_torch_allocated_bytes") == [3 * GIB]
    assert values(series, "vram_magic_kernel_torch_reserved_bytes") == [4 * GIB]
    assert values(series, "vram_magic_kernel_stranded_bytes") == [1 * GIB]
    assert values(series, "vram_magic_kernel_oom_total") == [2]
    status(None)
    await wait_for(lambda: peak_is(5 * GIB))


async def test_anonymous_metrics_are_refused(jp_fetch, two_gpus):
    with pytest.raises(HTTPClientError) as refused:
        await jp_fetch("metrics", headers={"Authorization": ""})
    assert refused.value.code == 403
