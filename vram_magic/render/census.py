"""``%vram who``: the census as a table of holders, with the paths inside the largest ones."""

from __future__ import annotations

from html import escape

from vram_magic.census.model import KINDS, Census, Holder, Release
from vram_magic.render.table import html_list, html_table, text_table
from vram_magic.render.units import format_bytes
from vram_magic.render.view import View

COLUMNS = ("holder", "kind", "bytes", "tensors", "device", "shapes", "cell", "release with")
PATHS_SHOWN = 3


def release_words(release: Release | None) -> str:
    """``%vram free``, ``%vram free loss, or loss = loss.detach()``; or why nothing here can."""
    if release is None:
        return "held outside the notebook (module globals, threads?)"
    words = " ".join(("%vram free", *release.names))
    if release.detach and release.names:
        name = release.names[0]
        words += f", or {name} = {name}.detach()"
    return words


def _row(holder: Holder) -> tuple[str, ...]:
    return (
        holder.name,
        holder.kind,
        format_bytes(holder.nbytes),
        str(holder.tensor_count),
        ",".join(holder.devices) or "-",
        holder.summary or "-",
        str(holder.created_cell) if holder.created_cell is not None else "",
        release_words(holder.release),
    )


def _paths(holders: tuple[Holder, ...], every: bool) -> list[str]:
    lines = []
    for holder in holders:
        shown = holder.entries if every else holder.entries[:PATHS_SHOWN]
        for entry in shown:
            if entry.path not in {holder.name, "?"}:
                lines.append(
                    f"{entry.path}: {format_bytes(entry.nbytes)} {entry.dtype} {list(entry.shape)}"
                )
    return lines


def _title(census: Census, shown: int) -> str:
    where = f" on {census.device_filter}" if census.device_filter else ""
    more = f" (top {shown} of {len(census.holders)})" if shown < len(census.holders) else ""
    return (
        f"VRAM census{where}: {format_bytes(census.total_bytes)} in {census.tensor_count} tensors, "
        f"{len(census.holders)} holders{more} · {census.seconds * 1000:.0f} ms"
    )


def _footer(census: Census) -> list[str]:
    lines = []
    if census.stranded_bytes:
        lines.append(f"stranded: {format_bytes(census.stranded_bytes)} (%vram free returns it)")
    if not census.holders:
        lines.append(
            "no live tensors" + (" (torch is not imported)" if census.seconds == 0 else "")
        )
    lines.append("kinds: " + ", ".join(KINDS))
    return lines


def census_view(census: Census, top: int | None = 20, every: bool = False) -> View:
    holders = census.holders if every or top is None else census.holders[:top]
    rows = [_row(h) for h in holders]
    paths = _paths(holders, every)
    footer = _footer(census)
    text = [_title(census, len(holders))]
    if rows:
        text.extend(text_table(COLUMNS, rows, left=2))
    if paths:
        text.append("paths:")
        text.extend(f"  {line}" for line in paths)
    text.extend(footer)
    html = (
        f'<div class="vram-magic-census"><strong>{escape(_title(census, len(holders)))}</strong>'
        + (html_table(COLUMNS, rows) if rows else "")
        + html_list(paths)
        + html_list(footer)
        + "</div>"
    )
    return View(census, "\n".join(text), html)
