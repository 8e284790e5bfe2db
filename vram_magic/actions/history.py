"""Per-cell history: memory before, after and at the peak of each cell, and which names grew.

Runs in IPython's ``pre_run_cell``/``post_run_cell`` hooks, so it must stay far below a
millisecond: no ``gc.collect()``, no heap scan, and no walk over the namespace, which IPython grows
by an ``_iN`` name every cell. A cell's work scales with what it touched: the names its source
mentions, the names bound since the last cell and, when memory moved or names were deleted, the
user's names seen before (a module or container may have grown in place). Which names are the
user's is ``census.roots.user_variables``, asked one name at a time; names with a leading
underscore are private and not tracked. The history keeps the last ``HISTORY_LENGTH`` cells.
"""

from __future__ import annotations

import heapq
import sys
import time
from collections import deque
from dataclasses import dataclass
from types import FunctionType
from typing import Any

from vram_magic.census.roots import user_variables
from vram_magic.census.tensors import storage_key
from vram_magic.readings.cell_memory import CellMarks, MemoryMark
from vram_magic.readings.sampler import sampler

# About 1 KB a record: at most ~10 MB, and more cells than a notebook session runs in practice.
HISTORY_LENGTH = 10_000
_CHANGED = 1 << 20  # memory moved by more than 1 MiB: containers may have grown in place
_SHALLOW_ITEMS = 256
# ASCII that cannot be in a name, as spaces: what splits a source into its words (UTF-8 bytes of
# non-ASCII letters are kept), about 7 times faster than a regular expression on an 8 KB cell.
_NOT_NAME = bytes(c if c >= 128 or chr(c).isalnum() or chr(c) == "_" else 32 for c in range(256))
_MISSING = object()


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


def _touched(source: str, namespace: dict[str, Any]) -> set[str]:
    """The words of a cell's source (code, strings and comments: ``globals()["x"]`` binds x),
    with the names in the functions it mentions (a ``global`` statement binds out of sight)."""
    code = source.encode("utf-8", "surrogatepass").translate(_NOT_NAME)
    words = set(code.decode("utf-8", "surrogatepass").split())
    functions = (namespace[name] for name in namespace.keys() & words)
    return words.union(*(f.__code__.co_names for f in functions if type(f) is FunctionType))


class NameSizes:
    """Tensor bytes per top-level name, remembered between cells. ``hidden_names`` is the shell's
    ``user_ns_hidden``: IPython's own entries, which are not the user's names."""

    def __init__(self, hidden_names: dict[str, Any] | None = None) -> None:
        self._hidden: dict[str, Any] = hidden_names if hidden_names is not None else {}
        self._known: dict[str, tuple[int, int]] = {}  # name -> (id of value, bytes)
        self.first_cell: dict[str, int] = {}
        self._last: str | None = None  # the namespace's last name at the last update
        self._length = 0  # and its length then

    def update(
        self,
        namespace: dict[str, Any],
        memory_moved: bool,
        cell: int | None,
        source: str | None = None,
    ) -> list[tuple[str, int]]:
        """The names now holding more tensor bytes, largest first. ``source``, the cell's code,
        tells which names it could have touched (``_touched``); None takes every name as touched:
        a full update, at start or after an action between cells."""
        touched = namespace.keys() if source is None else _touched(source, namespace)
        known = self._known
        inserted, deleted = self._inserted(namespace)
        names = dict.fromkeys(inserted)
        names.update(dict.fromkeys(namespace.keys() & touched))
        names.update(dict.fromkeys(known.keys() & touched))  # with those the cell deleted
        if memory_moved or deleted:  # containers may have grown in place; or prune the deleted
            names.update(dict.fromkeys(known))
        grew = []
        tensor = getattr(sys.modules.get("torch"), "Tensor", None)
        for name in names:
            if not isinstance(name, str) or name.startswith("_"):
                continue
            value = namespace.get(name, _MISSING)
            if value is _MISSING:
                known.pop(name, None)
                self.first_cell.pop(name, None)
                continue
            if not user_variables({name: value}, self._hidden):  # one name: no namespace walk
                continue
            previous = known.get(name)
            same = previous is not None and previous[0] == id(value)
            # The same object can have grown in place: a tensor only through code that names it
            # (resize_, set_), a module or container by code anywhere, measured when memory moved.
            if same and not (name in touched if type(value) is tensor else memory_moved):
                continue
            size = shallow_bytes(value)
            known[name] = (id(value), size)
            if size > (previous[1] if previous else 0):
                grew.append((name, size))
                if cell is not None:
                    self.first_cell.setdefault(name, cell)
        self._last = next(reversed(namespace), None)
        self._length = len(namespace)
        grew.sort(key=lambda item: (-item[1], item[0]))
        return grew

    def _inserted(self, namespace: dict[str, Any]) -> tuple[list[str], bool]:
        """The names bound since the last update, and whether any were deleted. A dict keeps
        insertion order, so new names come after the last update's last name: read from the end
        back to it. If fewer names come before it than did, some were deleted; if more, it was
        itself deleted and bound again, and names may hide before it: take them all."""
        inserted = []
        for name in reversed(namespace):
            if name == self._last:
                break
            inserted.append(name)
        before = len(namespace) - len(inserted)
        if before > self._length:
            return list(namespace), True
        return inserted, before < self._length

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
    """Keeps the last ``length`` cells, and counts those it dropped to stay within it."""

    def __init__(
        self, length: int = HISTORY_LENGTH, hidden_names: dict[str, Any] | None = None
    ) -> None:
        self.records: deque[CellRecord] = deque(maxlen=length)
        self.dropped = 0
        self.names = NameSizes(hidden_names)
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
            grew=tuple(self.names.update(namespace, moved, cell, self._source)),
            error=type(error).__name__ if error is not None else None,
        )
        self.dropped += len(self.records) == self.records.maxlen
        self.records.append(record)
        return record
