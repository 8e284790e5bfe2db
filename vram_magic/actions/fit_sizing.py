"""One ``%%fit`` cell (or one ``vram_magic.fit`` call) as a session of fits.

A cell may size several calls (a ``Trainer``'s ``train()``, then its ``evaluate()``, a
pipeline), and a call may hold another (the evaluation ``train()`` runs every N steps). The
session holds what they share: the options, what every failed attempt releases, the results in
order, and which fits are running now, so a fit inside another one only shrinks its own size.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from vram_magic.actions.fit import BLIND, FitResult, Setting, Target, fit, torch_meter
from vram_magic.actions.free import clear_exception, release_stranded


@dataclass(frozen=True)
class FitOptions:
    """``%%fit``'s options; ``batch_size``/``accumulate`` name variables or attribute paths."""

    batch_size: str | None = None
    accumulate: str | None = None
    keep_effective: bool = True  # a Trainer's effective batch kept through accumulation
    max_oom: int = 8
    headroom: float = 0.05
    quantize: str | None = None  # auto, 8bit, 4bit, off; None: auto when the cell loads a model
    probe: bool = False
    predict: bool = True  # start a Trainer's search from a traced step's largest size


class FitError(ValueError):
    """Input ``%%fit`` cannot work with, said in one line."""


@dataclass
class Sizing:
    shell: Any | None
    namespace: dict[str, Any]
    options: FitOptions
    source: str  # the cell's code: with what a fit sizes, the key of the size cache
    size_calls: bool = True  # size framework calls; False: a variable is sized, calls are guarded
    results: list[FitResult] = field(default_factory=list)
    _running: list[list[FitResult]] = field(default_factory=list)
    before_attempt: list[Callable[[], None]] = field(default_factory=list)
    # what an attempt changed that frameworks keep (accelerate's lists, guarded trainers), put
    # back after an attempt that is not the last: one that ran out, or fitted at another size
    undo_attempt: list[Callable[[], None]] = field(default_factory=list)

    @property
    def nested(self) -> bool:
        """A fit is running: a call inside it is sized in place, by halving."""
        return bool(self._running)

    def name_of(self, value: Any, fallback: str) -> str:
        """The notebook's name for ``value``, for a report the user can act on."""
        return next(
            (k for k, v in self.namespace.items() if v is value and not k.startswith("_")),
            fallback,
        )

    def clean_up(self, error: BaseException) -> None:
        """After an out-of-memory error (and its undo): drop its frames and stranded memory."""
        clear_exception(error)
        release_stranded(self.shell, self.namespace)

    def run(
        self,
        target: Target,
        call: Callable[[], Any],
        facts: Callable[[], dict[str, Any]] = dict,
    ) -> Any:
        """Fit ``target`` by running ``call`` at each size; the value of the run that fitted.
        Nested in another fit it halves until a size fits, unmeasured (the outer fit's meter is
        measuring the whole call). ``facts`` adds what the target learnt to the result."""
        value: list[Any] = [None]
        nested = self.nested

        def attempt() -> None:
            if not nested:
                for prepare in self.before_attempt:
                    prepare()
            value[0] = call()

        def undo() -> None:
            target.undo()
            if not nested:  # inside another fit, that fit's attempt is still running
                for undo_framework in self.undo_attempt:
                    undo_framework()

        self._running.append([])
        try:
            result = fit(
                attempt,
                replace(
                    target, undo=undo, predict=target.predict if self.options.predict else None
                ),
                BLIND if nested else torch_meter(),
                f"{self.source}\0{target.sized}\0{target.workload}",
                self.clean_up,
                max_oom=self.options.max_oom,
                headroom=self.options.headroom,
                probe=self.options.probe and not nested,
                shrink_only=nested,
            )
        finally:
            inner = self._running.pop()
        result = replace(result, inner=tuple(inner), **facts())
        if nested:
            if len(result.attempts) > 1:  # an evaluation that needed no change is not news
                self._running[-1].append(result)
        else:
            self.results.append(result)
        return value[0]


class KeywordSize:
    """A size each attempt passes as ``batch_size=`` to its call (a pipeline, a function)."""

    def __init__(self, sized: str, start: int) -> None:
        self.value = start
        self.target = Target(sized, start, self._apply)

    def _apply(self, size: int) -> tuple[Setting, ...]:
        self.value = size
        return (Setting(f"batch_size of {self.target.sized}", size),)


def framework(code: str, modules: tuple[str, ...], words: tuple[str, ...], path: str) -> Any:
    """The class at ``path`` (``"transformers.Trainer"``) when its framework can take part in
    ``code`` (imported already, or named by the cell, which may import it) and imports; else
    None. Patching a framework otherwise would import it for nothing."""
    if not any(name in sys.modules for name in modules) and not any(w in code for w in words):
        return None
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except ImportError:
        return None


@contextlib.contextmanager
def patched(owner: type, name: str, make: Callable[[Callable[..., Any]], Any]) -> Iterator[None]:
    """``owner.name`` replaced by ``make(original)`` for the block, then put back."""
    original = owner.__dict__[name]
    setattr(owner, name, make(original))
    try:
        yield
    finally:
        setattr(owner, name, original)
