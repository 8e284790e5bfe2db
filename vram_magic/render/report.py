"""``%vram report`` as shown: the report with its text and HTML renderings."""

from __future__ import annotations

from vram_magic.readings.model import Report
from vram_magic.render.html import render_html
from vram_magic.render.text import render_text
from vram_magic.render.view import View


def render_report(report: Report, top: int = 3) -> View:
    return View(report, render_text(report, top), render_html(report, top))
