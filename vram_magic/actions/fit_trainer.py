"""``%%fit`` and ``transformers.Trainer``: size what ``train()``, ``evaluate()`` and ``predict()``
really use, and undo a failed attempt.

A Trainer reads its train batch once, at construction (``_train_batch_size``), so a notebook
variable changed between attempts never reaches it. While a cell is fitted the three methods of
the base class are wrapped (a subclass such as TRL's ``SFTTrainer`` reaches them too):

- ``train()`` is sized in place: ``args.per_device_train_batch_size`` and ``_train_batch_size``,
  with ``gradient_accumulation_steps`` rescaled so the effective batch stays exact (the sizes are
  the divisors of it). transformers' own ``auto_find_batch_size`` is off meanwhile.
- ``evaluate()`` / ``predict()`` size ``per_device_eval_batch_size``; the evaluation that
  ``train()`` runs every N steps is retried in place at half the eval batch, so it never shrinks
  the train batch.
- A failed ``train()`` attempt is undone: the optimizer and scheduler it created (or the state it
  gave the user's), gradients, the callback handler's references, the random state, and the
  weights when optimizer steps were taken, from a copy in host RAM made before the first attempt.
  Where host RAM cannot hold that copy, the result says so instead.

Where a variable is sized instead (``%%fit --batch-size``), the calls are only guarded: a train
batch set on ``trainer.args`` in the cell takes effect, and a failed attempt is undone.
"""

from __future__ import annotations

import contextlib
import copy
import random
import sys
from collections.abc import Callable, Iterator
from typing import Any

from vram_magic.actions.fit import Setting, Target, divisors
from vram_magic.actions.fit_predict import predict_trainer
from vram_magic.actions.fit_sizing import FitError, Sizing, framework, patched
from vram_magic.actions.limit import outside_budget

HOST_RAM_SPARE = 1.25  # the weights' copy is made only when host RAM holds it this many times
_KEPT = ("optimizer", "lr_scheduler", "model_wrapped", "is_in_train")
_HANDLER_KEPT = ("optimizer", "lr_scheduler", "train_dataloader", "eval_dataloader")


def _to_host(value: Any) -> Any:
    """A copy of a state dict with every tensor on the CPU."""
    torch = sys.modules["torch"]
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {key: _to_host(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_host(item) for item in value)
    return copy.deepcopy(value)


class _RandomState:
    """Python's, torch's (CPU and CUDA) and numpy's generators, to replay an attempt exactly."""

    def __init__(self) -> None:
        torch = sys.modules["torch"]
        self.python = random.getstate()
        self.torch = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        numpy = sys.modules.get("numpy")
        self.numpy = numpy.random.get_state() if numpy is not None else None

    def put_back(self) -> None:
        torch = sys.modules["torch"]
        random.setstate(self.python)
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        if self.numpy is not None:
            sys.modules["numpy"].random.set_state(self.numpy)


class TrainerRollback:
    """Everything a ``train()`` attempt changes, as it was before the first attempt."""

    def __init__(self, trainer: Any) -> None:
        from torch.optim.optimizer import register_optimizer_step_post_hook

        self.trainer = trainer
        self.kept = {name: getattr(trainer, name, None) for name in _KEPT}
        handler = trainer.callback_handler
        self.handler_kept = {name: getattr(handler, name, None) for name in _HANDLER_KEPT}
        with outside_budget():
            self.random = _RandomState()
            self.states = [
                (held, _to_host(held.state_dict()))
                for held in (self.kept["optimizer"], self.kept["lr_scheduler"])
                if held is not None
            ]
            self.weights, self.unguarded = self._keep_weights(trainer.model)
        self.steps = 0
        self.restored = 0
        self._hook = register_optimizer_step_post_hook(self._stepped)

    def _stepped(self, *_: Any) -> None:
        self.steps += 1

    @staticmethod
    def _keep_weights(model: Any) -> tuple[list[tuple[Any, Any]] | None, int | None]:
        """(tensor, host copy) for every parameter and buffer, or (None, bytes) when host RAM
        would not hold the copy."""
        import itertools

        import psutil

        tensors = {id(t): t for t in itertools.chain(model.parameters(), model.buffers())}
        nbytes = sum(t.numel() * t.element_size() for t in tensors.values())
        if nbytes * HOST_RAM_SPARE > psutil.virtual_memory().available:
            return None, nbytes
        return [(t, t.detach().to("cpu", copy=True)) for t in tensors.values()], None

    def undo(self) -> None:
        """Put the trainer back as the first attempt found it."""
        torch = sys.modules["torch"]
        trainer = self.trainer
        for name, value in self.kept.items():
            setattr(trainer, name, value)
        for name, value in self.handler_kept.items():
            setattr(trainer.callback_handler, name, value)
        for held, state in self.states:
            held.load_state_dict(state)
        trainer.model.zero_grad(set_to_none=True)
        if self.steps and self.weights is not None:
            with torch.no_grad():
                for tensor, saved in self.weights:
                    tensor.copy_(saved)
            self.restored += 1
        self.steps = 0
        self.random.put_back()

    def facts(self) -> dict[str, Any]:
        return {"weights_restored": self.restored, "weights_unguarded": self.unguarded}

    def close(self) -> None:
        self._hook.remove()


def _train_target(
    sizing: Sizing, trainer: Any, rollback: TrainerRollback, keep_effective: bool
) -> Target:
    name = sizing.name_of(trainer, "trainer")
    args = trainer.args
    start = args.per_device_train_batch_size
    effective = start * args.gradient_accumulation_steps if keep_effective else None

    def apply(size: int) -> tuple[Setting, ...]:
        args.per_device_train_batch_size = size
        trainer._train_batch_size = args.train_batch_size
        settings = [Setting(f"{name}.args.per_device_train_batch_size", size)]
        if effective is not None:
            args.gradient_accumulation_steps = effective // size
            settings.append(Setting(f"{name}.args.gradient_accumulation_steps", effective // size))
        return tuple(settings)

    allowed = divisors(effective) if effective is not None else None
    return Target(
        f"{name}.train()",
        start,
        apply,
        allowed,
        rollback.undo,
        effective,
        workload=_workload(trainer, effective or start),
        fixed=_fixed_bytes(trainer),
        predict=predict_trainer(trainer, effective, allowed, start),
    )


def _fixed_bytes(trainer: Any) -> int:
    """What every ``train()`` attempt allocates whatever its batch: the gradients and, for the
    Adam family the Trainer creates, its two moments (0 where it is not known). The moments are
    made at the first optimizer step, after the last backward of it: only a second step's
    activations meet them, so a one-step training does not count them."""
    trainable = sum(
        p.numel() * p.element_size() for p in trainer.model.parameters() if p.requires_grad
    )
    optim = str(trainer.args.optim).lower()
    adam = trainer.optimizer is None and "adam" in optim and "8bit" not in optim
    moments = 2 if adam and trainer.args.max_steps != 1 else 0
    return trainable * (1 + moments)


def _workload(trainer: Any, batch: int) -> str:
    """The model and data a Trainer runs, so that the same cell over another model or data set
    does not start from this one's cached size."""
    model = trainer.model
    parameters = sum(p.numel() for p in model.parameters())
    try:
        rows = len(trainer.train_dataset)
    except TypeError:
        rows = None
    return f"{type(model).__name__}:{parameters}:{rows}:{batch}"


def _eval_target(sizing: Sizing, trainer: Any, method: str) -> Target:
    name = sizing.name_of(trainer, "trainer")
    args = trainer.args

    def apply(size: int) -> tuple[Setting, ...]:
        args.per_device_eval_batch_size = size
        return (Setting(f"{name}.args.per_device_eval_batch_size", size),)

    return Target(
        f"{name}.{method}()",
        args.per_device_eval_batch_size,
        apply,
        workload=_workload(trainer, args.per_device_eval_batch_size),
    )


def _fit_train(sizing: Sizing, trainer: Any, call: Callable[[], Any]) -> Any:
    if trainer.train_dataset is None:
        raise FitError("the Trainer has no train_dataset to train on: Trainer(train_dataset=...)")
    rollback = TrainerRollback(trainer)
    finder = trainer.args.auto_find_batch_size
    trainer.args.auto_find_batch_size = False  # its OOMs are ours to size from
    try:
        target = _train_target(sizing, trainer, rollback, sizing.options.keep_effective)
        return sizing.run(target, call, rollback.facts)
    finally:
        trainer.args.auto_find_batch_size = finder
        rollback.close()


def _guard_train(
    rollbacks: dict[int, TrainerRollback], trainer: Any, call: Callable[[], Any]
) -> Any:
    """Where a variable is sized: what the cell set on ``trainer.args`` takes effect, and what
    the attempt changes is noted, to be undone if the attempt runs out."""
    if id(trainer) not in rollbacks:
        rollbacks[id(trainer)] = TrainerRollback(trainer)
    trainer._train_batch_size = trainer.args.train_batch_size
    return call()


def _has_eval_data(trainer: Any, method: str, args: tuple, kwargs: dict[str, Any]) -> bool:
    if method == "predict":
        return True  # its dataset is a required argument
    given = args[0] if args else kwargs.get("eval_dataset")
    return given is not None or trainer.eval_dataset is not None


@contextlib.contextmanager
def trainer_calls(sizing: Sizing, cell: str) -> Iterator[None]:
    """For the block, Trainer calls are sized (or guarded) as the module docstring says. Only
    where transformers is in use: a Trainer cannot exist without it."""
    trainer_class = framework(
        cell, ("transformers",), ("transformers", "Trainer", "trl"), "transformers.Trainer"
    )
    if trainer_class is None:
        yield
        return
    rollbacks: dict[int, TrainerRollback] = {}  # guarded trainers of the attempt running now

    def undo_guarded() -> None:
        for rollback in rollbacks.values():
            rollback.undo()
            rollback.close()
        rollbacks.clear()  # the next attempt notes its trainers afresh

    sizing.undo_attempt.append(undo_guarded)

    def sized_train(original: Any) -> Any:
        def train(self: Any, *args: Any, **kwargs: Any) -> Any:
            def call() -> Any:
                return original(self, *args, **kwargs)

            if sizing.nested:
                return _guard_train(rollbacks, self, call)
            if sizing.size_calls:
                return _fit_train(sizing, self, call)
            return call()

        return train

    def sized_eval(method: str) -> Callable[[Any], Any]:
        def make(original: Any) -> Any:
            def evaluate(self: Any, *args: Any, **kwargs: Any) -> Any:
                if not (sizing.nested or sizing.size_calls):
                    return original(self, *args, **kwargs)
                if not _has_eval_data(self, method, args, kwargs):
                    raise FitError(f"the Trainer has no eval_dataset to {method} on")
                target = _eval_target(sizing, self, method)
                return sizing.run(target, lambda: original(self, *args, **kwargs))

            return evaluate

        return make

    try:
        with contextlib.ExitStack() as stack:
            stack.enter_context(patched(trainer_class, "train", sized_train))
            stack.enter_context(patched(trainer_class, "evaluate", sized_eval("evaluate")))
            stack.enter_context(patched(trainer_class, "predict", sized_eval("predict")))
            yield
    finally:
        for rollback in rollbacks.values():
            rollback.close()
