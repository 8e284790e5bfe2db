"""Take a census: every live tensor, attributed to the first holder that reaches it.

Roots are walked in order (user variables, then hidden holders), so a storage that a variable
and ``Out[3]`` both hold counts for the variable. Tensors no root reaches are looked up in the
garbage collector's view: unreachable cycles are reported as such, the rest as "no holder found".
Nothing here keeps a tensor alive once ``take_census`` returns.
"""

from __future__ import annotations

import gc
import heapq
import itertools
import operator
import sys
import time
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vram_magic.census.cycles import split_cycles
from vram_magic.census.model import (
    CACHE,
    GRAPH,
    HIDDEN,
    UNKNOWN,
    VARIABLE,
    Census,
    Holder,
    Release,
    TensorEntry,
)
from vram_magic.census.roots import (
    CYCLE,
    HIDDEN_PLACE,
    OUTPUT_CACHE,
    Root,
    find_roots,
    is_stranded,
    place_of,
    variable_root,
)
from vram_magic.census.tensors import StorageKey, TensorTypes, storage_key
from vram_magic.census.walk import Walker, modules_within
from vram_magic.readings.report import read_report

ENTRIES_KEPT = 5
CYCLES = "reference cycles (collectable)"


class DeviceError(ValueError):
    """A device filter naming no device of this machine, said in one line."""


@dataclass
class _Tally:
    """What one holder reaches, while the census runs."""

    name: str
    kind: str
    release: Release | None
    created_cell: int | None
    stranded: bool = False
    root: str = ""  # the root's name; "" for cycles, cache and unknown
    nbytes: int = 0
    tensors: int = 0
    entries: list[tuple[int, str, Any]] = field(default_factory=list)  # (bytes, path, shape key)
    shapes: dict[tuple[Any, Any, Any], int] = field(default_factory=dict)  # (device, dtype, shape)
    keys: dict[StorageKey, str] = field(default_factory=dict)  # storage -> path reaching it


def _release_hint(root: Root, kind: str, label: str | None) -> Release:
    if is_stranded(root.place, kind):
        return Release()  # what free() without names releases
    return Release((root.name,), detach=kind != VARIABLE and label == "autograd graph")


def _holder_name(root: Root, kind: str, label: str | None) -> str:
    """``model``, ``fn (closure)``, ``loss (autograd graph)``, ``Out[5] (autograd graph)``."""
    if label is None or kind == VARIABLE or (root.place == HIDDEN_PLACE and kind != GRAPH):
        return root.label
    return f"{root.label} ({label})"


def _dtype(dtype: Any) -> str:
    return str(dtype).removeprefix("torch.")


def _summary(shapes: dict[tuple[Any, Any, Any], int], tensors: int) -> str:
    common = sorted(shapes.items(), key=lambda item: -item[1])[:2]
    parts = [f"{count} x {_dtype(dtype)} {list(shape)}" for (_, dtype, shape), count in common]
    rest = tensors - sum(count for _, count in common)
    return ", ".join(parts) + (f", +{rest} more" if rest > 0 else "")


class _Census:
    def __init__(
        self,
        torch: Any,
        device: str | None,
        created: Mapping[str, int],
        keep_all: bool,
        track_keys: bool = True,
    ) -> None:
        self.is_tensor = TensorTypes(torch)
        self.track_keys = track_keys  # which storages each holder reached: only free() asks
        self.device = device
        self.created = created
        self.keep_all = keep_all
        self.counted: dict[StorageKey, int] = {}
        # Every object the walk reached, by id. The objects are kept, not just their ids: autograd
        # nodes and unpacked saved tensors are wrappers made on access, and a freed wrapper's id
        # is soon reused by the next one, which would then look visited.
        self.visited: dict[int, Any] = {}
        self.tallies: dict[tuple[str, str], _Tally] = {}
        self.root: Root | None = None
        self._targets: dict[tuple[str, str | None], _Tally] = {}
        self.device_names: dict[int, str] = {}  # device index -> "cpu", "cuda:0", "mps:0"

    def wanted(self, tensor: Any) -> bool:
        if self.device is None:
            return True
        where = str(tensor.device)
        return where == self.device or where.split(":")[0] == self.device

    def tally(
        self,
        name: str,
        kind: str,
        release: Release | None,
        created: int | None,
        where: str | None = None,
        root: str = "",
    ) -> _Tally:
        """The tally of one holder, reached from a root living ``where`` (None: from no place at
        all: torch's cache, no holder found). Whether it is stranded is decided here, once."""
        key = (name, kind)
        if key not in self.tallies:
            stranded = is_stranded(place_of(where) if where is not None else None, kind)
            self.tallies[key] = _Tally(name, kind, release, created, stranded, root)
        return self.tallies[key]

    def _target(self, kind: str, label: str | None) -> _Tally:
        """The tally for the current root, kind and label; cached, as it is asked per tensor."""
        key = (kind, label)
        target = self._targets.get(key)
        if target is None:
            root = self.root
            assert root is not None
            created = self.created.get(root.name)
            if created is None and root.where == OUTPUT_CACHE:
                created = root.location.number
            target = self._targets[key] = self.tally(
                _holder_name(root, kind, label),
                kind,
                _release_hint(root, kind, label),
                created,
                root.where,
                root.name,
            )
        return target

    def record(self, tensor: Any, path: str, kind: str, label: str | None) -> None:
        if self.device is None or self.wanted(tensor):
            target = self._targets.get((kind, label)) or self._target(kind, label)
            self.add(target, tensor, path)

    def record_many(
        self, items: Any, path: str, kind: str, label: str | None, visited: dict[int, Any]
    ) -> list[int]:
        """``record`` for every not-yet-visited tensor of a long sequence (the census of 100,000
        tensors lives here). Returns indices of the tensors with autograd state to follow."""
        if self.device is None:
            target = self._targets.get((kind, label)) or self._target(kind, label)
            autograd = self._record_plain_run(items, path, target, visited)
            if autograd is not None:
                return autograd
        autograd = []
        for index, tensor in enumerate(items):
            if id(tensor) not in visited:
                visited[id(tensor)] = tensor
                self.record(tensor, f"{path}[{index}]", kind, label)
                if tensor.requires_grad:
                    autograd.append(index)
        return autograd

    def _record_plain_run(
        self, items: Any, path: str, target: _Tally, visited: dict[int, Any]
    ) -> list[int] | None:
        """The common case of a long sequence, done in C-speed passes (``map`` over tensor
        methods, set and Counter updates): every tensor new, each owning a storage of its own.
        Returns None when the sequence is not that plain; then the caller goes item by item."""
        tensor_type = type(items[0])
        ids = list(map(id, items))
        if not visited.keys().isdisjoint(ids) or any(map(tensor_type._is_view, items)):
            return None
        devices = list(map(tensor_type.get_device, items))
        keys = list(zip(devices, map(tensor_type.data_ptr, items), strict=True))
        unique = set(keys)
        if len(unique) != len(keys) or not self.counted.keys().isdisjoint(unique):
            return None
        sizes = list(map(operator.attrgetter("nbytes"), items))
        visited.update(zip(ids, items, strict=True))
        self.counted.update(zip(keys, sizes, strict=True))
        if self.track_keys:
            target.keys.update(dict.fromkeys(keys, path))
        target.nbytes += sum(sizes)
        target.tensors += len(ids)
        dtypes = map(operator.attrgetter("dtype"), items)
        groups = Counter(zip(devices, dtypes, sizes, strict=True))
        for (device, dtype, size), count in groups.items():
            # Reading a shape costs ten times any other attribute: one example per size group.
            example = items[sizes.index(size)]
            if device not in self.device_names:
                self.device_names[device] = str(example.device)
            shape = (device, dtype, tuple(example.shape))
            target.shapes[shape] = target.shapes.get(shape, 0) + count
        largest = heapq.nlargest(
            len(items) if self.keep_all else ENTRIES_KEPT, range(len(items)), key=sizes.__getitem__
        )
        for index in largest:
            tensor = items[index]
            shape = (devices[index], tensor.dtype, tuple(tensor.shape))
            target.entries.append((sizes[index], f"{path}[{index}]", shape))
        requires_grad = map(operator.attrgetter("requires_grad"), items)
        return list(itertools.compress(range(len(items)), requires_grad))

    def add(self, target: _Tally, tensor: Any, path: str) -> None:
        key, nbytes = storage_key(tensor)
        target.tensors += 1
        if key[0] not in self.device_names:
            self.device_names[key[0]] = str(tensor.device)
        shape = (key[0], tensor.dtype, tensor.shape)
        target.shapes[shape] = target.shapes.get(shape, 0) + 1
        if key in self.counted:
            return
        self.counted[key] = nbytes
        if self.track_keys:
            target.keys[key] = path
        target.nbytes += nbytes
        target.entries.append((nbytes, path, shape))
        if not self.keep_all and len(target.entries) > 64 * ENTRIES_KEPT:
            target.entries.sort(key=lambda entry: -entry[0])
            del target.entries[ENTRIES_KEPT:]

    def walk(self, roots: list[Root], param_names: dict[int, str]) -> set[int]:
        """Walk every root; returns the ids of every object visited."""
        walker = Walker(self.is_tensor, self.record, self.record_many, param_names, self.visited)
        for root in roots:
            self.root, self._targets = root, {}
            walker.walk(root.value, root.name, root.kind)
        self.root = None
        return set(walker.visited)

    def leftovers(self) -> None:
        """Tensors no root reached: in unreachable cycles (gc will free them), or unexplained."""
        kinds = self.is_tensor.all_tensor_types()
        objects = gc.get_objects()
        visited = self.visited
        stray = [
            t
            for t in itertools.compress(objects, map(kinds.__contains__, map(type, objects)))
            if id(t) not in visited
        ]
        del objects, visited
        self.visited = {}  # the walk is over: hold no object while looking for cycles
        stray = [t for t in stray if self.wanted(t) and storage_key(t)[0] not in self.counted]
        if not stray:
            return
        in_cycles, held = split_cycles(stray)
        cycles = self.tally(CYCLES, HIDDEN, Release(), None, CYCLE)
        unknown = self.tally("no holder found", UNKNOWN, None, None)
        for tensors, target in ((in_cycles, cycles), (held, unknown)):
            for tensor in tensors:
                self.add(target, tensor, "?")

    def cache(self, torch: Any) -> None:
        """Reserved-but-unallocated bytes of torch's caching allocator, per CUDA device."""
        try:
            if not torch.cuda.is_initialized():
                return
            for index in range(torch.cuda.device_count()):
                name = f"cuda:{index}"
                if self.device not in (None, "cuda", name):
                    continue
                free = torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)
                if free > 0:
                    tally = self.tally(f"allocator cache ({name})", CACHE, Release(), None)
                    tally.nbytes += free
        except Exception:
            return

    def result(self, seconds: float) -> Census:
        holders = []
        for tally in self.tallies.values():
            if tally.nbytes == 0:
                continue
            entries = sorted(tally.entries, key=lambda entry: -entry[0])
            if not self.keep_all:
                entries = entries[:ENTRIES_KEPT]
            holders.append(
                Holder(
                    name=tally.name,
                    kind=tally.kind,
                    nbytes=tally.nbytes,
                    tensor_count=tally.tensors,
                    devices=tuple(sorted({self.device_names[d] for d, _, _ in tally.shapes})),
                    summary=_summary(tally.shapes, tally.tensors),
                    entries=tuple(
                        TensorEntry(path, nbytes, tuple(shape), _dtype(dtype), self.device_names[d])
                        for nbytes, path, (d, dtype, shape) in entries
                    ),
                    created_cell=tally.created_cell,
                    release=tally.release,
                    stranded=tally.stranded,
                    root=tally.root,
                )
            )
        holders.sort(key=lambda holder: -holder.nbytes)
        return Census(
            holders=tuple(holders),
            total_bytes=sum(h.nbytes for h in holders),
            tensor_count=sum(h.tensor_count for h in holders),
            device_filter=self.device,
            seconds=seconds,
        )


def parameter_names(roots: list[Root], torch: Any) -> dict[int, str]:
    """id(parameter) -> its name inside the module that owns it, for optimizer state labels:
    modules that are roots first, then modules a root keeps nearby, so that
    ``trainer.optimizer.state[transformer.wte.weight]`` is named like ``opt.state[0.weight]``."""
    module = torch.nn.Module
    modules = [root.value for root in roots if isinstance(root.value, module)]
    for root in roots:
        if not isinstance(root.value, module):
            modules.extend(modules_within(root.value, module))
    names: dict[int, str] = {}
    for owner in {id(m): m for m in modules}.values():
        for name, parameter in owner.named_parameters():
            names.setdefault(id(parameter), name)
    return names


@dataclass(frozen=True)
class StorageMap:
    """Which storages each holder reached first, and every live storage: what ``free`` measures
    with (storage addresses are numbers, so keeping this keeps nothing alive)."""

    by_holder: dict[str, frozenset[StorageKey]]
    live: dict[StorageKey, int]


def _imported_torch() -> Any | None:
    torch = sys.modules.get("torch")
    return torch if torch is not None and hasattr(torch, "Tensor") else None


def census_and_storages(
    shell: Any | None,
    namespace: dict[str, Any],
    device: str | None = None,
    created: Mapping[str, int] | None = None,
    keep_all: bool = False,
    track_keys: bool = True,
) -> tuple[Census, StorageMap]:
    """The census, plus the storage map behind it (empty per holder without ``track_keys``)."""
    started = time.perf_counter()
    torch = _imported_torch()
    if torch is None:
        return Census((), 0, 0, device, time.perf_counter() - started), StorageMap({}, {})
    census = _Census(torch, device, created or {}, keep_all, track_keys)
    roots = find_roots(shell, namespace)
    census.walk(roots, parameter_names(roots, torch))
    del roots
    census.leftovers()
    census.cache(torch)
    storages = StorageMap(
        {tally.name: frozenset(tally.keys) for tally in census.tallies.values()},
        dict(census.counted),
    )
    return census.result(time.perf_counter() - started), storages


def devices_here() -> tuple[str, ...]:
    """What a census can filter on: cpu, cuda:N for each visible GPU, mps where torch has it."""
    torch = _imported_torch()
    cuda = [f"cuda:{device.cuda_index}" for device in read_report().devices]
    mps = torch is not None and torch.backends.mps.is_available()
    return ("cpu", *cuda, *(("mps",) if mps else ()))


def check_device(device: str) -> None:
    """``cpu``, ``cuda``, ``cuda:N`` or ``mps`` naming a device here; else ``DeviceError``, as
    an empty census of a device that does not exist would read as "nothing on it"."""
    here = devices_here()
    if device in here or any(name.startswith(f"{device}:") for name in here):
        return
    raise DeviceError(f"no device {device} (devices: {', '.join(here)})")


def take_census(
    shell: Any | None,
    namespace: dict[str, Any],
    device: str | None = None,
    created: Mapping[str, int] | None = None,
    keep_all: bool = False,
) -> Census:
    """Census of every live tensor by holder (on ``device``, which must exist: ``DeviceError``).
    Without torch imported there are no tensors."""
    if device is not None:
        check_device(device)
    return census_and_storages(shell, namespace, device, created, keep_all, track_keys=False)[0]


def reach(value: Any, name: str) -> tuple[dict[StorageKey, str], set[int]]:
    """What one object keeps alive: each storage with the path of the first tensor reaching it,
    and the ids of every object on the way. Tells which other holders pin a named variable."""
    torch = _imported_torch()
    if torch is None:
        return {}, set()
    census = _Census(torch, None, {}, keep_all=True)
    visited = census.walk([variable_root(name, value)], {})
    keys = {key: path for tally in census.tallies.values() for key, path in tally.keys.items()}
    return keys, visited
