"""Plain-text report for terminals and ``text/plain`` outputs."""

from __future__ import annotations

from vram_magic.readings.model import Report
from vram_magic.render.report_layout import DEVICE_COLUMNS, layout


def _table(header: tuple[str, ...], rows: tuple[tuple[str, ...], ...]) -> list[str]:
    widths = [max(len(cell) for cell in column) for column in zip(header, *rows, strict=True)]
    lines = []
    for cells in (header, *rows):
        first, *rest = cells
        lines.append(
            "  ".join(
                [
                    first.ljust(widths[0]),
                    *(c.rjust(w) for c, w in zip(rest, widths[1:], strict=True)),
                ]
            )
        )
    lines.insert(1, "  ".join("-" * w for w in widths))
    return lines


def render_text(report: Report, top: int = 3) -> str:
    parts = layout(report, top)
    lines = [parts.title]
    if parts.gpu_problem:
        lines.append(parts.gpu_problem)
    if parts.rows:
        lines.extend(_table(DEVICE_COLUMNS, parts.rows))
    lines.extend(parts.details)
    lines.extend([parts.host, parts.torch])
    lines.extend(f"note: {note}" for note in parts.notes)
    return "\n".join(lines)
