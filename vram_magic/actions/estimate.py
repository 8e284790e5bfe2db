"""How much memory a model needs: weights counted exactly on the ``meta`` device, and the peak
of a training step (or a forward pass) traced on fake tensors (``step_trace``), nothing loaded.

Parameters are counted once each (tied weights once). Quantized sizes follow what transformers'
bitsandbytes integration really converts: Linear layers (and GPT-2's Conv1D), but not the output
head nor weights tied to an embedding; everything else stays 16-bit. Quantization constants are
included (int8: one float32 scale per output row; nf4: one float32 absmax per 64 weights), which
``get_memory_footprint()`` leaves out.

The peak is traced at the batch asked for and at twice it; the line through the two gives the
largest batch each card holds. Where a model cannot be traced, the peak falls back to weights,
gradients and optimizer state by formula (no activations), and the estimate says why.
"""

from __future__ import annotations

import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vram_magic.actions.step_setup import (
    DTYPES,
    TRAIN_MODES,
    from_config,
    lora_targets,
    model_class,
    positions,
    quantized_modules,
    step_dtype,
)
from vram_magic.actions.step_trace import StepPeak, TraceError, trace_steps

CARDS_GB = (8, 12, 16, 24, 40, 80)
NF4_BLOCK = 64
DEFAULT_SEQ = 2048  # tokens, or the model's positions where it holds fewer
# the formula's bytes per trainable parameter beyond its weight: gradient and optimizer state
_STATE_BYTES = {"adam": (4, 8), "adamw": (4, 8), "adamw8bit": (4, 2), "sgd": (4, 4)}


class EstimateError(ValueError):
    """A model that cannot be built or found, said in one line."""


@dataclass(frozen=True)
class Estimate:
    model: str
    params: int
    quantizable: int  # parameters in layers bitsandbytes converts
    weights: dict[str, int]  # bytes by dtype: float32, bfloat16, int8, nf4 (constants included)
    training: int | None  # weights, gradients and optimizer state; activations not included
    train: str
    kv_cache: int | None  # for ``batch`` sequences of ``seq`` tokens, in bfloat16
    batch: int
    seq: int
    peak: int = 0  # bytes at the highest point of a steady-state step at ``batch`` x ``seq``
    peak_parts: dict[str, int] = field(default_factory=dict)  # weights, gradients, ... = peak
    dtype: str = "float32"
    checkpointing: bool = False
    traced: bool = False  # False: ``peak`` is the formula's (no activations); ``note`` says why
    note: str | None = None
    per_item: int | None = None  # bytes each further sequence adds to the peak (traced line)
    largest_batch: dict[str, int | None] = field(default_factory=dict)  # "8 GB": batch
    seconds: float = 0.0  # the trace's time
    lora_targets: tuple[str, ...] = ()  # the modules the traced LoRA adapts (step_setup's)

    @property
    def inference(self) -> int:
        """bfloat16 weights plus the KV cache."""
        return self.weights["bfloat16"] + (self.kv_cache or 0)


def _config_from(source: str) -> Any:
    """A local folder or config.json, or a hub id: from the cache first, the network after
    (unless ``HF_HUB_OFFLINE=1``), so an offline notebook gets its answer at once."""
    from transformers import AutoConfig

    path = Path(source)
    if path.is_file():
        path = path.parent
    attempts = [{"local_files_only": True}]
    if os.environ.get("HF_HUB_OFFLINE") != "1" and not path.exists():
        attempts.append({})
    for options in attempts:
        try:
            return AutoConfig.from_pretrained(str(path) if path.exists() else source, **options)
        except Exception:
            continue
    raise EstimateError(
        f"could not read a model config from {source!r}: not a local folder or config.json, "
        "and not in the Hugging Face cache (a hub id needs the network once)"
    )


def _meta_model(config: Any) -> Any:
    import torch

    try:
        with torch.device("meta"):
            model = model_class(config)._from_config(config)
    except TraceError as error:
        raise EstimateError(str(error)) from None
    model.tie_weights()
    return model


def _resolve(source: Any) -> tuple[Any, Any, str]:
    """(module, config or None, a name for it) from a module, a config, a path or a hub id."""
    torch = sys.modules.get("torch")
    if torch is not None and isinstance(source, torch.nn.Module):
        return source, getattr(source, "config", None), type(source).__name__
    if isinstance(source, str):
        config = _config_from(source)
        return _meta_model(config), config, source
    if hasattr(source, "to_dict") and hasattr(source, "model_type"):
        return _meta_model(source), source, type(source).__name__
    raise EstimateError(f"cannot estimate a {type(source).__name__}: give a model, config or path")


def quantized_weights(model: Any) -> list[Any]:
    """The weights bitsandbytes converts when transformers loads in 8 or 4 bits."""
    return [layer.weight for _, _, layer in quantized_modules(model)]


def _kv_cache(config: Any, batch: int, seq: int) -> int | None:
    if config is None:
        return None
    layers = getattr(config, "num_hidden_layers", None) or getattr(config, "n_layer", None)
    heads = getattr(config, "num_attention_heads", None) or getattr(config, "n_head", None)
    hidden = getattr(config, "hidden_size", None) or getattr(config, "n_embd", None)
    if not (layers and heads and hidden):
        return None
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or hidden // heads
    return 2 * layers * batch * seq * kv_heads * head_dim * 2  # keys and values, bfloat16


def _check_options(batch: int, train: str, dtype: str | None) -> None:
    """Bad input raises EstimateError in one line, before any model is read."""
    if train not in TRAIN_MODES:
        raise EstimateError(f"--train must be one of {', '.join(TRAIN_MODES)}, not {train!r}")
    if dtype is not None and dtype not in DTYPES:
        raise EstimateError(f"--dtype must be one of {', '.join(DTYPES)}, not {dtype!r}")
    if batch < 1:
        raise EstimateError(f"--batch must be at least 1, not {batch}")


def _sequence(config: Any, seq: int | None) -> int:
    """The tokens per sequence to trace: ``seq``, checked against the model's positions."""
    most = positions(config) if config is not None else None
    if seq is None:
        return min(DEFAULT_SEQ, most or DEFAULT_SEQ)
    if seq < 1:
        raise EstimateError(f"--seq must be at least 1, not {seq}")
    if most is not None and seq > most:
        raise EstimateError(f"--seq {seq} is above the {most} positions this model holds")
    return seq


def _formula(train: str, dtype: str, weights: dict[str, int], params: int) -> dict[str, int]:
    """Weights, gradients and optimizer state without a trace: every parameter trained (the
    adapters of lora and qlora are not known, so only their base is counted)."""
    stored = "nf4" if train == "qlora" else dtype
    gradient, state = _STATE_BYTES.get(train, (0, 0))
    size = 2 if dtype in ("bfloat16", "float16") else 4
    return {
        "weights": weights.get(stored, weights["float32"]),
        "gradients": params * gradient * size // 4,
        "optimizer": params * state,
        "activations": 0,
        "other": 0,
    }


def _largest(
    peaks: list[StepPeak], rooms: dict[str, int]
) -> tuple[int | None, dict[str, int | None]]:
    """Bytes per further sequence, and the largest batch under each room, from the line
    through the two traced points (0: not even one sequence fits; None: unknown)."""
    (b0, p0), (b1, p1) = (peaks[0].batch, peaks[0].peak), (peaks[-1].batch, peaks[-1].peak)
    if b1 == b0 or p1 <= p0:
        return None, dict.fromkeys(rooms)
    per_item = (p1 - p0) / (b1 - b0)
    fixed = p0 - per_item * b0
    return int(per_item), {
        name: max(int((room - fixed) // per_item), 0) for name, room in rooms.items()
    }


def _rooms() -> dict[str, int]:
    """The cards to fit on: 8 to 80 GB, and each visible GPU's free memory now."""
    from vram_magic.readings.report import read_report

    rooms = {f"{gb} GB": gb * 10**9 for gb in CARDS_GB}
    for device in read_report().devices:
        if device.free is not None:
            rooms[f"cuda:{device.cuda_index} free"] = device.free
    return rooms


def estimate(
    source: Any,
    batch: int = 1,
    seq: int | None = None,
    train: str = "adam",
    dtype: str | None = None,
    checkpointing: bool = False,
) -> Estimate:
    """Memory ``source`` needs: weights by dtype, and the peak of a step of ``train`` at
    ``batch`` sequences of ``seq`` tokens (default: 2048, or fewer where the model holds
    fewer positions), traced where it can be."""
    _check_options(batch, train, dtype)
    model, config, name = _resolve(source)
    seq = _sequence(config, seq)
    parameters = list(model.parameters())  # tied weights appear once
    params = sum(p.numel() for p in parameters)
    quantized = quantized_weights(model)
    quantizable = sum(w.numel() for w in quantized)
    rest = params - quantizable
    buffers32 = buffers16 = 0
    for buffer in model.buffers():
        size = buffer.numel() * buffer.element_size()
        buffers32 += size
        buffers16 += (
            size // 2 if buffer.is_floating_point() and buffer.element_size() == 4 else size
        )
    int8_scales = sum(4 * w.shape[0] for w in quantized)
    nf4_packed = sum(math.ceil(w.numel() / 2) for w in quantized)
    nf4_absmax = sum(4 * math.ceil(w.numel() / NF4_BLOCK) for w in quantized)
    weights = {
        "float32": 4 * params + buffers32,
        "bfloat16": 2 * params + buffers16,
        "int8": quantizable + int8_scales + 2 * rest + buffers16,
        "nf4": nf4_packed + nf4_absmax + 2 * rest + buffers16,
    }
    stored = step_dtype(config, train, dtype)
    state = _STATE_BYTES.get(train)
    training = None if state is None else weights["float32"] + params * sum(state)
    traced = _traced(config, batch, seq, train, dtype, checkpointing)
    largest: dict[str, int | None] = {}
    adapted: tuple[str, ...] = ()
    if isinstance(traced, str):
        parts, per_item, seconds = _formula(train, stored, weights, params), None, 0.0
    else:
        peaks, seconds = traced
        parts = peaks[0].parts
        per_item, largest = _largest(peaks, _rooms())
        adapted = lora_targets(config) if train in ("lora", "qlora") else ()
    return Estimate(
        model=name,
        params=params,
        quantizable=quantizable,
        weights=weights,
        training=training,
        train=train,
        kv_cache=_kv_cache(config, batch, seq),
        batch=batch,
        seq=seq,
        peak=sum(parts.values()),
        peak_parts=parts,
        dtype=stored,
        checkpointing=checkpointing,
        traced=not isinstance(traced, str),
        note=traced if isinstance(traced, str) else None,
        per_item=per_item,
        largest_batch=largest,
        seconds=seconds,
        lora_targets=adapted,
    )


def _traced(
    config: Any, batch: int, seq: int, train: str, dtype: str | None, checkpointing: bool
) -> tuple[list[StepPeak], float] | str:
    """The traced peaks at ``batch`` and twice it with the seconds taken, or why not."""
    if config is None:
        return "no transformers config to build the model from, so no step was traced"
    torch = sys.modules.get("torch")
    foreach = True if torch is not None and torch.cuda.is_available() else None
    began = time.perf_counter()
    try:
        build = from_config(config, train, dtype, seq, checkpointing, foreach)
        peaks = trace_steps(build, [batch, 2 * batch])
    except (TraceError, ImportError) as error:
        return f"the step could not be traced ({error}), so activations are not counted"
    return peaks, time.perf_counter() - began
