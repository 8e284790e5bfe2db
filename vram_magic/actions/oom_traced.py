"""The out-of-memory report's fixes for a Trainer, in traced bytes: each fix is a step traced on
fake tensors (``fit_predict``) beside the step as the Trainer runs it, at the batch that failed.

The batch is the largest divisor of the effective batch whose traced step fits the room for a
rerun; gradient checkpointing, bf16 mixed precision, bitsandbytes' 8-bit AdamW and peft's LoRA
adapters each save the difference of two traced peaks. Tracing takes a moment per step, so the
variants are traced only where the Trainer's own step traced quickly (large models keep the
report's estimates from the measured growth). None where the step cannot be traced at all.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from typing import Any

from vram_magic.actions.fit import divisors, torch_meter
from vram_magic.actions.fit_predict import (
    TrainerStep,
    Variant,
    largest_fitting,
    runs_mixed_precision,
)
from vram_magic.actions.limit import outside_budget
from vram_magic.actions.oom import HEADROOM, Fix
from vram_magic.actions.step_setup import DTYPES, from_config
from vram_magic.actions.step_trace import StepSetup, tracing

VARIANT_SECONDS = 2.0  # of CPU time: a Trainer's step traced this fast has its variants traced


def _peak(build: Any, size: int) -> int:
    with outside_budget(), tracing(build) as peak_at:
        return peak_at(size).peak


def _lora_step(trainer: Any, like: TrainerStep) -> Any | None:
    """The step with peft's LoRA adapters on the same model (from its config, in its dtype),
    batched as the Trainer batches; None where that cannot be built."""
    model, config = trainer.model, getattr(trainer.model, "config", None)
    if config is None or hasattr(model, "peft_config") or "peft" not in _importable():
        return None
    dtype = str(next(model.parameters()).dtype).removeprefix("torch.")
    build = from_config(config, "lora", dtype if dtype in DTYPES else None, 1, False, None)

    def lora() -> StepSetup:
        setup = build()
        return dataclasses.replace(
            setup, batch=like.batch, micro_batches=like.micro_batches, first_step=like.first_step
        )

    return lora


def _importable() -> set[str]:
    import importlib.util

    return {name for name in ("peft", "bitsandbytes") if importlib.util.find_spec(name)}


def traced_train_fixes(trainer: Any, room: int | None) -> list[Fix] | None:
    """The Trainer's fixes with traced savings, or None where its step cannot be traced."""
    args = trainer.args
    current = args.per_device_train_batch_size
    effective = current * args.gradient_accumulation_steps
    budget = None if room is None else room if torch_meter().exact else int(room * (1 - HEADROOM))
    try:
        build = TrainerStep(trainer, effective)
        began = time.process_time()  # the work itself, whatever else the machine runs
        with outside_budget(), tracing(build) as peak_at:
            base = peak_at(current)
            seconds = time.process_time() - began
            fixes = []
            if budget is not None:
                weights = base.parts["weights"]
                size, _, _ = largest_fitting(
                    lambda s: peak_at(s).peak - weights, budget, divisors(effective), current
                )
                if size is not None and size < current:
                    steps = ("gradient_accumulation_steps", effective // size)
                    fixes.append(
                        Fix(
                            "a smaller batch, same effective batch",
                            base.peak - peak_at(size).peak,
                            setting=(("per_device_train_batch_size", size), steps),
                            effective=effective,
                            fit=True,
                            traced=True,
                        )
                    )
    except Exception:  # the report keeps its estimates from the measured growth
        return None
    if seconds <= VARIANT_SECONDS:
        fixes.extend(_variant_fixes(trainer, build, base.peak))
    return fixes


def _variant_fixes(trainer: Any, like: TrainerStep, base: int) -> list[Fix]:
    torch = sys.modules["torch"]
    args, current = trainer.args, trainer.args.per_device_train_batch_size
    optim = str(getattr(args.optim, "value", args.optim))
    fp32 = next(trainer.model.parameters()).dtype == torch.float32
    variants: list[tuple[str, Any, tuple[tuple[str, Any], ...]]] = []
    if not args.gradient_checkpointing:
        step = TrainerStep(trainer, like.effective, Variant(checkpointing=True))
        variants.append(("gradient checkpointing", step, (("gradient_checkpointing", True),)))
    if fp32 and not runs_mixed_precision(trainer):
        step = TrainerStep(trainer, like.effective, Variant(bf16=True))
        variants.append(("bf16 mixed precision", step, (("bf16", True),)))
    if "adam" in optim and "8bit" not in optim and "bitsandbytes" in _importable():
        step = TrainerStep(trainer, like.effective, Variant(adamw8bit=True))
        variants.append(("8-bit optimizer", step, (("optim", "adamw_bnb_8bit"),)))
    lora = _lora_step(trainer, like)
    if lora is not None:
        variants.append(("LoRA adapters (peft)", lora, ()))
    fixes = []
    for action, step, setting in variants:
        try:
            saves = base - _peak(step, current)
        except Exception:  # a variant that cannot be traced is left out
            continue
        fixes.append(Fix(action, saves, setting=setting, traced=True))
    return fixes
