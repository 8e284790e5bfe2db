"""The peak of one training step (or forward pass), traced on fake tensors: exact, and nothing
allocated.

Under ``torch._subclasses.fake_tensor.FakeTensorMode`` every operation of the real model, its
real autograd graph and its real optimizer runs with tensors that carry shapes, dtypes and
storages but no data. A dispatch mode beneath it (the ledger) counts every storage from its
first operation until it dies, which is what a caching allocator holds for tensors, and keeps
the highest total with what it was made of:

- ``weights``: parameters and buffers (with bitsandbytes' quantization constants);
- ``gradients``: storages that became a parameter's ``.grad``;
- ``optimizer``: the optimizer's state, made by a first step before the traced one;
- ``activations``: storages autograd saved for the backward pass;
- ``other``: the batch, outputs, gradients on their way, temporaries.

A training step is traced as a loop's second step sees it (unless ``first_step``: a training
of one step): the optimizer state is there already, the outputs are dropped once the loss is
taken (as ``Trainer.training_step`` does), then backward, the optimizer step and
``zero_grad(set_to_none=True)``. With two micro-batches a second forward and backward runs over
the first one's gradients (gradient accumulation).
"""

from __future__ import annotations

import contextlib
import logging
import weakref
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

KINDS = ("weights", "gradients", "optimizer", "activations", "other")


class TraceError(RuntimeError):
    """A model or step that cannot run on fake tensors, said in one line."""


@dataclass(frozen=True)
class StepPeak:
    batch: int
    peak: int  # bytes at the step's highest point
    parts: dict[str, int]  # by KINDS, adding up to ``peak``


@dataclass
class StepSetup:
    """What one traced step runs, built inside the fake mode: the model, its optimizer (None:
    a forward pass under ``no_grad``), a batch of a given size, and the loss of its outputs."""

    model: Any
    optimizer: Any | None
    batch: Callable[[int], dict[str, Any]]
    loss: Callable[[Any], Any]
    micro_batches: Callable[[int], int] = lambda size: 1  # forward+backward passes per step
    autocast: Any | None = None  # a torch.autocast context for the forward, or None
    first_step: bool = False  # each traced step is a training's first: no optimizer state yet
    weights: Callable[[], Iterator[Any]] = field(default=lambda: iter(()))


def _ledger_mode() -> Any:
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_flatten

    class Ledger(TorchDispatchMode):
        """Live storages by kind; ``restart`` begins a new peak from what is alive now."""

        def __init__(self) -> None:
            super().__init__()
            self._live: dict[int, list[Any]] = {}  # id(storage) -> [bytes, kind]
            self.totals = dict.fromkeys(KINDS, 0)
            self.now = 0
            self.peak = 0
            self.peak_parts = dict(self.totals)

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            for item in tree_flatten(out)[0]:
                if hasattr(item, "untyped_storage"):
                    self.note(item)
            return out

        def note(self, tensor: Any, kind: str = "other") -> None:
            """Count ``tensor``'s storage if new; a known one moves from ``other`` to ``kind``."""
            storage = tensor.untyped_storage()
            key = id(storage)
            entry = self._live.get(key)
            if entry is None:
                size = storage.nbytes()
                self._live[key] = [size, kind]
                weakref.finalize(storage, self._gone, key)
                self.totals[kind] += size
                self.now += size
                if self.now > self.peak:
                    self.peak = self.now
                    self.peak_parts = dict(self.totals)
            elif entry[1] == "other" and kind != "other":
                self.totals["other"] -= entry[0]
                self.totals[kind] += entry[0]
                entry[1] = kind

        def _gone(self, key: int) -> None:
            size, kind = self._live.pop(key)
            self.totals[kind] -= size
            self.now -= size

        def restart(self) -> None:
            self.peak = self.now
            self.peak_parts = dict(self.totals)

    return Ledger()


def _run_step(setup: StepSetup, inputs: dict[str, Any], micro_batches: int) -> None:
    import torch

    forward = setup.autocast if setup.autocast is not None else contextlib.nullcontext()
    if setup.optimizer is None:
        with torch.no_grad(), forward:
            setup.model(**inputs)
        return
    for _ in range(micro_batches):
        with forward:
            loss = setup.loss(setup.model(**inputs))
        loss.backward()
        del loss
    setup.optimizer.step()
    setup.optimizer.zero_grad(set_to_none=True)


@contextlib.contextmanager
def tracing(build: Callable[[], StepSetup]) -> Iterator[Callable[[int], StepPeak]]:
    """Inside the block, ``peak_at(size)`` traces a step at batch ``size`` on the one model
    ``build`` makes in the fake mode (asked as often as the caller needs, sizes chosen as it
    goes). Dispatch modes in force (a ``%vram limit`` on the CPU) are set aside meanwhile.
    Raises TraceError where the model or its step cannot run there."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.utils._python_dispatch import _disable_current_modes

    ledger = _ledger_mode()
    # an op that cannot run on fake tensors is logged with its traceback by the fake mode before
    # it raises; the caller hears of it as one TraceError
    logger = logging.getLogger("torch._subclasses.fake_tensor")
    level = logger.level

    def peak_at(size: int) -> StepPeak:
        with _as_trace_error():
            if setup.first_step and setup.optimizer is not None:
                setup.optimizer.state.clear()  # made afresh by this step, as a first step does
            inputs = setup.batch(size)
            ledger.restart()
            _run_step(setup, inputs, setup.micro_batches(size))
            del inputs
            return StepPeak(size, ledger.peak, dict(ledger.peak_parts))

    logger.setLevel(logging.CRITICAL)
    try:
        with _disable_current_modes(), FakeTensorMode(allow_non_fake_inputs=True), ledger:
            with _as_trace_error():
                setup = build()
                _note_kinds(setup, ledger)
                if setup.optimizer is not None and not setup.first_step:
                    _run_step(setup, setup.batch(1), 1)  # the optimizer's state, as step 1
                    _note_kinds(setup, ledger)
            with torch.autograd.graph.saved_tensors_hooks(
                lambda saved: (ledger.note(saved, "activations"), saved)[1], lambda saved: saved
            ):
                yield peak_at
    finally:
        logger.setLevel(level)


def trace_steps(build: Callable[[], StepSetup], sizes: Sequence[int]) -> list[StepPeak]:
    """The peak of a step at each batch size in ``sizes`` (see ``tracing``)."""
    with tracing(build) as peak_at:
        return [peak_at(size) for size in sizes]


@contextlib.contextmanager
def _as_trace_error() -> Iterator[None]:
    try:
        yield
    except TraceError:
        raise
    except Exception as error:
        raise TraceError(f"{type(error).__name__}: {str(error).splitlines()[0][:200]}") from error


def _note_kinds(setup: StepSetup, ledger: Any) -> None:
    """Weights, the optimizer's state, and a hook that names each parameter's gradient."""
    for tensor in setup.weights():
        ledger.note(tensor, "weights")
    if setup.optimizer is None:
        return
    for state in setup.optimizer.state.values():
        for value in state.values():
            if hasattr(value, "untyped_storage"):
                ledger.note(value, "optimizer")
    for group in setup.optimizer.param_groups:
        for parameter in group["params"]:
            if not getattr(parameter, "_vram_magic_traced", False):
                parameter.register_post_accumulate_grad_hook(
                    lambda p: ledger.note(p.grad, "gradients")
                )
                parameter._vram_magic_traced = True
