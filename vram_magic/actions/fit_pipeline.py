"""``%%fit`` and transformers pipelines: size the ``batch_size`` of a pipeline call.

While a cell is fitted, ``Pipeline.__call__`` (which every task's pipeline ends in) is wrapped:
a call over a list of inputs with a batch size above 1 (given in the call or when the pipeline
was made) runs at the largest batch size that fits. A batch changes how many inputs go through
the model at once, never what comes out for each. transformers batches only a list (a tuple, or
one chat, is one input), so only a list is sized; inputs that stream (a generator, a dataset) are
passed on as they are: their batches run after the call has returned.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from vram_magic.actions.fit_sizing import KeywordSize, Sizing, framework, patched


@contextlib.contextmanager
def pipeline_calls(sizing: Sizing, cell: str) -> Iterator[None]:
    """For the block, pipeline calls are sized as the module docstring says."""
    pipeline = framework(
        cell, ("transformers",), ("transformers", "pipeline"), "transformers.Pipeline"
    )
    if pipeline is None:
        yield
        return

    def make(original: Any) -> Any:
        def call(self: Any, inputs: Any, *args: Any, **kwargs: Any) -> Any:
            start = kwargs.get("batch_size") or getattr(self, "_batch_size", None) or 1
            if sizing.nested or start < 2 or not isinstance(inputs, list) or len(inputs) < 2:
                return original(self, inputs, *args, **kwargs)
            size = KeywordSize(f"{sizing.name_of(self, type(self).__name__)}(...)", start)
            return sizing.run(
                size.target,
                lambda: original(self, inputs, *args, **{**kwargs, "batch_size": size.value}),
            )

        return call

    with patched(pipeline, "__call__", make):
        yield
