"""What bench_hooks.py and bench_census.py share: timing, a plain-text table, the exit code.

Kept apart from bench_readings.py, which predates it and has its own small helpers.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # the checkout's vram_magic even without an editable install


def seconds(function: Callable[[], object]) -> float:
    """Wall time of one call, in seconds."""
    start = time.perf_counter()
    function()
    return time.perf_counter() - start


def median(samples: Sequence[float]) -> float:
    """Median, or NaN for no samples (a row that could not run still prints)."""
    return statistics.median(samples) if samples else float("nan")


def mean(samples: Sequence[float]) -> float:
    return statistics.fmean(samples) if samples else float("nan")


def finite(value: float | None) -> float | None:
    """``value`` for JSON: NaN, which strict JSON lacks, becomes None."""
    return None if value is None or value != value else value


def number(value: float | None, digits: int = 3) -> str:
    """``value`` with ``digits`` decimals; ``-`` when there is none."""
    if finite(value) is None:
        return "-"
    return f"{value:.{digits}f}"


class Table:
    """Fixed-width columns; a header whose width is negative is left-aligned."""

    def __init__(self, columns: Sequence[tuple[str, int]]) -> None:
        self.columns = columns
        self.print_row([header for header, _ in columns])

    def print_row(self, cells: Sequence[str]) -> None:
        parts = [
            f"{cell:<{-width}}" if width < 0 else f"{cell:>{width}}"
            for cell, (_, width) in zip(cells, self.columns, strict=True)
        ]
        print(" ".join(parts).rstrip())


def summarise(
    summary: dict[str, tuple[float, str, bool]],
) -> tuple[list[dict[str, Any]], list[str]]:
    """Print one line per target (value, target, MISSED); the JSON rows and the missed names."""
    missed = []
    for name, (value, target, ok) in summary.items():
        print(f"{name}: {value:.2f} (target {target}){'' if ok else '  MISSED'}")
        if not ok:
            missed.append(name)
    results = [{"measure": k, "value": v[0], "target": v[1]} for k, v in summary.items()]
    return results, missed


def finish(
    setup: str, results: list[dict[str, Any]], missed: list[str], json_path: Path | None
) -> int:
    """Write the JSON if asked, print the verdict, and return the exit code (1 on a miss)."""
    if json_path:
        json_path.write_text(json.dumps({"setup": setup, "results": results}, indent=1))
    if missed:
        print("missed targets: " + ", ".join(missed))
        return 1
    print("all targets met")
    return 0
