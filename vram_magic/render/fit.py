"""What ``%%fit`` did: the size it settled on, and every attempt on the way."""

from __future__ import annotations

from vram_magic.actions.fit import FitResult
from vram_magic.render.table import html_list, html_table, text_table
from vram_magic.render.units import format_bytes
from vram_magic.render.view import View

_FORM_NAMES = {"bfloat16": "bfloat16", "int8": "8-bit", "nf4": "4-bit nf4"}


def fit_view(result: FitResult) -> View:
    failed = [a for a in result.attempts if a.outcome != "fits"]
    accumulation = (
        f" with accumulation {result.accumulation} (effective batch kept)"
        if result.accumulation is not None
        else ""
    )
    title = (
        f"%%fit: {result.variable} = {result.size}{accumulation} after {len(result.attempts)} "
        f"attempt(s), {len(failed)} out of memory"
    )
    rows = [
        (
            str(a.size),
            f"{a.outcome} (probe)" if a.probe else a.outcome,
            format_bytes(a.need, unknown="not measured"),
            f"{a.seconds:.2f}s",
        )
        for a in result.attempts
    ]
    lines = [
        f"room when the cell started: {format_bytes(result.room, unknown='not measured')}; "
        f"headroom left: {format_bytes(result.headroom, unknown='not measured')}",
        f"time in failed attempts: {result.failed_seconds:.2f}s "
        "(the cell body runs once per attempt)",
    ]
    lines.extend(
        f"{load.source}: {load.asked} needs {format_bytes(load.need)}, "
        f"{format_bytes(load.room)} free: loaded in {_FORM_NAMES[load.loaded]}"
        for load in result.loads
    )
    if result.from_cache:
        lines.append("started from the size this cell fitted before (cached)")
    header = ("size", "outcome", "memory needed", "time")
    text = "\n".join([title, *text_table(header, rows, left=2), *lines])
    html = (
        f'<div class="vram-magic-fit"><strong>{title}</strong>'
        f"{html_table(header, rows)}{html_list(lines)}</div>"
    )
    return View(result, text, html)
