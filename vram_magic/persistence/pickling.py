"""How a namespace is pickled for a snapshot, and unpickled again.

cloudpickle saves what the notebook defined (functions, lambdas, classes) by value. On top of it:
every torch storage and every out-of-band buffer (protocol 5: numpy arrays) becomes a persistent
id, so its bytes stream to ``tensors.bin`` instead of the pickle, each storage once however many
tensors, names, models and optimizers share it, and aliasing survives the round trip (one
persistent id, one restored storage). Functions of the notebook are rebuilt on the live namespace
as their globals, as they were, instead of on a copy. Objects that cannot be saved meaningfully
(open files, generators, threads, ...) raise ``Unsavable`` with a reason, whether they are a
variable themselves or held inside one.
"""

from __future__ import annotations

import io
import pickle
import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cloudpickle

NAMESPACE = ("namespace",)


class Unsavable(Exception):
    """An object whose state cannot be carried into a new process; ``str()`` is the reason."""


def _file(obj: Any) -> str | None:
    if isinstance(obj, (io.BytesIO, io.StringIO)):
        return None  # in-memory: pickles with its contents
    name = getattr(obj, "name", "?")
    if obj.closed:
        return f"closed file {name!r}"
    return f"open file {name!r} (mode {getattr(obj, 'mode', '?')!r}): reopen it yourself"


def _generator(obj: Any) -> str:
    kind = type(obj).__name__.replace("_", " ")
    return f"{kind} {obj.__qualname__}: its position cannot be saved; create it again"


def _rules() -> list[tuple[tuple[type, ...], Callable[[Any], str | None]]]:
    """(types, reason) pairs; torch's only once the user imported torch."""
    rules: list[tuple[tuple[type, ...], Callable[[Any], str | None]]] = [
        ((io.IOBase,), _file),
        ((socket.socket,), lambda obj: "socket: connect it again"),
        (
            (types.GeneratorType, types.CoroutineType, types.AsyncGeneratorType),
            _generator,
        ),
        ((threading.Thread,), lambda obj: f"thread {obj.name!r}: start it again"),
        ((subprocess.Popen,), lambda obj: f"process {obj.pid}: start it again"),
    ]
    process = sys.modules.get("multiprocessing.process")
    if process is not None:
        rules.append(((process.BaseProcess,), lambda obj: f"process {obj.name!r}: start it again"))
    torch = sys.modules.get("torch")
    if torch is not None:
        streams = tuple(
            kind
            for kind in (
                getattr(torch, "Stream", None),
                getattr(torch, "Event", None),
                getattr(torch.cuda, "Stream", None),
                getattr(torch.cuda, "Event", None),
            )
            if isinstance(kind, type)
        )
        rules.append(
            (
                streams,
                lambda obj: f"{type(obj).__name__}: a device stream or event; create it again",
            )
        )
    loader = sys.modules.get("torch.utils.data.dataloader")
    if loader is not None:
        rules.append(
            (
                (loader._BaseDataLoaderIter,),
                lambda obj: (
                    "DataLoader iterator: its position and workers cannot be saved; "
                    "call iter(loader) again"
                ),
            )
        )
    return rules


_explainers: dict[type, Callable[[Any], str | None] | None] = {}


def unsavable_reason(obj: Any) -> str | None:
    """Why ``obj`` itself cannot be saved, or None; decided once per type, cheaply."""
    kind = type(obj)
    if kind not in _explainers:
        _explainers[kind] = next(
            (explain for kinds, explain in _rules() if kinds and issubclass(kind, kinds)), None
        )
    explain = _explainers[kind]
    return explain(obj) if explain is not None else None


@dataclass(frozen=True)
class Source:
    """Bytes that go to ``tensors.bin`` in place of the pickle: a torch ``UntypedStorage`` (on
    any device) or a buffer (a contiguous memoryview)."""

    data: Any
    device: str
    nbytes: int
    kind: str  # "storage" or "buffer"


class _Empty:
    """A closure cell without a value (a name assigned later in the enclosing function)."""


def _make_function(code: types.CodeType, globals_: dict, name: str, cells: int) -> Any:
    closure = tuple(types.CellType() for _ in range(cells)) or None
    return types.FunctionType(code, globals_, name, None, closure)


def _set_function_state(func: Any, state: dict) -> None:
    """Filled in after creation, so a function whose closure holds itself pickles."""
    for cell, value in zip(func.__closure__ or (), state.pop("cells"), strict=True):
        if value is not _Empty:
            cell.cell_contents = value
    for name, value in state.items():
        setattr(func, name, value)


def _cell_value(cell: types.CellType) -> Any:
    try:
        return cell.cell_contents
    except ValueError:
        return _Empty


def _with_grad(rebuild: Callable, args: tuple, grad: Any) -> Any:
    tensor = rebuild(*args)
    tensor.grad = grad
    return tensor


class SnapshotPickler(cloudpickle.Pickler):
    """Pickles one name at a time (``dump``) with one memo, so objects shared between names
    stay shared; ``sources`` collects the storages and buffers in the order of their ids."""

    def __init__(self, file: Any, namespace: dict[str, Any]) -> None:
        super().__init__(file, protocol=5)
        self.namespace = namespace
        self.sources: list[Source] = []
        self.top: Any = None  # the variable being pickled, to tell "is" from "holds"
        self.devices: set[str] = set()  # where the storages it refers to are (reset per name)
        self._storage_index: dict[int, int] = {}
        self._torch: Any = sys.modules.get("torch")
        self._kinds: dict[type, str | None] = {}

    def _kind(self, kind: type) -> str | None:
        """Is it a torch storage, a tensor, or neither? Cached per type: persistent_id and
        reducer_override see every object."""
        if kind not in self._kinds:
            torch, found = self._torch, None
            if torch is not None:
                if issubclass(kind, (torch.storage.TypedStorage, torch.UntypedStorage)):
                    found = "storage"
                elif issubclass(kind, torch.Tensor):
                    found = "tensor"
            self._kinds[kind] = found
        return self._kinds[kind]

    def persistent_id(self, obj: Any) -> tuple | None:
        kind = type(obj)
        if kind is pickle.PickleBuffer:
            raw = obj.raw()
            self.sources.append(Source(obj, "cpu", raw.nbytes, "buffer"))
            self.devices.add("cpu")
            return ("buffer", len(self.sources) - 1)
        if obj is self.namespace:
            return NAMESPACE
        if self._kind(kind) != "storage":
            return None
        typed = isinstance(obj, self._torch.storage.TypedStorage)
        untyped = obj._untyped_storage if typed else obj
        dtype = str(obj.dtype).removeprefix("torch.") if typed else None
        index = self._storage_index.get(untyped._cdata)
        if index is None:
            index = self._storage_index[untyped._cdata] = len(self.sources)
            self.sources.append(Source(untyped, str(untyped.device), untyped.nbytes(), "storage"))
        self.devices.add(self.sources[index].device)
        return ("storage", index, dtype)

    def reducer_override(self, obj: Any) -> Any:
        reason = unsavable_reason(obj)
        if reason is not None:
            raise Unsavable(reason if obj is self.top else f"holds {reason}")
        kind = type(obj)
        if kind is types.FunctionType and obj.__globals__ is self.namespace:
            return self._notebook_function(obj)
        if self._kind(kind) == "tensor" and obj.is_leaf and obj.grad is not None:
            reduced = obj.__reduce_ex__(5)
            if len(reduced) == 2:  # torch's (rebuild, args): keep the gradient beside it
                return (_with_grad, (*reduced, obj.grad))
        return super().reducer_override(obj)

    def _notebook_function(self, func: Any) -> tuple:
        """Rebuilt with the live namespace as its globals: it sees later assignments and
        ``global`` statements as before, and its globals are not pickled with it."""
        state = {
            "cells": [_cell_value(cell) for cell in func.__closure__ or ()],
            "__defaults__": func.__defaults__,
            "__kwdefaults__": func.__kwdefaults__,
            "__dict__": func.__dict__,
            "__qualname__": func.__qualname__,
            "__module__": func.__module__,
            "__doc__": func.__doc__,
            "__annotations__": func.__annotations__,
        }
        args = (func.__code__, self.namespace, func.__name__, len(func.__closure__ or ()))
        return (_make_function, args, state, None, None, _set_function_state)


class SnapshotUnpickler(pickle.Unpickler):
    """Loads names one at a time; persistent ids resolve to the verified storages and buffers
    (``blobs``, indexed as the pickler's ``sources``)."""

    def __init__(self, file: Any, namespace: dict[str, Any], blobs: list[Any]) -> None:
        super().__init__(file)
        self.file = file
        self.namespace = namespace
        self.blobs = blobs
        self.import_seconds = 0.0  # in imports of the modules that pickled classes live in

    def find_class(self, module: str, name: str) -> Any:
        if module in sys.modules:
            return super().find_class(module, name)
        started = time.perf_counter()
        try:
            return super().find_class(module, name)
        finally:
            self.import_seconds += time.perf_counter() - started

    def persistent_load(self, pid: tuple) -> Any:
        if pid == NAMESPACE:
            return self.namespace
        if pid[0] == "buffer":
            return self.blobs[pid[1]]
        if pid[0] == "storage":
            storage, dtype = self.blobs[pid[1]], pid[2]
            if dtype is None:
                return storage
            torch = sys.modules["torch"]
            return torch.storage.TypedStorage(
                wrap_storage=storage, dtype=getattr(torch, dtype), _internal=True
            )
        raise pickle.UnpicklingError(f"unknown persistent id {pid!r}")

    def fresh(self) -> SnapshotUnpickler:
        """A new unpickler with this one's memo, for the next name after one failed to load
        (the failed one may have stopped inside a frame of its pickle)."""
        again = SnapshotUnpickler(self.file, self.namespace, self.blobs)
        again.memo = self.memo
        again.import_seconds = self.import_seconds
        return again
