"""How much memory a model needs, counted exactly on the ``meta`` device (no weights loaded).

Parameters are counted once each (tied weights once). Quantized sizes follow what transformers'
bitsandbytes integration really converts: Linear layers (and GPT-2's Conv1D), but not the output
head nor weights tied to an embedding; everything else stays 16-bit. Quantization constants are
included (int8: one float32 scale per output row; nf4: one float32 absmax per 64 weights), which
``get_memory_footprint()`` leaves out. Training and inference totals are estimates and say so.
"""

from __future__ import annotations

import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

CARDS_GB = (8, 12, 16, 24, 40, 80)
NF4_BLOCK = 64
_OPTIMIZER_BYTES = {"adam": 16, "sgd": 12, "none": 0}  # per parameter, with fp32 master weights


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
    from transformers import AutoModel, AutoModelForCausalLM

    with torch.device("meta"):
        try:
            model = AutoModelForCausalLM.from_config(config)
        except ValueError:
            model = AutoModel.from_config(config)
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
    import torch

    seen: dict[int, int] = {}
    for _, parameter in model.named_parameters(remove_duplicate=False):
        seen[id(parameter)] = seen.get(id(parameter), 0) + 1
    weights = []
    for name, module in model.named_modules():
        convertible = isinstance(module, torch.nn.Linear) or type(module).__name__ == "Conv1D"
        weight = getattr(module, "weight", None)
        untied = weight is not None and seen.get(id(weight), 0) == 1  # tied ones stay 16-bit
        if convertible and untied and not name.endswith("lm_head"):
            weights.append(weight)
    return weights


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


def estimate(source: Any, batch: int = 1, seq: int = 2048, train: str = "adam") -> Estimate:
    """Memory ``source`` needs by dtype, for training with ``train`` and for inference."""
    if train not in _OPTIMIZER_BYTES:
        raise EstimateError(f"--train must be one of {', '.join(_OPTIMIZER_BYTES)}, not {train!r}")
    model, config, name = _resolve(source)
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
    per_parameter = _OPTIMIZER_BYTES[train]
    return Estimate(
        model=name,
        params=params,
        quantizable=quantizable,
        weights=weights,
        training=per_parameter * params + buffers32 if per_parameter else None,
        train=train,
        kv_cache=_kv_cache(config, batch, seq),
        batch=batch,
        seq=seq,
    )
