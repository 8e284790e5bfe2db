"""Keeps this kernel's status file (see ``readings.kernel_status``) current for the Jupyter server.

Only a Jupyter kernel has a connection file, so a terminal IPython writes nothing. The file is
rewritten at most once per ``PERIOD`` seconds from the shared sampler thread, and removed when
vram_magic is unloaded or the kernel exits.
"""

from __future__ import annotations

import atexit
import contextlib
import secrets
import time
from pathlib import Path
from typing import Any

from vram_magic import api
from vram_magic.protocol.kernel_status import (
    connection_file,
    status_from_report,
    status_path,
    write_status,
)
from vram_magic.readings.model import DeviceReading, Report
from vram_magic.readings.sampler import sampler

PERIOD = 1.0
TOP = 5
PEAK_WINDOW = 10.0  # seconds a peak stays in the file: a server polling slower still sees it


class RecentPeaks:
    """The most held per device over the last ``window`` to ``2 * window`` seconds, in two
    buckets that roll over: a spike between two of the server's reads is not lost."""

    def __init__(self, window: float = PEAK_WINDOW) -> None:
        self.window = window
        self._started = time.monotonic()
        self._current: dict[str, int] = {}
        self._previous: dict[str, int] = {}

    def add(self, device: str, nbytes: int | None) -> None:
        self._roll()
        if nbytes is not None:
            self._current[device] = max(self._current.get(device, 0), nbytes)

    def peaks(self) -> dict[str, int]:
        self._roll()
        merged = dict(self._previous)
        for device, nbytes in self._current.items():
            merged[device] = max(merged.get(device, 0), nbytes)
        return merged

    def _roll(self) -> None:
        if time.monotonic() - self._started >= self.window:
            self._previous, self._current = self._current, {}
            self._started = time.monotonic()


class StatusPublisher:
    def __init__(self, names: api.NameSizes, namespace: dict[str, Any]) -> None:
        self._names = names
        self._namespace = namespace
        self._top: tuple[tuple[str, int], ...] = ()
        self._written = 0.0
        self._token: int | None = None
        self.path: Path | None = None
        self.last_error: str | None = None
        self.restart_request: str | None = None
        self.ooms = 0
        self._peaks = RecentPeaks()

    def start(self) -> None:
        found = connection_file()
        if found is None:
            return
        self.path = status_path(found)
        self.refresh()
        self._token = sampler.subscribe(self._on_report)
        atexit.register(self.stop)

    def after_cell(self, record: api.CellRecord | None = None, oom: bool = False) -> None:
        """Take the largest names on the main thread, where the namespace is not changing, and
        the cell's peaks (a spike shorter than the sampler's interval); nothing to do (on every
        cell) where there is no file to write."""
        if self.path is None:
            return
        self._top = self._names.largest(TOP)
        self.ooms += oom
        for memory in record.memory if record is not None else ():
            self._peaks.add(memory.device, memory.peak)

    def refresh(self) -> None:
        """Measure the names and rewrite the file now: at start, and after an action that
        changed memory between cells."""
        self._names.update(self._namespace, True, None)
        self.after_cell()
        self._publish(sampler.sample())

    def request_restart(self) -> str | None:
        """Ask the Jupyter server, through the file, to restart this kernel and restore its
        pending snapshot; the JupyterLab sidebar, polling, passes the request on. Returns the
        request id, or None where there is no file (no Jupyter server to ask)."""
        if self.path is None:
            return None
        self.restart_request = secrets.token_hex(8)
        self._publish(sampler.sample())
        return self.restart_request

    def stop(self) -> None:
        if self._token is not None:
            sampler.unsubscribe(self._token)
            self._token = None
        if self.path is not None:
            with contextlib.suppress(OSError):
                self.path.unlink()
            self.path = None
        atexit.unregister(self.stop)

    def _on_report(self, report: Report) -> None:
        for device in report.devices:
            self._peaks.add(f"cuda:{device.cuda_index}", _held(device))
        if time.monotonic() - self._written >= PERIOD:
            self._publish(report)

    def _publish(self, report: Report) -> None:
        if self.path is None:
            return
        limit = api.limit_in_force()
        status = status_from_report(
            report,
            self._top,
            limit.nbytes if limit else None,
            self.restart_request,
            self._peaks.peaks(),
            self.ooms,
        )
        try:
            write_status(self.path, status)
        except OSError as error:  # a full or read-only disk must not break the kernel
            self.last_error = str(error)
        self._written = time.monotonic()


def _held(device: DeviceReading) -> int | None:
    """What the kernel holds on a device, as the status file counts it (NVML, else torch)."""
    return device.this_process if device.this_process is not None else device.torch_reserved
