"""``%%fit`` over a cell, and ``vram_magic.fit`` over one call: what to size, and how.

Two ways, chosen by what the cell says:

- **A variable** (``--batch-size VAR``, or a ``batch_size`` variable the cell uses; an attribute
  path such as ``cfg.batch_size`` works too): the whole cell runs once per attempt, and the names
  a failed attempt bound are put back as they were. Framework calls inside are only guarded.
- **The frameworks** (otherwise): the cell runs once, and each ``Trainer.train()`` /
  ``evaluate()`` / ``predict()`` and pipeline call in it is sized where it happens
  (fit_trainer, fit_pipeline).

Either way, what ``accelerate`` prepared in a failed attempt is handed back (fit_accelerate), and
``from_pretrained`` loads smaller when a model would not fit (loading, ``--quantize``).
"""

from __future__ import annotations

import ast
import contextlib
import inspect
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from vram_magic.actions.fit import FitResult, Setting, Target, divisors, torch_meter
from vram_magic.actions.fit_accelerate import accelerate_references
from vram_magic.actions.fit_pipeline import pipeline_calls
from vram_magic.actions.fit_sizing import FitError, FitOptions, KeywordSize, Sizing
from vram_magic.actions.fit_trainer import trainer_calls
from vram_magic.actions.free import release_stranded
from vram_magic.actions.loading import Load, fitting_loads
from vram_magic.actions.oom import is_oom

DEFAULT_VARIABLE = "batch_size"
_FORCED = {"8bit": "int8", "4bit": "nf4", "auto": None}


@dataclass(frozen=True)
class CellFit:
    """What ``%%fit`` did in one cell: each sized call (or the variable), and models loaded in a
    smaller form than asked."""

    fits: tuple[FitResult, ...]
    loads: tuple[Load, ...] = ()


class _Path:
    """A variable or an attribute path in the namespace (``cfg.batch_size``), read and set."""

    def __init__(self, namespace: dict[str, Any], text: str) -> None:
        self.text = text
        root, *attributes = text.split(".")
        if root not in namespace:
            raise FitError(f"no variable named {root} in this notebook")
        self.namespace = namespace
        self.owner: Any = namespace
        self.name = root
        place = root
        for attribute in attributes:
            self.owner = self.get()
            if not hasattr(self.owner, attribute):
                raise FitError(f"{text} does not exist: {place} has no attribute {attribute!r}")
            self.name = attribute
            place = f"{place}.{attribute}"

    def get(self) -> Any:
        if self.owner is self.namespace:
            return self.namespace[self.name]
        return getattr(self.owner, self.name)

    def set(self, value: int) -> None:
        if self.owner is self.namespace:
            self.namespace[self.name] = value
        else:
            setattr(self.owner, self.name, value)

    def count(self) -> int:
        value = self.get()
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise FitError(f"{self.text} must be a positive int variable of the notebook")
        return value


def _variable_target(namespace: dict[str, Any], options: FitOptions) -> Target:
    size = _Path(namespace, options.batch_size or DEFAULT_VARIABLE)
    steps = _Path(namespace, options.accumulate) if options.accumulate else None
    start = size.count()
    effective = start * steps.count() if steps is not None else None

    def apply(value: int) -> tuple[Setting, ...]:
        size.set(value)
        if steps is None or effective is None:
            return (Setting(size.text, value),)
        steps.set(effective // value)
        return (Setting(size.text, value), Setting(steps.text, effective // value))

    allowed = divisors(effective) if effective else None
    return Target(size.text, start, apply, allowed, effective=effective)


def cell_runner(code: Any, namespace: dict[str, Any]) -> Callable[[], None]:
    """Runs compiled cell code in the notebook's namespace. After an out-of-memory error the
    names the attempt bound are put back as they were, so a failed attempt leaves no tensor."""

    def attempt() -> None:
        before = dict(namespace)
        try:
            exec(code, namespace)
        except BaseException as error:
            if is_oom(error):
                for name in [n for n in namespace if n not in before]:
                    del namespace[name]
                namespace.update(before)
            raise

    return attempt


def _names_used(code: str) -> set[str]:
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return set()
    return {node.id for node in ast.walk(tree) if isinstance(node, ast.Name)}


def sizes_a_variable(code: str, namespace: dict[str, Any], options: FitOptions) -> bool:
    """A variable is sized when one is named, or when the cell uses ``batch_size``."""
    if options.batch_size is not None or options.accumulate is not None:
        return True
    return DEFAULT_VARIABLE in namespace and DEFAULT_VARIABLE in _names_used(code)


@contextlib.contextmanager
def _frameworks(sizing: Sizing, code: str) -> Iterator[None]:
    with (
        trainer_calls(sizing, code),
        pipeline_calls(sizing, code),
        accelerate_references(sizing, code),
    ):
        yield


def _loading(code: str, options: FitOptions, loads: list[Load]) -> Any:
    quantize = options.quantize or ("auto" if "from_pretrained" in code else "off")
    if quantize == "off":
        return contextlib.nullcontext()
    return fitting_loads(torch_meter().room, loads, _FORCED.get(quantize))


def fit_cell(
    shell: Any | None, namespace: dict[str, Any], code: str, options: FitOptions
) -> CellFit:
    """Run ``code`` (plain Python: IPython syntax already transformed) so that it fits."""
    by_variable = sizes_a_variable(code, namespace, options)
    target = _variable_target(namespace, options) if by_variable else None
    sizing = Sizing(shell, namespace, options, code, size_calls=not by_variable)
    compiled = compile(code, "<%%fit cell>", "exec")
    release_stranded(shell, namespace)  # start from nothing stranded
    loads: list[Load] = []
    with _loading(code, options, loads), _frameworks(sizing, code):
        if target is not None:
            sizing.run(target, cell_runner(compiled, namespace))
        else:
            exec(compiled, namespace)
    return CellFit(tuple(sizing.results), tuple(loads))


def _trainer_method(call: Any) -> str | None:
    """``train`` for ``trainer.train``, when ``call`` is a Trainer's own method."""
    owner = getattr(call, "__self__", None)
    name = getattr(call, "__name__", "")
    if owner is None or name not in ("train", "evaluate", "predict"):
        return None
    bases = [cls.__module__ + "." + cls.__name__ for cls in inspect.getmro(type(owner))]
    return name if "transformers.trainer.Trainer" in bases else None


def fit_call(
    shell: Any | None,
    namespace: dict[str, Any],
    call: Callable[..., Any],
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    options: FitOptions,
) -> tuple[Any, FitResult]:
    """``call(*args, **kwargs)`` run so that it fits: a Trainer's ``train``/``evaluate``/
    ``predict``, a pipeline, or any callable that takes ``batch_size=``."""
    method = _trainer_method(call)
    framework = method is not None or _is_pipeline(call)
    if not framework and "batch_size" not in kwargs:
        raise FitError(
            "nothing to size: give a Trainer's train/evaluate/predict, a pipeline, "
            "or a call with batch_size="
        )
    source = getattr(call, "__qualname__", type(call).__qualname__)
    sizing = Sizing(shell, namespace, options, source, size_calls=framework)
    release_stranded(shell, namespace)
    with _frameworks(sizing, source):
        if not framework:
            value = _fit_keyword(sizing, call, args, kwargs, source)
        else:  # a Trainer's method bound before the wrappers were in place: bind it again
            bound = getattr(call.__self__, method) if method else call  # type: ignore[attr-defined]
            value = bound(*args, **kwargs)
    if not sizing.results:
        raise FitError("nothing was sized: the pipeline call had no batch_size above 1")
    return value, sizing.results[0]


def _fit_keyword(
    sizing: Sizing, call: Callable[..., Any], args: tuple, kwargs: dict[str, Any], source: str
) -> Any:
    start = kwargs["batch_size"]
    if not isinstance(start, int) or isinstance(start, bool) or start < 1:
        raise FitError("batch_size must be a positive int")
    size = KeywordSize(f"{source}(...)", start)
    return sizing.run(size.target, lambda: call(*args, **{**kwargs, "batch_size": size.value}))


def _is_pipeline(call: Any) -> bool:
    bases = [cls.__module__ for cls in inspect.getmro(type(call))]
    return any(module.startswith("transformers.pipelines") for module in bases)
