"""The live panels open in one shell: opened by ``%vram``, refreshed after cells, closed on
``%vram --close``, by their Close button or at ``%unload_ext``."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from vram_magic import api
from vram_magic.ipython.panel import LivePanel
from vram_magic.ipython.restart import restart_and_restore
from vram_magic.ipython.status_publisher import StatusPublisher
from vram_magic.readings.sampler import sampler

# A census walks the heap: after a cell, panels refresh their holders only if at least this many
# times the last census's duration has passed, so refreshing costs at most a tenth of the time.
CENSUS_SPACING = 10


class LivePanels:
    def __init__(self, shell: Any, recorder: api.CellRecorder, status: StatusPublisher) -> None:
        self.shell = shell
        self.recorder = recorder
        self.status = status
        self.panels: list[LivePanel] = []
        self._census_at = 0.0
        self._census_took = 0.0

    def open(self, interval: float) -> LivePanel:
        sampler.interval = interval
        panel = LivePanel(sampler, self._free, self._restart, self.panels.remove)
        self.panels.append(panel)
        self._refresh(panel)
        return panel

    def before_cell(self, source: str) -> None:
        """Mark the cell's start on every open panel's timeline."""
        started_at = time.time()
        for panel in self.panels:
            panel.cell_started(source, started_at)

    def after_cell(self, record: api.CellRecord | None = None) -> None:
        """Mark the finished cell on the timelines, and refresh holders and the per-cell chart of
        every open panel (see ``CENSUS_SPACING``)."""
        if record is not None:
            for panel in self.panels:
                panel.cell_finished(record)
        waited = time.monotonic() - self._census_at
        if self.panels and waited >= CENSUS_SPACING * self._census_took:
            for panel in self.panels:
                self._refresh(panel)

    def close_all(self) -> None:
        for panel in list(self.panels):
            panel.close()  # the sampler thread stops with its last subscriber

    def _refresh(self, panel: LivePanel) -> None:
        started = time.monotonic()
        census = api.who()
        self._census_at = time.monotonic()
        self._census_took = self._census_at - started
        panel.show_cells(census, list(self.recorder.records))

    def _restart(self, say: Callable[[Any], None]) -> None:
        restart_and_restore(self.shell, self.status, say=say)

    def _free(self) -> Any:
        result = api.free()
        for panel in self.panels:
            self._refresh(panel)
        return result
