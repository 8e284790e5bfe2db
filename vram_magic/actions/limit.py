"""``%vram limit``: "would this fit on an 8 GB card?", by capping what this kernel may allocate.

On CUDA the caching allocator's per-process fraction does it; the CUDA context and other
libraries sit outside torch's allocator, so their measured size is taken off the fraction
(approximate: they can grow later). Without a GPU, so that demos and tests meet real
out-of-memory errors, a budget on live CPU tensor bytes does it: every new storage is counted
until it is freed, and an operation that would go over raises ``torch.OutOfMemoryError`` with
the CUDA allocator's wording, which the OOM report and ``%%fit`` understand.
"""

from __future__ import annotations

import contextlib
import gc
import re
import sys
import weakref
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from vram_magic.census.tensors import TensorTypes
from vram_magic.readings.host import read_host
from vram_magic.readings.report import read_report

_SIZE = re.compile(r"^\s*(\d+(?:\.\d*)?|\.\d+)\s*(%|[KMGT]i?B?|B)?\s*$", re.IGNORECASE)
_DECIMAL = {"KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12, "B": 1}
_BINARY = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}


class LimitError(ValueError):
    """A size that cannot be read, said in one line."""


@dataclass(frozen=True)
class Limit:
    nbytes: int
    device: str  # "cuda:0" or "cpu"
    how: str
    allocator_cap: int | None = None  # on CUDA: bytes torch's allocator may reserve under it


def parse_size(text: str, total: int | None) -> int:
    """``8GB`` (10^9), ``8GiB``, ``7.5G`` (binary), ``512MB``, ``60%`` (of ``total``)."""
    match = _SIZE.match(text)
    if match is None:
        if _SIZE.match(text.strip().removeprefix("-")):
            raise LimitError(f"{text!r}: a size cannot be negative")
        raise LimitError(f"cannot read {text!r} as a size: use 8GB, 8GiB, 7.5G, 512MB or 60%")
    number, unit = float(match.group(1)), (match.group(2) or "B").upper()
    if unit == "%":
        if total is None or not 0 < number <= 100:
            raise LimitError(f"{text!r}: a percentage needs a known total and 0 < P <= 100")
        return int(total * number / 100)
    factor = _DECIMAL.get(unit) or _BINARY.get(unit.removesuffix("IB").removesuffix("B"))
    if factor is None:
        raise LimitError(f"cannot read {text!r} as a size: use 8GB, 8GiB, 7.5G, 512MB or 60%")
    return int(number * factor)


def _cuda_size(count: int) -> str:
    """Sizes the way CUDA's allocator writes them in its messages (parsed back by the report)."""
    for unit, factor in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if count >= factor:
            return f"{count / factor:.2f} {unit}"
    return f"{count} bytes"


class _CpuBudget:
    """The CPU budget: a torch dispatch mode that counts each new CPU storage until it dies."""

    def __init__(self, limit: int) -> None:
        import torch
        from torch.utils._python_dispatch import TorchDispatchMode
        from torch.utils._pytree import tree_flatten

        budget = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                added = sum(
                    budget.count(t) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor)
                )
                if added and budget.used > budget.limit:
                    refusal = budget.refusal(added)  # before ``out`` goes and its bytes with it
                    del out
                    raise torch.OutOfMemoryError(refusal)
                budget.peak = max(budget.peak, budget.used)  # refused bytes never count
                return out

        self.limit = limit
        self.used = 0
        self.peak = 0
        self._live: dict[int, int] = {}
        self._mode = Mode()

    def count(self, tensor: Any) -> int:
        """Bytes of ``tensor``'s storage if it is a CPU storage not counted yet."""
        if tensor.device.type != "cpu":
            return 0
        storage = tensor.untyped_storage()
        key, size = storage.data_ptr(), storage.nbytes()
        if not key or key in self._live:
            return 0
        self._live[key] = size
        self.used += size
        weakref.finalize(storage, self._release, key)
        return size

    def reset_peak(self) -> None:
        self.peak = self.used

    def _release(self, key: int) -> None:
        self.used -= self._live.pop(key, 0)

    def refusal(self, asked: int) -> str:
        in_use = _cuda_size(self.used - asked)
        return (
            f"CUDA out of memory. Tried to allocate {_cuda_size(asked)}. vram_magic's limit of "
            f"{_cuda_size(self.limit)} on cpu (%vram limit) has {in_use} in use."
        )

    def count_alive(self) -> None:
        """Count the CPU tensors alive now: apart from ``start``, so that a limit they leave no
        room under is refused before the one in force is lifted."""
        import torch

        is_tensor = TensorTypes(torch)
        for obj in gc.get_objects():
            if is_tensor(obj):
                self.count(obj)

    def start(self) -> None:
        """Count every new CPU storage from now on."""
        self._mode.__enter__()

    def stop(self) -> None:
        self._mode.__exit__(None, None, None)


_active: tuple[Limit, _CpuBudget | None] | None = None


def cpu_budget() -> _CpuBudget | None:
    """The CPU budget in force, for ``%%fit`` to measure with."""
    return _active[1] if _active else None


@contextlib.contextmanager
def outside_budget() -> Iterator[None]:
    """Tensors made in the block are not counted by the CPU budget: host-side copies (weights
    kept aside by ``%%fit``), which a GPU machine keeps in host RAM, not on the card."""
    if cpu_budget() is None:
        yield
        return
    from torch.utils._python_dispatch import _disable_current_modes

    with _disable_current_modes():
        yield


def current_limit() -> Limit | None:
    return _active[0] if _active else None


def _refuse_no_room(text: str, size: int, held: int, what: str) -> None:
    """A limit at or under what the kernel already holds would fail every allocation."""
    if size <= held:
        raise LimitError(
            f"{text!r} leaves no room: this kernel already holds {_cuda_size(held)} {what}; "
            "ask for more, or free memory first (%vram free)"
        )


def set_limit(text: str) -> Limit | None:
    """Apply ``text`` (a size, or ``off``); returns the limit now in force. A size refused (not
    readable, or no room above what the kernel holds) leaves the limit in force as it was."""
    global _active
    import torch

    if text.strip().lower() == "off":
        clear_limit()
        return None
    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory  # creates the CUDA context
        size = parse_size(text, total)
        torch.cuda.empty_cache()  # under a cap, cached blocks are freed before anything fails
        devices = read_report().devices
        outside = (devices[0].process_other or 0) if devices else 0
        held = torch.cuda.memory_reserved(0) + outside
        _refuse_no_room(text, size, held, "on cuda:0 (torch's reserved memory and CUDA context)")
        clear_limit()
        fraction = min(max(size - outside, 0) / total, 1.0)
        torch.cuda.set_per_process_memory_fraction(fraction, 0)
        cap = int(fraction * total)
        how = (
            f"torch's allocator may use {fraction:.3f} of {_cuda_size(total)} on cuda:0; "
            f"{_cuda_size(outside)} of CUDA context and libraries counted outside it (approximate)"
        )
        _active = (Limit(size, "cuda:0", how, cap), None)
    else:
        size = parse_size(text, read_host().total)
        budget = _CpuBudget(size)
        budget.count_alive()
        _refuse_no_room(text, size, budget.used, "of live CPU tensors, which the budget counts")
        clear_limit()
        budget.start()
        how = "a budget on live CPU tensor bytes (no GPU here)"
        _active = (Limit(size, "cpu", how), budget)
    return _active[0]


def clear_limit() -> None:
    global _active
    if _active is None:
        return
    _, budget = _active
    _active = None
    if budget is not None:
        budget.stop()
    else:
        torch = sys.modules["torch"]
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
