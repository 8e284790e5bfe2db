"""Where snapshots live on disk, and the guarantees around them: a private folder, a per-user
HMAC key, atomic writes, a free-space check, and verification of every byte before anything of a
snapshot is unpickled. It knows files and bytes only; what goes into them is snapshot.py's job.

One snapshot is a folder named by its id holding ``tensors.bin`` (every tensor storage and
out-of-band buffer, back to back), ``namespace.pickle`` and ``manifest``: an HMAC-SHA256 (hex)
line, then the manifest JSON, which holds the BLAKE3 checksum of the pickle and of every chunk of
every blob. A snapshot is written into ``.partial-<id>-<pid>`` and renamed into place when complete.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import json
import os
import re
import secrets
import shutil
import stat
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from blake3 import blake3

from vram_magic.config import settings

CHUNK = 32 * 2**20  # bytes hashed as one piece: big enough to stream fast, small enough to overlap
DATA, PICKLE, MANIFEST, KEY = "tensors.bin", "namespace.pickle", "manifest", "key"
FORMAT = 1
_ID = re.compile(r"\d{8}-\d{6}-[0-9a-f]{4}")
_PARTIAL = re.compile(rf"\.partial-{_ID.pattern}-(?P<pid>\d+)")


class SnapshotError(ValueError):
    """A snapshot that cannot be written, found or trusted; the message is one line. ``hint``
    names what helps, for a front door to phrase: ``"list"`` (the snapshots there are) or
    ``"take"`` (take one first)."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint


def snapshot_root() -> Path:
    """``settings.snapshot_dir``, else ``$VRAM_MAGIC_SNAPSHOT_DIR``, else Jupyter's data dir."""
    chosen = settings.snapshot_dir or os.environ.get("VRAM_MAGIC_SNAPSHOT_DIR")
    if chosen:
        return Path(chosen).expanduser()
    try:
        from jupyter_core.paths import jupyter_data_dir
    except ImportError:  # plain IPython without Jupyter installed
        return Path.home() / ".local" / "share" / "jupyter" / "vram_magic" / "snapshots"
    return Path(jupyter_data_dir()) / "vram_magic" / "snapshots"


def free_bytes(path: Path) -> int:
    """Free disk space where ``path`` lives (the probe the space check uses)."""
    return shutil.disk_usage(path).free


def checksum(data: Any) -> str:
    """BLAKE3 (cryptographic, and 4x sha256's speed here: tensor data is hashed at disk speed)."""
    return blake3(data, max_threads=1).hexdigest()


@dataclass(frozen=True)
class Blob:
    """Where one storage or buffer lies in ``tensors.bin``; the checksum of each CHUNK of it."""

    offset: int
    nbytes: int
    chunks: tuple[str, ...]


def _private_dir(path: Path) -> None:
    """Create ``path`` as 0700, or check that an existing one is ours and make it 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = path.stat()
    if info.st_uid != os.geteuid():
        raise SnapshotError(f"snapshot folder {path} belongs to another user; refusing to use it")
    if stat.S_IMODE(info.st_mode) != 0o700:
        path.chmod(0o700)


def _create(path: Path) -> int:
    """A new private file (0600); fails if it exists, so nothing is ever overwritten."""
    return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)


def _digest(hashing: ThreadPoolExecutor, chunk: memoryview) -> Callable[[], str]:
    """The chunk's checksum, to collect later: big chunks hash on the thread (beside the disk
    I/O), small ones right away (a thread hop costs more than hashing them)."""
    if chunk.nbytes < 2**20:
        value = checksum(chunk)
        return lambda: value
    return hashing.submit(checksum, chunk).result


def _write_all(fd: int, data: Any) -> None:
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view) :]


def write_new(path: Path, data: bytes) -> None:
    fd = _create(path)
    try:
        _write_all(fd, data)
    finally:
        os.close(fd)


def _read_into(fd: int, view: memoryview, path: Path) -> None:
    while view:
        count = os.readv(fd, [view])
        if count == 0:
            raise SnapshotError(f"{path} is shorter than its manifest says; nothing was loaded")
        view = view[count:]


def _disk_error(error: OSError, root: Path) -> SnapshotError:
    if error.errno in (errno.ENOSPC, errno.EDQUOT):
        why = "the disk filled up"
    else:
        why = error.strerror or str(error)
    return SnapshotError(f"could not write the snapshot in {root}: {why}; nothing was kept")


class Writer:
    """Fills one partial snapshot folder: blobs stream to ``tensors.bin`` while being hashed."""

    def __init__(self, folder: Path, hashing: ThreadPoolExecutor) -> None:
        self.folder = folder
        self._fd = _create(folder / DATA)
        self._hashing = hashing
        self._offset = 0

    def add_blob(self, chunks: Iterable[memoryview]) -> Blob:
        """Write the chunks (each at most CHUNK bytes) as one blob; each is hashed while written."""
        start, digests = self._offset, []
        for chunk in chunks:
            digest = _digest(self._hashing, chunk)
            _write_all(self._fd, chunk)
            self._offset += chunk.nbytes
            digests.append(digest())  # before the producer may reuse the chunk's memory
        return Blob(start, self._offset - start, tuple(digests))

    def close(self) -> None:
        os.close(self._fd)


class Store:
    """The snapshot folder of this user: its key, its snapshots, and pending-restore marks."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = root if root is not None else snapshot_root()
        _private_dir(self.root)
        self._key = self._load_key()

    def _load_key(self) -> bytes:
        path = self.root / KEY
        if not path.exists():
            spare = self.root / f".key-{os.getpid()}-{secrets.token_hex(4)}"
            write_new(spare, secrets.token_bytes(32))
            with contextlib.suppress(FileExistsError):  # another kernel made it first: use theirs
                os.link(spare, path)
            spare.unlink()
        info = path.stat()
        if info.st_uid != os.geteuid() or stat.S_IMODE(info.st_mode) & 0o077:
            raise SnapshotError(f"{path} must be yours and private (0600); refusing to use it")
        return path.read_bytes()

    def _sign(self, body: bytes) -> str:
        return hmac.new(self._key, body, hashlib.sha256).hexdigest()

    def folder(self, snapshot_id: str) -> Path:
        """The folder of an existing snapshot; a clear error for an unknown or malformed id."""
        path = self.root / snapshot_id
        if not _ID.fullmatch(snapshot_id) or not (path / MANIFEST).is_file():
            # the magic's words stay until the front door phrases the hint (snapshot_error_text)
            raise SnapshotError(f"no snapshot {snapshot_id}", "list")
        return path

    def ids(self) -> list[str]:
        """Complete snapshots, oldest first (ids sort by time)."""
        return sorted(
            p.name for p in self.root.iterdir() if _ID.fullmatch(p.name) and (p / MANIFEST).exists()
        )

    def new_id(self) -> str:
        """``20261127-041501-ab12``: local time, then the fraction of the second in 1/65536ths,
        so ids sort by time even within one second."""
        now = time.time()
        return time.strftime("%Y%m%d-%H%M%S-", time.localtime(now)) + f"{int(now % 1 * 65536):04x}"

    @contextlib.contextmanager
    def writing(self, snapshot_id: str, need: int) -> Iterator[Writer]:
        """A Writer on a partial folder that becomes ``snapshot_id`` only if the block completes;
        refused up front when the disk has less than ``need`` bytes free."""
        self._remove_dead_partials()
        free = free_bytes(self.root)
        if free < need:
            raise SnapshotError(
                f"not enough disk space for the snapshot: it needs {_mib(need)}, "
                f"{_mib(free)} free in {self.root} (set vram_magic.settings.snapshot_dir "
                "or VRAM_MAGIC_SNAPSHOT_DIR to a larger disk)"
            )
        partial = self.root / f".partial-{snapshot_id}-{os.getpid()}"
        try:
            partial.mkdir(mode=0o700)
            with ThreadPoolExecutor(1, thread_name_prefix="vram_magic-hash") as hashing:
                writer = Writer(partial, hashing)
                try:
                    yield writer
                finally:
                    writer.close()
            partial.rename(self.root / snapshot_id)
        except OSError as error:
            raise _disk_error(error, self.root) from None
        finally:
            shutil.rmtree(partial, ignore_errors=True)

    def write_pickle_and_manifest(self, writer: Writer, pickled: bytes, manifest: dict) -> None:
        """The pickle, then the signed manifest holding the checksums of everything before it."""
        write_new(writer.folder / PICKLE, pickled)
        record = {"size": len(pickled), "blake3": checksum(pickled)}
        body = json.dumps({**manifest, "format": FORMAT, "pickle": record}, sort_keys=True).encode()
        write_new(writer.folder / MANIFEST, self._sign(body).encode() + b"\n" + body)

    def manifest(self, snapshot_id: str) -> dict:
        """The manifest of a snapshot, after its HMAC checked out with this user's key."""
        raw = (self.folder(snapshot_id) / MANIFEST).read_bytes()
        signature, _, body = raw.partition(b"\n")
        if not hmac.compare_digest(signature, self._sign(body).encode()):
            raise SnapshotError(
                f"snapshot {snapshot_id} is not signed with your key (changed, damaged or "
                "someone else's); refusing to load it"
            )
        manifest = json.loads(body)
        if manifest.get("format") != FORMAT:
            raise SnapshotError(f"snapshot {snapshot_id} has an unknown format; not loaded")
        return manifest

    def verified_pickle(self, snapshot_id: str, manifest: dict) -> bytes:
        data = (self.folder(snapshot_id) / PICKLE).read_bytes()
        if (
            len(data) != manifest["pickle"]["size"]
            or checksum(data) != manifest["pickle"]["blake3"]
        ):
            raise SnapshotError(f"snapshot {snapshot_id}: {PICKLE} does not match its manifest")
        return data

    def read_blobs(
        self, snapshot_id: str, blobs: list[Blob], target: Callable[[int, int], memoryview]
    ) -> Iterator[int]:
        """Read each blob into ``target(index, nbytes)`` and yield its index once every chunk's
        checksum matched (hashing one chunk overlaps reading the next); raise on a mismatch."""
        path = self.folder(snapshot_id) / DATA
        fd = os.open(path, os.O_RDONLY)
        try:
            with ThreadPoolExecutor(1, thread_name_prefix="vram_magic-hash") as hashing:
                for index, blob in enumerate(blobs):
                    view, checks = target(index, blob.nbytes), []
                    os.lseek(fd, blob.offset, os.SEEK_SET)
                    for number, expected in enumerate(blob.chunks):
                        chunk = view[number * CHUNK : (number + 1) * CHUNK]
                        _read_into(fd, chunk, path)
                        checks.append((_digest(hashing, chunk), expected))
                    if any(digest() != expected for digest, expected in checks):
                        raise SnapshotError(
                            f"snapshot {snapshot_id}: {DATA} does not match its manifest "
                            "(changed or damaged); nothing was loaded"
                        )
                    yield index
        finally:
            os.close(fd)

    def delete(self, snapshot_id: str) -> None:
        shutil.rmtree(self.folder(snapshot_id))

    def _remove_dead_partials(self) -> None:
        """Leftovers of writes whose process died (a kill mid-snapshot); never a live writer's."""
        for path in self.root.iterdir():
            match = _PARTIAL.fullmatch(path.name)
            if match and not _alive(int(match["pid"])):
                shutil.rmtree(path, ignore_errors=True)


def _mib(count: int) -> str:
    """Bytes for an error message (actions do not import render's formatting)."""
    return f"{count / 2**20:.1f} MiB"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        pass
    return True


def blob_from_json(entry: dict) -> Blob:
    return Blob(entry["offset"], entry["nbytes"], tuple(entry["chunks"]))


def blob_to_json(blob: Blob) -> dict:
    return {"offset": blob.offset, "nbytes": blob.nbytes, "chunks": list(blob.chunks)}
