"""A restore waiting for a restarted kernel: a mark file per kernel id in the snapshot folder.

``%vram restart`` (and the sidebar's Restart & restore) snapshot the namespace, mark the snapshot
for the kernel's id, and restart it; the next vram_magic loaded in that kernel (same id) takes
the mark, once, and restores the snapshot (``restore.restore_pending``).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from vram_magic.persistence.store import SnapshotError, Store, write_new

_KERNEL_ID = re.compile(r"[A-Za-z0-9._-]{1,128}")


def pending_path(root: Path, kernel_id: str) -> Path:
    """Where the mark of a restore waiting for ``kernel_id`` lives (it need not exist)."""
    if not _KERNEL_ID.fullmatch(kernel_id):
        raise SnapshotError(f"not a kernel id: {kernel_id!r}")
    return root / f"pending-{kernel_id}"


def mark_pending(store: Store, snapshot_id: str, kernel_id: str) -> None:
    """Ask the next vram_magic loaded in kernel ``kernel_id`` to restore ``snapshot_id``."""
    path = pending_path(store.root, kernel_id)
    store.folder(snapshot_id)  # refuses an unknown id
    spare = path.with_name(f".{path.name}-{os.getpid()}")
    write_new(spare, snapshot_id.encode())
    spare.replace(path)


def take_pending(store: Store, kernel_id: str) -> str | None:
    """The snapshot id marked for ``kernel_id``, removing the mark (so it is tried once)."""
    path = pending_path(store.root, kernel_id)
    try:
        snapshot_id = path.read_text().strip()
    except FileNotFoundError:
        return None
    path.unlink(missing_ok=True)
    return snapshot_id


def pending(store: Store) -> dict[str, str]:
    """Snapshot id -> kernel id, for every pending restore."""
    return {
        p.read_text().strip(): p.name.removeprefix("pending-") for p in store.root.glob("pending-*")
    }
