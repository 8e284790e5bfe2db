"""The JSON the sidebar reads: every GPU, and every kernel of this server with what it holds.

Pure functions of one machine reading, the kernels' facts and their own status files, so the
same code serves the endpoints, the tests and the benchmark.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from vram_magic.protocol.kernel_status import KernelStatus
from vram_magic.readings.machine import MachineDevice, MachineReading
from vram_magic.server.processes import ProcessDirectory

FRESH = 30.0  # seconds a status file counts as current when the kernel's PID is unknown


@dataclass(frozen=True)
class KernelFacts:
    """What the server knows of one kernel; ``status`` is the kernel's own file, if any."""

    id: str
    name: str
    execution_state: str
    pid: int | None
    path: str | None
    notebook: str | None
    status: KernelStatus | None
    connection: str = ""  # the kernel's connection file; its status file lies beside it
    last_activity: float | None = None  # epoch seconds of the kernel's last message


def devices_json(
    machine: MachineReading, directory: ProcessDirectory, kernel_pids: dict[int, str]
) -> dict[str, Any]:
    """Each GPU with this user's processes listed and every other process folded into one sum."""
    devices = []
    for device in machine.devices:
        mine: list[dict[str, Any]] = []
        others, other_bytes = 0, 0
        for process in device.processes:
            facts = directory.facts(process.pid)
            if facts.mine:
                mine.append(
                    {
                        "pid": process.pid,
                        "bytes": process.used,
                        "name": facts.name,
                        "kernel_id": directory.kernel_of(process.pid, kernel_pids),
                    }
                )
            else:
                others += 1
                other_bytes += process.used or 0
        usage = device.usage
        devices.append(
            {
                "index": device.nvml_index,
                "name": device.name,
                "uuid": device.uuid,
                "total": usage.total,
                "used": usage.used,
                "free": usage.free,
                "utilization": usage.utilization_percent,
                "processes": sorted(mine, key=lambda p: -(p["bytes"] or 0)),
                "other_users": {"count": others, "bytes": other_bytes},
                "problems": list(usage.problems),
            }
        )
    return {"devices": devices, "reason": machine.problem}


def kernels_json(
    machine: MachineReading, kernels: list[KernelFacts], directory: ProcessDirectory
) -> dict[str, Any]:
    """Each kernel, largest first: its bytes per GPU, from NVML by PID or else from its file."""
    kernel_pids = kernel_pid_map(kernels)
    by_kernel: dict[str, dict[str, int]] = {}
    for device in machine.devices:
        for process in device.processes:
            owner = directory.kernel_of(process.pid, kernel_pids)
            if owner is not None:
                held = by_kernel.setdefault(owner, {})
                held[device.uuid] = held.get(device.uuid, 0) + (process.used or 0)
    rows = [
        _kernel_row(kernel, machine.devices, by_kernel.get(kernel.id, {}), directory)
        for kernel in kernels
    ]
    rows.sort(key=lambda row: -row["bytes"])
    return {"kernels": rows}


def kernel_pid_map(kernels: list[KernelFacts]) -> dict[int, str]:
    return {k.pid: k.id for k in kernels if k.pid is not None}


def own_status(kernel: KernelFacts, directory: ProcessDirectory) -> KernelStatus | None:
    """The kernel's status file if it was written by this kernel's process (not by the process
    it replaced at a restart, which may have died without removing it)."""
    status = kernel.status
    if status is None:
        return None
    if kernel.pid is None:
        return status if time.time() - status.updated < FRESH else None
    return status if kernel.pid in directory.facts(status.pid).lineage else None


def _kernel_row(
    kernel: KernelFacts,
    devices: tuple[MachineDevice, ...],
    nvml_bytes: dict[str, int],
    directory: ProcessDirectory,
) -> dict[str, Any]:
    status = own_status(kernel, directory)
    index = {d.uuid: d.nvml_index for d in devices}
    held = [
        {"uuid": uuid, "index": index[uuid], "bytes": size, "source": "nvml"}
        for uuid, size in nvml_bytes.items()
    ]
    if status is not None:  # what NVML could not attribute (containers), from the kernel itself
        held += [
            {"uuid": d.uuid, "index": index.get(d.uuid or ""), "bytes": d.held, "source": "kernel"}
            for d in status.devices
            if d.held and d.uuid not in nvml_bytes
        ]
    return {
        "id": kernel.id,
        "name": kernel.name,
        "execution_state": kernel.execution_state,
        "pid": kernel.pid,
        "session": {"path": kernel.path, "name": kernel.notebook} if kernel.path else None,
        "devices": held,
        "bytes": sum(entry["bytes"] for entry in held),
        "vram_magic": _status_json(status) if status is not None else None,
    }


def _status_json(status: KernelStatus) -> dict[str, Any]:
    return {
        "updated": status.updated,
        "torch": [
            {"device": d.device, "uuid": d.uuid, "allocated": d.allocated, "reserved": d.reserved}
            for d in status.devices
        ],
        "top": [{"name": name, "bytes": size} for name, size in status.top],
        "limit": status.limit,
        "restart_request": status.restart,
    }
