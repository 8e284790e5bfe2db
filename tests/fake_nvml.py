"""A stand-in ``pynvml`` module object, answering from structures recorded on real machines.

This is the only fake the test suite uses: NVML is the one boundary a CPU machine cannot cross.
A recording (``tests/nvml_recordings/*.json``, written by ``record_nvml.py`` on a GPU machine or
edited from one) lists each device's answers; a call recorded as an error raises it. The pid
``"self"`` stands for the process running the test.
"""

from __future__ import annotations

import copy
import json
import os
from collections import Counter
from pathlib import Path
from types import ModuleType, SimpleNamespace
from typing import Any

RECORDINGS = Path(__file__).parent / "nvml_recordings"

_MESSAGES = {
    "NVMLError_LibraryNotFound": "NVML Shared Library Not Found",
    "NVMLError_DriverNotLoaded": "Driver Not Loaded",
    "NVMLError_NotSupported": "Not Supported",
    "NVMLError_NotFound": "Not Found",
    "NVMLError_InvalidArgument": "Invalid Argument",
    "NVMLError_GpuIsLost": "GPU is lost",
    "NVMLError_Unknown": "Unknown Error",
    "NVMLError_NoPermission": "Insufficient Permissions",
}


class NVMLError(Exception):
    """Root of the fake's errors, like ``pynvml.NVMLError``."""


_ERRORS = {name: type(name, (NVMLError,), {}) for name in _MESSAGES}


def _raise(name: str, message: str | None = None) -> None:
    raise _ERRORS[name](message or _MESSAGES[name])


def load_recording(name: str) -> dict[str, Any]:
    return json.loads((RECORDINGS / f"{name}.json").read_text())


def _process(entry: dict[str, Any]) -> SimpleNamespace:
    pid = os.getpid() if entry["pid"] == "self" else int(entry["pid"])
    return SimpleNamespace(pid=pid, usedGpuMemory=entry["usedGpuMemory"])


class _Handle:
    def __init__(self, record: dict[str, Any]) -> None:
        self.record = record

    def answer(self, call: str, key: str) -> Any:
        errors = self.record.get("errors", {})
        if call in errors:
            _raise(*errors[call])
        value = self.record.get(key)
        if value is None:
            _raise("NVMLError_NotSupported")
        return value


def fake_pynvml(recording: dict[str, Any]) -> ModuleType:
    """A module object with pynvml's functions, answering from ``recording`` (copied, then live)."""
    state = copy.deepcopy(recording)
    module = ModuleType("pynvml")
    module.calls = Counter()  # type: ignore[attr-defined]
    module.recording = state  # type: ignore[attr-defined]
    module.NVMLError = NVMLError  # type: ignore[attr-defined]
    for name, error in _ERRORS.items():
        setattr(module, name, error)

    def handles() -> list[_Handle]:
        return [_Handle(device) for device in state["devices"]]

    def counted(function: Any) -> Any:
        def call(*args: Any) -> Any:
            module.calls[function.__name__] += 1  # type: ignore[attr-defined]
            return function(*args)

        call.__name__ = function.__name__
        setattr(module, function.__name__, call)
        return call

    @counted
    def nvmlInit() -> None:
        if state.get("init_error"):
            _raise(state["init_error"])

    @counted
    def nvmlShutdown() -> None:
        return None

    @counted
    def nvmlSystemGetDriverVersion() -> str:
        return state["driver_version"]

    @counted
    def nvmlDeviceGetCount() -> int:
        return len(state["devices"])

    @counted
    def nvmlDeviceGetHandleByIndex(index: int) -> _Handle:
        if not 0 <= index < len(state["devices"]):
            _raise("NVMLError_InvalidArgument")
        return handles()[index]

    @counted
    def nvmlDeviceGetUUID(handle: _Handle) -> str:
        return handle.answer("nvmlDeviceGetUUID", "uuid")

    @counted
    def nvmlDeviceGetName(handle: _Handle) -> str:
        return handle.answer("nvmlDeviceGetName", "name")

    @counted
    def nvmlDeviceGetMigMode(handle: _Handle) -> list[int]:
        return list(handle.answer("nvmlDeviceGetMigMode", "mig_mode"))

    @counted
    def nvmlDeviceGetMaxMigDeviceCount(handle: _Handle) -> int:
        return handle.answer("nvmlDeviceGetMaxMigDeviceCount", "max_mig_devices")

    @counted
    def nvmlDeviceGetMigDeviceHandleByIndex(handle: _Handle, slot: int) -> _Handle:
        slices = handle.answer("nvmlDeviceGetMigDeviceHandleByIndex", "mig_devices")
        if str(slot) not in slices:
            _raise("NVMLError_NotFound")
        return _Handle(slices[str(slot)])

    @counted
    def nvmlDeviceGetMemoryInfo(handle: _Handle) -> SimpleNamespace:
        return SimpleNamespace(**handle.answer("nvmlDeviceGetMemoryInfo", "memory"))

    @counted
    def nvmlDeviceGetUtilizationRates(handle: _Handle) -> SimpleNamespace:
        return SimpleNamespace(**handle.answer("nvmlDeviceGetUtilizationRates", "utilization"))

    @counted
    def nvmlDeviceGetComputeRunningProcesses(handle: _Handle) -> list[SimpleNamespace]:
        entries = handle.answer("nvmlDeviceGetComputeRunningProcesses", "compute_processes")
        return [_process(entry) for entry in entries]

    @counted
    def nvmlDeviceGetGraphicsRunningProcesses(handle: _Handle) -> list[SimpleNamespace]:
        entries = handle.answer("nvmlDeviceGetGraphicsRunningProcesses", "graphics_processes")
        return [_process(entry) for entry in entries]

    return module


def fake_session(recording: dict[str, Any] | str):  # type: ignore[no-untyped-def]
    """An ``NvmlSession`` over the fake module, from a recording dict or a recording's name."""
    from vram_magic.readings.nvml import NvmlSession

    data = load_recording(recording) if isinstance(recording, str) else recording
    module = fake_pynvml(data)
    session = NvmlSession(load_module=lambda: module)
    session.fake = module  # type: ignore[attr-defined]
    return session


def followed_session(path: Path):  # type: ignore[no-untyped-def]
    """A fake session answering from the recording in ``path``, re-read whenever the file
    changes, so a test can add a process (a kernel's pid) to a running server's fake GPUs."""
    session = fake_session(json.loads(path.read_text()))
    module = session.fake
    state = module.recording
    seen = [path.stat().st_mtime_ns]

    def refresh() -> None:
        mtime = path.stat().st_mtime_ns
        if mtime != seen[0]:
            seen[0] = mtime
            for device, new in zip(
                state["devices"], json.loads(path.read_text())["devices"], strict=True
            ):
                device.clear()  # in place: the session's cached handles read these dicts
                device.update(new)

    for name in [n for n in vars(module) if n.startswith("nvml")]:
        answer = getattr(module, name)

        def call(*args: Any, _answer: Any = answer) -> Any:
            refresh()
            return _answer(*args)

        setattr(module, name, call)
    return session


def kernels_env(folder: Path, recording_file: Path) -> dict[str, str]:
    """Environment under which a Jupyter server's kernels (not only the server) answer NVML from
    ``recording_file``: an IPython startup file in a fresh IPYTHONDIR under ``folder``."""
    startup = folder / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True, exist_ok=True)
    config = Path(__file__).parent / "jupyter_config_fake_nvml.py"
    (startup / "00-fake-nvml.py").write_text(f"import runpy\nrunpy.run_path({str(config)!r})\n")
    return {"IPYTHONDIR": str(folder / "ipython"), "VRAM_MAGIC_FAKE_NVML": str(recording_file)}
