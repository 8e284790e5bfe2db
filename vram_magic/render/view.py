"""Something a magic returns: IPython shows its HTML in notebooks and its text in terminals."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, repr=False)
class View:
    """The action's result (``data``, a plain dataclass) with its two renderings."""

    data: Any
    text: str
    html: str

    def _repr_html_(self) -> str:
        return self.html

    def __repr__(self) -> str:
        return self.text
