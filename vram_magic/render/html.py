"""HTML report for notebooks: the same table as the text report, with one usage bar per GPU."""

from __future__ import annotations

from html import escape

from vram_magic.readings.model import DeviceReading, Report
from vram_magic.render.report_layout import DEVICE_COLUMNS, layout
from vram_magic.render.table import html_list, html_table
from vram_magic.render.units import format_bytes

# (label, colour) for each segment of the bar, in drawing order.
_SEGMENTS = (
    ("torch allocated", "#e8590c"),
    ("torch cache", "#fab005"),
    ("context+other", "#9c36b5"),
    ("other processes", "#1c7ed6"),
)


def _segment_bytes(device: DeviceReading) -> tuple[int, ...]:
    return (
        device.torch_allocated or 0,
        device.torch_cache or 0,
        device.process_other or 0,
        device.other_processes_total or 0,
    )


def _bar(device: DeviceReading) -> str:
    if not device.total:
        return ""
    spans = []
    for (label, colour), size in zip(_SEGMENTS, _segment_bytes(device), strict=True):
        if size > 0:
            width = 100 * size / device.total
            spans.append(
                f'<span title="{escape(label)}: {format_bytes(size)}" style="display:inline-block;'
                f'height:100%;width:{width:.2f}%;background:{colour}"></span>'
            )
    return (
        '<div style="width:14em;height:0.9em;border:1px solid #adb5bd;border-radius:3px;'
        f'overflow:hidden;white-space:nowrap;font-size:0">{"".join(spans)}</div>'
    )


def _legend() -> str:
    items = "".join(
        f'<span style="margin-right:1em"><span style="display:inline-block;width:0.8em;'
        f'height:0.8em;background:{colour}"></span> {escape(label)}</span>'
        for label, colour in _SEGMENTS
    )
    return f'<div style="font-size:85%;margin:0.2em 0">{items}</div>'


def render_html(report: Report, top: int = 3) -> str:
    parts = layout(report, top)
    html = [f'<div class="vram-magic-report"><strong>{escape(parts.title)}</strong>']
    if parts.gpu_problem:
        html.append(f"<p><strong>{escape(parts.gpu_problem)}</strong></p>")
    if parts.rows:
        rows = [
            (*row, _bar(device)) for row, device in zip(parts.rows, report.devices, strict=True)
        ]
        html.append(html_table((*DEVICE_COLUMNS, "usage"), rows, raw_last=True))
        html.append(_legend())
    sentences = [*parts.details, parts.host, parts.torch, *(f"note: {n}" for n in parts.notes)]
    html.append(html_list(sentences) + "</div>")
    return "".join(html)
