"""Cheap per-cell memory marks: torch's allocator on each CUDA device, and this process's RSS.

Peaks are reset at the start of a cell so the mark at its end is the cell's own peak: torch's
``max_memory_allocated`` on CUDA, and Linux's peak RSS (``VmHWM``, reset through
``/proc/self/clear_refs``) for host memory. Where a peak cannot be reset it is reported as unknown
rather than as the process's lifetime peak.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from vram_magic.readings.torch_stats import cuda_ready, imported_torch

_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
HOST = "host RAM"


@dataclass(frozen=True)
class MemoryMark:
    device: str
    current: int
    peak: int | None


def _reset_host_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _host_mark(peak_was_reset: bool) -> MemoryMark | None:
    try:
        with open("/proc/self/statm") as handle:
            rss = int(handle.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None
    peak = None
    if peak_was_reset:
        try:
            with open("/proc/self/status") as handle:
                for line in handle:
                    if line.startswith("VmHWM:"):
                        peak = int(line.split()[1]) * 1024
                        break
        except (OSError, ValueError):
            peak = None
    return MemoryMark(HOST, rss, max(peak, rss) if peak is not None else None)


class CellMarks:
    """Start marks at the beginning of a cell; read them at its end."""

    def __init__(self) -> None:
        self._host_peak_reset = False

    def start(self) -> tuple[MemoryMark, ...]:
        torch = imported_torch()
        if cuda_ready(torch):
            assert torch is not None
            for index in range(torch.cuda.device_count()):
                torch.cuda.reset_peak_memory_stats(index)
        self._host_peak_reset = _reset_host_peak()
        return self.read(with_peaks=False)

    def read(self, with_peaks: bool = True) -> tuple[MemoryMark, ...]:
        marks = []
        torch = imported_torch()
        if cuda_ready(torch):
            assert torch is not None
            for index in range(torch.cuda.device_count()):
                peak = int(torch.cuda.max_memory_allocated(index)) if with_peaks else None
                current = int(torch.cuda.memory_allocated(index))
                marks.append(MemoryMark(f"cuda:{index}", current, peak))
        host = _host_mark(self._host_peak_reset and with_peaks)
        if host is not None:
            marks.append(host)
        return tuple(marks)
