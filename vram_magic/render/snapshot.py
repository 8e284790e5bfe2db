"""What ``%vram snapshot``, ``%vram restore`` and ``%vram snapshots`` print."""

from __future__ import annotations

from html import escape

from vram_magic.persistence.restore import RestoreResult
from vram_magic.persistence.save import Saved, SnapshotInfo, SnapshotResult, Unsaved
from vram_magic.persistence.store import SnapshotError
from vram_magic.render.table import html_list, html_table, text_table
from vram_magic.render.units import count_of, format_bytes
from vram_magic.render.view import View

_SAVED_HEADER = ("name", "type", "where / how", "size")
# A SnapshotError's hint, in the magic's words.
_HINTS = {"list": "`%vram snapshots` lists them", "take": "`%vram snapshot` makes one"}


def snapshot_error_text(error: SnapshotError) -> str:
    """The error's one line, with its hint in the magic's words."""
    hint = _HINTS.get(error.hint or "")
    return f"{error}; {hint}" if hint else str(error)


def _rows(saved: tuple[Saved, ...]) -> list[tuple[str, ...]]:
    return [
        (
            s.name,
            s.type,
            ", ".join(s.devices) if s.devices else s.how,
            format_bytes(s.nbytes) if s.nbytes else "",
        )
        for s in saved
    ]


def _reasons(label: str, names: tuple[Unsaved, ...]) -> list[str]:
    return [f"{label}: {u.name} — {u.reason}" for u in names]


def _view(result: object, css: str, title: str, rows: list, lines: list[str]) -> View:
    header = _SAVED_HEADER
    table = text_table(header, rows, left=3) if rows else []
    text = "\n".join([title, *table, *lines])
    html = (
        f'<div class="{css}"><strong>{escape(title)}</strong>'
        f"{html_table(header, rows) if rows else ''}{html_list(lines)}</div>"
    )
    return View(result, text, html)


def snapshot_view(result: SnapshotResult) -> View:
    total = format_bytes(result.nbytes)
    title = (
        f"%vram snapshot {result.id}: {count_of(len(result.saved), 'variable')} saved, {total} "
        f"in {result.seconds:.2f}s"
    )
    lines = _reasons("not saved", result.unsaved)
    lines.append(
        f"in {result.folder}; `%vram restore {result.id}` loads it, here or after a restart"
    )
    return _view(result, "vram-magic-save", title, _rows(result.saved), lines)


def _vram_line(result: RestoreResult) -> str:
    if not result.vram:
        return "VRAM now: torch holds no CUDA memory in this kernel"
    return "VRAM now (torch allocated): " + ", ".join(
        f"{device} {format_bytes(nbytes)}" for device, nbytes in result.vram
    )


def restore_view(result: RestoreResult) -> View:
    skipped = f", {len(result.skipped)} skipped" if result.skipped else ""
    title = (
        f"%vram restore {result.id}: {count_of(len(result.restored), 'variable')} restored"
        f"{skipped} in {result.seconds:.2f}s"
    )
    lines = [
        *_reasons("skipped", result.skipped),
        *result.notes,
        *_reasons("not in the snapshot", result.unsaved),
        _vram_line(result),
        (
            f"snapshot {result.id} kept (`%vram snapshots --delete {result.id}` removes it)"
            if result.kept
            else f"snapshot {result.id} removed (restored)"
        ),
    ]
    return _view(result, "vram-magic-restored", title, _rows(result.restored), lines)


def _note(info: SnapshotInfo) -> str:
    if info.problem:
        return info.problem
    return f"pending restore in kernel {info.pending_for}" if info.pending_for else ""


def snapshots_view(found: tuple[SnapshotInfo, ...], folder: str) -> View:
    if not found:
        text = f"no snapshots in {folder}; {_HINTS['take']}"
        return View(found, text, f"<p>{escape(text)}</p>")
    title = f"{len(found)} snapshot(s) in {folder}, oldest first"
    header = ("id", "created", "variables", "not saved", "size", "note")
    rows = [
        (
            info.id,
            info.created,
            str(info.names),
            str(info.unsaved),
            format_bytes(info.nbytes),
            _note(info),
        )
        for info in found
    ]
    text = "\n".join([title, *text_table(header, rows, left=2)])
    html = f'<div class="vram-magic-saves"><strong>{escape(title)}</strong>'
    return View(found, text, html + html_table(header, rows) + "</div>")
