"""The live ``%vram`` panel's HTML: the gauges of one reading, and the largest holders.

The widgets, their subscription to the sampler and the buttons are the front door's
(ipython/panel); this module only renders.
"""

from __future__ import annotations

import time
from html import escape

from vram_magic.census.model import Census
from vram_magic.readings.model import Report
from vram_magic.render.gauge import (
    DEVICE_SEGMENTS,
    HOST_SEGMENTS,
    bar,
    device_segments,
    host_segments,
    legend,
)
from vram_magic.render.report_layout import device_label
from vram_magic.render.units import format_bytes

HOLDERS_SHOWN = 5
# a grid, so a label has its own column as wide as the longest one: it never runs into a bar
_GRID = (
    'style="display:grid;grid-template-columns:max-content 14rem max-content;'
    'column-gap:0.6em;row-gap:0.2em;align-items:center;margin:0.2em 0"'
)
_LABEL = 'class="vram-magic-gauge-label" style="white-space:nowrap"'
_FIGURES = 'class="vram-magic-gauge-figures" style="white-space:nowrap"'


def _used_of(used: int | None, total: int | None) -> str:
    return f"{format_bytes(used)} / {format_bytes(total)}"


def gauges_html(report: Report, interval: float, stamped: bool = True) -> str:
    """One gauge per GPU and one for host RAM; ``data-*`` attributes carry the integer bytes.
    The live panel leaves out the time of the reading (``stamped=False``): its timeline shows
    it, and the gauges' HTML then changes, and is sent and redrawn, only when a figure does."""
    rows = []
    for device in report.devices:
        label = escape(f"{device_label(device)} {device.name or ''}")
        problems = "".join(f" · {escape(p)}" for p in device.problems)
        rows.append(
            f'<div class="vram-magic-gauge" data-device="cuda:{device.cuda_index}" '
            f'data-used="{device.used}" data-this-process="{device.this_process}" '
            f'data-torch-allocated="{device.torch_allocated}" style="display:contents">'
            f"<span {_LABEL}>{label}</span>{bar(device.total, device_segments(device))}"
            f"<span {_FIGURES}>{_used_of(device.used, device.total)}{problems}</span></div>"
        )
    host = report.host
    host_used = (
        None if host.total is None or host.available is None else host.total - host.available
    )
    rows.append(
        f'<div class="vram-magic-gauge" data-device="host" data-rss="{host.process_rss}" '
        f'style="display:contents"><span {_LABEL}>host RAM</span>'
        f"{bar(host.total, host_segments(host))}<span {_FIGURES}>"
        f"{_used_of(host_used, host.total)} (this kernel {format_bytes(host.process_rss)})"
        "</span></div>"
    )
    stamp = time.strftime(" · %H:%M:%S", time.localtime(report.taken_at)) if stamped else ""
    title = f"<strong>VRAM</strong>{stamp} · every {interval:g} s"
    legends = (legend(DEVICE_SEGMENTS) if report.devices else "") + legend(HOST_SEGMENTS)
    problem = (
        f'<div class="vram-magic-no-gpu">{escape(report.gpu_problem)}</div>'
        if report.gpu_problem
        else ""
    )
    grid = f'<div class="vram-magic-gauges" {_GRID}>{"".join(rows)}</div>'
    # contained: a redraw twice a second lays out and paints this box, not the notebook
    body = f"{title}{problem}{grid}{legends}"
    return f'<div class="vram-magic-live" style="contain:content">{body}</div>'


def holders_html(census: Census) -> str:
    if not census.holders:
        return "<div>no live tensors</div>"
    items = "".join(
        f"<li>{escape(h.name)} · {escape(h.kind)} · {format_bytes(h.nbytes)}</li>"
        for h in census.holders[:HOLDERS_SHOWN]
    )
    stranded = f" · stranded {format_bytes(census.stranded_bytes)}" if census.stranded_bytes else ""
    return f"<div><strong>largest holders</strong>{stranded}<ol>{items}</ol></div>"
