"""What ``%%fit`` did: for each sized call, what it set and where, and every attempt on the way."""

from __future__ import annotations

from html import escape

from vram_magic.actions.fit import FitResult
from vram_magic.actions.fit_cell import CellFit
from vram_magic.render.table import html_list, html_table, text_table
from vram_magic.render.units import format_bytes
from vram_magic.render.view import View

_FORM_NAMES = {"bfloat16": "bfloat16", "int8": "8-bit", "nf4": "4-bit nf4"}
NOTHING_SIZED = (
    "%%fit: nothing to size in this cell: it called no Trainer train/evaluate/predict and no "
    "pipeline with batch_size, and uses no batch_size variable (--batch-size VAR names one)"
)
HEADER = ("size", "outcome", "memory needed", "time")
PREPARED_ONCE = (
    "accelerate prepared this model in float32 already and prepares a model once, so bf16 "
    "takes effect on it only after model._is_accelerate_prepared = False (or on a model loaded "
    "afresh)"
)


def _set(result: FitResult) -> str:
    """``trainer.args.per_device_train_batch_size = 8, gradient_accumulation_steps = 4``: a
    setting on the same owner as the first is named without it."""
    if not result.settings:
        return f"{result.sized} at {result.size}"
    owner = result.settings[0].where.rpartition(".")[0]
    parts = []
    for index, setting in enumerate(result.settings):
        where = setting.where
        if index and owner and where.startswith(f"{owner}."):
            where = where[len(owner) + 1 :]
        parts.append(f"{where} = {setting.value}")
    return ", ".join(parts)


def _title(result: FitResult) -> str:
    failed = sum(a.outcome != "fits" for a in result.attempts)
    kept = f" (effective batch {result.effective} kept)" if result.effective is not None else ""
    return (
        f"%%fit: {_set(result)}{kept} after {len(result.attempts)} attempt(s), "
        f"{failed} out of memory"
    )


def _lines(result: FitResult) -> list[str]:
    lines = [
        f"room when it started: {format_bytes(result.room, unknown='not measured')}; "
        f"headroom left: {format_bytes(result.headroom, unknown='not measured')}",
        f"time in failed attempts: {result.failed_seconds:.2f}s (the call runs once per attempt)",
    ]
    if result.weights_restored:
        lines.append(
            f"weights put back after {result.weights_restored} attempt(s) at other sizes that "
            "took optimizer steps: the training shown is the one at the chosen size"
        )
    if result.weights_unguarded is not None:
        lines.append(
            f"the weights ({format_bytes(result.weights_unguarded)}) could not be kept aside "
            "in host RAM: optimizer steps of attempts at other sizes stay in them"
        )
    if result.from_cache:
        lines.append("started from the size this call fitted before (cached)")
    if result.predicted is not None:
        lines.append(_prediction(result))
    lines.extend(f"inside it: {_title(inner).removeprefix('%%fit: ')}" for inner in result.inner)
    return lines


def _prediction(result: FitResult) -> str:
    predicted = result.predicted
    assert predicted is not None
    how = f"{predicted.traces} traced step(s) on fake tensors, {predicted.seconds:.2f}s"
    if predicted.size is None:
        line = f"predicted: not even the smallest size fits the room ({how})"
    else:
        need = format_bytes(predicted.need)
        line = f"predicted before running: {predicted.size} fits, needing {need} ({how})"
    if predicted.precision_dropped:
        line += f"; traced without mixed precision, as it will train: {PREPARED_ONCE}"
    return line


def _rows(result: FitResult) -> list[tuple[str, ...]]:
    return [
        (
            str(a.size),
            f"{a.outcome} (probe)" if a.probe else a.outcome,
            format_bytes(a.need, unknown="not measured"),
            f"{a.seconds:.2f}s",
        )
        for a in result.attempts
    ]


def _load_lines(cell: CellFit) -> list[str]:
    return [
        f"{load.source}: {load.asked} needs {format_bytes(load.need)}, "
        f"{format_bytes(load.room)} free: loaded in {_FORM_NAMES[load.loaded]}"
        for load in cell.loads
    ]


def fit_view(cell: CellFit) -> View:
    texts, htmls = [], []
    for result in cell.fits:
        title, rows, lines = _title(result), _rows(result), _lines(result)
        texts.append("\n".join([title, *text_table(HEADER, rows, left=2), *lines]))
        htmls.append(
            f"<strong>{escape(title)}</strong>{html_table(HEADER, rows)}{html_list(lines)}"
        )
    loads = _load_lines(cell)
    if not cell.fits and not loads:
        texts.append(NOTHING_SIZED)
        htmls.append(f"<p>{escape(NOTHING_SIZED)}</p>")
    if loads:
        texts.append("\n".join(loads))
        htmls.append(html_list(loads))
    html = f'<div class="vram-magic-fit">{"".join(htmls)}</div>'
    return View(cell, "\n".join(texts), html)
