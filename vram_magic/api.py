"""The Python twins of the magics: each returns plain dataclasses, nothing is printed."""

from __future__ import annotations

from vram_magic.readings.model import Report
from vram_magic.readings.report import read_report


def report() -> Report:
    """Read every visible GPU (NVML + torch's allocator) and host RAM, as a ``Report``."""
    return read_report()
