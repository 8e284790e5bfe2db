"""``%vram history``: one row per cell, and an inline SVG chart of each cell's after and peak.

The chart is plain SVG inside the HTML, so a static export or a notebook rendered on a code host
still shows it. It charts the device where memory changed most: a GPU's torch allocator when
there is one, host RAM without. After is a solid bar, the peak an outlined box above it with a
tick at its top, so the two differ by shape and not only by shade.
"""

from __future__ import annotations

from html import escape

from vram_magic.actions.history import CellMemory, CellRecord
from vram_magic.readings.cell_memory import HOST
from vram_magic.render.table import text_table
from vram_magic.render.units import format_bytes
from vram_magic.render.view import View

_LEFT, _TOP, _PLOT, _BOTTOM = 62, 16, 110, 34  # margins and plot height, px
_MAX_BAR, _MIN_WIDTH = 22, 460
_AFTER, _OOM = "#e8590c", "#e03131"
_TEXT = 'fill="currentColor" font-size="10"'
CODE_SHOWN = 32


def _devices(records: list[CellRecord]) -> list[str]:
    seen: dict[str, None] = {}
    for record in records:
        for memory in record.memory:
            seen.setdefault(memory.device, None)
    return sorted(seen, key=lambda device: (not device.startswith("cuda"), device))


def _change(records: list[CellRecord], device: str) -> int:
    return sum(
        max(abs(m.retained), (m.peak or m.after) - m.before)
        for r in records
        if (m := r.on(device)) is not None
    )


def chart_device(records: list[CellRecord]) -> str | None:
    """The GPU (torch's ``cuda:N``) whose memory changed most; host RAM when there is none.
    NVML's ``cuda:N process`` line is a fallback only: without torch on the GPU it is flat."""
    devices = _devices(records)
    gpus = [d for d in devices if d.startswith("cuda:") and " " not in d]
    if gpus:
        return max(gpus, key=lambda device: _change(records, device))
    if HOST in devices:
        return HOST
    return devices[0] if devices else None


def _signed(count: int) -> str:
    return ("+" if count > 0 else "") + format_bytes(count)


def _grew(record: CellRecord) -> str:
    grew = ", ".join(f"{name} {format_bytes(size)}" for name, size in record.grew[:3])
    if record.error:
        grew = f"{grew} ({record.error})" if grew else record.error
    return grew


def _full_rows(records: list[CellRecord], devices: list[str]) -> tuple[tuple[str, ...], list]:
    """Every device's after, peak and retained: the terminal's table."""
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
        row.append(_grew(record))
        rows.append(tuple(row))
    return tuple(header), rows


def _memory_line(memory: CellMemory) -> str:
    return (
        f"{memory.device}: after {format_bytes(memory.after)} ({_signed(memory.retained)}), "
        f"peak {format_bytes(memory.peak)}"
    )


def _detail(record: CellRecord) -> str:
    """What the narrow table leaves out: the cell's whole first line and every device."""
    return "\n".join([record.source, *(_memory_line(m) for m in record.memory)])


def _narrow_table(records: list[CellRecord], device: str) -> str:
    """One device's after, peak and change; the rest in each row's tooltip."""
    left = ("code", "names that grew")
    head = "".join(
        f'<th style="text-align:left">{title}</th>' if title in left else f"<th>{title}</th>"
        for title in ("cell", "code", "time", "after", "peak", "change", "names that grew")
    )
    body = []
    for record in records:
        memory = record.on(device)
        figures = (
            (format_bytes(memory.after), format_bytes(memory.peak), _signed(memory.retained))
            if memory is not None
            else ("", "", "")
        )
        code = record.source[:CODE_SHOWN] + ("…" if len(record.source) > CODE_SHOWN else "")
        cells = (str(record.execution_count or ""), code, f"{record.seconds:.2f}s", *figures)
        tds = "".join(
            f'<td style="text-align:left">{escape(cell)}</td>'
            if index == 1
            else f"<td>{escape(cell)}</td>"
            for index, cell in enumerate(cells)
        )
        grew = f'<td style="text-align:left">{escape(_grew(record))}</td>'
        body.append(f'<tr title="{escape(_detail(record))}">{tds}{grew}</tr>')
    return (
        f'<table><caption style="caption-side:top;text-align:left">{escape(device)}; '
        "the other devices in each row's tooltip</caption>"
        f"<thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
    )


def _scale(top: int, right: int) -> str:
    lines = []
    for share in (0.0, 0.5, 1.0):
        y = _TOP + _PLOT * (1 - share)
        lines.append(
            f'<line x1="{_LEFT - 3}" x2="{right}" y1="{y:.1f}" y2="{y:.1f}" '
            f'stroke="currentColor" stroke-opacity="0.2"/>'
            f'<text x="{_LEFT - 6}" y="{y + 3:.1f}" text-anchor="end" {_TEXT}>'
            f"{format_bytes(int(top * share))}</text>"
        )
    return "".join(lines)


def history_svg(records: list[CellRecord], device: str) -> str:
    """Per cell on ``device``: after (solid) and peak (an outline above, ticked at its top)."""
    points = [(r, m) for r in records if (m := r.on(device)) is not None]
    if not points:
        return ""
    top = max(max(m.peak or m.after, m.after) for _, m in points) or 1
    step = max(min(_MAX_BAR + 6, 600 // len(points)), 8)
    bar = step - max(2, step // 4)
    right = _LEFT + step * len(points)
    width = max(right + 8, _MIN_WIDTH)
    height = _TOP + _PLOT + _BOTTOM

    def y(value: int) -> float:
        return _TOP + _PLOT * (1 - value / top)

    shapes = []
    for index, (record, memory) in enumerate(points):
        x = _LEFT + index * step + (step - bar) / 2
        cell = record.execution_count
        peak = max(memory.peak or memory.after, memory.after)
        failed = record.error is not None
        colour = _OOM if failed else _AFTER
        after_height = max(1.0, _PLOT * memory.after / top)
        title = escape(f"cell {cell}: {_memory_line(memory)}\n{record.source}")
        shapes.append(
            f'<g class="vram-magic-history-cell" data-cell="{cell or ""}"><title>{title}</title>'
            f'<rect class="after" x="{x:.1f}" y="{_TOP + _PLOT - after_height:.1f}" '
            f'width="{bar}" height="{after_height:.1f}" fill="{colour}"/>'
        )
        if memory.peak is not None and peak > memory.after:
            shapes.append(
                f'<rect class="peak" x="{x + 0.5:.1f}" y="{y(peak):.1f}" width="{bar - 1}" '
                f'height="{y(memory.after) - y(peak):.1f}" fill="none" stroke="{_AFTER}" '
                f'stroke-dasharray="3 2"/>'
            )
        if memory.peak is not None:
            shapes.append(
                f'<line class="peak-tick" x1="{x - 1:.1f}" x2="{x + bar + 1:.1f}" '
                f'y1="{y(peak):.1f}" y2="{y(peak):.1f}" stroke="currentColor" stroke-width="2"/>'
            )
        label = f"{cell}" if cell is not None else "?"
        shapes.append(
            f'<text x="{x + bar / 2:.1f}" y="{_TOP + _PLOT + 12}" text-anchor="middle" '
            f"{_TEXT}>{label}</text>"
        )
        if record.error is not None:
            shapes.append(
                f'<text x="{x + bar / 2:.1f}" y="{y(peak) - 4:.1f}" text-anchor="middle" '
                f'fill="{_OOM}" font-size="9">{"OOM" if "OutOfMemory" in record.error else "!"}'
                "</text>"
            )
        shapes.append("</g>")
    legend_y = height - 6
    legend = (
        f'<rect x="{_LEFT}" y="{legend_y - 8}" width="10" height="9" fill="{_AFTER}"/>'
        f'<text x="{_LEFT + 14}" y="{legend_y}" {_TEXT}>after the cell</text>'
        f'<rect x="{_LEFT + 96}" y="{legend_y - 8}" width="10" height="9" fill="none" '
        f'stroke="{_AFTER}" stroke-dasharray="3 2"/>'
        f'<line x1="{_LEFT + 95}" x2="{_LEFT + 107}" y1="{legend_y - 8}" y2="{legend_y - 8}" '
        f'stroke="currentColor" stroke-width="2"/>'
        f'<text x="{_LEFT + 110}" y="{legend_y}" {_TEXT}>peak during it</text>'
        f'<text x="{_LEFT + 196}" y="{legend_y}" {_TEXT}>{escape(device)} · cell number below '
        "each bar</text>"
    )
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="vram-magic-history-chart" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" role="img" '
        f'style="color:inherit" aria-label="{escape(device)} per cell">'
        f"{_scale(top, right)}{''.join(shapes)}{legend}</svg>"
    )


def history_view(records: list[CellRecord]) -> View:
    if not records:
        message = "no cells recorded yet: history starts when vram_magic is loaded"
        return View(records, message, f"<p>{escape(message)}</p>")
    devices = _devices(records)
    header, rows = _full_rows(records, devices)
    title = f"VRAM history: {len(records)} cells"
    text = "\n".join([title, *text_table(header, rows, left=2)])
    device = chart_device(records)
    chart = history_svg(records, device) if device else ""
    table = _narrow_table(records, device) if device else ""
    html = (
        f'<div class="vram-magic-history"><div><strong>{title}</strong></div>{chart}{table}</div>'
    )
    return View(records, text, html)
