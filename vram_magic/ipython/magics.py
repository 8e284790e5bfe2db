"""The ``%vram`` line magic and the ``%%fit`` cell magic: parse, call the action, display."""

from __future__ import annotations

import argparse
import importlib.util
from collections.abc import Callable
from html import escape
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class
from IPython.display import display

from vram_magic import api
from vram_magic.ipython.arguments import HelpShown, parse_fit_line, parse_vram_line
from vram_magic.ipython.live import LivePanels
from vram_magic.ipython.restart import restart_and_restore
from vram_magic.ipython.status_publisher import StatusPublisher
from vram_magic.render.actions import free_view
from vram_magic.render.census import census_view
from vram_magic.render.estimate import estimate_view
from vram_magic.render.fit import fit_view
from vram_magic.render.history import history_view
from vram_magic.render.report import render_report
from vram_magic.render.snapshot import (
    restore_view,
    snapshot_error_text,
    snapshot_view,
    snapshots_view,
)
from vram_magic.render.units import format_bytes
from vram_magic.render.view import View


def _report(options: argparse.Namespace) -> View:
    try:
        report = api.report(device=options.device)
    except api.DeviceError as error:
        raise UsageError(f"%vram report: {error}") from None
    return render_report(report, top=options.top)


def _who(options: argparse.Namespace) -> View:
    census = api.who(device=options.device, keep_all=options.all)
    return census_view(census, top=options.top, every=options.all)


def _history(options: argparse.Namespace) -> View:
    records = list(api.history())
    return history_view(records[-options.last :] if options.last else records)


def _free(options: argparse.Namespace) -> View:
    try:
        result = api.free(*options.names, dry_run=options.dry_run, top=options.top)
    except api.FreeError as error:
        raise UsageError(f"%vram free: {error}") from None
    return free_view(result)


def _limit(options: argparse.Namespace) -> View:
    try:
        limit = api.limit(options.size)
    except api.LimitError as error:
        raise UsageError(f"%vram limit: {error}") from None
    text = (
        "limit off"
        if limit is None
        else f"limit {format_bytes(limit.nbytes)} on {limit.device}: {limit.how}"
    )
    return View(limit, text, f"<p>{escape(text)}</p>")


def _snapshot(options: argparse.Namespace) -> View:
    try:
        return snapshot_view(api.snapshot(exclude=options.exclude))
    except api.SnapshotError as error:
        raise UsageError(f"%vram snapshot: {snapshot_error_text(error)}") from None


def _restore(options: argparse.Namespace) -> View:
    try:
        return restore_view(api.restore(options.id, to=options.to, keep=options.keep))
    except api.SnapshotError as error:
        raise UsageError(f"%vram restore: {snapshot_error_text(error)}") from None


def _snapshots(options: argparse.Namespace) -> View:
    try:
        if options.delete is not None:
            api.delete_snapshot(options.delete)
            text = f"snapshot {options.delete} deleted"
            return View(options.delete, text, f"<p>{escape(text)}</p>")
        return snapshots_view(api.snapshots(), api.snapshot_folder())
    except api.SnapshotError as error:
        raise UsageError(f"%vram snapshots: {snapshot_error_text(error)}") from None


_HANDLERS: dict[str, Callable[[argparse.Namespace], View]] = {
    "limit": _limit,
    "snapshot": _snapshot,
    "restore": _restore,
    "snapshots": _snapshots,
    "report": _report,
    "who": _who,
    "history": _history,
    "free": _free,
}


def _show(item: object) -> None:
    """A view as HTML in notebooks, a line as text."""
    if isinstance(item, View):
        display(item)
    else:
        print(item)


def _in_notebook(shell: Any) -> bool:
    """A Jupyter kernel (widgets can show) rather than a terminal."""
    return "ipykernel" in type(shell).__module__


@magics_class
class VramMagics(Magics):
    """``%vram [subcommand] [options]``; ``%vram <subcommand> --help`` lists its options."""

    def __init__(self, shell: Any, live: LivePanels, status: StatusPublisher) -> None:
        super().__init__(shell)
        self._shell: Any = shell  # IPython types Magics.shell as optional; here it is set
        self.live = live
        self.status = status

    @line_magic
    def vram(self, line: str) -> Any:
        try:
            name, options = parse_vram_line(line)
        except HelpShown:
            return None
        if name == "live":
            return self._live(options)
        if name == "estimate":
            return self._estimate(options)
        if name == "restart":
            return self._restart(options)
        return _HANDLERS[name](options)

    @cell_magic
    def fit(self, line: str, cell: str) -> View:
        """``%%fit [--batch-size VAR] [--accumulate VAR | --no-accumulate] [--max-oom N]
        [--headroom P] [--quantize auto|8bit|4bit|off] [--probe] [--no-predict]``: run the cell
        so that it fits (see actions/fit_cell)."""
        try:
            options = parse_fit_line(line)
        except HelpShown:
            return None  # type: ignore[return-value]
        try:
            result = api.fit_cell(self._shell.transform_cell(cell), options)
        except api.FitError as error:
            raise UsageError(f"%%fit: {error}") from None
        return fit_view(result)

    def _estimate(self, options: argparse.Namespace) -> View:
        """MODEL names a variable of the notebook when there is one, else a folder or hub id."""
        model = self._shell.user_ns.get(options.model, options.model)
        try:
            result = api.estimate(
                model,
                batch=options.batch,
                seq=options.seq,
                train=options.train,
                dtype=options.dtype,
                checkpointing=options.checkpointing,
            )
        except api.EstimateError as error:
            raise UsageError(f"%vram estimate: {error}") from None
        return estimate_view(result, api.report())

    def _restart(self, options: argparse.Namespace) -> None:
        try:
            restart_and_restore(self._shell, self.status, options.exclude, say=_show)
        except api.SnapshotError as error:
            raise UsageError(
                f"%vram restart: not restarted: {snapshot_error_text(error)}"
            ) from None

    def _live(self, options: argparse.Namespace) -> View | None:
        if options.close:
            self.live.close_all()
            return None
        if not _in_notebook(self._shell) or importlib.util.find_spec("ipywidgets") is None:
            return render_report(api.report())
        display(self.live.open(options.interval))
        return None
