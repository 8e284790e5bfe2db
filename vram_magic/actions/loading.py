"""``%%fit --quantize``: load models smaller when they would not fit.

While a ``%%fit`` cell runs, ``transformers.PreTrainedModel.from_pretrained`` (which every
``AutoModel*.from_pretrained`` ends in) is replaced by a wrapper, and put back afterwards. The
wrapper estimates the model on the meta device and loads it in the first form that fits the
room: as asked, then bfloat16, then 8-bit, then 4-bit nf4, through ``BitsAndBytesConfig`` (never
the removed ``load_in_8bit=`` argument). A load that still runs out of memory steps down too.
A call that already chose a quantization is left alone.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from vram_magic.actions.estimate import EstimateError, estimate
from vram_magic.actions.limit import cpu_budget
from vram_magic.actions.oom import is_oom

FORMS = ("float32", "bfloat16", "int8", "nf4")
_CHOSEN_ALREADY = ("quantization_config", "load_in_8bit", "load_in_4bit")


@dataclass(frozen=True)
class Load:
    """One model load that had to change form, and why."""

    source: str
    asked: str
    loaded: str
    need: int | None  # bytes the asked form needed, by the estimate
    room: int | None


def _options(form: str) -> dict[str, Any]:
    import torch
    from transformers import BitsAndBytesConfig

    if form == "bfloat16":
        return {"dtype": torch.bfloat16}
    if form == "int8":
        return {
            "dtype": torch.bfloat16,
            "quantization_config": BitsAndBytesConfig(load_in_8bit=True),
        }
    if form == "nf4":
        config = BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
        )
        return {"dtype": torch.bfloat16, "quantization_config": config}
    return {}


def _asked(kwargs: dict[str, Any]) -> str:
    dtype = str(kwargs.get("dtype", kwargs.get("torch_dtype", "float32")))
    return "bfloat16" if "16" in dtype else "float32"


def _account(model: Any) -> None:
    """Under the CPU budget, count a loaded model (its weights arrive memory-mapped, unseen by the
    budget's dispatch mode); over the limit it is an out-of-memory error like any other."""
    budget = cpu_budget()
    if budget is None:
        return
    added = sum(budget.count(t) for t in (*model.parameters(), *model.buffers()))
    if budget.used > budget.limit:
        import torch

        raise torch.OutOfMemoryError(budget.refusal(added))


@contextlib.contextmanager
def fitting_loads(
    room: Callable[[], int | None], loads: list[Load], forced: str | None = None
) -> Iterator[None]:
    """Within the block, ``from_pretrained`` loads in the first form that fits ``room()``."""
    transformers: Any = sys.modules.get("transformers")
    if transformers is None:
        import transformers
    base = transformers.PreTrainedModel
    original = base.__dict__["from_pretrained"]

    def from_pretrained(cls: type, source: Any, *args: Any, **kwargs: Any) -> Any:
        if any(key in kwargs for key in _CHOSEN_ALREADY):
            return original.__func__(cls, source, *args, **kwargs)
        asked = _asked(kwargs)
        try:
            needs: dict[str, int] | None = estimate(str(source)).weights
        except EstimateError:
            needs = None
        free = room()
        forms = [forced] if forced else list(FORMS[FORMS.index(asked) :])
        for form in forms:
            need = needs[form] if needs else None
            if form != forms[-1] and need is not None and free is not None and need > free:
                continue  # the estimate says it will not fit: do not even try
            model = None
            try:
                model = original.__func__(cls, source, *args, **{**kwargs, **_options(form)})
                _account(model)
            except Exception as error:
                model = None  # let a model that did not fit go before the next form loads
                if form == forms[-1] or not is_oom(error):
                    raise
                continue
            if form != asked:
                loads.append(Load(str(source), asked, form, needs[asked] if needs else None, free))
            return model
        raise AssertionError("unreachable: the last form either loads or raises")

    base.from_pretrained = classmethod(from_pretrained)
    try:
        yield
    finally:
        base.from_pretrained = original
