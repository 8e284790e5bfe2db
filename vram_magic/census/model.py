"""Plain dataclasses of a census: who holds which tensors, in bytes counted once per storage.

A census holds names, numbers and strings only, never the tensors themselves, so keeping a
``Census`` around keeps no memory alive.
"""

from __future__ import annotations

from dataclasses import dataclass

# What kind of holder keeps memory alive; the order is the order of the table's legend.
VARIABLE = "variable"  # a name the user bound: model, batches, cfg
HIDDEN = "hidden"  # something the user cannot see: Out[3], _, a traceback's frames, a closure
GRAPH = "graph"  # activations saved by an autograd graph that a kept tensor (loss) pins
CACHE = "cache"  # memory torch's caching allocator reserved but no tensor uses
UNKNOWN = "unknown"  # alive, but no holder was found from the notebook's names
KINDS = (VARIABLE, HIDDEN, GRAPH, CACHE, UNKNOWN)


@dataclass(frozen=True)
class TensorEntry:
    """One storage reached along ``path``; ``nbytes`` is the whole storage, counted once."""

    path: str
    nbytes: int
    shape: tuple[int, ...]
    dtype: str
    device: str


@dataclass(frozen=True)
class Release:
    """How a holder is released: ``free(*names)`` (no names: ``free()``, what frees stranded
    memory), or else ``detach`` the named tensor to keep its value without its autograd graph."""

    names: tuple[str, ...] = ()
    detach: bool = False


@dataclass(frozen=True)
class Holder:
    """One row of the census: a holder, what kind it is, and the storages only it reaches first."""

    name: str
    kind: str
    nbytes: int
    tensor_count: int
    devices: tuple[str, ...]
    summary: str
    entries: tuple[TensorEntry, ...]
    created_cell: int | None = None
    release: Release | None = None  # None: nothing in the notebook releases it
    stranded: bool = False  # returned by ``%vram free`` without names: nobody chose to keep it
    root: str = ""  # the name of the root it is reached from; "" for cycles, cache and unknown


@dataclass(frozen=True)
class Census:
    """Every live tensor of this process, grouped by holder, largest first."""

    holders: tuple[Holder, ...]
    total_bytes: int
    tensor_count: int
    device_filter: str | None
    seconds: float

    def by_kind(self, kind: str) -> tuple[Holder, ...]:
        return tuple(h for h in self.holders if h.kind == kind)

    def holder(self, name: str) -> Holder | None:
        return next((h for h in self.holders if h.name == name), None)

    @property
    def stranded_bytes(self) -> int:
        """What ``%vram free`` without names would return right now."""
        return sum(h.nbytes for h in self.holders if h.stranded)
