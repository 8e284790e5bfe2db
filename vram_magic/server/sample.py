"""One look at the machine and the server's kernels, taken off the event loop.

The /metrics series and the idle culler both read it: per kernel what it holds per GPU (NVML by
PID, else the kernel's own file), its torch figures, recent peak, out-of-memory count and idle
time; per GPU the totals and the other users' folded sum.
"""

from __future__ import annotations

import getpass
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from vram_magic.readings.machine import read_machine
from vram_magic.server.kernels import with_status
from vram_magic.server.processes import ProcessDirectory
from vram_magic.server.usage import (
    KernelFacts,
    devices_json,
    kernel_pid_map,
    kernels_json,
    own_status,
)

T = TypeVar("T")


@dataclass(frozen=True)
class TorchFigures:
    allocated: int
    reserved: int


@dataclass(frozen=True)
class KernelSample:
    """``vram_magic``: the kernel has vram_magic loaded (its own file is current); only such
    kernels get series. ``held``: GPU uuid -> (bytes, source)."""

    id: str
    notebook: str
    execution_state: str
    idle_seconds: float | None
    vram_magic: bool
    held: dict[str, tuple[int, str]] = field(default_factory=dict)
    torch: dict[str, TorchFigures] = field(default_factory=dict)
    peaks: dict[str, int] = field(default_factory=dict)  # uuid -> the kernel's recent peak
    ooms: int = 0

    @property
    def nbytes(self) -> int:
        return sum(nbytes for nbytes, _ in self.held.values())


@dataclass(frozen=True)
class GpuSample:
    uuid: str
    index: str
    name: str | None
    total: int | None
    used: int | None
    other_users: int
    other_users_bytes: int


@dataclass(frozen=True)
class Sample:
    taken_at: float
    seconds: float  # how long taking it took
    kernels: tuple[KernelSample, ...]
    gpus: tuple[GpuSample, ...]


def server_user() -> str:
    """The user every series is labelled with: JupyterHub's name for it, else the OS user's."""
    return os.environ.get("JUPYTERHUB_USER") or getpass.getuser()


def take_sample(kernels: list[KernelFacts], directory: ProcessDirectory) -> Sample:
    """Read NVML, /proc and the kernels' status files (slow: call it from a worker thread; it
    pauses as often as ``directory`` does, see ``ProcessDirectory``)."""
    started = time.perf_counter()
    now = time.time()
    facts = [with_status(kernel) for kernel in _pausing(kernels, directory.pause)]
    machine = read_machine()
    rows = {row["id"]: row for row in kernels_json(machine, facts, directory)["kernels"]}
    samples = tuple(
        _kernel_sample(k, rows[k.id], directory, now) for k in _pausing(facts, directory.pause)
    )
    gpus = tuple(
        GpuSample(
            uuid=gpu["uuid"],
            index=str(gpu["index"]),
            name=gpu["name"],
            total=gpu["total"],
            used=gpu["used"],
            other_users=gpu["other_users"]["count"],
            other_users_bytes=gpu["other_users"]["bytes"],
        )
        for gpu in devices_json(machine, directory, kernel_pid_map(facts))["devices"]
        if gpu["uuid"]
    )
    return Sample(now, time.perf_counter() - started, samples, gpus)


def _pausing(items: list[T], pause: float, every: int = 10) -> Iterator[T]:
    """``items``, sleeping ``pause`` seconds after every ``every`` of them (GIL for the loop)."""
    for index, item in enumerate(items):
        yield item
        if pause and index % every == every - 1:
            time.sleep(pause)


def _kernel_sample(
    kernel: KernelFacts, row: dict, directory: ProcessDirectory, now: float
) -> KernelSample:
    status = own_status(kernel, directory)
    held = {d["uuid"]: (d["bytes"], d["source"]) for d in row["devices"] if d["uuid"]}
    idle = None
    if kernel.execution_state == "busy":
        idle = 0.0
    elif kernel.last_activity is not None:
        idle = max(now - kernel.last_activity, 0.0)
    devices = status.devices if status is not None else ()
    return KernelSample(
        id=kernel.id,
        notebook=kernel.path or "",
        execution_state=kernel.execution_state,
        idle_seconds=idle,
        vram_magic=status is not None,
        held=held,
        torch={d.uuid: TorchFigures(d.allocated, d.reserved) for d in devices if d.uuid},
        peaks={d.uuid: d.peak for d in devices if d.uuid and d.peak is not None},
        ooms=status.ooms if status is not None else 0,
    )
