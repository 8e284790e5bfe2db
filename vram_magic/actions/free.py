"""Give memory back without a restart: drop hidden holders (or named variables), collect, empty
torch's cache, and measure what really came back.

Without names only hidden holders are released (output cache, ``_`` names, the last exception and
its frames, IPython's record of the last cell, unreachable cycles): user variables are never
touched unless named. A named variable is deleted together with the hidden holders that pin the
same storages; a *user* variable that also pins them is left alone and reported, with how to
release it.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import traceback
import types
from dataclasses import dataclass
from typing import Any

from vram_magic.census.model import CACHE, HIDDEN, Holder
from vram_magic.census.roots import Root, find_roots, user_variables
from vram_magic.census.take import CYCLES, census_and_storages, reach


class FreeError(ValueError):
    """A name that cannot be freed (not a variable of the notebook)."""


@dataclass(frozen=True)
class Released:
    """What one holder gave back; ``nbytes`` is measured (storages that no longer exist)."""

    holder: str
    nbytes: int


@dataclass(frozen=True)
class FreeResult:
    dry_run: bool
    released: tuple[Released, ...]
    cache_returned: int  # bytes torch's CUDA cache handed back to the driver
    still_held: tuple[Holder, ...]
    kept: tuple[str, ...]
    deleted: tuple[str, ...]
    freed_into_cache: int = 0  # released CUDA bytes: they went to the cache, then to the driver

    @property
    def total(self) -> int:
        """Bytes given back to the devices, each counted once."""
        return sum(r.nbytes for r in self.released) - self.freed_into_cache + self.cache_returned


def clear_traceback(tb: types.TracebackType | None) -> None:
    """Drop the locals of every frame of a traceback. Reading ``f_locals`` afterwards re-syncs the
    dict Python 3.11/3.12 cache on a frame, which ``frame.clear()`` alone leaves holding values."""
    traceback.clear_frames(tb)
    while tb is not None:
        with contextlib.suppress(Exception):
            tb.tb_frame.f_locals  # noqa: B018
        tb = tb.tb_next


def clear_exception(error: BaseException | None) -> None:
    """Drop the locals of every frame the exception (and its chained ones) hold."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        clear_traceback(error.__traceback__)
        error = error.__context__ or error.__cause__


def _drop_hidden(shell: Any | None, namespace: dict[str, Any], root: Root) -> None:
    """Remove every reference the hidden holder ``root`` (and its aliases) names."""
    value = root.value
    hidden_names = getattr(shell, "user_ns_hidden", {})  # IPython keeps _, _N there too
    for name in (root.name, *root.aliases):
        if hidden_names.get(name) is value:
            del hidden_names[name]
        if name.startswith("Out["):
            (namespace.get("Out") or {}).pop(int(name[4:-1]), None)
        elif name in {"_", "__", "___"}:
            if namespace.get(name) is value:
                namespace[name] = ""
            hook = getattr(shell, "displayhook", None)
            if getattr(hook, name, None) is value:
                setattr(hook, name, "")
        elif name.startswith("_") and name[1:].isdigit():
            namespace.pop(name, None)
        elif name.startswith("sys.last_"):
            for attribute in ("last_exc", "last_value", "last_traceback", "last_type"):
                if hasattr(sys, attribute):
                    if attribute != "last_type" and isinstance(
                        getattr(sys, attribute), BaseException
                    ):
                        clear_exception(getattr(sys, attribute))
                    delattr(sys, attribute)
        elif name == "IPython's last traceback" and shell is not None:
            shell.InteractiveTB.tb = None
        elif name.startswith("last cell's"):
            last = getattr(shell, "last_execution_result", None)
            if last is not None:
                clear_exception(last.error_in_exec)
                last.result = None
                last.error_in_exec = None
    if isinstance(value, BaseException):
        clear_exception(value)
    elif isinstance(value, types.TracebackType):
        clear_traceback(value)


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


def _pinned_by(name: str, value: Any, others: list[Root]) -> tuple[list[Root], list[str]]:
    """Hidden roots pinning the same storages as ``value``; messages for user variables that hold
    the object itself (``trainer.model``) or, for a tensor, its storage (a view)."""
    mine, _ = reach(value, name)
    is_tensor = name in mine.values()  # the value itself was recorded as a tensor
    hidden, kept = [], []
    for other in others:
        paths, visited = reach(other.value, other.name)
        shared = [(path, mine[key]) for key, path in paths.items() if key in mine]
        if other.kind == HIDDEN:
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
        kept.append(
            f"{name}: {holder} still holds the same memory; "
            f"release it with `del {holder}` or `%vram free {other.name}`"
        )
    return hidden, kept


def _released_by(label: str, target_labels: set[str]) -> bool:
    """Whether a census row belongs to a released root (``model`` or ``model (autograd graph)``)."""
    return label in target_labels or any(label.startswith(f"{t} (") for t in target_labels)


def _targets(roots: list[Root], names: tuple[str, ...]) -> tuple[list[Root], list[str]]:
    """The roots to release: hidden ones, or the named variables and what pins the same memory."""
    if not names:
        return [r for r in roots if r.kind == HIDDEN], []
    targets = [r for r in roots if r.name in names]
    kept: list[str] = []
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
        _drop_hidden(shell, namespace, root)
    for name in names:
        namespace.pop(name, None)


def release_stranded(shell: Any | None, namespace: dict[str, Any]) -> None:
    """What ``free()`` does without names, unmeasured: for ``%%fit`` between attempts, where the
    two censuses that measure what came back would cost more than the attempt."""
    roots = find_roots(shell, namespace)
    _release(shell, namespace, [r for r in roots if r.kind == HIDDEN], ())
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
    labels = {root.label for root in targets} | (set() if names else {CYCLES})
    if dry_run:
        would = tuple(
            Released(h.name, h.nbytes) for h in census.holders if _released_by(h.name, labels)
        )
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
        if _released_by(label, labels)
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
