"""What ``accelerate`` keeps from a ``%%fit`` attempt, handed back before the next one.

An ``Accelerator`` keeps every model, optimizer, scheduler and dataloader it prepared in lists of
its own, so an attempt that prepared a model and ran out of memory leaves that model (and, through
the optimizer, its state) alive after the notebook dropped it. While a cell is fitted, the
``prepare*`` methods note each accelerator's list lengths the first time it prepares something in
an attempt; after an attempt that is not the last (it ran out, or fitted at another size) the
lists are cut back to those lengths, and
``GradientState``'s dataloader references (weak, shared by every accelerator) to what they were.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from vram_magic.actions.fit_sizing import Sizing, framework, patched

_LISTS = ("_models", "_optimizers", "_schedulers", "_dataloaders")
_PREPARES = (
    "prepare",
    "prepare_model",
    "prepare_optimizer",
    "prepare_scheduler",
    "prepare_data_loader",
)


class PreparedReferences:
    """Each accelerator's list lengths as an attempt found them."""

    def __init__(self) -> None:
        self._lengths: dict[int, tuple[Any, tuple[int, ...]]] = {}
        self._gradient_refs: list[Any] | None = None

    def begin(self) -> None:
        self._lengths.clear()
        self._gradient_refs = None

    def touch(self, accelerator: Any) -> None:
        if id(accelerator) not in self._lengths:
            lengths = tuple(len(getattr(accelerator, name, ())) for name in _LISTS)
            self._lengths[id(accelerator)] = (accelerator, lengths)
        if self._gradient_refs is None:
            state = getattr(accelerator, "gradient_state", None)
            refs = getattr(state, "_dataloader_references_ref", None)
            self._gradient_refs = list(refs) if refs is not None else None

    def undo(self) -> None:
        """Cut every touched accelerator's lists back; forget the accelerators."""
        for accelerator, lengths in self._lengths.values():
            for name, length in zip(_LISTS, lengths, strict=True):
                kept = getattr(accelerator, name, None)
                if isinstance(kept, list):
                    del kept[length:]
            state = getattr(accelerator, "gradient_state", None)
            if state is not None and self._gradient_refs is not None:
                state._dataloader_references_ref = list(self._gradient_refs)
        self.begin()


def _noting(references: PreparedReferences) -> Callable[[Any], Any]:
    def make(original: Any) -> Any:
        def prepare(self: Any, *args: Any, **kwargs: Any) -> Any:
            references.touch(self)
            return original(self, *args, **kwargs)

        return prepare

    return make


@contextlib.contextmanager
def accelerate_references(sizing: Sizing, cell: str) -> Iterator[None]:
    """For the block, failed attempts hand back what accelerate prepared in them. Only where
    the cell or the notebook uses accelerate (Trainer does): never imported for nothing."""
    accelerator = framework(
        cell,
        ("accelerate", "transformers"),
        ("accelerate", "transformers"),
        "accelerate.Accelerator",
    )
    if accelerator is None:
        yield
        return
    references = PreparedReferences()
    sizing.before_attempt.append(references.begin)
    sizing.undo_attempt.append(references.undo)
    with contextlib.ExitStack() as stack:
        for name in _PREPARES:
            stack.enter_context(patched(accelerator, name, _noting(references)))
        yield
