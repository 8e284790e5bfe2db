"""Explain an out-of-memory error: what was asked for, who holds memory, and which fix saves most.

Every figure is measured or derived from a measurement (the failed request, this cell's peak, the
census); estimates say so. Where the failed code has its own knobs (a Trainer's arguments, a
batch variable, ``generate``'s prompts and ``max_new_tokens``: ``oom_frameworks``), the fixes
name them, with the value that fits the room.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from vram_magic.actions.estimate import quantized_weights
from vram_magic.actions.history import CellRecord
from vram_magic.census.model import Census, Holder
from vram_magic.census.roots import user_variables
from vram_magic.readings.model import DeviceReading

if TYPE_CHECKING:
    from vram_magic.actions.oom_frameworks import Failure, KvCache

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
HEADROOM = 0.05  # of the room, kept free by a suggested size, as the batch-size search does


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


NEGLIGIBLE = 1024  # bytes: a fix saving less (two of CUDA's smallest blocks) is never a way out


@dataclass(frozen=True)
class Fix:
    """One way out, by the bytes it saves. Where it is a setting, ``setting`` holds the names and
    values to write (``assign``: notebook variables, else keyword arguments); where it is freeing,
    ``frees`` holds the names to free (empty: the stranded memory alone). The renderer says the
    words."""

    action: str
    saves: int
    how: str = ""
    estimate: bool = False
    setting: tuple[tuple[str, Any], ...] = ()
    assign: bool = False
    effective: int | None = None  # the effective batch the setting keeps
    fit: bool = False  # the batch-size search finds this size by running the cell
    frees: tuple[str, ...] | None = None  # free these names (empty: what is stranded)
    per_item: int | None = None  # measured bytes per batch item the size comes from
    layers: int | None = None  # gradient checkpointing keeps one of these layers' activations
    percent: int | None = None  # a batch at most this share of the failed one (nothing names it)
    prompts: int | None = None  # generate on this many prompts per call
    traced: bool = False  # the bytes saved come from traced steps, not from an estimate
    prepared: bool = False  # accelerate prepared this model without the mixed precision asked


@dataclass(frozen=True)
class Measured:
    """What the failed cell's memory says, for the fixes to size from."""

    grown: int | None = None  # what the cell needed when it failed, the failed request included
    progress: tuple[int, int] | None = None  # (modules reached, modules) of its forward pass
    layers: int | None = None  # of the model that was training
    activations: int | None = None  # the step's, from ``grown`` (see ``_measure``)
    room: int | None = None  # what a rerun has: the room now and what the failed cell kept
    kept: int = 0  # bytes the names the failed cell bound still hold, autograd graphs included
    kept_names: tuple[str, ...] = ()


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
    measured: Measured = Measured()
    kv_cache: KvCache | None = None


def _measure(
    census: Census, record: CellRecord | None, requested: int | None, failure: Failure | None
) -> Measured:
    """The cell's growth: its peak above where it started on a GPU; under the CPU budget, what
    clearing the failed frames freed plus what the cell's names kept; else host RAM's. The
    failed request is added. The step's activations: a forward pass that stopped at module k
    of n is scaled by n/k, and training adds the backward pass's gradients of one layer (of L)
    beside the saved activations, 1/L more."""
    kept_holders = []
    if failure is not None and record is not None:
        kept_holders = [
            h
            for h in census.holders
            if h.created_cell == record.execution_count and failure.device in h.devices
        ]
    kept = sum(h.nbytes for h in kept_holders)
    memory = record.memory if record is not None else ()
    growth = [m.peak - m.before for m in memory if m.peak is not None and m.device != "host RAM"]
    if not growth and failure is not None and failure.freed is not None:
        growth = [failure.freed + kept]
    if not growth:
        growth = [m.peak - m.before for m in memory if m.peak is not None]
    grown = max(max(growth), 0) + (requested or 0) if growth else None
    progress = failure.progress if failure is not None else None
    activations = grown * progress[1] // progress[0] if grown and progress else grown
    layers = failure.layers if failure is not None and failure.training else None
    if activations and failure is not None and failure.training:
        activations += activations // (layers or 1)
    room = failure.room + kept if failure is not None and failure.room is not None else None
    return Measured(
        grown=grown,
        progress=progress,
        layers=layers,
        activations=activations,
        room=room,
        kept=kept,
        kept_names=tuple(dict.fromkeys(h.root for h in kept_holders)),
    )


def fitting_size(
    per_item: int, fixed: int, room: int | None, current: int, allowed: list[int] | None = None
) -> int | None:
    """The largest size up to half of ``current`` (one of ``allowed`` when given) whose need,
    ``fixed + per_item * size``, stays under the room less ``HEADROOM``; half without a room."""
    sizes = [s for s in (allowed or range(1, current + 1)) if s <= current // 2]
    if room is not None:
        budget = room * (1 - HEADROOM) - fixed
        sizes = [s for s in sizes if s * per_item <= budget]
    return max(sizes, default=None)


def _models(namespace: dict[str, Any]) -> list[tuple[str, Any]]:
    torch = sys.modules.get("torch")
    if torch is None:
        return []
    return [
        (name, value)
        for name, value in user_variables(namespace, {}).items()
        if isinstance(value, torch.nn.Module)
    ]


def _linear_weights(model: Any) -> tuple[int, int]:
    """(bytes, elements) of the weights 8/4-bit loading converts (``estimate``'s rule)."""
    weights = quantized_weights(model)
    return sum(w.numel() * w.element_size() for w in weights), sum(w.numel() for w in weights)


def _loaded_bits(model: Any) -> int | None:
    """4 or 8 where bitsandbytes already holds the model's weights in that many bits (QLoRA's
    base: loading it so again saves nothing), else None."""
    kinds = {type(p).__name__ for p in model.parameters()}
    return 4 if "Params4bit" in kinds else 8 if "Int8Params" in kinds else None


def _generic_batch(activations: int, room: int | None) -> Fix | None:
    """Nothing names the batch: the share of it whose activations fit the room (half without
    a room)."""
    if room is None:
        return Fix("halve the batch", activations // 2, "from this cell's measured peak", True)
    percent = int(100 * room * (1 - HEADROOM) / activations)
    if not 0 < percent < 100:
        return None
    saves = activations - activations * percent // 100
    return Fix("a smaller batch", saves, estimate=True, percent=percent)


def _generic_checkpointing(activations: int, models: list[tuple[str, Any]]) -> Fix | None:
    from vram_magic.actions.oom_frameworks import layer_count

    trainable = [m for _, m in models if any(p.requires_grad for p in m.parameters())]
    layers = max((layer_count(m) or 1 for m in trainable), default=1)
    if layers < 2:
        return None
    return Fix(
        "gradient checkpointing",
        activations * (layers - 1) // layers,
        "model.gradient_checkpointing_enable() (transformers) or torch.utils.checkpoint",
        True,
        layers=layers,
    )


def _model_fixes(models: list[tuple[str, Any]]) -> list[Fix]:
    if not models:
        return []
    fixes = []
    name, model = max(models, key=lambda item: _linear_weights(item[1])[0])
    weight_bytes, elements = _linear_weights(model)
    bits = _loaded_bits(model)
    if weight_bytes and bits is None:
        fixes.append(
            Fix(
                "load in 8-bit",
                max(weight_bytes - elements, 0),
                f"{name}: BitsAndBytesConfig(load_in_8bit=True) in from_pretrained",
            )
        )
    if weight_bytes and (bits is None or bits > 4):
        fixes.append(
            Fix(
                "load in 4-bit",
                max(weight_bytes - elements // 2, 0),
                f"{name}: BitsAndBytesConfig(load_in_4bit=True) in from_pretrained",
            )
        )
    all_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    fixes.append(Fix("a model half the size", all_bytes // 2, f"half of {name}'s weights", True))
    return fixes


def _fixes(
    measured: Measured,
    stranded: int,
    namespace: dict[str, Any],
    requested: int | None,
    devices: tuple[DeviceReading, ...],
    failure: Failure | None,
) -> list[Fix]:
    from vram_magic.actions.oom_frameworks import generation_fixes, trainer_fixes, variable_fix

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
        fixes.append(Fix("free stranded memory", stranded, frees=()))
    if measured.kept_names:
        fixes.append(
            Fix("free what the failed cell kept", measured.kept, frees=measured.kept_names)
        )
    models = _models(namespace)
    activations = measured.activations
    generating = failure is not None and failure.kv_cache is not None
    if failure is not None and failure.trainer is not None:
        fixes.extend(trainer_fixes(failure, measured))
    else:
        variable = variable_fix(failure, measured, namespace) if failure is not None else None
        if failure is not None and failure.kv_cache is not None:
            fixes.extend(generation_fixes(failure.kv_cache, measured))
        if variable is not None:
            fixes.append(variable)
        elif activations and not generating:
            batch = _generic_batch(activations, measured.room)
            fixes.extend([batch] if batch is not None else [])
        checkpointing = _generic_checkpointing(activations, models) if activations else None
        if checkpointing is not None and not generating:
            fixes.append(checkpointing)
    fixes.extend(_model_fixes(models))
    fixes = [fix for fix in fixes if fix.saves >= NEGLIGIBLE]
    fixes.sort(key=lambda fix: -fix.saves)
    return _distinct_guesses(fixes)


def _distinct_guesses(fixes: list[Fix]) -> list[Fix]:
    """Two guesses of the same size tell the reader nothing apart (a 2-layer model's
    checkpointing and half its batch): the first, more direct one stays."""
    guessed: set[int] = set()
    kept = []
    for fix in fixes:
        if fix.estimate:
            if fix.saves in guessed:
                continue
            guessed.add(fix.saves)
        kept.append(fix)
    return kept


def explain_oom(
    error: BaseException,
    census: Census,
    devices: tuple[DeviceReading, ...],
    record: CellRecord | None,
    namespace: dict[str, Any],
    frames_cleared: bool,
    top: int = 5,
    failure: Failure | None = None,
) -> OomReport:
    """The report; ``failure`` is what the traceback showed (``oom_frameworks.read_failure``),
    with the room measured after the frames were cleared."""
    message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    requested = requested_bytes(str(error))
    stranded = census.stranded_bytes
    measured = _measure(census, record, requested, failure)
    return OomReport(
        error=type(error).__name__,
        message=message,
        requested=requested,
        devices=devices,
        top_holders=census.holders[:top],
        stranded=stranded,
        fixes=tuple(_fixes(measured, stranded, namespace, requested, devices, failure)),
        frames_cleared=frames_cleared,
        measured=measured,
        kv_cache=failure.kv_cache if failure is not None else None,
    )
