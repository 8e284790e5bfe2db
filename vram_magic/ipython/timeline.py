"""The live panel's timeline: an anywidget that the browser draws as SVG (timeline.js).

anywidget, not a stock HTML widget: a stock widget can only be given its whole value again, so
a five-minute timeline would resend every sample on every tick. Here each tick sends one small
message; the kernel keeps the window's samples and cells and sends them all only to a view that
asks (a new tab, a reload). anywidget renders in JupyterLab, Notebook 7, VS Code and Colab from
the same module.
"""

from __future__ import annotations

import threading
from collections import deque
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anywidget
import traitlets

from vram_magic.readings.model import Report
from vram_magic.render.timeline import SERIES, cell_mark, running_mark, timeline_sample

if TYPE_CHECKING:
    from vram_magic.api import CellRecord

DEFAULT_WINDOW = 300.0  # seconds shown: the last five minutes
CELLS_KEPT = 200


class Timeline(anywidget.AnyWidget):
    """The last ``window`` seconds of readings and cells; the browser draws them."""

    _esm = Path(__file__).with_name("timeline.js")
    window = traitlets.Float(DEFAULT_WINDOW).tag(sync=True)
    series = traitlets.Dict(SERIES).tag(sync=True)

    def __init__(self, interval: float, window: float = DEFAULT_WINDOW) -> None:
        super().__init__(window=window)
        self._lock = threading.Lock()
        self._samples: deque[dict[str, Any]] = deque(maxlen=int(window / interval) + 8)
        self._cells: deque[dict[str, Any]] = deque(maxlen=CELLS_KEPT)
        self.on_msg(self._on_message)

    def add_sample(self, report: Report) -> None:
        """Called from the sampler thread: keep the sample and send it on, alone."""
        sample = timeline_sample(report)
        with self._lock:
            self._samples.append(sample)
        self.send({"kind": "sample", "sample": sample})

    def cell_started(self, source: str, started_at: float) -> None:
        self._add_cell(running_mark(source, started_at))

    def cell_finished(self, record: CellRecord) -> None:
        self._add_cell(cell_mark(record))

    def _add_cell(self, mark: dict[str, Any]) -> None:
        with self._lock:
            if self._cells and self._cells[-1]["end"] is None:
                self._cells.pop()  # the running cell's mark: finished now, or never (an error)
            self._cells.append(mark)
        self.send({"kind": "cell", "mark": mark})

    def _on_message(self, _widget: Any, content: Any, _buffers: Any) -> None:
        """A view that has just rendered asks for what it missed (every view gets the answer
        and redraws from it: a few hundred samples, once per view)."""
        if isinstance(content, dict) and content.get("kind") == "hello":
            with self._lock:
                history = {"samples": list(self._samples), "cells": list(self._cells)}
            self.send({"kind": "history", **history})
