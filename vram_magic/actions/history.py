"""Per-cell history: memory before, after and at the peak of each cell, and which names grew.

Runs in IPython's ``pre_run_cell``/``post_run_cell`` hooks, so it must stay far below a
millisecond: no ``gc.collect()``, no heap scan. Names are re-measured only when they were rebound,
or, for containers and modules that change in place, when the cell changed memory at all.
"""

from __future__ import annotations

import heapq
import sys
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from vram_magic.census.tensors import storage_key
from vram_magic.readings.cell_memory import CellMarks, MemoryMark
from vram_magic.readings.sampler import sampler

HISTORY_LENGTH = 10_000
_CHANGED = 1 << 20  # memory moved by more than 1 MiB: containers may have grown in place
_SHALLOW_ITEMS = 256
_IPYTHON_NAMES = frozenset({"In", "Out", "exit", "quit", "get_ipython", "open"})


@dataclass(frozen=True)
class CellMemory:
    device: str
    before: int
    after: int
    peak: int | None

    @property
    def retained(self) -> int:
        return self.after - self.before


@dataclass(frozen=True)
class CellRecord:
    """One executed cell."""

    execution_count: int | None
    source: str
    started_at: float
    seconds: float
    memory: tuple[CellMemory, ...]
    grew: tuple[tuple[str, int], ...]  # names now holding more tensor bytes, largest first
    error: str | None = None

    def on(self, device: str) -> CellMemory | None:
        return next((m for m in self.memory if m.device == device), None)


def shallow_bytes(value: Any) -> int:
    """Tensor bytes directly held by one top-level value: a tensor, a module's parameters and
    buffers, an optimizer's state, or the tensors among a container's first items."""
    torch = sys.modules.get("torch")
    if torch is None:
        return 0
    tensor = torch.Tensor
    if isinstance(value, tensor):
        return storage_key(value)[1]
    if isinstance(value, torch.nn.Module):
        return sum(dict(map(storage_key, (*value.parameters(), *value.buffers()))).values())
    if isinstance(value, torch.optim.Optimizer):
        return sum(
            storage_key(item)[1]
            for state in value.state.values()
            for item in state.values()
            if isinstance(item, tensor)
        )
    if isinstance(value, dict):
        value = list(value.values())[:_SHALLOW_ITEMS]
    if isinstance(value, (list, tuple)):
        return sum(storage_key(i)[1] for i in value[:_SHALLOW_ITEMS] if isinstance(i, tensor))
    return 0


class NameSizes:
    """Tensor bytes per top-level name, remembered between cells."""

    def __init__(self) -> None:
        self._known: dict[str, tuple[int, int]] = {}  # name -> (id of value, bytes)
        self.first_cell: dict[str, int] = {}

    def update(
        self, namespace: dict[str, Any], memory_moved: bool, cell: int | None
    ) -> list[tuple[str, int]]:
        grew = []
        known = self._known
        tensor = getattr(sys.modules.get("torch"), "Tensor", None)
        for name, value in namespace.items():
            if name[0] == "_" or name in _IPYTHON_NAMES:
                continue
            previous = known.get(name)
            unchanged = previous is not None and previous[0] == id(value)
            if unchanged and (not memory_moved or type(value) is tensor):
                continue
            size = shallow_bytes(value)
            known[name] = (id(value), size)
            if size > (previous[1] if previous else 0):
                grew.append((name, size))
                if cell is not None:
                    self.first_cell.setdefault(name, cell)
        if len(known) > len(namespace):
            for name in [n for n in known if n not in namespace]:
                del known[name]
                self.first_cell.pop(name, None)
        grew.sort(key=lambda item: -item[1])
        return grew

    def largest(self, count: int) -> tuple[tuple[str, int], ...]:
        """The ``count`` names holding the most tensor bytes, as of the last update."""
        sizes = ((name, size) for name, (_, size) in self._known.items() if size)
        return tuple(heapq.nlargest(count, sizes, key=lambda item: item[1]))


def _process_marks(peaks: dict[int, int]) -> tuple[MemoryMark, ...]:
    """While a live panel samples NVML, this process's whole footprint per GPU (CUDA context and
    non-torch libraries included), with its peak between samples."""
    latest = sampler.latest
    if not sampler.running or latest is None:
        return ()
    return tuple(
        MemoryMark(
            f"cuda:{d.cuda_index} process",
            d.this_process,
            max(peaks.get(d.cuda_index, 0), d.this_process),
        )
        for d in latest.devices
        if d.this_process is not None
    )


class CellRecorder:
    """Keeps the last ``HISTORY_LENGTH`` cells."""

    def __init__(self) -> None:
        self.records: deque[CellRecord] = deque(maxlen=HISTORY_LENGTH)
        self.names = NameSizes()
        self._marks = CellMarks()
        self._before: tuple[MemoryMark, ...] | None = None  # None: no cell started
        self._started = 0.0
        self._wall = 0.0
        self._source = ""

    def before(self, source: str) -> None:
        self._before = self._marks.start() + _process_marks(sampler.take_peaks())
        self._source = source
        self._wall = time.time()
        self._started = time.perf_counter()

    def after(
        self, namespace: dict[str, Any], cell: int | None, error: BaseException | None
    ) -> CellRecord | None:
        """Record the cell that just ran; None for a cell that started before the hooks did
        (the ``%load_ext`` cell itself)."""
        if self._before is None:
            return None
        seconds = time.perf_counter() - self._started
        after = self._marks.read() + _process_marks(sampler.take_peaks())
        before = {mark.device: mark.current for mark in self._before}
        self._before = None
        memory = tuple(
            CellMemory(mark.device, before.get(mark.device, 0), mark.current, mark.peak)
            for mark in after
        )
        moved = any(
            abs(m.after - m.before) > _CHANGED or (m.peak or 0) - m.before > _CHANGED
            for m in memory
        )
        record = CellRecord(
            execution_count=cell,
            source=self._source.strip().splitlines()[0][:80] if self._source.strip() else "",
            started_at=self._wall,
            seconds=seconds,
            memory=memory,
            grew=tuple(self.names.update(namespace, moved, cell)),
            error=type(error).__name__ if error is not None else None,
        )
        self.records.append(record)
        return record
