"""The live ``%vram`` panel: stock ipywidgets 8 (HTML and Button) and the timeline (anywidget).

The sampler thread pushes each reading into the gauges and the timeline; the notebook's cells
mark the timeline and refresh the holders and the per-cell chart; the buttons call the same
actions as the magics. In a static export (nbconvert HTML) the last snapshot stays readable.
What the widgets show is rendered by render/panel, render/history and render/timeline.
"""

from __future__ import annotations

from collections.abc import Callable
from html import escape
from typing import TYPE_CHECKING, Any

from vram_magic.readings.model import Report
from vram_magic.readings.sampler import Sampler
from vram_magic.render.actions import free_view
from vram_magic.render.history import chart_device, history_svg
from vram_magic.render.panel import gauges_html, holders_html
from vram_magic.render.view import View

if TYPE_CHECKING:
    from vram_magic.api import CellRecord, Census, FreeResult


CELLS_CHARTED = 40


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

        from vram_magic.ipython.timeline import Timeline  # anywidget, imported with the panel

        self._sampler, self._free, self._on_close = sampler, free, on_close
        self._restart = restart
        self.gauges = widgets.HTML()
        self.timeline = Timeline(sampler.interval)
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
            [
                self.gauges,
                self.timeline,
                self.holders,
                self.chart,
                widgets.HBox(list(self._buttons)),
                self.result,
            ]
        )
        self.update(sampler.latest or sampler.sample())
        self._token = sampler.subscribe(self.update)

    def update(self, report: Report) -> None:
        """Called from the sampler thread with each reading."""
        self.gauges.value = gauges_html(report, self._sampler.interval, stamped=False)
        self.timeline.add_sample(report)

    def cell_started(self, source: str, started_at: float) -> None:
        self.timeline.cell_started(source, started_at)

    def cell_finished(self, record: CellRecord) -> None:
        self.timeline.cell_finished(record)

    def show_cells(self, census: Census, records: list[CellRecord]) -> None:
        self.holders.value = holders_html(census)
        shown = records[-CELLS_CHARTED:]
        device = chart_device(shown)
        self.chart.value = history_svg(shown, device) if device else ""

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
        for child in (
            self.gauges,
            self.timeline,
            self.holders,
            self.chart,
            self.result,
            *self._buttons,
        ):
            child.close()
        self.widget.close()
        self._on_close(self)

    def _repr_mimebundle_(self, **kwargs: Any) -> dict[str, Any]:
        bundle = self.widget._repr_mimebundle_(**kwargs)
        latest = self._sampler.latest
        gauges = gauges_html(latest, self._sampler.interval) if latest else self.gauges.value
        snapshot = gauges + self.holders.value + self.chart.value
        bundle["text/html"] = f'<div class="vram-magic-snapshot">{snapshot}</div>'
        return bundle
