"""What a traced step runs, for each way of training: the real model built from its config (or a
fake copy of a live one), its real optimizer, and a batch that fits its head.

Train modes: ``adam``, ``adamw``, ``sgd`` (momentum 0.9), ``adamw8bit`` (bitsandbytes'
8-bit AdamW), ``lora`` (peft's LoRA with its defaults, r=8, on peft's usual target modules for
the model type, else every linear layer, over a bfloat16 base unless ``dtype`` says otherwise),
``qlora`` (the same over an nf4 base: the layers transformers' bitsandbytes integration
converts, with bfloat16 compute), ``none`` (a forward pass under ``no_grad``).

bitsandbytes' ``Params4bit`` cannot hold a fake tensor, so for ``qlora`` each converted layer
is a ``Linear4bit`` whose weight is the fake packed tensor bitsandbytes' own quantization op
makes; its forward is ``Linear4bit.forward``'s: the same ``matmul_4bit`` autograd function. A
live model loaded in 4 bits is copied the same way (``fake_copy``).
"""

from __future__ import annotations

import copy
import functools
import inspect
from collections.abc import Callable, Iterator
from typing import Any

from vram_magic.actions.step_trace import StepSetup, TraceError

TRAIN_MODES = ("adam", "adamw", "adamw8bit", "sgd", "lora", "qlora", "none")
DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16"}
DTYPES |= {"float16": "float16", "fp16": "float16", "half": "float16"}
_HEADS = (  # tried in order for a config that names no architecture
    "AutoModelForSeq2SeqLM",
    "AutoModelForMaskedLM",
    "AutoModelForCausalLM",
    "AutoModelForImageClassification",
    "AutoModelForSequenceClassification",
    "AutoModel",
)
_PEFT_TASKS = {
    "ForCausalLM": "CAUSAL_LM",
    "LMHeadModel": "CAUSAL_LM",
    "ForSequenceClassification": "SEQ_CLS",
}
_PEFT_TASKS |= {"ForConditionalGeneration": "SEQ_2_SEQ_LM"}


def model_class(config: Any) -> Any:
    """The class a config's model is built as: its ``architectures`` entry, else the first
    head transformers builds for its type (seq2seq, masked LM, causal LM, vision, classifier)."""
    import transformers

    for name in getattr(config, "architectures", None) or ():
        if hasattr(transformers, name):
            return getattr(transformers, name)
    for auto in _HEADS:
        mapping = getattr(transformers, auto)._model_mapping
        if type(config) in mapping:
            return mapping[type(config)]
    raise TraceError(f"transformers builds no model for a {type(config).__name__}")


def positions(config: Any) -> int | None:
    """How many tokens the model's position embeddings hold, where it says."""
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def torch_dtype(name: str) -> Any:
    import torch

    return getattr(torch, DTYPES[name])


def step_dtype(config: Any, train: str, dtype: str | None) -> str:
    """The weights' dtype a step runs with: ``dtype`` if given; else bfloat16 under the adapters
    of lora and qlora (their usual base); else the config's own, or float32."""
    if dtype is not None:
        return DTYPES[dtype]
    if train in ("lora", "qlora"):
        return "bfloat16"
    return (_config_dtype(config) if config is not None else None) or "float32"


def quantized_modules(model: Any) -> list[tuple[Any, str, Any]]:
    """(parent, attribute, layer) for each layer transformers' bitsandbytes integration converts
    to 8 or 4 bits (parent None: the model is such a layer itself): Linear layers and GPT-2's
    Conv1D, not the output head, layers whose weight is tied to another, nor those the model
    keeps in float32 (T5's ``wo``)."""
    import torch

    kept = list(getattr(model, "_keep_in_fp32_modules", None) or ())
    uses: dict[int, int] = {}
    for _, parameter in model.named_parameters(remove_duplicate=False):
        uses[id(parameter)] = uses.get(id(parameter), 0) + 1
    found = []
    modules = dict(model.named_modules())
    for path, layer in modules.items():
        convertible = isinstance(layer, torch.nn.Linear) or type(layer).__name__ == "Conv1D"
        weight = getattr(layer, "weight", None)
        untied = weight is not None and uses.get(id(weight), 0) == 1
        if convertible and untied and not path.endswith("lm_head") and _converts(path, kept):
            parent, _, name = path.rpartition(".")
            found.append((modules[parent] if path else None, name, layer))
    return found


def _converts(path: str, kept: list[str]) -> bool:
    """transformers' own rule where it has one: a kept pattern matches from the start up to a
    module boundary, as a regular expression, or as a suffix."""
    if not kept:
        return True
    try:
        from transformers.quantizers.quantizers_utils import should_convert_module
    except ImportError:
        return not any(path.endswith(pattern) for pattern in kept)
    return bool(should_convert_module(path, kept))


_STATE_TENSORS = ("absmax", "code", "offset")  # a QuantState's (its nested ``state2``'s too)


def weight_tensors(model: Any) -> Iterator[Any]:
    """Parameters, buffers and bitsandbytes' quantization constants of ``model``."""
    for tensor in [*model.parameters(), *model.buffers()]:
        yield tensor
        state = getattr(tensor, "quant_state", None)
        while state is not None:
            for name in _STATE_TENSORS:
                if getattr(state, name, None) is not None:
                    yield getattr(state, name)
            state = getattr(state, "state2", None)


def _nf4(layer: Any, compute_dtype: Any) -> Any:
    """``layer`` as bitsandbytes' Linear4bit over a fake nf4 weight (see the module docstring)."""
    import bitsandbytes
    import torch

    weight = layer.weight.detach()
    if type(layer).__name__ == "Conv1D":  # stored (in, out); bitsandbytes holds (out, in)
        weight = weight.t()
    packed, state = bitsandbytes.functional.quantize_4bit(
        weight.contiguous(), blocksize=64, quant_type="nf4", quant_storage=torch.uint8
    )
    converted: Any = bitsandbytes.nn.Linear4bit.__new__(bitsandbytes.nn.Linear4bit)
    torch.nn.Module.__init__(converted)
    converted.in_features, converted.out_features = weight.shape[1], weight.shape[0]
    converted.compute_dtype = compute_dtype
    converted.compute_type_is_set = True
    converted.support_avx512bf16_for_cpu = False
    converted.quant_state = state
    converted.quant_storage = torch.uint8
    packed_weight: Any = torch.nn.Parameter(packed, requires_grad=False)
    converted.weight = packed_weight
    converted.weight.quant_state = state
    converted.weight.quant_type = "nf4"
    converted.weight.compress_statistics = False
    converted.weight.module = converted
    converted.bias = layer.bias
    converted.forward = functools.partial(_nf4_forward, converted)
    return converted


def _nf4_forward(layer: Any, x: Any) -> Any:
    import bitsandbytes

    dtype = x.dtype
    x = x.to(layer.compute_dtype)
    bias = None if layer.bias is None else layer.bias.to(x.dtype)
    return bitsandbytes.matmul_4bit(
        x, layer.weight, bias=bias, quant_state=layer.weight.quant_state
    ).to(dtype)


ALL_LINEAR = "all-linear"  # peft's name for every linear layer but the output head


def lora_targets(config: Any) -> tuple[str, ...]:
    """The modules peft's LoRA adapts by default for this model type; ``(ALL_LINEAR,)`` where
    peft names none (it would ask for ``target_modules``)."""
    from peft.utils import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING as TARGETS

    targets = TARGETS.get(str(getattr(config, "model_type", "")))
    return tuple(targets) if targets else (ALL_LINEAR,)


def _with_lora(model: Any, quantized: bool) -> Any:
    import peft

    targets = lora_targets(model.config)
    name = type(model).__name__
    task = next((task for end, task in _PEFT_TASKS.items() if name.endswith(end)), None)
    if quantized:
        model.is_loaded_in_4bit = True  # peft wraps the 4-bit layers with its bnb LoRA layer
    config = peft.LoraConfig(
        target_modules=ALL_LINEAR if targets == (ALL_LINEAR,) else list(targets)
    )
    config.task_type = task
    return peft.get_peft_model(model, config)


def _optimizer(train: str, parameters: list[Any], foreach: bool | None) -> Any:
    import torch

    if train == "sgd":
        return torch.optim.SGD(parameters, lr=1e-3, momentum=0.9, foreach=foreach)
    if train == "adamw8bit":
        import bitsandbytes
        from torch.utils._python_dispatch import _disable_current_modes

        with _disable_current_modes():  # its quantization maps are real data, computed
            return bitsandbytes.optim.AdamW8bit(parameters)
    if train == "adam":
        return torch.optim.Adam(parameters, foreach=foreach)
    return torch.optim.AdamW(parameters, foreach=foreach)  # adamw, and the adapters of (q)lora


def token_batch(model: Any, seq: int, labels: bool) -> Callable[[int], dict[str, Any]]:
    """Batches that fit the model's head: pixel values for vision models, token ids otherwise
    (and as many decoder ids for an encoder-decoder); labels of the head's shape (one per
    sequence or image for a classifier, one per token else)."""
    import torch

    config = model.config
    base = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft's
    accepted = inspect.signature(base.forward).parameters
    vision = "pixel_values" in accepted
    per_row = vision or "ForSequenceClassification" in type(base).__name__
    dtype = next(model.parameters()).dtype
    vocab = getattr(config, "vocab_size", None) or 1

    def batch(size: int) -> dict[str, Any]:
        if vision:
            side = config.image_size
            inputs = {
                "pixel_values": torch.randn(size, config.num_channels, side, side, dtype=dtype)
            }
        else:
            inputs = {"input_ids": torch.randint(0, vocab, (size, seq))}
        if getattr(config, "is_encoder_decoder", False):
            inputs["decoder_input_ids"] = torch.randint(0, vocab, (size, seq))
        if labels and per_row:
            inputs["labels"] = torch.randint(0, max(config.num_labels, 1), (size,))
        elif labels:
            inputs["labels"] = torch.randint(0, vocab, (size, seq))
        return inputs

    return batch


def loss_of(outputs: Any) -> Any:
    """The model's loss, else (a model without a head) the mean of its first output."""
    loss = getattr(outputs, "loss", None)
    if loss is not None:
        return loss
    return outputs[0].float().mean()


def from_config(
    config: Any, train: str, dtype: str | None, seq: int, checkpointing: bool, foreach: bool | None
) -> Callable[[], StepSetup]:
    """A builder of the step ``train`` runs on the model of ``config`` (inside the fake mode)."""
    config = copy.deepcopy(config)  # building writes its dtype into the config: not the caller's

    def build() -> StepSetup:
        import torch
        from torch.utils._python_dispatch import _disable_current_modes

        chosen = torch_dtype(step_dtype(config, train, dtype))
        # built and converted on the meta device, outside the fake mode: peft and bitsandbytes
        # move and convert tensors in ways fake tensors refuse
        with _disable_current_modes(), torch.device("meta"):
            model = model_class(config)._from_config(config, dtype=chosen)
            if train == "qlora":
                for parent, name, layer in quantized_modules(model):
                    setattr(parent, name, _nf4(layer, chosen))
            if checkpointing:
                model.gradient_checkpointing_enable({"use_reentrant": False})
            if train in ("lora", "qlora"):
                model = _with_lora(model, quantized=train == "qlora")
        materialize(model)
        training = train != "none"
        model.train(training)
        trainable = [p for p in model.parameters() if p.requires_grad] if training else []
        return StepSetup(
            model,
            _optimizer(train, trainable, foreach) if training else None,
            token_batch(model, seq, labels=training),
            loss_of,
            weights=lambda: weight_tensors(model),
        )

    return build


def materialize(model: Any) -> None:
    """Every meta tensor of ``model`` made a tensor of the fake mode in force, in place: the
    same shapes, dtypes, ties and attributes (bitsandbytes' quantization state too)."""
    import torch

    made: dict[int, Any] = {}

    def fake(tensor: Any, parameter: bool) -> Any:
        if id(tensor) not in made:
            new = torch.empty_strided(tensor.shape, tensor.stride(), dtype=tensor.dtype)
            if parameter:
                new = torch.nn.Parameter(new, requires_grad=tensor.requires_grad)
                new.__dict__.update(tensor.__dict__)
            made[id(tensor)] = new
        return made[id(tensor)]

    for module in model.modules():
        for held, parameter in ((module._parameters, True), (module._buffers, False)):
            for name, tensor in held.items():
                if tensor is not None:
                    held[name] = fake(tensor, parameter)
        state = getattr(module, "quant_state", None)
        for name in ("absmax", "code"):
            if getattr(state, name, None) is not None:
                setattr(state, name, fake(getattr(state, name), False))


def _config_dtype(config: Any) -> str | None:
    value = getattr(config, "dtype", None)
    name = str(value).removeprefix("torch.") if value is not None else None
    return name if name in DTYPES else None


def fake_copy(module: Any) -> Any:
    """A copy of a live module whose tensors are fake ones of the mode in force (ties kept).
    A 4-bit layer loaded through bitsandbytes (QLoRA) gets the stand-in of ``_nf4``: a plain
    parameter over its fake packed weight, with its quantization state's tensors faked."""
    from torch._guards import detect_fake_mode
    from torch._subclasses.fake_tensor import FakeCopyMode

    mode = detect_fake_mode()
    if mode is None:
        raise TraceError("a fake copy is made inside the fake mode only")
    memo: dict[int, Any] = {}
    four_bit = [layer for layer in module.modules() if _is_4bit(layer)]
    for layer in four_bit:
        state = _fake_state(layer.weight.quant_state, memo)
        memo[id(layer.weight)] = _fake_parameter(layer.weight, quant_state=state)
    with FakeCopyMode(mode):
        copied = copy.deepcopy(module, memo)
    for layer in four_bit:
        stand_in = memo[id(layer)]
        stand_in.weight.module = stand_in
        stand_in.quant_state = stand_in.weight.quant_state
        stand_in.support_avx512bf16_for_cpu = False
        stand_in.forward = functools.partial(_nf4_forward, stand_in)
    return copied


def _is_4bit(layer: Any) -> bool:
    """bitsandbytes' own 4-bit layer over its packed weight (not peft's LoRA wrapper of it)."""
    weight = layer._parameters.get("weight")
    return type(weight).__name__ == "Params4bit" and type(layer).__module__.startswith(
        "bitsandbytes"
    )


def _fake_parameter(tensor: Any, **attributes: Any) -> Any:
    """A fake tensor like ``tensor`` (made inside the fake mode), as a frozen parameter."""
    import torch

    fake = torch.empty_strided(
        tensor.shape, tensor.stride(), dtype=tensor.dtype, device=tensor.device
    )
    parameter: Any = torch.nn.Parameter(fake, requires_grad=False)
    parameter.__dict__.update(
        {k: v for k, v in tensor.__dict__.items() if k not in ("module", "quant_state")}
    )
    parameter.__dict__.update(attributes)
    return parameter


def _fake_state(state: Any, memo: dict[int, Any]) -> Any:
    """bitsandbytes' QuantState with fake tensors (the nested one of double quantization too),
    one copy per state however many parameters share it."""
    import torch

    if state is None or id(state) in memo:
        return memo.get(id(state))
    fake = copy.copy(state)
    for name in _STATE_TENSORS:
        tensor = getattr(state, name, None)
        if isinstance(tensor, torch.Tensor):
            made = torch.empty_strided(
                tensor.shape, tensor.stride(), dtype=tensor.dtype, device=tensor.device
            )
            setattr(fake, name, made)
    if getattr(state, "state2", None) is not None:
        fake.state2 = _fake_state(state.state2, memo)
    memo[id(state)] = fake
    return fake
