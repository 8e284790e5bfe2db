"""Snapshots under faults: a kill mid-write, flipped bytes, a foreign key, a full disk, loose
permissions. Each must leave the earlier snapshots loadable and load nothing it cannot trust."""

import contextlib
import os
import pickle
import re
import signal
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vram_magic.persistence import store as snapshot_store
from vram_magic.persistence.pending import mark_pending
from vram_magic.persistence.restore import restore, restore_pending
from vram_magic.persistence.save import list_snapshots, snapshot
from vram_magic.persistence.store import DATA, MANIFEST, PICKLE, SnapshotError, Store

torch = pytest.importorskip("torch")
MiB = 2**20


def namespace(mib: int = 1) -> dict:
    return {"weights": torch.arange(mib * MiB // 4, dtype=torch.float32), "note": "hello"}


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_folder_key_and_files_are_private(snapshot_dir):
    result = snapshot(None, namespace())
    folder = Path(result.folder)
    assert mode(snapshot_dir) == 0o700 and mode(folder) == 0o700
    assert mode(snapshot_dir / "key") == 0o600
    assert {p.name: mode(p) for p in folder.iterdir()} == {
        DATA: 0o600,
        PICKLE: 0o600,
        MANIFEST: 0o600,
    }


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (DATA, f"{DATA} does not match its manifest (changed or damaged); nothing was loaded"),
        (PICKLE, f"{PICKLE} does not match its manifest"),
        (MANIFEST, "is not signed with your key (changed, damaged or someone else's)"),
    ],
)
def test_a_flipped_byte_is_refused_and_the_snapshot_kept(snapshot_dir, name, message):
    result = snapshot(None, namespace())
    path = Path(result.folder) / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    target = {"weights": "untouched"}
    with pytest.raises(SnapshotError, match=re.escape(message)):
        restore(target, result.id)
    assert target == {"weights": "untouched"}
    assert [info.id for info in list_snapshots()] == [result.id]


class Trap:
    """Unpickling it creates ``path``: the proof that a pickle was (or was not) loaded."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (self.path,))


def forge(store: Store, trap: Path) -> str:
    """A snapshot whose pickle runs code, correctly checksummed and signed with ``store``'s key."""
    snapshot_id = store.new_id()
    pickled = pickle.dumps(Trap(trap), protocol=5)
    entry = {"name": "x", "type": "Trap", "how": "pickle", "start": 0}
    manifest = {"id": snapshot_id, "created": "now", "unsaved": [], "blobs": []}
    manifest["names"] = [{**entry, "blobs": [0, 0], "devices": []}]
    with store.writing(snapshot_id, need=0) as writer:
        store.write_pickle_and_manifest(writer, pickled, manifest)
    return snapshot_id


def test_a_foreign_snapshot_is_refused_before_anything_is_unpickled(tmp_path):
    ours, theirs = Store(tmp_path / "ours"), Store(tmp_path / "theirs")
    trap = tmp_path / "pickle-ran"
    snapshot_id = forge(theirs, trap)
    os.rename(theirs.root / snapshot_id, ours.root / snapshot_id)
    with pytest.raises(SnapshotError, match="not signed with your key"):
        restore({}, snapshot_id, store=ours)
    assert not trap.exists()
    listed = list_snapshots(ours)
    assert listed[0].problem is not None and "not signed with your key" in listed[0].problem
    os.rename(ours.root / snapshot_id, theirs.root / snapshot_id)
    restore({}, snapshot_id, store=theirs)  # signed by its own key, the same pickle does run
    assert trap.exists()


CHILD = """
import sys, time, torch
from vram_magic.persistence import store as snapshot_store
from vram_magic.persistence.save import snapshot
from vram_magic.config import settings

settings.snapshot_dir = sys.argv[1]
write = snapshot_store._write_all

def stall(fd, data):  # after the first chunk of tensor data: say so, then hang until killed
    write(fd, data)
    print("writing", flush=True)
    time.sleep(60)

snapshot_store._write_all = stall
snapshot(None, {"big": torch.ones(64 * 2**20 // 4)})
"""


def test_sigkill_during_a_snapshot_keeps_the_previous_one(snapshot_dir):
    earlier = snapshot(None, namespace())
    child = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(CHILD), str(snapshot_dir)],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert child.stdout.readline() == "writing\n"
        partial = next(snapshot_dir.glob(".partial-*"))
        assert (partial / DATA).stat().st_size == snapshot_store.CHUNK
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert [info.id for info in list_snapshots()] == [earlier.id]  # the torn one is not listed
    target: dict = {}
    restore(target, keep=True)  # the latest complete snapshot
    assert torch.equal(target["weights"], namespace()["weights"])
    snapshot(None, {"small": 1})
    assert not partial.exists()  # the next snapshot clears what the killed one left


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A real small filesystem when mounting works (root, no container limits), else None."""
    path.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "tmpfs", str(path)],
        capture_output=True,
    )
    try:
        yield path if mounted.returncode == 0 else None
    finally:
        if mounted.returncode == 0:
            subprocess.run(["umount", "-l", str(path)], check=True)


def test_a_too_small_disk_is_refused_before_writing(tmp_path, monkeypatch):
    with tmpfs(tmp_path / "small", "1m") as small:
        root = small or tmp_path / "small"
        if small is None:  # fallback: the free-space probe says 1 MiB
            monkeypatch.setattr(snapshot_store, "free_bytes", lambda path: MiB)
        store = Store(root / "snapshots")
        with pytest.raises(SnapshotError) as error:
            snapshot(None, namespace(4), store=store)
        assert str(error.value).startswith(
            "not enough disk space for the snapshot: it needs 5.0 MiB, "
        )
        assert "free in" in str(error.value) and "\n" not in str(error.value)
        assert sorted(p.name for p in store.root.iterdir()) == ["key"]


def test_a_disk_that_fills_up_mid_write_leaves_nothing(tmp_path, monkeypatch):
    with tmpfs(tmp_path / "small", "1m") as small:
        if small is None:
            pytest.skip("cannot mount a tmpfs here (the refusal above covers the check)")
        monkeypatch.setattr(snapshot_store, "free_bytes", lambda path: 2**40)  # a lying probe
        store = Store(small / "snapshots")
        with pytest.raises(SnapshotError, match="the disk filled up; nothing was kept"):
            snapshot(None, namespace(4), store=store)
        assert sorted(p.name for p in store.root.iterdir()) == ["key"]


def test_a_key_others_can_read_is_refused(snapshot_dir):
    Store()
    (snapshot_dir / "key").chmod(0o644)
    with pytest.raises(SnapshotError, match="must be yours and private"):
        Store()


def test_a_pending_restore_runs_once_for_its_kernel(snapshot_dir):
    saved = snapshot(None, namespace())
    store = Store()
    mark_pending(store, saved.id, "kernel-1234")
    assert list_snapshots()[0].pending_for == "kernel-1234"
    assert restore_pending({}, "another-kernel") is None
    target: dict = {}
    result = restore_pending(target, "kernel-1234")
    assert result is not None and result.id == saved.id and target["note"] == "hello"
    assert restore_pending({}, "kernel-1234") is None
    with pytest.raises(SnapshotError, match="not a kernel id"):
        mark_pending(store, saved.id, "../escape")


def test_a_snapshot_error_says_the_problem_and_render_adds_the_magics_hint(tmp_path):
    from vram_magic.persistence.restore import restore
    from vram_magic.persistence.store import SnapshotError, Store
    from vram_magic.render.snapshot import snapshot_error_text

    with pytest.raises(SnapshotError) as raised:
        restore({}, store=Store(tmp_path))
    assert str(raised.value) == f"no snapshots in {tmp_path}" and "%vram" not in str(raised.value)
    assert snapshot_error_text(raised.value).endswith("; `%vram snapshot` makes one")
