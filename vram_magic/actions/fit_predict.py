"""``%%fit`` predicts first: the largest size a traced step says fits, before any attempt runs.

A Trainer's model is copied onto fake tensors (``FakeCopyMode``: shapes, dtypes and ties, no
data) with the optimizer its arguments choose, gradient checkpointing and mixed precision as
``train()`` would set them, and batches shaped like its data collator's (the longest rows of its
train dataset, padded as the collator pads them). Steps are traced at the sizes the search asks
for (``step_trace``): the need of a size is the step's peak less the weights, which are alive
before the attempt starts. The search is a secant over the allowed sizes, checked by a trace
at every size it settles on, so a handful of traces find the largest size under the room.

Where the copy or its step cannot run on fake tensors (a quantized model, a custom loss that
reads values) there is no prediction and the search starts from the cell's size, as before.
"""

from __future__ import annotations

import bisect
import inspect
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from vram_magic.actions.fit import Prediction
from vram_magic.actions.limit import outside_budget
from vram_magic.actions.step_setup import fake_copy, loss_of, weight_tensors
from vram_magic.actions.step_trace import StepSetup, tracing

MAX_TRACES = 12
SAMPLED = 1024  # rows of the train dataset read for the longest batch
LARGEST = 4096  # the largest size tried where no effective batch bounds it


def largest_fitting(
    need: Callable[[int], int], budget: int, sizes: list[int], start: int
) -> tuple[int | None, int | None, int]:
    """(the largest of ``sizes`` whose ``need`` is within ``budget``, its need, traces used);
    ``need`` grows with the size. Each guess is the line through the two nearest sizes traced
    (the first one is ``start``), kept strictly between the largest that fits and the smallest
    that does not; a guess off the line bisects."""
    traced: dict[int, int] = {}
    lo, hi = -1, len(sizes)  # sizes[lo] fits, sizes[hi] does not (sentinels outside)
    index = min(bisect.bisect_right(sizes, start) - 1, len(sizes) - 1)
    while hi - lo > 1 and len(traced) < MAX_TRACES:
        index = min(max(index, lo + 1), hi - 1)
        size = sizes[index]
        traced[size] = need(size)
        if traced[size] <= budget:
            lo = index
        else:
            hi = index
        index = _secant(traced, budget, sizes, lo, hi)
    best = sizes[lo] if lo >= 0 else None
    return best, traced.get(best) if best is not None else None, len(traced)


def _secant(traced: dict[int, int], budget: int, sizes: list[int], lo: int, hi: int) -> int:
    """The index of the size the line through the last two traced sizes puts at ``budget``,
    kept strictly between ``lo`` and ``hi``: a line that says the largest size that fitted is
    the most is checked by the size above it."""
    if len(traced) < 2:
        size, spent = next(iter(traced.items()))  # through zero: per item, fixed costs aside
        guess = size * budget / spent if spent > 0 else sizes[-1]
    else:
        (s0, n0), (s1, n1) = list(traced.items())[-2:]
        if n1 == n0:
            return (lo + hi) // 2
        guess = s1 + (budget - n1) * (s1 - s0) / (n1 - n0)
    index = bisect.bisect_right(sizes, guess) - 1
    return min(max(index, lo + 1), hi - 1)


def _row_length(row: Any) -> int:
    lengths = [
        len(v) for v in dict(row).values() if hasattr(v, "__len__") and not isinstance(v, str)
    ]
    return max(lengths, default=0)


def _collated(trainer: Any, rows: int) -> dict[str, Any]:
    """The ``rows`` longest of the train dataset's first ``SAMPLED`` rows through the Trainer's
    collator (a padding collator makes the longest batch the largest), keeping the columns the
    model's forward takes (as the Trainer does)."""
    dataset, collate = trainer.train_dataset, trainer.data_collator
    sample = [dataset[i] for i in range(min(SAMPLED, len(dataset)))]
    batch = collate(sorted(sample, key=_row_length, reverse=True)[:rows])
    accepted = inspect.signature(trainer.model.forward).parameters
    if any(p.kind is p.VAR_KEYWORD for p in accepted.values()):
        return dict(batch)
    return {key: value for key, value in batch.items() if key in accepted}


def _shaped(example: dict[str, Any], device: Any) -> Callable[[int], dict[str, Any]]:
    """Batches of any size shaped like ``example`` on ``device``: its tensors with the first
    axis resized."""
    import torch

    def batch(size: int) -> dict[str, Any]:
        return {
            key: torch.zeros((size, *value.shape[1:]), dtype=value.dtype, device=device)
            if isinstance(value, torch.Tensor) and value.dim() > 0
            else value
            for key, value in example.items()
        }

    return batch


def prepared_without_autocast(model: Any) -> bool:
    """Whether accelerate has prepared this model object without mixed precision (an earlier
    train() did): accelerate prepares a model once, so later Trainers over the same object
    train it without autocast, whatever their ``bf16`` / ``fp16`` say."""
    prepared = bool(getattr(model, "_is_accelerate_prepared", False))
    return prepared and not hasattr(model, "_original_forward")  # its autocast wrapper's mark


def runs_mixed_precision(trainer: Any) -> bool:
    """Whether ``trainer.train()`` runs under autocast: its arguments ask for bf16 or fp16, and
    accelerate has not prepared its model without it already."""
    args = trainer.args
    return bool(args.bf16 or args.fp16) and not prepared_without_autocast(trainer.model)


def precision_dropped(trainer: Any) -> bool:
    """Whether ``trainer.train()`` will run without the mixed precision its arguments ask for."""
    args = trainer.args
    return bool(args.bf16 or args.fp16) and not runs_mixed_precision(trainer)


@dataclass(frozen=True)
class Variant:
    """A change to what ``train()`` would run, to trace what it saves: gradient checkpointing,
    bf16 mixed precision, bitsandbytes' 8-bit AdamW (None: as the Trainer's arguments say)."""

    checkpointing: bool | None = None
    bf16: bool | None = None
    adamw8bit: bool = False


class TrainerStep:
    """The step ``trainer.train()`` runs at each size, with ``variant``: called inside the
    fake mode, it builds the StepSetup; its batches and micro-batches serve other builds too."""

    def __init__(self, trainer: Any, effective: int | None, variant: Variant = Variant()) -> None:
        args = trainer.args
        self.trainer, self.effective, self.variant = trainer, effective, variant
        self.example = _collated(trainer, args.per_device_train_batch_size)
        self.device = next(trainer.model.parameters()).device
        self.batch = _shaped(self.example, self.device)
        self.first_step = args.max_steps == 1  # its moments come after its last backward

    def micro_batches(self, size: int) -> int:
        return 2 if self.effective and self.effective // size > 1 else 1

    def __call__(self) -> StepSetup:
        import torch

        trainer, args, variant = self.trainer, self.trainer.args, self.variant
        model = fake_copy(trainer.model)
        model.train()
        if args.gradient_checkpointing or variant.checkpointing:
            model.gradient_checkpointing_enable(args.gradient_checkpointing_kwargs)
        bf16 = args.bf16 if variant.bf16 is None else variant.bf16
        precision = torch.bfloat16 if bf16 else torch.float16 if args.fp16 else None
        if variant.bf16 is None and not runs_mixed_precision(trainer):
            precision = None  # as train() will run it
        mixed = torch.autocast(self.device.type, dtype=precision) if precision else None
        return StepSetup(
            model,
            self._optimizer(model),
            self.batch,
            loss_of,
            micro_batches=self.micro_batches,
            autocast=mixed,
            first_step=self.first_step,
            weights=lambda: weight_tensors(model),
        )

    def _optimizer(self, model: Any) -> Any:
        """The optimizer ``train()`` would make (the Trainer's own class where it has one)."""
        import torch
        from torch.utils._python_dispatch import _disable_current_modes

        trainer = self.trainer
        trainable = [p for p in model.parameters() if p.requires_grad]
        given = trainer.optimizer
        while isinstance(getattr(given, "optimizer", None), torch.optim.Optimizer):
            given = given.optimizer  # accelerate's AcceleratedOptimizer wraps the real one
        with _disable_current_modes():  # optimizers may compute real constants as they start
            if self.variant.adamw8bit:
                import bitsandbytes

                return bitsandbytes.optim.AdamW8bit(trainable)
            if given is not None:
                takes = inspect.signature(type(given)).parameters
                options = {k: v for k, v in given.defaults.items() if k in takes}
                return type(given)(trainable, **options)
            optimizer_class, options = trainer.get_optimizer_cls_and_kwargs(trainer.args, model)
            return optimizer_class(trainable, **options)


def predict_trainer(
    trainer: Any, effective: int | None, allowed: list[int] | None, start: int
) -> Callable[[int], Prediction | None]:
    """For a budget in bytes, the largest size a traced ``train()`` step fits in it, or None
    where the Trainer's step cannot be traced."""

    def predict(budget: int) -> Prediction | None:
        began = time.perf_counter()
        sizes = allowed or list(range(1, _largest_rows(trainer) + 1))
        try:
            with outside_budget(), tracing(TrainerStep(trainer, effective)) as peak_at:

                def need(size: int) -> int:
                    peak = peak_at(size)
                    return peak.peak - peak.parts["weights"]

                size, needed, traces = largest_fitting(need, budget, sizes, start)
        except Exception:  # a prediction is only a head start: the search runs without one
            return None
        seconds = time.perf_counter() - began
        return Prediction(size, needed, traces, seconds, precision_dropped(trainer))

    return predict


def _largest_rows(trainer: Any) -> int:
    """Without an effective batch to keep, sizes go up to the data set's rows (a batch larger
    than it is capped by it) or ``LARGEST``."""
    try:
        return max(min(len(trainer.train_dataset), LARGEST), 1)
    except TypeError:
        return LARGEST
