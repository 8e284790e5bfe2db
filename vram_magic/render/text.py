"""Plain-text report for terminals and ``text/plain`` outputs."""

from __future__ import annotations

from vram_magic.readings.model import Report
from vram_magic.render.report_layout import DEVICE_COLUMNS, layout
from vram_magic.render.table import text_table


def render_text(report: Report, top: int = 3) -> str:
    parts = layout(report, top)
    lines = [parts.title]
    if parts.gpu_problem:
        lines.append(parts.gpu_problem)
    if parts.rows:
        lines.extend(text_table(DEVICE_COLUMNS, list(parts.rows)))
    lines.extend(parts.details)
    lines.extend([parts.host, parts.torch])
    lines.extend(f"note: {note}" for note in parts.notes)
    return "\n".join(lines)
