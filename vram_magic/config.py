"""User-adjustable behaviour, e.g. ``vram_magic.settings.clear_frames_on_oom = False``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Settings:
    clear_frames_on_oom: bool = True  # so the failed cell's exception does not strand its tensors
    oom_report: bool = True  # print the out-of-memory report after the traceback
    track_cells: bool = True  # record %vram history (cheap; see benchmarks/bench_hooks.py)
    # %vram snapshot's folder; None: $VRAM_MAGIC_SNAPSHOT_DIR, else <jupyter data dir>/vram_magic
    snapshot_dir: str | None = None
    # %vram restart: seconds to wait for JupyterLab's sidebar before the kernel exits by itself
    restart_wait: float = 10.0


settings = Settings()
