"""Host RAM beside VRAM: a model that does not fit the GPU often ends up filling RAM instead."""

from __future__ import annotations

import functools
from typing import Any

from vram_magic.readings.model import HostReading


@functools.cache
def _this_process() -> Any:
    import psutil

    return psutil.Process()


def read_host() -> HostReading:
    """This process's resident set and the machine's RAM; fields psutil cannot read stay None."""
    try:
        import psutil

        memory = psutil.virtual_memory()
        total: int | None = int(memory.total)
        available: int | None = int(memory.available)
    except Exception:
        total = available = None
    try:
        rss = int(_this_process().memory_info().rss)
    except Exception:
        rss = None
    return HostReading(process_rss=rss, total=total, available=available)
