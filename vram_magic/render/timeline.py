"""The live timeline's data: one compact sample per reading, one mark per cell.

The timeline widget (ipython/timeline) sends these to the browser, which draws them; they are
small JSON-able dicts so one tick costs one short message, never the whole history. Bytes stay
integers; the browser formats them.
"""

from __future__ import annotations

from typing import Any

from vram_magic.actions.history import CellRecord
from vram_magic.readings.cell_memory import HOST
from vram_magic.readings.model import Report
from vram_magic.render.gauge import DEVICE_SEGMENTS, HOST_SEGMENTS, device_segments
from vram_magic.render.report_layout import device_label

# what the browser stacks, bottom up, and in which colour: the gauges' own order and palette
SERIES = {
    "device": [{"label": label, "colour": colour} for label, colour in DEVICE_SEGMENTS],
    "host": [{"label": label, "colour": colour} for label, colour in HOST_SEGMENTS[:1]],
}


def timeline_sample(report: Report) -> dict[str, Any]:
    """Per GPU its stacked parts and NVML's used (the line); host RAM: this kernel's RSS."""
    charts = []
    for device in report.devices:
        parts = [size for _, _, size in device_segments(device)]
        charts.append(
            {
                "id": f"cuda:{device.cuda_index}",
                "kind": "device",
                "label": f"{device_label(device)} {device.name or ''}".strip(),
                "total": device.total,
                "parts": parts,
                "line": device.used,
            }
        )
    host = report.host
    charts.append(
        {
            "id": "host",
            "kind": "host",
            "label": "host RAM (this kernel)",
            "total": host.total,
            "parts": [host.process_rss or 0],
            "line": None,
        }
    )
    return {"t": report.taken_at, "charts": charts}


def _chart_of(device: str) -> str | None:
    """Which chart a cell's memory mark belongs to: torch's ``cuda:N`` and host RAM."""
    if device == HOST:
        return "host"
    return device if device.startswith("cuda:") and " " not in device else None


def cell_mark(record: CellRecord) -> dict[str, Any]:
    """A finished cell: where it starts and ends, its first line, and per chart its numbers."""
    memory = {}
    for mark in record.memory:
        chart = _chart_of(mark.device)
        if chart is not None:
            memory[chart] = {"before": mark.before, "after": mark.after, "peak": mark.peak}
    error = record.error
    return {
        "cell": record.execution_count,
        "start": record.started_at,
        "end": record.started_at + record.seconds,
        "source": record.source,
        "memory": memory,
        "error": error,
        "oom": error is not None and "OutOfMemory" in error,
    }


def running_mark(source: str, started_at: float) -> dict[str, Any]:
    """A cell that has just started: its mark shows before its numbers are known. Its
    execution count too is known only at its end (IPython counts it at different moments
    across versions)."""
    first = source.strip().splitlines()[0][:80] if source.strip() else ""
    return {
        "cell": None,
        "start": started_at,
        "end": None,
        "source": first,
        "memory": {},
        "error": None,
        "oom": False,
    }
