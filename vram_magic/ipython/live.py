"""The live panels open in one shell: opened by ``%vram``, refreshed after cells, closed on
``%vram --close``, by their Close button or at ``%unload_ext``."""

from __future__ import annotations

import time
from typing import Any

from vram_magic.actions.free import free
from vram_magic.actions.history import CellRecorder
from vram_magic.census.take import take_census
from vram_magic.readings.sampler import sampler
from vram_magic.render.panel import LivePanel

CENSUS_EVERY = 3.0  # seconds: a census walks the heap, so panels refresh holders at most this often


class LivePanels:
    def __init__(self, shell: Any, recorder: CellRecorder) -> None:
        self.shell = shell
        self.recorder = recorder
        self.panels: list[LivePanel] = []
        self._census_at = 0.0

    def open(self, interval: float) -> LivePanel:
        sampler.interval = interval
        panel = LivePanel(sampler, self._free, self.panels.remove)
        self.panels.append(panel)
        self._refresh(panel)
        return panel

    def after_cell(self) -> None:
        """Refresh holders and the per-cell chart of every open panel, at most every few seconds."""
        if self.panels and time.monotonic() - self._census_at >= CENSUS_EVERY:
            for panel in self.panels:
                self._refresh(panel)

    def close_all(self) -> None:
        for panel in list(self.panels):
            panel.close()
        sampler.stop()

    def _refresh(self, panel: LivePanel) -> None:
        census = take_census(self.shell, self.shell.user_ns, created=self.recorder.names.first_cell)
        self._census_at = time.monotonic()
        panel.show_cells(census, list(self.recorder.records))

    def _free(self) -> Any:
        result = free(self.shell, self.shell.user_ns)
        for panel in self.panels:
            self._refresh(panel)
        return result
