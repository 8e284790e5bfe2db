"""Explain an out-of-memory error: what was asked for, who holds memory, and which fix saves most.

Every figure is measured or derived from a measurement (the failed request, this cell's peak, the
census); estimates say so.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any

from vram_magic.actions.estimate import quantized_weights
from vram_magic.actions.history import CellRecord
from vram_magic.census.model import Census, Holder
from vram_magic.readings.model import DeviceReading

_OOM_TEXTS = (
    "CUDA out of memory",
    "CUDA error: out of memory",
    "CUBLAS_STATUS_ALLOC_FAILED",
    "DefaultCPUAllocator: can't allocate memory",
    "MPS backend out of memory",
)
_SHORT_MEMORY_TEXTS = ("CUDNN_STATUS_NOT_SUPPORTED",)  # cuDNN's answer when workspace is short
_UNITS = {"B": 1, "bytes": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30, "TiB": 1 << 40}
_UNITS.update({"KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40})
_REQUEST = re.compile(
    r"(?:Tried to allocate|you tried to allocate)\s+([\d.]+)\s*(B|bytes|[KMGT]i?B)", re.IGNORECASE
)
SHORT_FRACTION = 0.05


def _is_out_of_memory_class(error: BaseException) -> bool:
    return any(cls.__name__ == "OutOfMemoryError" for cls in type(error).__mro__)


def is_oom(error: BaseException | None, devices: tuple[DeviceReading, ...] = ()) -> bool:
    """torch.OutOfMemoryError, or a RuntimeError whose message says memory ran out.
    cuDNN's NOT_SUPPORTED counts only when a GPU is nearly full."""
    if error is None:
        return False
    if _is_out_of_memory_class(error):
        return True
    if not isinstance(error, RuntimeError):
        return False
    text = str(error)
    if any(marker in text for marker in _OOM_TEXTS):
        return True
    if any(marker in text for marker in _SHORT_MEMORY_TEXTS):
        return any(
            d.total and d.free is not None and d.free < SHORT_FRACTION * d.total for d in devices
        )
    return False


def requested_bytes(message: str) -> int | None:
    """The size the failed allocation asked for, as the allocator's message states it."""
    match = _REQUEST.search(message)
    if match is None:
        return None
    unit = next((u for u in _UNITS if u.lower() == match.group(2).lower()), "B")
    return int(float(match.group(1)) * _UNITS[unit])


@dataclass(frozen=True)
class Fix:
    action: str
    saves: int
    how: str
    estimate: bool = False


@dataclass(frozen=True)
class OomReport:
    error: str
    message: str
    requested: int | None
    devices: tuple[DeviceReading, ...]
    top_holders: tuple[Holder, ...]
    stranded: int
    fixes: tuple[Fix, ...]
    frames_cleared: bool


def _activation_bytes(record: CellRecord | None, requested: int | None) -> int | None:
    """This cell's working memory: its peak above where it started, plus the failed request."""
    if record is None:
        return None
    growth = [
        m.peak - m.before for m in record.memory if m.peak is not None and m.device != "host RAM"
    ]
    if not growth:
        growth = [m.peak - m.before for m in record.memory if m.peak is not None]
    if not growth:
        return None
    return max(max(growth), 0) + (requested or 0)


def _models(namespace: dict[str, Any]) -> list[tuple[str, Any]]:
    torch = sys.modules.get("torch")
    if torch is None:
        return []
    return [
        (name, value)
        for name, value in namespace.items()
        if not name.startswith("_") and isinstance(value, torch.nn.Module)
    ]


def _linear_weights(model: Any) -> tuple[int, int]:
    """(bytes, elements) of the weights 8/4-bit loading converts (``estimate``'s rule)."""
    weights = quantized_weights(model)
    return sum(w.numel() * w.element_size() for w in weights), sum(w.numel() for w in weights)


def _fixes(
    stranded: int,
    activations: int | None,
    namespace: dict[str, Any],
    requested: int | None,
    devices: tuple[DeviceReading, ...],
) -> list[Fix]:
    fixes = []
    largest = max((d.total or 0 for d in devices), default=0)
    if requested and largest and requested > largest:
        fixes.append(
            Fix(
                "check the failed allocation's shape",
                requested,
                "it alone is larger than the whole GPU: a wrong shape, dtype or device?",
            )
        )
    if stranded:
        fixes.append(Fix("free stranded memory", stranded, "%vram free"))
    if activations:
        fixes.append(
            Fix("halve the batch", activations // 2, "from this cell's measured peak", True)
        )
    models = _models(namespace)
    trainable = [m for _, m in models if any(p.requires_grad for p in m.parameters())]
    if activations and trainable:
        fixes.append(
            Fix(
                "gradient checkpointing",
                activations // 2,
                "model.gradient_checkpointing_enable() (transformers) or "
                "torch.utils.checkpoint; recomputes activations in the backward pass",
                True,
            )
        )
    if models:
        name, model = max(models, key=lambda item: _linear_weights(item[1])[0])
        weight_bytes, elements = _linear_weights(model)
        if weight_bytes:
            fixes.append(
                Fix(
                    "load in 8-bit",
                    max(weight_bytes - elements, 0),
                    f"{name}: BitsAndBytesConfig(load_in_8bit=True) in from_pretrained",
                )
            )
            fixes.append(
                Fix(
                    "load in 4-bit",
                    max(weight_bytes - elements // 2, 0),
                    f"{name}: BitsAndBytesConfig(load_in_4bit=True) in from_pretrained",
                )
            )
        all_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        fixes.append(
            Fix("a model half the size", all_bytes // 2, f"half of {name}'s weights", True)
        )
    fixes = [fix for fix in fixes if fix.saves > 0]
    fixes.sort(key=lambda fix: -fix.saves)
    return fixes


def explain_oom(
    error: BaseException,
    census: Census,
    devices: tuple[DeviceReading, ...],
    record: CellRecord | None,
    namespace: dict[str, Any],
    frames_cleared: bool,
    top: int = 5,
) -> OomReport:
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    requested = requested_bytes(str(error))
    stranded = census.stranded_bytes
    return OomReport(
        error=type(error).__name__,
        message=message,
        requested=requested,
        devices=devices,
        top_holders=census.holders[:top],
        stranded=stranded,
        fixes=tuple(
            _fixes(stranded, _activation_bytes(record, requested), namespace, requested, devices)
        ),
        frames_cleared=frames_cleared,
    )
