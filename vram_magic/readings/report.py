"""One full reading: NVML per visible device, torch's allocator, host RAM -> ``Report``."""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from types import ModuleType

from vram_magic.readings.host import read_host
from vram_magic.readings.machine import read_usage
from vram_magic.readings.model import DeviceReading, ProcessUsage, Report
from vram_magic.readings.nvml import NO_GPU, NvmlDevice, NvmlSession, default_session
from vram_magic.readings.torch_stats import (
    CudaDeviceFacts,
    allocator_bytes,
    cuda_devices,
    imported_torch,
    read_torch,
)
from vram_magic.readings.visible import match_torch_uuids, order_note, select_visible


def read_report(
    nvml: NvmlSession | None = None, environ: Mapping[str, str] | None = None
) -> Report:
    """Read every GPU this process can see, with this kernel's share split out, plus host RAM."""
    session = nvml or default_session()
    env = os.environ if environ is None else environ
    torch = imported_torch()
    facts = cuda_devices(torch)
    cuda_visible_devices = env.get("CUDA_VISIBLE_DEVICES")
    notes: list[str] = []
    gpu_problem: str | None = None

    if session.module() is None:
        devices = [
            _from_torch_only(torch, i, fact, session.problem) for i, fact in enumerate(facts or [])
        ]
        if devices:
            notes.append(f"{session.problem}; the figures below come from torch alone")
        else:
            gpu_problem = session.problem
    else:
        pairs = _pair_devices(session, facts, cuda_visible_devices, env, notes)
        pid = os.getpid()
        devices = [
            _read_device(session, torch, index, device, pid)
            if device is not None
            else _from_torch_only(torch, index, facts[index], "NVML knows no device with this UUID")  # type: ignore[index]
            for index, device in pairs
        ]
        if not devices:
            gpu_problem = _why_none(session, cuda_visible_devices)

    return Report(
        devices=tuple(devices),
        host=read_host(),
        torch=read_torch(torch),
        taken_at=time.time(),
        gpu_problem=gpu_problem,
        driver_version=session.driver_version() if session.module() is not None else None,
        cuda_visible_devices=cuda_visible_devices,
        notes=tuple(notes),
    )


def _pair_devices(
    session: NvmlSession,
    facts: list[CudaDeviceFacts] | None,
    cuda_visible_devices: str | None,
    env: Mapping[str, str],
    notes: list[str],
) -> list[tuple[int, NvmlDevice | None]]:
    """(cuda index, NVML device) pairs: exact by UUID once torch has CUDA up, else by the rules."""
    inventory = session.inventory()
    if facts is not None:
        return list(enumerate(match_torch_uuids(inventory, [fact.uuid for fact in facts])))
    visible = select_visible(inventory, cuda_visible_devices)
    note = order_note(visible, env.get("CUDA_DEVICE_ORDER"))
    if note:
        notes.append(note)
    return list(enumerate(visible))


def _why_none(session: NvmlSession, cuda_visible_devices: str | None) -> str:
    if not session.inventory():
        return f"{NO_GPU}: NVML reports no GPU on this machine"
    return f"{NO_GPU}: CUDA_VISIBLE_DEVICES={cuda_visible_devices!r} hides every GPU"


def _read_device(
    session: NvmlSession, torch: ModuleType | None, cuda_index: int, device: NvmlDevice, pid: int
) -> DeviceReading:
    usage = read_usage(session, device.handle)
    problems = list(usage.problems)
    allocated, reserved = allocator_bytes(torch, cuda_index)

    this_process: int | None = None
    others: tuple[ProcessUsage, ...] | None = None
    if usage.by_pid is not None:
        by_pid = dict(usage.by_pid)
        listed = pid in by_pid
        this_process = by_pid.pop(pid, 0)
        if not listed and reserved:
            this_process = None
            problems.append(
                "NVML lists no process with this kernel's PID (a container's PID namespace?); "
                "this kernel's share is torch's figure alone"
            )
        others = tuple(
            sorted(
                (ProcessUsage(p, used) for p, used in by_pid.items()),
                key=lambda process: process.used or 0,
                reverse=True,
            )
        )
    return DeviceReading(
        cuda_index=cuda_index,
        nvml_index=device.nvml_index,
        name=device.name,
        uuid=device.uuid,
        total=usage.total,
        used=usage.used,
        free=usage.free,
        this_process=this_process,
        torch_allocated=allocated,
        torch_reserved=reserved,
        other_processes=others,
        utilization_percent=usage.utilization_percent,
        is_mig=device.is_mig,
        problems=tuple(problems),
    )


def _from_torch_only(
    torch: ModuleType | None, cuda_index: int, fact: CudaDeviceFacts, why: str | None
) -> DeviceReading:
    """A device NVML cannot describe (Jetson, a driver without NVML): torch's figures alone."""
    allocated, reserved = allocator_bytes(torch, cuda_index)
    return DeviceReading(
        cuda_index=cuda_index,
        nvml_index="?",
        name=fact.name,
        uuid=fact.uuid,
        total=fact.total,
        used=None,
        free=None,
        this_process=None,
        torch_allocated=allocated,
        torch_reserved=reserved,
        other_processes=None,
        problems=(f"NVML: {why}",) if why else (),
    )
