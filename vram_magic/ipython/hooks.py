"""IPython cell hooks: record each cell's memory, and explain out-of-memory errors after them.

A hook must never break the user's cell: each one catches its own errors, says so once, and
switches itself off.
"""

from __future__ import annotations

import sys
from typing import Any

from vram_magic import api
from vram_magic.config import settings
from vram_magic.ipython.live import LivePanels
from vram_magic.ipython.status_publisher import StatusPublisher
from vram_magic.render.actions import oom_view


class CellHooks:
    def __init__(self, shell: Any) -> None:
        self.shell = shell
        self.recorder = api.start_recording(shell)
        self.status = StatusPublisher(self.recorder.names, shell.user_ns)
        self.live = LivePanels(shell, self.recorder, self.status)
        self.broken: str | None = None

    def register(self) -> None:
        self.shell.events.register("pre_run_cell", self.pre_run_cell)
        self.shell.events.register("post_run_cell", self.post_run_cell)

    def unregister(self) -> None:
        for event, callback in (
            ("pre_run_cell", self.pre_run_cell),
            ("post_run_cell", self.post_run_cell),
        ):
            if callback in self.shell.events.callbacks[event]:
                self.shell.events.unregister(event, callback)

    def _fail(self, error: Exception) -> None:
        if self.broken is None:
            self.broken = f"{type(error).__name__}: {error}"
            print(
                f"vram_magic: cell tracking stopped after an internal error ({self.broken}); "
                "your cell ran normally. %reload_ext vram_magic restarts it.",
                file=sys.stderr,
            )

    def pre_run_cell(self, info: Any) -> None:
        if self.broken or not settings.track_cells:
            return
        try:
            source = getattr(info, "raw_cell", "") or ""
            self.recorder.before(source)
            self.live.before_cell(source)
        except Exception as error:
            self._fail(error)

    def post_run_cell(self, result: Any) -> None:
        if self.broken:
            return
        try:
            record = None
            if settings.track_cells:
                record = self.recorder.after(
                    self.shell.user_ns, result.execution_count, result.error_in_exec
                )
            error = result.error_in_exec
            if settings.oom_report and error is not None:
                self._explain(error, record)
            self.live.after_cell(record)
            self.status.after_cell(record, api.is_oom(error))
        except Exception as error:
            self._fail(error)

    def _explain(self, error: BaseException, record: api.CellRecord | None) -> None:
        report = api.explain(error, record)
        if report is not None:
            from IPython.display import display

            display(oom_view(report))
