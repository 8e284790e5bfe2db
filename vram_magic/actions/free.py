"""Give memory back without a restart: drop what the census calls stranded (or named variables),
collect, empty torch's cache, and measure what really came back.

Without names only stranded holders are released, those the census reached from a hidden place
(output cache, ``_`` names, the last exception and its frames, IPython's record of the last cell)
and unreachable cycles: user variables are never touched unless named. A named variable is
deleted together with the hidden roots that pin the same storages; a *user* variable that also
pins them is left alone and reported (``Kept``). Each root drops itself from where it lives.
"""

from __future__ import annotations

import gc
import sys
from dataclasses import dataclass
from typing import Any

from vram_magic.census.model import CACHE, Census, Holder
from vram_magic.census.roots import (
    Root,
    clear_exception,
    clear_traceback,
    find_roots,
    user_variables,
)
from vram_magic.census.take import census_and_storages, reach

__all__ = ["FreeError", "FreeResult", "Kept", "Released", "clear_exception", "clear_traceback"]


class FreeError(ValueError):
    """A name that cannot be freed (not a variable of the notebook)."""


@dataclass(frozen=True)
class Released:
    """What one holder gave back; ``nbytes`` is measured (storages that no longer exist)."""

    holder: str
    nbytes: int


@dataclass(frozen=True)
class Kept:
    """The named variable ``name`` was deleted, but ``holder`` (a path such as ``trainer.model``,
    inside the user variable ``root``) still holds the same memory."""

    name: str
    holder: str
    root: str


@dataclass(frozen=True)
class FreeResult:
    dry_run: bool
    released: tuple[Released, ...]
    cache_returned: int  # bytes torch's CUDA cache handed back to the driver
    still_held: tuple[Holder, ...]
    kept: tuple[Kept, ...]
    deleted: tuple[str, ...]
    freed_into_cache: int = 0  # released CUDA bytes: they went to the cache, then to the driver

    @property
    def total(self) -> int:
        """Bytes given back to the devices, each counted once."""
        return sum(r.nbytes for r in self.released) - self.freed_into_cache + self.cache_returned


def _empty_caches() -> tuple[int, int]:
    """(reserved bytes before, after) over CUDA devices, emptying torch's caches in between."""
    torch = sys.modules.get("torch")
    if torch is None:
        return 0, 0
    before = after = 0
    try:
        if torch.cuda.is_initialized():
            devices = range(torch.cuda.device_count())
            before = sum(torch.cuda.memory_reserved(i) for i in devices)
            torch.cuda.empty_cache()
            after = sum(torch.cuda.memory_reserved(i) for i in devices)
        if torch.backends.mps.is_available():
            torch.mps.empty_cache()
    except Exception:
        return before, before
    return before, after


def _pinned_by(name: str, value: Any, others: list[Root]) -> tuple[list[Root], list[Kept]]:
    """Stranded roots pinning the same storages as ``value``; the user variables that hold the
    object itself (``trainer.model``) or, for a tensor, its storage (a view)."""
    mine, _ = reach(value, name)
    is_tensor = name in mine.values()  # the value itself was recorded as a tensor
    hidden: list[Root] = []
    kept: list[Kept] = []
    for other in others:
        paths, visited = reach(other.value, other.name)
        shared = [(path, mine[key]) for key, path in paths.items() if key in mine]
        if other.stranded:
            if shared:
                hidden.append(other)
            continue
        if not (id(value) in visited or (is_tensor and shared)):
            continue
        holder = other.name
        if shared:
            theirs, own = shared[0]
            inner = own[len(name) :]  # "model.fc.weight" -> ".fc.weight"
            holder = theirs[: -len(inner)] if inner and theirs.endswith(inner) else theirs
        kept.append(Kept(name, holder, other.name))
    return hidden, kept


def _targets(roots: list[Root], names: tuple[str, ...]) -> tuple[list[Root], list[Kept]]:
    """The roots to release: stranded ones, or the named variables and what pins their memory."""
    if not names:
        return [r for r in roots if r.stranded], []
    targets = [r for r in roots if r.name in names]
    kept: list[Kept] = []
    for root in list(targets):
        others = [r for r in roots if r not in targets]
        hidden, messages = _pinned_by(root.name, root.value, others)
        targets.extend(h for h in hidden if h not in targets)
        kept.extend(messages)
    return targets, kept


def _release(
    shell: Any | None, namespace: dict[str, Any], targets: list[Root], names: tuple[str, ...]
) -> None:
    """Drop the references; a function of its own so no loop variable keeps a value alive."""
    for root in targets:
        root.drop(shell, namespace)
    for name in names:
        namespace.pop(name, None)


def _released_holders(census: Census, dropped: set[str], named: bool) -> set[str]:
    """The census rows that releasing the roots named ``dropped`` gives back: every row reached
    from them; without names, every stranded row (collectable cycles too) but torch's cache,
    which is measured on its own."""
    return {
        h.name
        for h in census.holders
        if h.root in dropped or (not named and h.stranded and h.kind != CACHE)
    }


def release_stranded(shell: Any | None, namespace: dict[str, Any]) -> None:
    """What ``free()`` does without names, unmeasured: for ``%%fit`` between attempts, where the
    two censuses that measure what came back would cost more than the attempt."""
    roots = find_roots(shell, namespace)
    _release(shell, namespace, [r for r in roots if r.stranded], ())
    del roots
    gc.collect()
    _empty_caches()


def free(
    shell: Any | None,
    namespace: dict[str, Any],
    names: tuple[str, ...] = (),
    dry_run: bool = False,
    top: int = 5,
) -> FreeResult:
    """Release hidden holders (or ``names`` and what pins them), then collect and empty caches.
    A name given twice is one variable: it is freed, and reported, once."""
    names = tuple(dict.fromkeys(names))
    variables = set(user_variables(namespace, getattr(shell, "user_ns_hidden", {}) or {}))
    missing = [name for name in names if name not in variables]
    if missing:
        raise FreeError(f"no variable named {', '.join(missing)} in this notebook")
    census, storages = census_and_storages(shell, namespace)
    roots = find_roots(shell, namespace)
    targets, kept = _targets(roots, names)
    labels = _released_holders(census, {root.name for root in targets}, bool(names))
    if dry_run:
        would = tuple(Released(h.name, h.nbytes) for h in census.holders if h.name in labels)
        cache = 0 if names else sum(h.nbytes for h in census.by_kind(CACHE))
        return FreeResult(True, would, cache, census.holders[:top], tuple(kept), ())
    _release(shell, namespace, targets, names)
    del roots, targets
    gc.collect()
    cache_before, cache_after = _empty_caches()
    after, after_storages = census_and_storages(shell, namespace)
    gone = {
        label: [k for k in keys if k not in after_storages.live]
        for label, keys in storages.by_holder.items()
        if label in labels
    }
    released = [
        Released(label, sum(storages.live[k] for k in keys)) for label, keys in gone.items()
    ]
    on_cuda = sum(storages.live[k] for keys in gone.values() for k in keys if k[0] >= 0)
    return FreeResult(
        dry_run=False,
        released=tuple(sorted((r for r in released if r.nbytes), key=lambda r: -r.nbytes)),
        cache_returned=max(cache_before - cache_after, 0),
        still_held=after.holders[:top],
        kept=tuple(kept),
        deleted=names,
        freed_into_cache=on_cuda if cache_before else 0,
    )
