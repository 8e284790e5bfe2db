"""Take a census: every live tensor, attributed to the first holder that reaches it.

Roots are walked in order (user variables, then hidden holders), so a storage that a variable
and ``Out[3]`` both hold counts for the variable. Tensors no root reaches are looked up in the
garbage collector's view: unreachable cycles are reported as such, the rest as "no holder found".
Nothing here keeps a tensor alive once ``take_census`` returns.
"""

from __future__ import annotations

import gc
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from vram_magic.census.cycles import unreachable_ids
from vram_magic.census.model import CACHE, HIDDEN, UNKNOWN, VARIABLE, Census, Holder, TensorEntry
from vram_magic.census.roots import Root, find_roots
from vram_magic.census.walk import Walker

ENTRIES_KEPT = 5
CYCLES = "reference cycles (collectable)"


@dataclass
class _Tally:
    """What one holder reaches, while the census runs."""

    name: str
    kind: str
    release: str
    created_cell: int | None
    stranded: bool = False
    nbytes: int = 0
    tensors: int = 0
    entries: list[TensorEntry] = field(default_factory=list)
    shapes: dict[tuple[str, str, tuple[int, ...]], int] = field(default_factory=dict)
    keys: dict[StorageKey, str] = field(default_factory=dict)  # storage -> path reaching it


class TensorTypes:
    """Decides ``is this a tensor`` by exact type, cached per type: no ``isinstance`` on arbitrary
    objects (that touches ``__class__`` and can fire torch deprecation warnings)."""

    def __init__(self, torch: Any) -> None:
        self._base = torch.Tensor
        self._known: dict[type, bool] = {}

    def __call__(self, obj: Any) -> bool:
        kind = type(obj)
        known = self._known.get(kind)
        if known is None:
            known = self._known[kind] = issubclass(kind, self._base)
        return known


StorageKey = tuple[str, int]


def storage_key(tensor: Any) -> tuple[StorageKey, int]:
    """((device, storage address), storage bytes); views and tied weights share the key."""
    try:
        storage = tensor.untyped_storage()
        return (str(tensor.device), storage.data_ptr() or id(tensor)), storage.nbytes()
    except Exception:  # sparse, nested or meta tensors have no plain storage
        return (str(tensor.device), id(tensor)), 0


def _release_hint(root: Root, kind: str, label: str | None) -> str:
    if root.kind == HIDDEN:
        return "%vram free"
    if kind == VARIABLE:
        return f"%vram free {root.name}"
    if label == "autograd graph":
        return f"%vram free {root.name}, or {root.name} = {root.name}.detach()"
    return f"%vram free {root.name}"


def _holder_name(root: Root, kind: str, label: str | None) -> str:
    if root.kind == HIDDEN or kind == VARIABLE or label is None:
        return root.label
    return f"{root.label} ({label})"


def _summary(shapes: dict[tuple[str, str, tuple[int, ...]], int], tensors: int) -> str:
    common = sorted(shapes.items(), key=lambda item: -item[1])[:2]
    parts = [f"{count} x {dtype} {list(shape)}" for (_, dtype, shape), count in common]
    rest = tensors - sum(count for _, count in common)
    return ", ".join(parts) + (f", +{rest} more" if rest > 0 else "")


class _Census:
    def __init__(
        self, torch: Any, device: str | None, created: Mapping[str, int], keep_all: bool
    ) -> None:
        self.is_tensor = TensorTypes(torch)
        self.device = device
        self.created = created
        self.keep_all = keep_all
        self.counted: dict[StorageKey, int] = {}
        self.reached: set[int] = set()
        self.tallies: dict[tuple[str, str], _Tally] = {}
        self.root: Root | None = None

    def wanted(self, tensor: Any) -> bool:
        if self.device is None:
            return True
        where = str(tensor.device)
        return where == self.device or where.split(":")[0] == self.device

    def tally(
        self, name: str, kind: str, release: str, created: int | None, stranded: bool = False
    ) -> _Tally:
        key = (name, kind)
        if key not in self.tallies:
            self.tallies[key] = _Tally(name, kind, release, created, stranded)
        return self.tallies[key]

    def record(self, tensor: Any, path: str, kind: str, label: str | None) -> None:
        self.reached.add(id(tensor))
        if not self.wanted(tensor):
            return
        root = self.root
        assert root is not None
        created = self.created.get(root.name)
        if created is None and root.name.startswith("Out["):
            created = int(root.name[4:-1])
        target = self.tally(
            _holder_name(root, kind, label),
            kind,
            _release_hint(root, kind, label),
            created,
            stranded=root.kind == HIDDEN,
        )
        self.add(target, tensor, path)

    def add(self, target: _Tally, tensor: Any, path: str) -> None:
        key, nbytes = storage_key(tensor)
        target.tensors += 1
        shape_key = (key[0], str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape))
        target.shapes[shape_key] = target.shapes.get(shape_key, 0) + 1
        if key in self.counted:
            return
        self.counted[key] = nbytes
        target.keys[key] = path
        target.nbytes += nbytes
        target.entries.append(TensorEntry(path, nbytes, shape_key[2], shape_key[1], key[0]))
        if not self.keep_all and len(target.entries) > 4 * ENTRIES_KEPT:
            target.entries.sort(key=lambda entry: -entry.nbytes)
            del target.entries[ENTRIES_KEPT:]

    def walk(self, roots: list[Root], param_names: dict[int, str]) -> None:
        walker = Walker(self.is_tensor, self.record, param_names)
        for root in roots:
            self.root = root
            walker.walk(root.value, root.name, root.kind)
        self.root = None

    def leftovers(self) -> None:
        """Tensors no root reached: in unreachable cycles (gc will free them), or unexplained."""
        objects = gc.get_objects()
        stray = [o for o in objects if self.is_tensor(o) and id(o) not in self.reached]
        del objects
        stray = [t for t in stray if self.wanted(t) and storage_key(t)[0] not in self.counted]
        if not stray:
            return
        garbage = unreachable_ids(stray)
        cycles = self.tally(CYCLES, HIDDEN, "%vram free", None, stranded=True)
        unknown = self.tally(
            "no holder found", UNKNOWN, "held outside the notebook (module globals, threads?)", None
        )
        for tensor in stray:
            self.add(cycles if id(tensor) in garbage else unknown, tensor, "?")
        del stray

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
                    tally = self.tally(
                        f"allocator cache ({name})", CACHE, "%vram free", None, stranded=True
                    )
                    tally.nbytes += free
        except Exception:
            return

    def result(self, seconds: float) -> Census:
        holders = []
        for tally in self.tallies.values():
            if tally.nbytes == 0:
                continue
            entries = sorted(tally.entries, key=lambda entry: -entry.nbytes)
            holders.append(
                Holder(
                    name=tally.name,
                    kind=tally.kind,
                    nbytes=tally.nbytes,
                    tensor_count=tally.tensors,
                    devices=tuple(sorted({device for device, _, _ in tally.shapes})),
                    summary=_summary(tally.shapes, tally.tensors),
                    entries=tuple(entries if self.keep_all else entries[:ENTRIES_KEPT]),
                    created_cell=tally.created_cell,
                    release=tally.release,
                    stranded=tally.stranded,
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
    """id(parameter) -> its name inside the module that owns it, for optimizer state labels."""
    names: dict[int, str] = {}
    for root in roots:
        if isinstance(root.value, torch.nn.Module):
            for name, parameter in root.value.named_parameters():
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
) -> tuple[Census, StorageMap]:
    """The census, plus the storage map behind it."""
    started = time.perf_counter()
    torch = _imported_torch()
    if torch is None:
        return Census((), 0, 0, device, time.perf_counter() - started), StorageMap({}, {})
    census = _Census(torch, device, created or {}, keep_all)
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


def take_census(
    shell: Any | None,
    namespace: dict[str, Any],
    device: str | None = None,
    created: Mapping[str, int] | None = None,
    keep_all: bool = False,
) -> Census:
    """Census of every live tensor by holder. Without torch imported there are no tensors."""
    return census_and_storages(shell, namespace, device, created, keep_all)[0]


def reach(value: Any, name: str) -> dict[StorageKey, str]:
    """Storages one object keeps alive, each with the path of the first tensor reaching it.
    Used to tell which other holders pin the same memory as a named variable."""
    torch = _imported_torch()
    if torch is None:
        return {}
    census = _Census(torch, None, {}, keep_all=True)
    census.walk([Root(name, VARIABLE, value, [])], {})
    return {key: path for tally in census.tallies.values() for key, path in tally.keys.items()}
