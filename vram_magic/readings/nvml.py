"""NVML, opened once and lazily, with every call made safe.

NVML is the only source that sees the whole GPU (other processes, the CUDA context, memory outside
torch). It may be missing (no driver), fail to start, or fail for one call on one device; each case
becomes a one-line reason instead of an exception, so a bad field never spoils a whole report.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

NO_GPU = "no NVIDIA GPU visible"


@dataclass(frozen=True)
class NvmlDevice:
    """A physical GPU or a MIG slice, with the attributes that do not change while a kernel runs."""

    nvml_index: str
    uuid: str
    name: str | None
    handle: Any = field(compare=False, repr=False)
    is_mig: bool = False
    mig_enabled: bool = False
    mig_slices: tuple[NvmlDevice, ...] = ()


def _import_pynvml() -> ModuleType:
    return importlib.import_module("pynvml")


def _text(value: str | bytes) -> str:
    """Old nvidia-ml-py releases return bytes, newer ones str."""
    return value.decode() if isinstance(value, bytes) else value


def describe_error(error: BaseException) -> str:
    """A short reason for a failed NVML call: the error's own text, or its class name."""
    text = str(error).strip()
    return text or type(error).__name__


class NvmlSession:
    """Starts NVML on first use and keeps it; remembers why it could not start.

    ``load_module`` returns the ``pynvml`` module; tests hand in a module object built from
    recorded structures, which is the only stand-in the test suite uses.
    """

    def __init__(self, load_module: Callable[[], ModuleType] = _import_pynvml) -> None:
        self._load_module = load_module
        self._lock = threading.Lock()
        self._started = False
        self._nvml: ModuleType | None = None
        self._problem: str | None = None
        self._inventory: tuple[NvmlDevice, ...] | None = None
        self._driver_version: str | None = None

    def module(self) -> ModuleType | None:
        """The started pynvml module, or None (then ``problem`` says why)."""
        if not self._started:
            with self._lock:
                if not self._started:
                    self._nvml, self._problem = self._start()
                    self._started = True
        return self._nvml

    @property
    def problem(self) -> str | None:
        """Why NVML is unavailable, phrased for the user; None when it works."""
        self.module()
        return self._problem

    def _start(self) -> tuple[ModuleType | None, str | None]:
        try:
            nvml = self._load_module()
        except ImportError:
            return None, f"{NO_GPU}: nvidia-ml-py (pynvml) is not installed"
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as error:
            reasons = {
                "NVMLError_LibraryNotFound": "NVML library not found",
                "NVMLError_DriverNotLoaded": "NVIDIA driver not loaded",
                "NVMLError_NoPermission": "no permission to use the NVIDIA driver",
                "NVMLError_LibRmVersionMismatch": "driver/library version mismatch (reboot?)",
            }
            reason = reasons.get(
                type(error).__name__, f"NVML failed to start ({describe_error(error)})"
            )
            return None, f"{NO_GPU}: {reason}"
        return nvml, None

    def call(self, function: str, *args: Any) -> tuple[Any, str | None]:
        """Call ``pynvml.<function>(*args)``; return (value, None) or (None, reason)."""
        nvml = self.module()
        if nvml is None:
            return None, self._problem
        try:
            return getattr(nvml, function)(*args), None
        except nvml.NVMLError as error:
            return None, describe_error(error)

    def driver_version(self) -> str | None:
        if self._driver_version is None:
            version, _ = self.call("nvmlSystemGetDriverVersion")
            self._driver_version = _text(version) if version is not None else None
        return self._driver_version

    def inventory(self) -> tuple[NvmlDevice, ...]:
        """Every physical GPU in NVML order, with its MIG slices; read once per session."""
        if self._inventory is None:
            count, _ = self.call("nvmlDeviceGetCount")
            self._inventory = tuple(
                device
                for index in range(count or 0)
                if (device := self._physical(index)) is not None
            )
        return self._inventory

    def _physical(self, index: int) -> NvmlDevice | None:
        handle, problem = self.call("nvmlDeviceGetHandleByIndex", index)
        if problem is not None:
            return None
        uuid, _ = self.call("nvmlDeviceGetUUID", handle)
        name, _ = self.call("nvmlDeviceGetName", handle)
        mig_mode, _ = self.call("nvmlDeviceGetMigMode", handle)
        mig_enabled = bool(mig_mode and mig_mode[0])
        return NvmlDevice(
            nvml_index=str(index),
            uuid=_text(uuid) if uuid is not None else f"GPU-unknown-{index}",
            name=_text(name) if name is not None else None,
            handle=handle,
            mig_enabled=mig_enabled,
            mig_slices=self._mig_slices(index, handle) if mig_enabled else (),
        )

    def _mig_slices(self, index: int, parent: Any) -> tuple[NvmlDevice, ...]:
        slots, _ = self.call("nvmlDeviceGetMaxMigDeviceCount", parent)
        slices = []
        for slot in range(slots or 0):
            handle, problem = self.call("nvmlDeviceGetMigDeviceHandleByIndex", parent, slot)
            if problem is not None:
                continue  # an empty slot: MIG slices need not be numbered contiguously
            uuid, _ = self.call("nvmlDeviceGetUUID", handle)
            name, _ = self.call("nvmlDeviceGetName", handle)
            slices.append(
                NvmlDevice(
                    nvml_index=f"{index}:{slot}",
                    uuid=_text(uuid) if uuid is not None else f"MIG-unknown-{index}-{slot}",
                    name=_text(name) if name is not None else None,
                    handle=handle,
                    is_mig=True,
                )
            )
        return tuple(slices)


_default_session = NvmlSession()


def default_session() -> NvmlSession:
    """The process-wide session every reading uses unless handed another."""
    return _default_session


def set_default_session(session: NvmlSession) -> NvmlSession:
    """Make ``session`` the process-wide one; returns the previous session."""
    global _default_session
    previous, _default_session = _default_session, session
    return previous
