"""vram_magic's series on the Jupyter server's own Prometheus endpoint (``/metrics``).

A scrape never waits: a background task takes a ``Sample`` every ``metrics_interval`` seconds
in a worker thread, which also writes the series' text, and a scrape appends that text to the
server's own metrics (only the peaks since the last scrape are written then). prometheus_client
would format ~1,000 series of 200 kernels on the event loop for tens of ms; this costs one join.

Series exist only for kernels with vram_magic loaded (their own file is current) and for the
GPUs; other users' processes appear only as one folded sum per GPU, never by PID. The per-GPU
series carry dcgm-exporter's label names (``UUID``, ``Hostname``) so that PromQL joins the two.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from vram_magic.server.kernels import list_kernels
from vram_magic.server.processes import ProcessDirectory
from vram_magic.server.sample import KernelSample, Sample, server_user, take_sample

Series = Iterable[tuple[dict[str, str], float]]
PEAK = "vram_magic_kernel_gpu_memory_peak_bytes"
PEAK_HELP = "The most GPU memory the kernel held since the last scrape (a cell's spike included)"


def family(name: str, kind: str, help: str, series: Series) -> str:
    """One metric family in Prometheus' text format (0.0.4)."""
    lines = [f"# HELP {name} {help}", f"# TYPE {name} {kind}"]
    lines += [f"{name}{{{_labels(labels)}}} {float(value)!r}" for labels, value in series]
    return "\n".join(lines) + "\n"


def _labels(labels: dict[str, str]) -> str:
    return ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items())


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def kernel_series(sample: Sample, user: str, host: str) -> str:
    """Every series of one sample but the peaks, as text."""
    kernels = [k for k in sample.kernels if k.vram_magic]

    def who(kernel: KernelSample) -> dict[str, str]:
        return {"kernel_id": kernel.id, "notebook": kernel.notebook, "user": user, "host": host}

    def per_gpu(kernel: KernelSample, uuid: str) -> dict[str, str]:
        return {**who(kernel), "gpu_uuid": uuid}

    torch = [(k, uuid, figures) for k in kernels for uuid, figures in k.torch.items()]
    gpus = [
        ({"UUID": g.uuid, "Hostname": host, "gpu": g.index, "modelName": g.name or ""}, g)
        for g in sample.gpus
    ]
    parts = [
        family(
            "vram_magic_kernel_info",
            "gauge",
            "A kernel with vram_magic loaded (always 1)",
            ((who(k), 1) for k in kernels),
        ),
        family(
            "vram_magic_kernel_gpu_memory_bytes",
            "gauge",
            "GPU memory a kernel holds (source: nvml by its PID, or kernel: its own file, in "
            "containers where NVML lists host PIDs)",
            (
                ({**per_gpu(k, uuid), "source": source}, nbytes)
                for k in kernels
                for uuid, (nbytes, source) in k.held.items()
            ),
        ),
        family(
            "vram_magic_kernel_torch_allocated_bytes",
            "gauge",
            "Tensors alive in the kernel (torch's caching allocator)",
            ((per_gpu(k, uuid), f.allocated) for k, uuid, f in torch),
        ),
        family(
            "vram_magic_kernel_torch_reserved_bytes",
            "gauge",
            "GPU memory torch's caching allocator reserved in the kernel",
            ((per_gpu(k, uuid), f.reserved) for k, uuid, f in torch),
        ),
        family(
            "vram_magic_kernel_stranded_bytes",
            "gauge",
            "Reserved by torch but holding no tensor: %vram free gives it back",
            ((per_gpu(k, uuid), max(f.reserved - f.allocated, 0)) for k, uuid, f in torch),
        ),
        family(
            "vram_magic_kernel_oom_total",
            "counter",
            "Cells that ended in an out-of-memory error since vram_magic was loaded",
            ((who(k), k.ooms) for k in kernels),
        ),
        family(
            "vram_magic_kernel_idle_seconds",
            "gauge",
            "Seconds since the kernel was last busy (0 while busy)",
            ((who(k), k.idle_seconds) for k in kernels if k.idle_seconds is not None),
        ),
        family(
            "vram_magic_gpu_memory_total_bytes",
            "gauge",
            "GPU memory",
            ((labels, g.total) for labels, g in gpus if g.total is not None),
        ),
        family(
            "vram_magic_gpu_memory_used_bytes",
            "gauge",
            "GPU memory in use (NVML)",
            ((labels, g.used) for labels, g in gpus if g.used is not None),
        ),
        family(
            "vram_magic_gpu_other_users_memory_bytes",
            "gauge",
            "GPU memory held by processes of other users, one sum (no PIDs leave the server)",
            ((labels, g.other_users_bytes) for labels, g in gpus),
        ),
        family(
            "vram_magic_collection_seconds",
            "gauge",
            "How long the latest collection took",
            [({"host": host}, sample.seconds)],
        ),
    ]
    return "".join(parts)


def held_peak(kernel: KernelSample, uuid: str) -> int:
    """The most the kernel held on ``uuid`` as one sample saw it: now, or its recent peak."""
    return max(kernel.held.get(uuid, (0, ""))[0], kernel.peaks.get(uuid, 0))


class VramMetrics:
    """The latest sample and its text, the peaks since the last scrape, and the task that
    keeps them current."""

    def __init__(self, serverapp: Any, host: str, interval: float) -> None:
        self.serverapp = serverapp
        self.user = server_user()
        self.host = host
        self.interval = interval
        self.latest: Sample | None = None
        self.listeners: list[Any] = []  # called on the loop with each new sample
        self._text = ""
        self._peaks: dict[tuple[str, str], int] = {}
        # its own, yielding the GIL between lookups: only the worker thread uses it
        self._directory = ProcessDirectory(ttl=60.0, pause=0.0001)
        self._worker = ThreadPoolExecutor(1, thread_name_prefix="vram_magic-metrics")
        self._task: asyncio.Task | None = None

    def exposition(self) -> str:
        """The series for one scrape; the peaks start afresh."""
        peaks, self._peaks = self._peaks, {}
        if self.latest is None:
            return ""
        labelled = []
        for kernel in self.latest.kernels:
            if not kernel.vram_magic:
                continue
            who = {"kernel_id": kernel.id, "notebook": kernel.notebook}
            for uuid in {*kernel.held, *kernel.peaks}:
                value = peaks.get((kernel.id, uuid), held_peak(kernel, uuid))
                labels = {**who, "user": self.user, "host": self.host, "gpu_uuid": uuid}
                labelled.append((labels, value))
        return self._text + family(PEAK, "gauge", PEAK_HELP, labelled)

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
        sample, text = await loop.run_in_executor(self._worker, self._take, kernels)
        for kernel in sample.kernels:
            for uuid in {*kernel.held, *kernel.peaks}:
                key = (kernel.id, uuid)
                self._peaks[key] = max(self._peaks.get(key, 0), held_peak(kernel, uuid))
        self.latest, self._text = sample, text
        for listener in self.listeners:
            await listener(sample)
        return sample

    def _take(self, kernels: list) -> tuple[Sample, str]:
        sample = take_sample(kernels, self._directory)
        return sample, kernel_series(sample, self.user, self.host)

    async def _run(self) -> None:
        while True:
            try:
                await self.refresh()
            except asyncio.CancelledError:
                raise
            except Exception as error:  # one bad look must not end the series
                self.serverapp.log.warning("vram_magic: collecting the metrics failed: %s", error)
            await asyncio.sleep(self.interval)


_running: list[VramMetrics] = []


def keep_one(metrics: VramMetrics) -> None:
    """Stop an earlier server's collection in this process (tests start many servers)."""
    while _running:
        _running.pop().stop()
    _running.append(metrics)
