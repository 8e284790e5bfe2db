"""One background thread that takes a reading every ``interval`` seconds for every live panel.

Shared by all subscribers, it sleeps between samples (no busy loop), starts with the first
subscriber and stops with the last, on ``%unload_ext`` and at interpreter exit. Between two
resets it also keeps this process's NVML peak per device, so a cell's peak includes memory used
outside torch's allocator. A failing reading or subscriber is recorded and the loop goes on.
"""

from __future__ import annotations

import atexit
import itertools
import threading
from collections.abc import Callable

from vram_magic.readings.model import Report
from vram_magic.readings.report import read_report

THREAD_NAME = "vram_magic-sampler"
DEFAULT_INTERVAL = 0.5


class Sampler:
    def __init__(self, read: Callable[[], Report] = read_report) -> None:
        self._read = read
        self._lock = threading.Lock()
        self._subscribers: dict[int, Callable[[Report], None]] = {}
        self._tokens = itertools.count()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.interval = DEFAULT_INTERVAL
        self.latest: Report | None = None
        self.last_error: str | None = None
        self._peaks: dict[int, int] = {}  # cuda index -> this process's NVML peak since reset

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def subscribe(self, callback: Callable[[Report], None]) -> int:
        with self._lock:
            token = next(self._tokens)
            self._subscribers[token] = callback
            if not self.running:
                self._stop.clear()
                self._thread = threading.Thread(target=self._run, name=THREAD_NAME, daemon=True)
                self._thread.start()
        return token

    def unsubscribe(self, token: int) -> None:
        with self._lock:
            self._subscribers.pop(token, None)
            last = not self._subscribers
        if last:
            self.stop()

    def stop(self) -> None:
        """Stop the thread and forget every subscriber; waits for the thread to end."""
        with self._lock:
            self._subscribers.clear()
            thread, self._thread = self._thread, None
        self._stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def take_peaks(self) -> dict[int, int]:
        """This process's NVML peak per CUDA device since the last call, then start afresh."""
        with self._lock:
            peaks, self._peaks = self._peaks, {}
        return peaks

    def sample(self) -> Report:
        """One reading, shared with the subscribers (also called directly for a first paint)."""
        report = self._read()
        with self._lock:
            self.latest = report
            for device in report.devices:
                if device.this_process is not None:
                    known = self._peaks.get(device.cuda_index, 0)
                    self._peaks[device.cuda_index] = max(known, device.this_process)
            subscribers = list(self._subscribers.values())
        for callback in subscribers:
            try:
                callback(report)
            except Exception as error:  # one broken panel must not stop the others
                self.last_error = f"{type(error).__name__}: {error}"
        return report

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.sample()
            except Exception as error:
                self.last_error = f"{type(error).__name__}: {error}"


sampler = Sampler()
atexit.register(sampler.stop)
