"""``%vram restore``: load a snapshot back into the namespace.

Nothing of a snapshot is unpickled before its manifest's HMAC (this user's key), the pickle's
checksum and every chunk of tensor data checked out. Tensors go back to the device they were on,
or to CPU when asked or when that device is not here (with a note). A variable that fails to load
is skipped with the reason and the others still load. The snapshot is removed only after a
restore in which every saved variable came back where it was (unless ``keep``).
"""

from __future__ import annotations

import functools
import importlib
import io
import pickle
import time
from dataclasses import dataclass
from typing import Any

from vram_magic.persistence.pending import take_pending
from vram_magic.persistence.pickling import SnapshotUnpickler
from vram_magic.persistence.save import Saved, Unsaved, saved_names, storage_view
from vram_magic.persistence.store import SnapshotError, Store, blob_from_json
from vram_magic.protocol.kernel_status import current_kernel_id
from vram_magic.readings.torch_stats import allocator_bytes, cuda_ready, imported_torch


@dataclass(frozen=True)
class RestoreResult:
    id: str
    restored: tuple[Saved, ...]
    skipped: tuple[Unsaved, ...]  # in the snapshot, but could not be loaded here
    unsaved: tuple[Unsaved, ...]  # never in the snapshot (listed when it was taken)
    notes: tuple[str, ...]
    kept: bool  # the snapshot is still on disk
    seconds: float
    vram: tuple[tuple[str, int | None], ...]  # (cuda:N, torch allocated) once CUDA is in use
    # where the time went: importing modules (torch, transformers, the notebook's imports),
    # and reading the tensors' bytes onto their devices; the rest is unpickling
    import_seconds: float = 0.0
    tensor_seconds: float = 0.0


class Placement:
    """Where each recorded device's storages go now; a device not here falls back to CPU."""

    def __init__(self, to: str | None) -> None:
        self.to = to
        self.notes: list[str] = []
        self._chosen: dict[str, str] = {}

    def __call__(self, recorded: str) -> str:
        wanted = self.to or recorded
        if wanted not in self._chosen:
            self._chosen[wanted] = wanted if _usable(wanted) else "cpu"
            if self._chosen[wanted] != wanted:
                self.notes.append(f"{wanted} is not available here: its tensors were loaded to cpu")
        return self._chosen[wanted]


def _usable(device: str) -> bool:
    if device == "cpu":
        return True
    import torch

    try:
        torch.empty(0, device=device)
    except Exception:  # not compiled for it, no such index, no driver
        return False
    return True


class Clock:
    """Seconds spent importing modules and loading tensors, out of a restore's whole time."""

    def __init__(self) -> None:
        self.imports = 0.0
        self.tensors = 0.0

    def imported(self, name: str) -> Any:
        started = time.perf_counter()
        try:
            return importlib.import_module(name)
        finally:
            self.imports += time.perf_counter() - started


def _load_blobs(
    store: Store, snapshot_id: str, manifest: dict, place: Placement, clock: Clock
) -> list[Any]:
    """Every storage and buffer of the snapshot, verified, each on its device."""
    entries = manifest["blobs"]
    torch: Any = clock.imported("torch") if any(e["kind"] == "storage" for e in entries) else None
    started = time.perf_counter()
    loaded: list[Any] = [None] * len(entries)

    def target(index: int, nbytes: int) -> memoryview:
        if entries[index]["kind"] == "buffer":
            loaded[index] = bytearray(nbytes)
            return memoryview(loaded[index])
        loaded[index] = torch.UntypedStorage(nbytes)
        return storage_view(loaded[index])

    blobs = [blob_from_json(entry) for entry in entries]
    for index in store.read_blobs(snapshot_id, blobs, target):
        device = place(entries[index]["device"])
        if device != "cpu":  # one storage at a time: host memory stays small
            loaded[index] = loaded[index].to(device=device)
    clock.tensors += time.perf_counter() - started
    return loaded


def _import(entry: dict, clock: Clock) -> Any:
    module = clock.imported(entry["module"])
    attribute = entry["attribute"]
    return functools.reduce(getattr, attribute.split("."), module) if attribute else module


def _why(error: Exception, failed: list[str]) -> str:
    if isinstance(error, pickle.UnpicklingError) and failed:
        return f"shares objects with {', '.join(failed)}, which could not be restored"
    message = (str(error).splitlines() or [""])[0][:200]
    return f"could not be restored: {type(error).__name__}: {message}"


def restore(
    namespace: dict[str, Any],
    snapshot_id: str | None = None,
    to: str | None = None,
    keep: bool = False,
    store: Store | None = None,
) -> RestoreResult:
    """Load a snapshot (the latest without an id) into ``namespace``; ``to="cpu"`` puts every
    tensor on the CPU."""
    started = time.perf_counter()
    if to not in (None, "cpu"):
        raise SnapshotError(f"tensors can be restored to their own devices or to cpu, not {to!r}")
    store = store or Store()
    if snapshot_id is None:
        ids = store.ids()
        if not ids:
            raise SnapshotError(f"no snapshots in {store.root}", hint="take")
        snapshot_id = ids[-1]
    manifest = store.manifest(snapshot_id)
    pickled = store.verified_pickle(snapshot_id, manifest)
    place = Placement(to)
    clock = Clock()
    loaded = _load_blobs(store, snapshot_id, manifest, place, clock)
    stream = io.BytesIO(pickled)
    unpickler = SnapshotUnpickler(stream, namespace, loaded)
    restored: list[str] = []
    skipped: list[Unsaved] = []
    failed: list[str] = []
    resume = False
    for entry in manifest["names"]:
        try:
            if entry["how"] == "import":
                value = _import(entry, clock)
            else:
                if resume:  # the last load may have stopped inside its pickle
                    stream.seek(entry["start"])
                    unpickler, resume = unpickler.fresh(), False
                value = unpickler.load()
        except Exception as error:
            skipped.append(Unsaved(entry["name"], _why(error, failed)))
            if entry["how"] == "pickle":
                failed.append(entry["name"])
                resume = True
            continue
        namespace[entry["name"]] = value
        restored.append(entry["name"])
    kept = keep or bool(skipped) or bool(place.notes)  # a degraded restore keeps its snapshot
    if not kept:
        store.delete(snapshot_id)
    names = {saved.name: saved for saved in saved_names(manifest, place)}
    return RestoreResult(
        id=snapshot_id,
        restored=tuple(names[name] for name in restored),
        skipped=tuple(skipped),
        unsaved=tuple(Unsaved(u["name"], u["reason"]) for u in manifest["unsaved"]),
        notes=tuple(place.notes),
        kept=kept,
        seconds=time.perf_counter() - started,
        vram=_vram_now(),
        import_seconds=clock.imports + unpickler.import_seconds,
        tensor_seconds=clock.tensors,
    )


def _vram_now() -> tuple[tuple[str, int | None], ...]:
    torch = imported_torch()
    if not cuda_ready(torch):
        return ()
    assert torch is not None
    count = torch.cuda.device_count()
    return tuple((f"cuda:{index}", allocator_bytes(torch, index)[0]) for index in range(count))


def restore_pending(
    namespace: dict[str, Any], kernel_id: str | None = None, store: Store | None = None
) -> RestoreResult | None:
    """Restore the snapshot marked for this kernel, once; None if none. Meant for the moment
    vram_magic loads in a kernel that was restarted to get VRAM back."""
    kernel_id = kernel_id or current_kernel_id()
    if kernel_id is None:
        return None
    store = store or Store()
    snapshot_id = take_pending(store, kernel_id)
    return restore(namespace, snapshot_id, store=store) if snapshot_id else None
