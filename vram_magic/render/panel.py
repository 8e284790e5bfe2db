"""The live ``%vram`` panel, built from ipywidgets 8 stock widgets (HTML and Button).

The sampler thread pushes each reading into the gauges; the notebook's cells refresh the holders
and the per-cell chart; the buttons call the same actions as the magics. In a static export
(nbconvert HTML) the last snapshot stays readable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from html import escape
from typing import Any

from vram_magic.actions.free import FreeResult
from vram_magic.actions.history import CellRecord
from vram_magic.census.model import Census
from vram_magic.readings.model import Report
from vram_magic.readings.sampler import Sampler
from vram_magic.render.actions import free_view
from vram_magic.render.gauge import (
    DEVICE_SEGMENTS,
    HOST_SEGMENTS,
    bar,
    device_segments,
    host_segments,
    legend,
)
from vram_magic.render.history import history_svg
from vram_magic.render.report_layout import device_label
from vram_magic.render.units import format_bytes
from vram_magic.render.view import View

HOLDERS_SHOWN = 5
_ROW = 'style="margin:0.15em 0;white-space:nowrap"'


def _used_of(used: int | None, total: int | None) -> str:
    return f"{format_bytes(used)} / {format_bytes(total)}"


def gauges_html(report: Report, interval: float) -> str:
    """One gauge per GPU and one for host RAM; ``data-*`` attributes carry the integer bytes."""
    rows = []
    if report.gpu_problem:
        rows.append(f'<div class="vram-magic-no-gpu" {_ROW}>{escape(report.gpu_problem)}</div>')
    for device in report.devices:
        label = escape(f"{device_label(device)} {device.name or ''}")
        problems = "".join(f" · {escape(p)}" for p in device.problems)
        rows.append(
            f'<div class="vram-magic-gauge" data-device="cuda:{device.cuda_index}" '
            f'data-used="{device.used}" data-this-process="{device.this_process}" '
            f'data-torch-allocated="{device.torch_allocated}" {_ROW}>'
            f'<span style="display:inline-block;width:17em">{label}</span>'
            f"{bar(device.total, device_segments(device))} "
            f"{_used_of(device.used, device.total)}{problems}</div>"
        )
    host = report.host
    host_used = (
        None if host.total is None or host.available is None else host.total - host.available
    )
    rows.append(
        f'<div class="vram-magic-gauge" data-device="host" data-rss="{host.process_rss}" {_ROW}>'
        f'<span style="display:inline-block;width:17em">host RAM</span>'
        f"{bar(host.total, host_segments(host))} {_used_of(host_used, host.total)} "
        f"(this kernel {format_bytes(host.process_rss)})</div>"
    )
    tenths = int(report.taken_at * 10) % 10
    stamp = time.strftime("%H:%M:%S", time.localtime(report.taken_at)) + f".{tenths}"
    title = f"<strong>VRAM</strong> · {stamp} · every {interval:g} s"
    legends = (legend(DEVICE_SEGMENTS) if report.devices else "") + legend(HOST_SEGMENTS)
    return f'<div class="vram-magic-live">{title}{"".join(rows)}{legends}</div>'


def holders_html(census: Census) -> str:
    if not census.holders:
        return "<div>no live tensors</div>"
    items = "".join(
        f"<li>{escape(h.name)} · {escape(h.kind)} · {format_bytes(h.nbytes)}</li>"
        for h in census.holders[:HOLDERS_SHOWN]
    )
    stranded = f" · stranded {format_bytes(census.stranded_bytes)}" if census.stranded_bytes else ""
    return f"<div><strong>largest holders</strong>{stranded}<ol>{items}</ol></div>"


class LivePanel:
    """One open panel: widgets, and its subscription to the shared sampler."""

    def __init__(
        self,
        sampler: Sampler,
        free: Callable[[], FreeResult],
        restart: Callable[[Callable[[object], None]], None],
        on_close: Callable[[LivePanel], None],
    ) -> None:
        import ipywidgets as widgets

        self._sampler, self._free, self._on_close = sampler, free, on_close
        self._restart = restart
        self.gauges = widgets.HTML()
        self.holders = widgets.HTML()
        self.chart = widgets.HTML()
        self.result = widgets.HTML()
        free_button = widgets.Button(
            description="Free stranded", tooltip="what %vram free does: release hidden holders"
        )
        restart_button = widgets.Button(
            description="Restart & restore",
            tooltip="what %vram restart does: snapshot, restart the kernel, restore",
        )
        close_button = widgets.Button(description="Close", tooltip="stop updating this panel")
        free_button.on_click(lambda _: self.free_stranded())
        restart_button.on_click(lambda _: self.restart())
        close_button.on_click(lambda _: self.close())
        self._buttons = (free_button, restart_button, close_button)
        self.widget = widgets.VBox(
            [self.gauges, self.holders, self.chart, widgets.HBox(list(self._buttons)), self.result]
        )
        self.update(sampler.latest or sampler.sample())
        self._token = sampler.subscribe(self.update)

    def update(self, report: Report) -> None:
        """Called from the sampler thread with each reading."""
        self.gauges.value = gauges_html(report, self._sampler.interval)

    def show_cells(self, census: Census, records: list[CellRecord]) -> None:
        self.holders.value = holders_html(census)
        devices = [m.device for m in records[-1].memory] if records else []
        device = next((d for d in devices if d.startswith("cuda")), devices[0] if devices else "")
        self.chart.value = history_svg(records[-40:], device) if device else ""

    def free_stranded(self) -> None:
        self.result.value = free_view(self._free()).html

    def restart(self) -> None:
        """Show each step here: the kernel may stop before a cell could show anything."""
        shown: list[str] = []

        def say(item: object) -> None:
            shown.append(item.html if isinstance(item, View) else f"<p>{escape(str(item))}</p>")
            self.result.value = "".join(shown)

        self._restart(say)

    def close(self) -> None:
        self._sampler.unsubscribe(self._token)
        for child in (self.gauges, self.holders, self.chart, self.result, *self._buttons):
            child.close()
        self.widget.close()
        self._on_close(self)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        snapshot = self.gauges.value + self.holders.value + self.chart.value
        bundle["text/html"] = f'<div class="vram-magic-snapshot">{snapshot}</div>'
        return bundle
