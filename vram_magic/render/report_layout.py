"""What a report says, as cells and sentences; ``text`` and ``html`` only decide how it looks."""

from __future__ import annotations

import time
from dataclasses import dataclass

from vram_magic.readings.model import DeviceReading, HostReading, Report, TorchReading
from vram_magic.render.units import format_bytes, format_percent

DEVICE_COLUMNS = (
    "GPU",
    "name",
    "total",
    "used",
    "free",
    "this kernel",
    "torch allocated",
    "torch cache",
    "context+other",
    "other processes",
)


@dataclass(frozen=True)
class ReportLayout:
    """A report cut into a title, one table row per device and the sentences beneath it."""

    title: str
    rows: tuple[tuple[str, ...], ...]
    gpu_problem: str | None
    details: tuple[str, ...]
    host: str
    torch: str
    notes: tuple[str, ...]


def device_label(device: DeviceReading) -> str:
    physical = f"MIG {device.nvml_index}" if device.is_mig else f"nvml {device.nvml_index}"
    return f"cuda:{device.cuda_index} ({physical})"


def device_cells(device: DeviceReading) -> tuple[str, ...]:
    others = device.other_processes
    if others is None:
        other_text = "n/a"
    elif device.other_processes_total is None:
        other_text = f"{len(others)} (sizes n/a)"
    else:
        other_text = f"{format_bytes(device.other_processes_total)} ({len(others)})"
    return (
        device_label(device),
        device.name or "unknown",
        format_bytes(device.total),
        f"{format_bytes(device.used)} {format_percent(device.used, device.total)}".strip(),
        format_bytes(device.free),
        format_bytes(device.this_process),
        format_bytes(device.torch_allocated),
        format_bytes(device.torch_cache),
        format_bytes(device.process_other),
        other_text,
    )


def device_details(device: DeviceReading, top: int) -> list[str]:
    """Per-device sentences: the largest other processes, and every field that could not be read."""
    lines = []
    others = device.other_processes or ()
    if others and top > 0:
        shown = ", ".join(f"pid {p.pid} {format_bytes(p.used)}" for p in others[:top])
        more = f", and {len(others) - top} more" if len(others) > top else ""
        lines.append(f"cuda:{device.cuda_index} other processes: {shown}{more}")
    lines.extend(f"cuda:{device.cuda_index} {problem}" for problem in device.problems)
    return lines


def host_sentence(host: HostReading) -> str:
    used = None if host.total is None or host.available is None else host.total - host.available
    return (
        f"Host RAM: this process {format_bytes(host.process_rss)} resident; "
        f"machine {format_bytes(used)} used of {format_bytes(host.total)} "
        f"({format_bytes(host.available)} available)"
    )


def torch_sentence(torch: TorchReading) -> str:
    if not torch.imported:
        return "torch: not imported yet (torch figures appear once the notebook imports torch)"
    build = f"CUDA {torch.cuda_build} build" if torch.cuda_build else "CPU-only build"
    state = "CUDA initialised" if torch.cuda_initialized else "CUDA not initialised in this kernel"
    mps = f"; MPS allocated {format_bytes(torch.mps_allocated)}" if torch.mps_allocated else ""
    return f"torch {torch.version} ({build}); {state}{mps}"


def layout(report: Report, top: int = 3) -> ReportLayout:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(report.taken_at))
    driver = f" · driver {report.driver_version}" if report.driver_version else ""
    visible = report.cuda_visible_devices
    mask = f" · CUDA_VISIBLE_DEVICES={visible}" if visible is not None else ""
    return ReportLayout(
        title=f"VRAM report · {stamp}{driver}{mask}",
        rows=tuple(device_cells(d) for d in report.devices),
        gpu_problem=report.gpu_problem,
        details=tuple(line for d in report.devices for line in device_details(d, top)),
        host=host_sentence(report.host),
        torch=torch_sentence(report.torch),
        notes=report.notes,
    )
