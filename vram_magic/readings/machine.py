"""Every GPU on the machine as NVML sees it, for the Jupyter server rather than for one kernel.

The server serves kernels with different ``CUDA_VISIBLE_DEVICES``, so it reads all physical GPUs
(or their MIG slices), applies no visibility rules and never touches torch. ``read_usage`` is
also the per-device NVML read behind a kernel's own report.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vram_magic.readings.model import ProcessUsage
from vram_magic.readings.nvml import NvmlSession, default_session


@dataclass(frozen=True)
class DeviceUsage:
    """One NVML device's memory, utilization and processes (pid -> bytes; None: list failed)."""

    total: int | None
    used: int | None
    free: int | None
    utilization_percent: int | None
    by_pid: dict[int, int | None] | None
    problems: tuple[str, ...]


@dataclass(frozen=True)
class MachineDevice:
    nvml_index: str
    name: str | None
    uuid: str
    usage: DeviceUsage

    @property
    def processes(self) -> tuple[ProcessUsage, ...]:
        return tuple(ProcessUsage(pid, used) for pid, used in (self.usage.by_pid or {}).items())


@dataclass(frozen=True)
class MachineReading:
    devices: tuple[MachineDevice, ...]
    problem: str | None  # why there are no devices (no driver, no GPU), else None


def merge_processes(*lists: Iterable[Any] | None) -> dict[int, int | None]:
    """pid -> bytes over NVML's compute and graphics lists; a pid in both is counted once."""
    merged: dict[int, int | None] = {}
    for entries in lists:
        for entry in entries or ():
            used = entry.usedGpuMemory
            used = int(used) if used is not None else None
            if entry.pid not in merged or (used or 0) > (merged[entry.pid] or 0):
                merged[int(entry.pid)] = used
    return merged


def read_usage(session: NvmlSession, handle: Any) -> DeviceUsage:
    problems = []
    memory, problem = session.call("nvmlDeviceGetMemoryInfo", handle)
    if problem:
        problems.append(f"memory: {problem}")
    compute, problem = session.call("nvmlDeviceGetComputeRunningProcesses", handle)
    if problem:
        problems.append(f"process list: {problem}")
    graphics, _ = session.call("nvmlDeviceGetGraphicsRunningProcesses", handle)
    utilization, _ = session.call("nvmlDeviceGetUtilizationRates", handle)
    return DeviceUsage(
        total=int(memory.total) if memory is not None else None,
        used=int(memory.used) if memory is not None else None,
        free=int(memory.free) if memory is not None else None,
        utilization_percent=int(utilization.gpu) if utilization is not None else None,
        by_pid=merge_processes(compute, graphics) if compute is not None else None,
        problems=tuple(problems),
    )


def read_machine(nvml: NvmlSession | None = None) -> MachineReading:
    session = nvml or default_session()
    if session.module() is None:
        return MachineReading((), session.problem)
    devices = tuple(
        MachineDevice(leaf.nvml_index, leaf.name, leaf.uuid, read_usage(session, leaf.handle))
        for device in session.inventory()
        for leaf in (device.mig_slices if device.mig_enabled else (device,))
    )
    return MachineReading(devices, None if devices else "no NVIDIA GPU: NVML reports none")
