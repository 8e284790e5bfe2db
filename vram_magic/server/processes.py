"""Who owns a GPU process, and which of this server's kernels it belongs to.

NVML lists every process on a GPU, whoever runs it. The server shows its user's own processes
and folds everybody else's into one number, so it must know each PID's owner; a kernel may be a
wrapper whose child holds the GPU, so it also needs each PID's ancestors. Both come from /proc,
which dominates a request, so they are cached per PID for ``ttl`` seconds.
"""

from __future__ import annotations

import os
import random
import time
from dataclasses import dataclass

import psutil

MAX_DEPTH = 8  # ancestors looked at when matching a GPU process to a kernel


@dataclass(frozen=True)
class ProcessFacts:
    """``mine``: run by this server's user. ``seen``: exists in our PID namespace (a container
    sees NVML's host PIDs as missing). ``lineage``: the PID then its ancestors."""

    mine: bool
    seen: bool
    name: str | None
    lineage: tuple[int, ...]


class ProcessDirectory:
    """``pause``: seconds to sleep after each look in /proc, so that a worker thread looking up
    hundreds of PIDs lets the event loop's thread have the GIL in between. Each PID is looked
    up again after ``ttl`` seconds, give or take a quarter, so that not all at once."""

    def __init__(self, ttl: float = 10.0, pause: float = 0.0) -> None:
        self.ttl = ttl
        self.pause = pause
        self._uid = os.getuid()
        self._facts: dict[int, tuple[float, ProcessFacts]] = {}

    def facts(self, pid: int) -> ProcessFacts:
        now = time.monotonic()
        cached = self._facts.get(pid)
        if cached is not None and now < cached[0]:
            return cached[1]
        found = self._look_up(pid)
        self._facts[pid] = (now + self.ttl * random.uniform(0.75, 1.25), found)
        if self.pause:
            time.sleep(self.pause)
        if len(self._facts) > 4096:  # forget PIDs long gone
            self._facts = {p: f for p, f in self._facts.items() if now < f[0]}
        return found

    def kernel_of(self, pid: int, kernel_pids: dict[int, str]) -> str | None:
        """The id of the kernel whose process is ``pid`` or one of its ancestors."""
        return next((kernel_pids[p] for p in self.facts(pid).lineage if p in kernel_pids), None)

    def _look_up(self, pid: int) -> ProcessFacts:
        try:
            process = psutil.Process(pid)
            with process.oneshot():
                mine = process.uids().real == self._uid
                name = process.name() if mine else None
            return ProcessFacts(mine, True, name, (pid, *self._ancestors(process)))
        except psutil.AccessDenied:
            return ProcessFacts(False, True, None, (pid,))
        except psutil.Error:
            return ProcessFacts(False, False, None, (pid,))

    @staticmethod
    def _ancestors(process: psutil.Process) -> list[int]:
        found = []
        for _ in range(MAX_DEPTH):
            parent = process.ppid()
            if parent <= 1:
                break
            found.append(parent)
            try:
                process = psutil.Process(parent)
            except psutil.Error:
                break
        return found
