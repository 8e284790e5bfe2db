"""``%vram snapshot``: save the notebook's namespace so a fresh process can get it back.

What is saved, per variable: modules and names importable from a module (``import numpy as np``,
``from os import environ``) as imports; everything else pickled (pickling.py) with tensor
storages and large buffers streamed to one data file, each storage once, with the device it was
on. A variable that cannot be saved is listed with the reason, never dropped silently. Names
starting with ``_``, IPython's own entries and vram_magic's objects are not user state.
"""

from __future__ import annotations

import ctypes
import functools
import io
import platform
import sys
import time
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from vram_magic.census.roots import user_variables
from vram_magic.persistence.pending import pending
from vram_magic.persistence.pickling import (
    SnapshotPickler,
    Source,
    Unsavable,
    unsavable_reason,
)
from vram_magic.persistence.store import (
    CHUNK,
    SnapshotError,
    Store,
    blob_to_json,
)

ROOM = 2**20  # for the manifest, beyond the data and the pickle, when checking free space


@dataclass(frozen=True)
class Saved:
    """One variable in a snapshot. ``nbytes`` counts the storages and buffers it brought that no
    earlier variable had (shared storage is counted once); ``devices`` are where its tensors are,
    shared or not; ``how`` is "pickled" or the import."""

    name: str
    type: str
    nbytes: int
    devices: tuple[str, ...]
    how: str


@dataclass(frozen=True)
class Unsaved:
    name: str
    reason: str


@dataclass(frozen=True)
class SnapshotResult:
    id: str
    folder: str
    saved: tuple[Saved, ...]
    unsaved: tuple[Unsaved, ...]
    nbytes: int  # on disk
    seconds: float


@dataclass(frozen=True)
class SnapshotInfo:
    """One snapshot on disk, as the list of snapshots shows it."""

    id: str
    created: str
    names: int
    unsaved: int
    nbytes: int
    pending_for: str | None = None  # kernel id whose next load restores it
    problem: str | None = None  # why it cannot be restored (not signed with your key, ...)


def user_state(shell: Any | None, namespace: dict[str, Any]) -> dict[str, Any]:
    """The variables a snapshot considers, in the order they were first bound: the user's
    variables (``census.roots.user_variables``) less private names and vram_magic's objects."""
    hidden = getattr(shell, "user_ns_hidden", {}) if shell is not None else {}
    return {
        name: value
        for name, value in user_variables(namespace, hidden).items()
        if not name.startswith("_") and not type(value).__module__.startswith("vram_magic")
    }


def import_of(name: str, value: Any) -> tuple[str, str | None] | None:
    """(module, attribute or None) when ``value`` is a module, or is ``module.attribute``
    itself (a function, class or object imported from a module): restored by importing it."""
    if isinstance(value, types.ModuleType):
        named = sys.modules.get(value.__name__) is value and value.__spec__ is not None
        return (value.__name__, None) if named else None
    home, qualname = getattr(value, "__module__", None), getattr(value, "__qualname__", None)
    candidates: list[tuple[Any, Any]] = [(type(value).__module__, name)]
    if isinstance(home, str):  # from the package first: from transformers import LlamaConfig
        candidates[:0] = [(home.partition(".")[0], qualname), (home, qualname)]
    for module_name, attribute in candidates:
        if not isinstance(module_name, str) or not isinstance(attribute, str):
            continue
        module = sys.modules.get(module_name)
        if module_name == "__main__" or module is None or "<" in attribute:
            continue
        try:
            found = functools.reduce(getattr, attribute.split("."), module)
        except Exception:
            continue
        if found is value:
            return module_name, attribute
    return None


def describe_import(name: str, module: str, attribute: str | None) -> str:
    """The import statement that binds ``name`` again: ``import numpy as np``."""
    statement = f"import {module}" if attribute is None else f"from {module} import {attribute}"
    return statement if name == (attribute or module) else f"{statement} as {name}"


def type_name(value: Any) -> str:
    return "class" if isinstance(value, type) else type(value).__qualname__


def _reason(error: Exception) -> str:
    if isinstance(error, Unsavable):
        return str(error)
    message = (str(error).splitlines() or [""])[0][:200]
    return f"{type(error).__name__}: {message}" if message else type(error).__name__


def _pickle(
    values: dict[str, Any], namespace: dict[str, Any]
) -> tuple[bytes, list[dict], list[Source], dict[str, str]]:
    """One pickle per name with one memo (so sharing survives), in one stream. A name that fails
    is left out with its reason and the stream is started again without it."""
    failed: dict[str, str] = {}
    while True:
        stream = io.BytesIO()
        pickler = SnapshotPickler(stream, namespace)
        entries: list[dict] = []
        todo = [(name, value) for name, value in values.items() if name not in failed]
        try:
            for name, value in todo:
                start, first = stream.tell(), len(pickler.sources)
                pickler.top, pickler.devices = value, set()
                pickler.dump(value)
                entries.append(
                    {
                        "name": name,
                        "type": type_name(value),
                        "how": "pickle",
                        "start": start,
                        "blobs": [first, len(pickler.sources)],
                        "devices": sorted(pickler.devices),
                    }
                )
        except Exception as error:
            failed[todo[len(entries)][0]] = _reason(error)
            continue
        return stream.getvalue(), entries, pickler.sources, failed


def storage_view(storage: Any) -> memoryview:
    """The bytes of a CPU torch storage, without a copy (and without needing numpy)."""
    size = storage.nbytes()
    if size == 0:
        return memoryview(bytearray())
    return memoryview((ctypes.c_char * size).from_address(storage.data_ptr())).cast("B")


def _chunks(source: Source) -> Iterator[memoryview]:
    """The source's bytes in CHUNK pieces; a device storage is copied to the host first."""
    if source.kind == "buffer":
        view = source.data.raw()
    else:
        storage = source.data if source.device == "cpu" else source.data.cpu()
        view = storage_view(storage)
    for start in range(0, view.nbytes, CHUNK):
        yield view[start : start + CHUNK]


def snapshot(
    shell: Any | None,
    namespace: dict[str, Any],
    exclude: Iterable[str] = (),
    store: Store | None = None,
) -> SnapshotResult:
    """Save the namespace's variables (all but ``exclude``) as a new snapshot."""
    started = time.perf_counter()
    store = store or Store()
    variables = user_state(shell, namespace)
    unknown = sorted(set(exclude) - set(variables))
    if unknown:
        raise SnapshotError(f"cannot exclude {', '.join(unknown)}: no such variable")
    for name in exclude:
        del variables[name]
    imports, to_pickle, unsaved = [], {}, {}
    for name, value in variables.items():
        found = import_of(name, value)
        if found is not None:
            entry = {"name": name, "type": type_name(value), "how": "import"}
            imports.append({**entry, "module": found[0], "attribute": found[1]})
        elif (reason := unsavable_reason(value)) is not None:
            unsaved[name] = reason
        else:
            to_pickle[name] = value
    pickled, entries, sources, failed = _pickle(to_pickle, namespace)
    unsaved.update(failed)
    snapshot_id = store.new_id()
    need = sum(source.nbytes for source in sources) + len(pickled) + ROOM
    with store.writing(snapshot_id, need) as writer:
        blobs = [writer.add_blob(_chunks(source)) for source in sources]
        manifest = {
            "id": snapshot_id,
            "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "python": platform.python_version(),
            "torch": getattr(sys.modules.get("torch"), "__version__", None),
            "names": [*imports, *entries],
            "blobs": [
                {**blob_to_json(blob), "device": source.device, "kind": source.kind}
                for blob, source in zip(blobs, sources, strict=True)
            ],
            "unsaved": [{"name": name, "reason": reason} for name, reason in unsaved.items()],
        }
        store.write_pickle_and_manifest(writer, pickled, manifest)
    return SnapshotResult(
        id=snapshot_id,
        folder=str(store.root / snapshot_id),
        saved=saved_names(manifest),
        unsaved=tuple(Unsaved(name, reason) for name, reason in unsaved.items()),
        nbytes=sum(blob.nbytes for blob in blobs) + len(pickled),
        seconds=time.perf_counter() - started,
    )


def saved_names(manifest: dict, place: Callable[[str], str] | None = None) -> tuple[Saved, ...]:
    """Each name of a manifest; ``place`` maps a recorded device to where it is now."""
    saved = []
    for entry in manifest["names"]:
        if entry["how"] == "import":
            how = describe_import(entry["name"], entry["module"], entry["attribute"])
            saved.append(Saved(entry["name"], entry["type"], 0, (), how))
            continue
        first, last = entry["blobs"]
        nbytes = sum(blob["nbytes"] for blob in manifest["blobs"][first:last])
        devices = {place(device) if place else device for device in entry["devices"]}
        saved.append(Saved(entry["name"], entry["type"], nbytes, tuple(sorted(devices)), "pickled"))
    return tuple(saved)


def list_snapshots(store: Store | None = None) -> tuple[SnapshotInfo, ...]:
    """Every snapshot of this user, oldest first; one that fails verification says why."""
    store = store or Store()
    waiting = pending(store)
    found = []
    for snapshot_id in store.ids():
        try:
            manifest = store.manifest(snapshot_id)
        except (ValueError, KeyError) as error:  # SnapshotError is a ValueError
            found.append(SnapshotInfo(snapshot_id, "?", 0, 0, 0, problem=str(error)))
            continue
        nbytes = sum(b["nbytes"] for b in manifest["blobs"]) + manifest["pickle"]["size"]
        found.append(
            SnapshotInfo(
                snapshot_id,
                manifest["created"],
                len(manifest["names"]),
                len(manifest["unsaved"]),
                nbytes,
                waiting.get(snapshot_id),
            )
        )
    return tuple(found)
