"""A report that shows itself: HTML in notebooks, text in terminals (IPython picks)."""

from __future__ import annotations

from dataclasses import dataclass

from vram_magic.readings.model import Report
from vram_magic.render.html import render_html
from vram_magic.render.text import render_text


@dataclass(frozen=True)
class ReportView:
    report: Report
    top: int = 3

    def _repr_html_(self) -> str:
        return render_html(self.report, self.top)

    def __repr__(self) -> str:
        return render_text(self.report, self.top)
