"""What an out-of-memory error's traceback shows, read before its frames are cleared: the
``transformers.Trainer`` call it came from (training or evaluating), ``generate``'s KV cache, how
far the forward pass had got, and the notebook names its code uses.

Only facts and the user's own objects (the Trainer, the model) are kept, never a frame, so the
cleared frames really give their memory back.
"""

from __future__ import annotations

import gc
import inspect
import sys
import types
from dataclasses import dataclass, replace
from typing import Any

from vram_magic.actions.fit import divisors, torch_meter
from vram_magic.actions.fit_cell import DEFAULT_VARIABLE
from vram_magic.actions.fit_predict import prepared_without_autocast, runs_mixed_precision
from vram_magic.actions.oom import HEADROOM, Fix, Measured, fitting_size
from vram_magic.census.roots import user_variables

_TRAINER_CALLS = frozenset(
    {"train", "_inner_training_loop", "training_step", "evaluate", "evaluation_loop", "predict"}
)
_EVALUATING = frozenset({"evaluate", "evaluation_loop", "predict"})
_BACKWARD = frozenset({"backward", "_engine_run_backward"})
_NO_GRAD = "decorate_context"  # torch's wrapper of functions under no_grad / inference_mode
ADAM_BYTES, ADAM_8BIT_BYTES = 8, 2  # Adam's two moments per fp32 parameter; in 8 bits


@dataclass(frozen=True)
class KvCache:
    """``generate``'s keys and values: 2 x layers x batch x tokens x kv heads x head dim x bytes."""

    layers: int
    batch: int
    prompt: int
    new_tokens: int
    kv_heads: int
    head_dim: int
    dtype_bytes: int
    filled: int = 0  # tokens per sequence in the cache when it ran out

    @property
    def token_bytes(self) -> int:
        """Per token of one sequence."""
        return 2 * self.layers * self.kv_heads * self.head_dim * self.dtype_bytes

    def nbytes(self, batch: int | None = None, new_tokens: int | None = None) -> int:
        tokens = self.prompt + (self.new_tokens if new_tokens is None else new_tokens)
        return self.token_bytes * (self.batch if batch is None else batch) * tokens

    def peak(self, batch: int | None = None, new_tokens: int | None = None) -> int:
        """The cache grows by concatenation: while one layer's keys (or values) are appended to,
        they exist twice, one of 2 x layers parts more."""
        whole = self.nbytes(batch, new_tokens)
        return whole + whole // (2 * self.layers)


@dataclass(frozen=True)
class Failure:
    """Where the error came from. ``progress`` is (modules reached, modules) of a forward pass
    with gradients that ran out; the step's activations were not all made yet."""

    live: int  # bytes the meter counted alive at the failure, held by its frames too
    names: frozenset[str] = frozenset()  # notebook globals its code on the traceback uses
    trainer: Any = None
    evaluating: bool = False
    training: bool = False  # a forward or backward pass with gradients
    model: Any = None  # the Trainer's, else the outermost module running, else one the code names
    layers: int | None = None  # the model's
    progress: tuple[int, int] | None = None
    kv_cache: KvCache | None = None
    room: int | None = None  # after the frames were cleared: bytes the kernel may still use
    freed: int | None = None  # what clearing the frames gave back
    device: str = "cpu"  # where the meter measures

    def measured(self) -> Failure:
        """With the room and what the frames held, measured now that they are cleared."""
        gc.collect()
        meter = torch_meter()
        room = meter.room()
        if room is None:
            return self
        return replace(self, room=room, freed=self.live - meter.in_use(), device=meter.device)


def _frames(error: BaseException) -> list[types.FrameType]:
    frames = []
    tb = error.__traceback__
    while tb is not None:
        frames.append(tb.tb_frame)
        tb = tb.tb_next
    return frames


def _code_names(code: types.CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            names |= _code_names(const)
    return names


def _progress(root: Any, innermost: Any) -> tuple[int, int] | None:
    """(leaf modules run, leaf modules) in registration order, the order transformers' models
    run them; a module with children counts as done up to its last leaf."""
    leaves = [m for m in root.modules() if next(m.children(), None) is None]
    inner = [m for m in innermost.modules() if next(m.children(), None) is None]
    ids = [id(m) for m in leaves]
    if not inner or id(inner[-1]) not in ids:
        return None
    return ids.index(id(inner[-1])) + 1, len(ids)


def _text_config(model: Any) -> Any:
    config: Any = getattr(model, "config", None)
    return config.get_text_config() if hasattr(config, "get_text_config") else config


def layer_count(model: Any) -> int | None:
    """The model's layers: its config's ``num_hidden_layers``, else its longest list of
    modules (ModuleList or Sequential)."""
    layers = getattr(_text_config(model), "num_hidden_layers", None)
    if layers:
        return int(layers)
    torch = sys.modules["torch"]
    lists = (torch.nn.ModuleList, torch.nn.Sequential)
    return max((len(m) for m in model.modules() if isinstance(m, lists)), default=None)


def _kv_cache(model: Any, local: dict[str, Any]) -> KvCache | None:
    """The cache ``generate`` was filling, from the model's config and the frame's prompt and
    generation config."""
    config = _text_config(model)
    layers = getattr(config, "num_hidden_layers", None)
    heads = getattr(config, "num_attention_heads", None)
    hidden = getattr(config, "hidden_size", None)
    prompt = local.get("input_ids")
    if prompt is None:
        prompt = local.get("inputs")
    if prompt is None:
        prompt = local.get("kwargs", {}).get("input_ids")
    if not (layers and heads and hidden) or getattr(prompt, "ndim", 0) != 2:
        return None
    generation: Any = local.get("generation_config") or getattr(model, "generation_config", None)
    new = local.get("kwargs", {}).get("max_new_tokens") or getattr(
        generation, "max_new_tokens", None
    )
    if new is None and getattr(generation, "max_length", None):
        new = generation.max_length - prompt.shape[1]
    if not new or new < 1:
        return None
    return KvCache(
        layers=int(layers),
        batch=int(prompt.shape[0]),
        prompt=int(prompt.shape[1]),
        new_tokens=int(new),
        kv_heads=int(getattr(config, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(config, "head_dim", None) or hidden // heads),
        dtype_bytes=model.dtype.itemsize,
    )


def _used_model(namespace: dict[str, Any], names: set[str]) -> Any:
    """Outside any forward pass (in the backward pass, say): the largest module the failed
    code names."""
    torch = sys.modules.get("torch")
    if torch is None:
        return None
    named = user_variables({n: v for n, v in namespace.items() if n in names}, {})
    used = [v for v in named.values() if isinstance(v, torch.nn.Module)]
    return max(used, key=lambda m: sum(p.numel() for p in m.parameters()), default=None)


def read_failure(error: BaseException, namespace: dict[str, Any]) -> Failure:
    """What ``error``'s traceback shows, and the bytes alive at the failure."""
    torch = sys.modules.get("torch")
    transformers = sys.modules.get("transformers")
    trainer_class = getattr(transformers, "Trainer", None)
    generating = tuple(
        getattr(transformers, name)
        for name in ("PreTrainedModel", "GenerationMixin")
        if hasattr(transformers, name)
    )
    names: set[str] = set()
    trainer, evaluating, kv_cache, filled = None, False, None, 0
    cache_class = getattr(transformers, "Cache", None)
    modules: list[Any] = []
    backward = no_grad = False
    for frame in _frames(error):
        code = frame.f_code
        if frame.f_globals is namespace:
            names |= _code_names(code)
        backward |= code.co_name in _BACKWARD and "torch" in code.co_filename
        no_grad |= code.co_name == _NO_GRAD
        owner = frame.f_locals.get("self") if code.co_flags & inspect.CO_OPTIMIZED else None
        if trainer_class and code.co_name in _TRAINER_CALLS and isinstance(owner, trainer_class):
            trainer, evaluating = owner, code.co_name in _EVALUATING
        if generating and code.co_name == "generate" and isinstance(owner, generating):
            kv_cache = kv_cache or _kv_cache(owner, frame.f_locals)
        if kv_cache is not None and cache_class is not None and not filled:
            caches = [v for v in list(frame.f_locals.values()) if isinstance(v, cache_class)]
            filled = caches[0].get_seq_length() if caches else 0
        module = torch is not None and isinstance(owner, torch.nn.Module)
        if module and (not modules or modules[-1] is not owner):
            modules.append(owner)
    if trainer is not None:
        model, training = trainer.model, not evaluating
    else:
        model = modules[0] if modules else _used_model(namespace, names)
        training = backward or (
            model is not None
            and not (no_grad or kv_cache)
            and any(p.requires_grad for p in model.parameters())
        )
    forward = modules and training and not backward
    return Failure(
        live=torch_meter().in_use(),
        names=frozenset(names),
        trainer=trainer,
        evaluating=evaluating,
        training=training,
        model=model,
        layers=layer_count(model) if model is not None else None,
        progress=_progress(modules[0], modules[-1]) if forward else None,
        kv_cache=replace(kv_cache, filled=filled) if kv_cache is not None else None,
    )


def _missing_gradients(model: Any) -> int:
    """Bytes the gradients of trainable parameters will take that do not exist yet."""
    return sum(
        p.numel() * p.element_size()
        for p in model.parameters()
        if p.requires_grad and p.grad is None
    )


def _batch_fix(
    action: str,
    measured: Measured,
    current: int,
    fixed: int,
    setting: Any,
    allowed: list[int] | None = None,
    **facts: Any,
) -> Fix | None:
    """The batch that fits: the measured activations per item of ``current``, plus ``fixed``;
    ``setting(size)`` names it."""
    if not measured.activations:
        return None
    per_item = measured.activations // current
    size = fitting_size(per_item, fixed, measured.room, current, allowed)
    if size is None:
        return None
    saves = per_item * (current - size)
    return Fix(
        action, saves, estimate=True, setting=setting(size), fit=True, per_item=per_item, **facts
    )


def _checkpointing(model: Any) -> bool:
    """Whether the model already recomputes activations (the property's newer name first)."""
    for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):
        if hasattr(type(model), name):
            return bool(getattr(model, name))
    return False


def _train_fixes(trainer: Any, measured: Measured) -> list[Fix]:
    from vram_magic.actions.oom_traced import traced_train_fixes

    traced = traced_train_fixes(trainer, measured.room)
    if traced is not None:
        return traced
    torch = sys.modules["torch"]
    args, model = trainer.args, trainer.model
    trainable = [p for p in model.parameters() if p.requires_grad]
    fp32 = sum(p.numel() for p in trainable if p.dtype == torch.float32)
    optim = str(getattr(args.optim, "value", args.optim))
    adam = "adam" in optim and "8bit" not in optim
    stateless = adam and (trainer.optimizer is None or not trainer.optimizer.state)
    trainable_bytes = sum(p.numel() * p.element_size() for p in trainable)
    fixed = _missing_gradients(model) + (2 * trainable_bytes if stateless else 0)
    current = args.per_device_train_batch_size
    effective = current * args.gradient_accumulation_steps

    def setting(size: int) -> tuple[tuple[str, int], ...]:
        steps = ("gradient_accumulation_steps", effective // size)
        return (("per_device_train_batch_size", size), steps)

    batch = _batch_fix(
        "a smaller batch, same effective batch",
        measured,
        current,
        fixed,
        setting,
        divisors(effective),
        effective=effective,
    )
    fixes = [batch] if batch is not None else []
    activations = measured.activations
    layers = layer_count(model)
    recomputes = args.gradient_checkpointing or _checkpointing(model)
    if activations and layers and layers > 1 and not recomputes:
        saves = activations * (layers - 1) // layers
        on = (("gradient_checkpointing", True),)
        fixes.append(Fix("gradient checkpointing", saves, estimate=True, setting=on, layers=layers))
    weights = sum(p.numel() for p in model.parameters() if p.dtype == torch.float32)
    if activations and weights and not runs_mixed_precision(trainer):
        saves = activations // 2 - 2 * weights
        fixes.append(Fix("bf16 mixed precision", saves, estimate=True, setting=(("bf16", True),)))
    if adam and fp32:
        saves = (ADAM_BYTES - ADAM_8BIT_BYTES) * fp32
        fixes.append(Fix("8-bit optimizer", saves, setting=(("optim", "adamw_bnb_8bit"),)))
    return fixes


def trainer_fixes(failure: Failure, measured: Measured) -> list[Fix]:
    """The Trainer's own settings. Training: its batch (the effective batch kept, gradients and
    Adam's state added where they did not exist yet), gradient checkpointing, bf16 and an 8-bit
    optimizer, from the measured activations and its model's weights. Evaluating: its batch."""
    if not failure.evaluating:
        fixes = _train_fixes(failure.trainer, measured)
        if prepared_without_autocast(failure.trainer.model):
            bf16 = "bf16 mixed precision"
            fixes = [replace(f, prepared=True) if f.action == bf16 else f for f in fixes]
        return fixes
    current = failure.trainer.args.per_device_eval_batch_size
    batch = _batch_fix(
        "a smaller eval batch",
        measured,
        current,
        0,
        lambda size: (("per_device_eval_batch_size", size),),
    )
    return [batch] if batch is not None else []


def generation_fixes(kv: KvCache, measured: Measured) -> list[Fix]:
    """``generate``'s KV cache cut so that the run fits the room: fewer prompts per call, or
    fewer new tokens (half of either without a room), but only prompts where it ran out before
    the first new token. Beside the cache's peak, the run needs what the cell measured beyond
    the cache it had filled, which scales with the prompts. The bytes saved are the cache's."""
    prompts, new = kv.batch // 2, kv.new_tokens // 2 if kv.filled > kv.prompt else 0
    if measured.room is not None:
        budget = measured.room * (1 - HEADROOM)
        other = max((measured.grown or 0) - kv.peak(new_tokens=kv.filled - kv.prompt), 0)
        prompts = max(
            (b for b in range(1, prompts + 1) if kv.peak(b) + other * b // kv.batch <= budget),
            default=0,
        )
        new = max(
            (t for t in range(1, new + 1) if kv.peak(new_tokens=t) + other <= budget), default=0
        )
    fixes = []
    if prompts:
        saves = kv.nbytes() - kv.nbytes(batch=prompts)
        fixes.append(Fix("fewer prompts per generate call", saves, prompts=prompts))
    if new:
        saves = kv.nbytes() - kv.nbytes(new_tokens=new)
        fixes.append(Fix("fewer new tokens", saves, setting=(("max_new_tokens", new),)))
    return fixes


def variable_fix(failure: Failure, measured: Measured, namespace: dict[str, Any]) -> Fix | None:
    """A notebook int the failed code uses, named like a batch: the value that fits."""
    named = user_variables({n: namespace[n] for n in failure.names if n in namespace}, {})
    found = sorted(
        name
        for name, value in named.items()
        if "batch" in name.lower()
        and isinstance(value, int)
        and not isinstance(value, bool)
        and value >= 2
    )
    if not found:
        return None
    name = DEFAULT_VARIABLE if DEFAULT_VARIABLE in found else found[0]
    fixed = _missing_gradients(failure.model) if failure.training else 0
    return _batch_fix(
        "a smaller batch",
        measured,
        namespace[name],
        fixed,
        lambda size: ((name, size),),
        assign=True,
    )
