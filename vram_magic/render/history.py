"""``%vram history``: one row per cell, and a small inline SVG of each cell's peak and retained."""

from __future__ import annotations

from html import escape

from vram_magic.actions.history import CellRecord
from vram_magic.render.table import html_table, text_table
from vram_magic.render.units import format_bytes
from vram_magic.render.view import View

_BAR, _GAP, _HEIGHT = 14, 4, 90


def _devices(records: list[CellRecord]) -> list[str]:
    seen: dict[str, None] = {}
    for record in records:
        for memory in record.memory:
            seen.setdefault(memory.device, None)
    return sorted(seen, key=lambda device: (not device.startswith("cuda"), device))


def _signed(count: int) -> str:
    return ("+" if count > 0 else "") + format_bytes(count)


def _rows(records: list[CellRecord], devices: list[str]) -> tuple[tuple[str, ...], list]:
    header = ["cell", "code", "time"]
    for device in devices:
        header += [f"{device} after", f"{device} peak", f"{device} retained"]
    header.append("names that grew")
    rows = []
    for record in records:
        row = [str(record.execution_count or ""), record.source[:40], f"{record.seconds:.2f}s"]
        for device in devices:
            memory = record.on(device)
            if memory is None:
                row += ["", "", ""]
            else:
                row += [
                    format_bytes(memory.after),
                    format_bytes(memory.peak),
                    _signed(memory.retained),
                ]
        grew = ", ".join(f"{name} {format_bytes(size)}" for name, size in record.grew[:3])
        row.append((grew + (" (error)" if record.error else "")).strip() or record.error or "")
        rows.append(tuple(row))
    return tuple(header), rows


def history_svg(records: list[CellRecord], device: str) -> str:
    """Per cell: the peak above the starting point (light) and what the cell retained (dark)."""
    points = [(r.execution_count, m) for r in records if (m := r.on(device)) is not None]
    if not points:
        return ""
    scale = max(max(m.peak or m.after, m.after) for _, m in points) or 1
    width = max(len(points) * (_BAR + _GAP) + _GAP, 420)  # room for the caption
    bars = []
    for index, (cell, memory) in enumerate(points):
        x = _GAP + index * (_BAR + _GAP)
        for value, colour, label in (
            (memory.peak or memory.after, "#fab005", "peak"),
            (memory.after, "#e8590c", "after"),
        ):
            height = max(1.0, _HEIGHT * value / scale)
            bars.append(
                f'<rect x="{x}" y="{_HEIGHT - height:.1f}" width="{_BAR}" height="{height:.1f}" '
                f'fill="{colour}"><title>cell {cell} {label}: {format_bytes(value)}</title></rect>'
            )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{_HEIGHT + 14}" '
        f'role="img" aria-label="{escape(device)} per cell">{"".join(bars)}'
        f'<text x="{_GAP}" y="{_HEIGHT + 12}" font-size="10">{escape(device)}: peak (light), '
        f"after (dark), max {format_bytes(scale)}</text></svg>"
    )


def history_view(records: list[CellRecord]) -> View:
    if not records:
        message = "no cells recorded yet: history starts when vram_magic is loaded"
        return View(records, message, f"<p>{escape(message)}</p>")
    devices = _devices(records)
    header, rows = _rows(records, devices)
    title = f"VRAM history: {len(records)} cells"
    text = "\n".join([title, *text_table(header, rows, left=2)])
    chart = history_svg(records, devices[0]) if devices else ""
    table = html_table(header, rows)
    html = (
        f'<div class="vram-magic-history"><div><strong>{title}</strong></div>{chart}{table}</div>'
    )
    return View(records, text, html)
