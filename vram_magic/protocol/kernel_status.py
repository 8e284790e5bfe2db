"""A kernel's own account of its memory, kept in a file beside its connection file.

The Jupyter server needs each kernel's figures while the kernel is busy (code sent to it would
wait behind the user's cell) and inside containers, where NVML lists host PIDs that match no
kernel. So a kernel with vram_magic loaded writes this small JSON document itself; the server
only reads it. The runtime folder holding connection files is private to the user, and the
file is replaced atomically so a reader never sees half of it.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from vram_magic.readings.model import Report

PREFIX = "vram_magic-"


@dataclass(frozen=True)
class KernelDevice:
    """One CUDA device as the kernel sees it; ``process`` is NVML's figure for the kernel's PID,
    None where NVML does not list it (containers)."""

    device: str
    uuid: str | None
    allocated: int
    reserved: int
    process: int | None
    peak: int | None = None  # the most it held in the last PEAK_WINDOW to PEAK_WINDOW*2 seconds

    @property
    def held(self) -> int:
        """The kernel's footprint on this device: NVML's when known, else torch's reserve."""
        return self.process if self.process is not None else self.reserved


@dataclass(frozen=True)
class KernelStatus:
    pid: int
    updated: float
    devices: tuple[KernelDevice, ...]
    top: tuple[tuple[str, int], ...]  # largest user names by tensor bytes, after the last cell
    limit: int | None  # %vram limit in bytes
    restart: str | None = None  # a restart the kernel asks for (%vram restart): its request id
    ooms: int = 0  # out-of-memory errors that ended a cell since vram_magic was loaded


def connection_file() -> str | None:
    """This kernel's connection file, or None outside a Jupyter kernel (a terminal IPython
    does not pay for importing ipykernel)."""
    if "ipykernel" not in sys.modules:
        return None
    from ipykernel.kernelapp import IPKernelApp

    if not IPKernelApp.initialized():
        return None
    app = IPKernelApp.instance()
    return getattr(app, "abs_connection_file", None) or app.connection_file or None


def current_kernel_id() -> str | None:
    """This process's Jupyter kernel id (its connection file is ``kernel-<id>.json``); a
    restart keeps it."""
    found = connection_file()
    return Path(found).stem.removeprefix("kernel-") if found else None


def status_path(connection_file: str | os.PathLike[str]) -> Path:
    """Where the kernel with this connection file keeps its status."""
    path = Path(connection_file)
    return path.with_name(PREFIX + path.name)


def status_from_report(
    report: Report,
    top: tuple[tuple[str, int], ...],
    limit: int | None,
    restart: str | None,
    peaks: dict[str, int] | None = None,
    ooms: int = 0,
) -> KernelStatus:
    """``peaks``: the most held per device (``cuda:N``) lately, measured by the caller."""
    devices = tuple(
        KernelDevice(
            f"cuda:{d.cuda_index}",
            d.uuid,
            d.torch_allocated or 0,
            d.torch_reserved or 0,
            d.this_process,
            (peaks or {}).get(f"cuda:{d.cuda_index}"),
        )
        for d in report.devices
    )
    return KernelStatus(os.getpid(), report.taken_at, devices, top, limit, restart, ooms)


def write_status(path: Path, status: KernelStatus) -> None:
    handle, temporary = tempfile.mkstemp(prefix=path.name, suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "w") as file:  # mkstemp creates it 0600
            json.dump(asdict(status), file)
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def read_status(path: Path) -> KernelStatus | None:
    """The status in ``path``; None when there is none or it is not a status document."""
    try:
        data: Any = json.loads(path.read_text())
        return KernelStatus(
            pid=int(data["pid"]),
            updated=float(data["updated"]),
            devices=tuple(
                KernelDevice(
                    str(d["device"]),
                    None if d["uuid"] is None else str(d["uuid"]),
                    int(d["allocated"]),
                    int(d["reserved"]),
                    None if d["process"] is None else int(d["process"]),
                    None if d.get("peak") is None else int(d["peak"]),
                )
                for d in data["devices"]
            ),
            top=tuple((str(name), int(size)) for name, size in data["top"]),
            limit=None if data["limit"] is None else int(data["limit"]),
            restart=None if data.get("restart") is None else str(data["restart"]),
            ooms=int(data.get("ooms", 0)),
        )
    except (OSError, ValueError, KeyError, TypeError):
        return None
