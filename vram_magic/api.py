"""The Python twins of the magics: each returns plain dataclasses, nothing is printed.

They work in any IPython kernel (with or without ``%load_ext``) and in plain Python, where the
``__main__`` module's globals stand for the notebook's namespace. They are also the one path by
which the front doors (the IPython magics and hooks, the kernel side of the Jupyter server)
reach the actions: the errors a front door turns into one line, and the few calls only a front
door makes (recording a shell's cells, explaining an out-of-memory error), are here too.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Callable
from typing import Any

from vram_magic.actions.estimate import Estimate, EstimateError
from vram_magic.actions.estimate import estimate as _estimate
from vram_magic.actions.fit import FitResult
from vram_magic.actions.fit_cell import CellFit
from vram_magic.actions.fit_cell import fit_call as _fit_call
from vram_magic.actions.fit_cell import fit_cell as _fit_cell
from vram_magic.actions.fit_sizing import FitError, FitOptions
from vram_magic.actions.free import FreeError, FreeResult, clear_exception
from vram_magic.actions.free import free as _free
from vram_magic.actions.history import CellRecord, CellRecorder, NameSizes
from vram_magic.actions.limit import Limit, LimitError, clear_limit, current_limit, set_limit
from vram_magic.actions.oom import OomReport, explain_oom, is_oom
from vram_magic.actions.oom_frameworks import read_failure
from vram_magic.actions.recording import recorder_of, start_recording, stop_recording
from vram_magic.census.model import Census
from vram_magic.census.take import DeviceError, check_device, take_census
from vram_magic.persistence.pending import mark_pending as _mark_pending
from vram_magic.persistence.restore import RestoreResult
from vram_magic.persistence.restore import restore as _restore
from vram_magic.persistence.restore import restore_pending as _restore_pending
from vram_magic.persistence.save import SnapshotInfo, SnapshotResult, list_snapshots
from vram_magic.persistence.save import snapshot as _snapshot
from vram_magic.persistence.store import SnapshotError, Store, snapshot_root
from vram_magic.persistence.waiting import clear_waiting, mark_waiting, waiting_for
from vram_magic.readings.model import Report
from vram_magic.readings.report import read_report
from vram_magic.render.units import format_bytes

__all__ = [  # what the front doors use besides the twins
    "CellRecord",
    "CellRecorder",
    "DeviceError",
    "EstimateError",
    "FitError",
    "FitOptions",
    "FreeError",
    "LimitError",
    "NameSizes",
    "SnapshotError",
    "check_device",
    "clear_limit",
    "explain",
    "is_oom",
    "limit_in_force",
    "snapshot_folder",
    "start_recording",
    "stop_recording",
]


def _shell() -> Any | None:
    """The running IPython shell, without importing IPython when it is not already loaded."""
    ipython = sys.modules.get("IPython")
    return ipython.get_ipython() if ipython is not None else None


def _namespace(shell: Any | None) -> dict[str, Any]:
    return shell.user_ns if shell is not None else vars(sys.modules["__main__"])


def report(device: int | None = None) -> Report:
    """Read every visible GPU (NVML + torch's allocator) and host RAM, as a ``Report``;
    ``device``: only ``cuda:D`` (else ``DeviceError``). A ``%vram limit`` in force is noted."""
    reading = read_report()
    if device is not None:
        chosen = tuple(d for d in reading.devices if d.cuda_index == device)
        if not chosen:
            visible = ", ".join(f"cuda:{d.cuda_index}" for d in reading.devices) or "none"
            raise DeviceError(f"no device cuda:{device} (visible: {visible})")
        reading = dataclasses.replace(reading, devices=chosen)
    limit = current_limit()
    if limit is not None:
        note = f"limit (%vram limit): {format_bytes(limit.nbytes)} on {limit.device}: {limit.how}"
        reading = dataclasses.replace(reading, notes=(*reading.notes, note))
    return reading


def who(device: str | None = None, keep_all: bool = False) -> Census:
    """Every live tensor grouped by what keeps it alive (``%vram who``)."""
    shell = _shell()
    recorder = recorder_of(shell)
    created = recorder.names.first_cell if recorder is not None else {}
    return take_census(shell, _namespace(shell), device=device, created=created, keep_all=keep_all)


def history() -> tuple[CellRecord, ...]:
    """The cells recorded since ``%load_ext vram_magic`` (``%vram history``)."""
    recorder = recorder_of(_shell())
    return tuple(recorder.records) if recorder is not None else ()


def free(*names: str, dry_run: bool = False, top: int = 5) -> FreeResult:
    """Release stranded memory, and the named variables with what pins them (``%vram free``)."""
    shell = _shell()
    return _free(shell, _namespace(shell), tuple(names), dry_run=dry_run, top=top)


def estimate(
    model: Any,
    batch: int = 1,
    seq: int | None = None,
    train: str = "adam",
    dtype: str | None = None,
    checkpointing: bool = False,
) -> Estimate:
    """Memory a model needs (``%vram estimate``): a module, a transformers config, a local folder
    or config.json, or a hub id (with the network or the Hugging Face cache). ``peak`` is a
    step of ``train`` (adam, adamw, adamw8bit, sgd, lora, qlora, none) at ``batch`` x ``seq``,
    traced on fake tensors; ``peak_parts`` splits it."""
    return _estimate(
        model, batch=batch, seq=seq, train=train, dtype=dtype, checkpointing=checkpointing
    )


def fit(
    call: Callable[..., Any],
    *args: Any,
    fit_options: FitOptions | None = None,
    **kwargs: Any,
) -> tuple[Any, FitResult]:
    """``call(*args, **kwargs)`` at a batch size that fits (``%%fit`` for one call): a Trainer's
    ``train``/``evaluate``/``predict`` (``vram_magic.fit(trainer.train)``), a pipeline
    (``vram_magic.fit(classify, texts, batch_size=256)``), or any callable taking
    ``batch_size=``. Returns the call's value and what was sized."""
    shell = _shell()
    options = fit_options or FitOptions()
    return _fit_call(shell, _namespace(shell), call, args, kwargs, options)


def fit_cell(code: str, options: FitOptions | None = None) -> CellFit:
    """Run notebook code so that it fits (``%%fit``), in the notebook's namespace."""
    shell = _shell()
    return _fit_cell(shell, _namespace(shell), code, options or FitOptions())


def limit_in_force() -> Limit | None:
    """The ``%vram limit`` in force, None when there is none."""
    return current_limit()


def snapshot_folder() -> str:
    """The private folder snapshots are written to (``settings.snapshot_dir``)."""
    return str(snapshot_root())


def explain(error: BaseException, record: CellRecord | None = None) -> OomReport | None:
    """The out-of-memory report of ``error`` (None when it is not one): what the traceback
    shows is read first, then (``settings.clear_frames_on_oom``) its frames are cleared, so the
    census and the room that follow see the memory the error no longer holds."""
    from vram_magic.config import settings

    devices = read_report().devices
    if not is_oom(error, devices):
        return None
    shell = _shell()
    namespace = _namespace(shell)
    failure = read_failure(error, namespace)  # while its frames still hold it
    if settings.clear_frames_on_oom:
        clear_exception(error)
    census = who()  # after the frames were cleared: what the error no longer holds is not counted
    return explain_oom(
        error,
        census,
        devices,  # the state at the failure, before its frames were cleared
        record,
        namespace,
        settings.clear_frames_on_oom,
        failure=failure.measured(),
    )


def limit(size: str) -> Limit | None:
    """Cap what this kernel may allocate (``%vram limit``): ``"8GB"``, ``"60%"``, or ``"off"``."""
    return set_limit(size)


def snapshot(exclude: tuple[str, ...] | list[str] = ()) -> SnapshotResult:
    """Save the notebook's variables to disk (``%vram snapshot``); what cannot be saved is listed
    in the result with the reason."""
    shell = _shell()
    return _snapshot(shell, _namespace(shell), exclude=exclude)


def restore(id: str | None = None, to: str | None = None, keep: bool = False) -> RestoreResult:
    """Load a snapshot (the latest by default) back into the namespace (``%vram restore``);
    ``to="cpu"`` loads every tensor to the CPU. Removed afterwards unless ``keep`` or a variable
    could not be restored."""
    return _restore(_namespace(_shell()), id, to=to, keep=keep)


def snapshots() -> tuple[SnapshotInfo, ...]:
    """The snapshots on disk, oldest first (``%vram snapshots``)."""
    return list_snapshots()


def delete_snapshot(id: str) -> None:
    """Remove one snapshot (``%vram snapshots --delete ID``)."""
    Store().delete(id)


def mark_pending(id: str, kernel_id: str) -> None:
    """Have the next ``restore_pending()`` in kernel ``kernel_id`` (after a restart) load ``id``."""
    _mark_pending(Store(), id, kernel_id)


def restore_pending(kernel_id: str | None = None) -> RestoreResult | None:
    """Restore the snapshot marked for this kernel (by ``mark_pending``), once; else None."""
    return _restore_pending(_namespace(_shell()), kernel_id)


def leave_waiting(id: str, notebook: str) -> None:
    """Leave snapshot ``id`` waiting for the next kernel of ``notebook`` (an idle kernel shut
    down to give its GPU memory back)."""
    mark_waiting(Store(), id, notebook)


def waiting_snapshot(notebook: str) -> SnapshotInfo | None:
    """The snapshot waiting for ``notebook`` (``leave_waiting``), or None."""
    snapshot_id = waiting_for(Store(), notebook)
    return next((info for info in snapshots() if info.id == snapshot_id), None)


def restore_waiting(notebook: str) -> RestoreResult | None:
    """Restore the snapshot waiting for ``notebook``; None when none waits. The mark goes once
    every variable is back (the snapshot is then removed too, as by ``restore``)."""
    store = Store()
    snapshot_id = waiting_for(store, notebook)
    if snapshot_id is None:
        return None
    result = restore(snapshot_id)
    if not result.kept:
        clear_waiting(store, notebook)
    return result
