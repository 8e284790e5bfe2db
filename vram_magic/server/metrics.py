"""vram_magic's series on the Jupyter server's own Prometheus endpoint (``/metrics``).

A scrape never waits: a background task takes a ``Sample`` every ``metrics_interval`` seconds in
a worker thread, and the collector serves the latest. Series exist only for kernels with
vram_magic loaded (their own file is current) and for the GPUs; other users' processes appear
only as one folded sum per GPU, never by PID. The per-GPU series carry dcgm-exporter's label
names (``UUID``, ``Hostname``) so that PromQL can join the two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from vram_magic.server.kernels import list_kernels
from vram_magic.server.processes import ProcessDirectory
from vram_magic.server.sample import KernelSample, Sample, server_user, take_sample

KERNEL_LABELS = ["kernel_id", "notebook", "user", "host"]
GPU_LABELS = ["UUID", "Hostname", "gpu", "modelName"]


def families(sample: Sample | None, user: str, host: str, peaks: dict) -> list[Metric]:
    """The series of one sample; ``peaks``: (kernel id, GPU uuid) -> the most held since the
    last scrape."""
    info = GaugeMetricFamily(
        "vram_magic_kernel_info", "A kernel with vram_magic loaded (always 1)", labels=KERNEL_LABELS
    )
    device_labels = [*KERNEL_LABELS, "gpu_uuid"]
    held = GaugeMetricFamily(
        "vram_magic_kernel_gpu_memory_bytes",
        "GPU memory a kernel holds (source: nvml by its PID, or kernel: its own file, in "
        "containers where NVML lists host PIDs)",
        labels=[*device_labels, "source"],
    )
    allocated = GaugeMetricFamily(
        "vram_magic_kernel_torch_allocated_bytes",
        "Tensors alive in the kernel (torch's caching allocator)",
        labels=device_labels,
    )
    reserved = GaugeMetricFamily(
        "vram_magic_kernel_torch_reserved_bytes",
        "GPU memory torch's caching allocator reserved in the kernel",
        labels=device_labels,
    )
    stranded = GaugeMetricFamily(
        "vram_magic_kernel_stranded_bytes",
        "Reserved by torch but holding no tensor: %vram free gives it back",
        labels=device_labels,
    )
    peak = GaugeMetricFamily(
        "vram_magic_kernel_gpu_memory_peak_bytes",
        "The most GPU memory the kernel held since the last scrape (a cell's spike included)",
        labels=device_labels,
    )
    ooms = CounterMetricFamily(
        "vram_magic_kernel_oom",
        "Cells that ended in an out-of-memory error since vram_magic was loaded",
        labels=KERNEL_LABELS,
    )
    idle = GaugeMetricFamily(
        "vram_magic_kernel_idle_seconds",
        "Seconds since the kernel was last busy (0 while busy)",
        labels=KERNEL_LABELS,
    )
    total = GaugeMetricFamily("vram_magic_gpu_memory_total_bytes", "GPU memory", labels=GPU_LABELS)
    used = GaugeMetricFamily(
        "vram_magic_gpu_memory_used_bytes", "GPU memory in use (NVML)", labels=GPU_LABELS
    )
    others = GaugeMetricFamily(
        "vram_magic_gpu_other_users_memory_bytes",
        "GPU memory held by processes of other users, one sum (no PIDs leave the server)",
        labels=GPU_LABELS,
    )
    collection = GaugeMetricFamily(
        "vram_magic_collection_seconds", "How long the latest collection took", labels=["host"]
    )
    found = [info, held, allocated, reserved, stranded, peak, ooms, idle, total, used, others]
    if sample is None:
        return [*found, collection]
    for kernel in sample.kernels:
        if not kernel.vram_magic:
            continue
        labels = [kernel.id, kernel.notebook, user, host]
        info.add_metric(labels, 1)
        ooms.add_metric(labels, kernel.ooms)
        if kernel.idle_seconds is not None:
            idle.add_metric(labels, kernel.idle_seconds)
        for uuid, (nbytes, source) in kernel.held.items():
            held.add_metric([*labels, uuid, source], nbytes)
        for uuid, figures in kernel.torch.items():
            allocated.add_metric([*labels, uuid], figures.allocated)
            reserved.add_metric([*labels, uuid], figures.reserved)
            stranded.add_metric([*labels, uuid], max(figures.reserved - figures.allocated, 0))
        for uuid in {*kernel.held, *kernel.peaks}:
            peak.add_metric([*labels, uuid], peaks.get((kernel.id, uuid), held_peak(kernel, uuid)))
    for gpu in sample.gpus:
        labels = [gpu.uuid, host, gpu.index, gpu.name or ""]
        if gpu.total is not None:
            total.add_metric(labels, gpu.total)
        if gpu.used is not None:
            used.add_metric(labels, gpu.used)
        others.add_metric(labels, gpu.other_users_bytes)
    collection.add_metric([host], sample.seconds)
    return [*found, collection]


def held_peak(kernel: KernelSample, uuid: str) -> int:
    """The most the kernel held on ``uuid`` as one sample saw it: now, or its recent peak."""
    return max(kernel.held.get(uuid, (0, ""))[0], kernel.peaks.get(uuid, 0))


class VramMetrics(Collector):
    """Registered in prometheus_client's registry, which the server's /metrics serves."""

    def __init__(self, serverapp: Any, host: str, interval: float) -> None:
        self.serverapp = serverapp
        self.user = server_user()
        self.host = host
        self.interval = interval
        self.latest: Sample | None = None
        self.listeners: list[Any] = []  # called on the loop with each new sample
        self._peaks: dict[tuple[str, str], int] = {}
        self._directory = ProcessDirectory()  # its own: only the worker thread uses it
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="vram_magic-metrics")
        self._task: asyncio.Task | None = None

    def collect(self) -> Iterator[Metric]:
        peaks, self._peaks = self._peaks, {}
        yield from families(self.latest, self.user, self.host, peaks)

    def describe(self) -> Iterator[Metric]:
        yield from families(None, self.user, self.host, {})

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def stop(self) -> None:
        if self._task is not None and not self._task.get_loop().is_closed():
            self._task.cancel()
        self._worker.shutdown(wait=False, cancel_futures=True)

    async def refresh(self) -> Sample:
        """Take a sample now (the kernels' list on the loop, the rest in the worker)."""
        app = self.serverapp
        kernels = await list_kernels(app.kernel_manager, app.session_manager)
        loop = asyncio.get_running_loop()
        sample = await loop.run_in_executor(self._worker, take_sample, kernels, self._directory)
        for kernel in sample.kernels:
            for uuid in {*kernel.held, *kernel.peaks}:
                key = (kernel.id, uuid)
                self._peaks[key] = max(self._peaks.get(key, 0), held_peak(kernel, uuid))
        self.latest = sample
        for listener in self.listeners:
            await listener(sample)
        return sample

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # one bad look must not end the series
                self.serverapp.log.warning("vram_magic: collecting the metrics failed: %s", error)
            await asyncio.sleep(self.interval)


_registered: list[VramMetrics] = []


def register(metrics: VramMetrics) -> None:
    """Register ``metrics``, replacing an earlier server's in this process (tests start many)."""
    while _registered:
        earlier = _registered.pop()
        earlier.stop()
        REGISTRY.unregister(earlier)
    REGISTRY.register(metrics)
    _registered.append(metrics)
