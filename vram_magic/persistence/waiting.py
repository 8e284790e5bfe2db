"""A snapshot waiting for a notebook: what an idle kernel left when the server shut it down.

The kernel that reopens the notebook has a new id, so the mark is kept per notebook path (a
file named by the path's hash, holding the snapshot id and the path). A mark whose snapshot is
gone (restored, deleted) means nothing and is removed when it is read.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from vram_magic.persistence.store import SnapshotError, Store, write_new


def waiting_path(root: Path, notebook: str) -> Path:
    return root / f"waiting-{hashlib.sha256(notebook.encode()).hexdigest()[:32]}"


def mark_waiting(store: Store, snapshot_id: str, notebook: str) -> None:
    """Leave ``snapshot_id`` waiting for whoever opens ``notebook`` next."""
    store.folder(snapshot_id)  # refuses an unknown id
    path = waiting_path(store.root, notebook)
    spare = path.with_name(f".{path.name}-{os.getpid()}")
    write_new(spare, json.dumps({"snapshot": snapshot_id, "notebook": notebook}).encode())
    spare.replace(path)


def waiting_for(store: Store, notebook: str) -> str | None:
    """The id of the snapshot waiting for ``notebook``, or None."""
    path = waiting_path(store.root, notebook)
    try:
        mark = json.loads(path.read_text())
        snapshot_id = str(mark["snapshot"])
        if mark["notebook"] != notebook:  # a hash collision: another notebook's
            return None
    except FileNotFoundError:
        return None
    except (OSError, ValueError, KeyError, TypeError):
        path.unlink(missing_ok=True)
        return None
    try:
        store.folder(snapshot_id)
    except SnapshotError:  # restored or deleted since
        path.unlink(missing_ok=True)
        return None
    return snapshot_id


def clear_waiting(store: Store, notebook: str) -> None:
    waiting_path(store.root, notebook).unlink(missing_ok=True)
