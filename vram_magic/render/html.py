"""HTML report for notebooks: the same table as the text report, with one usage bar per GPU."""

from __future__ import annotations

from html import escape

from vram_magic.readings.model import Report
from vram_magic.render.gauge import DEVICE_SEGMENTS, bar, device_segments, legend
from vram_magic.render.report_layout import DEVICE_COLUMNS, layout
from vram_magic.render.table import html_list, html_table


def render_html(report: Report, top: int = 3) -> str:
    parts = layout(report, top)
    html = [f'<div class="vram-magic-report"><strong>{escape(parts.title)}</strong>']
    if parts.gpu_problem:
        html.append(f"<p><strong>{escape(parts.gpu_problem)}</strong></p>")
    if parts.rows:
        rows = [
            (*row, bar(device.total, device_segments(device), width="8rem"))
            for row, device in zip(parts.rows, report.devices, strict=True)
        ]
        table = html_table((*DEVICE_COLUMNS, "usage"), rows, raw_last=True, nowrap=True)
        html.append(f'<div style="overflow-x:auto">{table}</div>')
        html.append(legend(DEVICE_SEGMENTS))
    sentences = [*parts.details, parts.host, parts.torch, *(f"note: {n}" for n in parts.notes)]
    html.append(html_list(sentences) + "</div>")
    return "".join(html)
