"""What ``%vram free`` returned, and the report printed after an out-of-memory error."""

from __future__ import annotations

from html import escape

from vram_magic.actions.free import FreeResult
from vram_magic.actions.oom import OomReport
from vram_magic.render.report_layout import device_label
from vram_magic.render.table import html_list, text_table
from vram_magic.render.units import format_bytes
from vram_magic.render.view import View


def _as_html(
    css: str, title: str, rows_header: tuple[str, ...], rows: list, lines: list[str]
) -> str:
    table = "<pre>" + escape("\n".join(text_table(rows_header, rows))) + "</pre>" if rows else ""
    return f'<div class="{css}"><strong>{escape(title)}</strong>{table}{html_list(lines)}</div>'


def free_view(result: FreeResult) -> View:
    verb = "would return" if result.dry_run else "returned"
    title = f"%vram free {verb} {format_bytes(result.total)}"
    rows = [(r.holder, format_bytes(r.nbytes)) for r in result.released]
    if result.cache_returned:
        cached = " (includes the above)" if result.freed_into_cache else ""
        rows.append(
            (f"torch's CUDA cache, to the driver{cached}", format_bytes(result.cache_returned))
        )
    lines = [f"deleted: {', '.join(result.deleted)}"] if result.deleted else []
    lines.extend(result.kept)
    if result.still_held:
        held = ", ".join(f"{h.name} {format_bytes(h.nbytes)} ({h.kind})" for h in result.still_held)
        lines.append(f"still held: {held}")
    if not rows and not result.kept:
        lines.insert(0, "nothing stranded: every tensor has a holder you chose")
    text = "\n".join([title, *(text_table(("holder", "bytes"), rows) if rows else []), *lines])
    return View(result, text, _as_html("vram-magic-free", title, ("holder", "bytes"), rows, lines))


def _device_line(device) -> str:  # type: ignore[no-untyped-def]
    return (
        f"{device_label(device)} {device.name or ''}: free {format_bytes(device.free)} of "
        f"{format_bytes(device.total)}; this kernel {format_bytes(device.this_process)} "
        f"(torch {format_bytes(device.torch_allocated)}, cache {format_bytes(device.torch_cache)})"
    )


def oom_view(report: OomReport) -> View:
    title = f"vram_magic: out of memory ({report.error})"
    lines = [report.message]
    if report.requested is not None:
        lines.append(f"the failed allocation asked for {format_bytes(report.requested)}")
    lines.extend(_device_line(device) for device in report.devices)
    if report.top_holders:
        held = ", ".join(
            f"{h.name} {format_bytes(h.nbytes)} ({h.kind})" for h in report.top_holders
        )
        lines.append(f"largest holders: {held}")
    lines.append(f"stranded right now (%vram free returns it): {format_bytes(report.stranded)}")
    if report.frames_cleared:
        lines.append("the failed cell's frames were cleared, so the error itself holds no memory")
    rows = [
        (str(rank), fix.action, ("≈ " if fix.estimate else "") + format_bytes(fix.saves), fix.how)
        for rank, fix in enumerate(report.fixes, start=1)
    ]
    header = ("#", "fix, by memory saved", "saves", "how")
    text = "\n".join([title, *lines, *(text_table(header, rows, left=2) if rows else [])])
    return View(report, text, _as_html("vram-magic-oom", title, header, rows, lines))
