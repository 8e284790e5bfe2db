"""What ``%vram free`` returned, and the report printed after an out-of-memory error."""

from __future__ import annotations

from html import escape

from vram_magic.actions.fit_cell import DEFAULT_VARIABLE
from vram_magic.actions.free import FreeResult, Kept
from vram_magic.actions.oom import Fix, OomReport
from vram_magic.readings.model import DeviceReading
from vram_magic.render.fit import PREPARED_ONCE
from vram_magic.render.report_layout import device_label
from vram_magic.render.table import html_list, text_table
from vram_magic.render.units import format_bytes
from vram_magic.render.view import View


def _as_html(css: str, title: str, table: list[str], lines: list[str]) -> str:
    pre = "<pre>" + escape("\n".join(table)) + "</pre>" if table else ""
    return f'<div class="{css}"><strong>{escape(title)}</strong>{pre}{html_list(lines)}</div>'


def kept_words(kept: Kept) -> str:
    return (
        f"{kept.name}: {kept.holder} still holds the same memory; "
        f"release it with `del {kept.holder}` or `%vram free {kept.root}`"
    )


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
    lines.extend(kept_words(kept) for kept in result.kept)
    if result.still_held:
        held = ", ".join(f"{h.name} {format_bytes(h.nbytes)} ({h.kind})" for h in result.still_held)
        lines.append(f"still held: {held}")
    if not rows and not result.kept:
        lines.insert(0, "nothing stranded: every tensor has a holder you chose")
    table = text_table(("holder", "bytes"), rows) if rows else []
    return View(
        result, "\n".join([title, *table, *lines]), _as_html("vram-magic-free", title, table, lines)
    )


def _device_line(device: DeviceReading) -> str:
    return (
        f"{device_label(device)} {device.name or ''}: free {format_bytes(device.free)} of "
        f"{format_bytes(device.total)}; this kernel {format_bytes(device.this_process)} "
        f"(torch {format_bytes(device.torch_allocated)}, cache {format_bytes(device.torch_cache)})"
    )


_WHY = {
    "8-bit optimizer": "Adam's two moments in 8 bits (bitsandbytes): 2 bytes a parameter, not 8",
    "bf16 mixed precision": "activations in bf16 take half, less a bf16 copy of the weights",
    "LoRA adapters (peft)": (
        "model = peft.get_peft_model(model, peft.LoraConfig(task_type=...)) before the Trainer: "
        "only the adapters train, so no gradients or optimizer state for the rest"
    ),
}


def _value(value: object) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)


def _fit_hint(fix: Fix) -> str:
    names = [name for name, _ in fix.setting]
    option = f" --batch-size {names[0]}" if fix.assign and names[0] != DEFAULT_VARIABLE else ""
    return f"or run the cell under %%fit{option}: it finds the size by running it"


def _how(fix: Fix) -> str:
    """The words of a fix, from its facts."""
    parts = []
    if fix.setting:
        joint = " = " if fix.assign else "="
        parts.append(", ".join(f"{name}{joint}{_value(value)}" for name, value in fix.setting))
        if fix.effective:
            parts[-1] += f" (effective batch {fix.effective} kept)"
    if fix.prompts:
        parts.append(f"generate on {fix.prompts} prompts per call")
    if fix.percent:
        parts.append(f"a batch at most {fix.percent}% of this one")
    if fix.frees is not None:
        parts.append(" ".join(["%vram free", *fix.frees]))
    if fix.how:
        parts.append(fix.how)
    if fix.per_item:
        parts.append(f"≈ {format_bytes(fix.per_item)} per item")
    if fix.layers:
        parts.append(
            f"keeps ≈ 1 of {fix.layers} layers' activations, recomputing them in the backward pass"
        )
    if fix.action in _WHY:
        parts.append(_WHY[fix.action])
    if fix.prepared:
        parts.append(PREPARED_ONCE)
    if fix.fit:
        parts.append(_fit_hint(fix))
    return "; ".join(parts)


def _measure_lines(report: OomReport) -> list[str]:
    measured, lines = report.measured, []
    if measured.grown is not None:
        lines.append(
            f"this cell needed {format_bytes(measured.grown)} when it failed "
            "(measured, the failed request included)"
        )
    if measured.activations != measured.grown:
        basis = "that growth"
        if measured.progress is not None:
            reached, modules = measured.progress
            basis += (
                f" scaled to the whole forward pass (it stopped at module {reached} of {modules})"
            )
        basis += f" and 1/{measured.layers or 1} more for the backward pass (a layer's gradients)"
        lines.append(f"the step's activations ≈ {format_bytes(measured.activations)}: {basis}")
    if any(fix.traced for fix in report.fixes):
        lines.append(
            "the Trainer's fixes are traced: this model's step with each, run on fake tensors "
            "(nothing allocated), beside the step that failed"
        )
    if measured.kept:
        lines.append(f"what the failed cell bound still holds {format_bytes(measured.kept)}")
    if measured.room is not None:
        freed = " once that is freed" if measured.kept else ""
        lines.append(f"room for a rerun{freed}: {format_bytes(measured.room)}")
    kv = report.kv_cache
    if kv is not None:
        lines.append(
            f"generate's KV cache: 2 x {kv.layers} layers x {kv.batch} prompts x "
            f"({kv.prompt} + {kv.new_tokens} tokens) x {kv.kv_heads} KV heads x "
            f"{kv.head_dim} head dims x {kv.dtype_bytes} B = {format_bytes(kv.nbytes())}"
        )
    return lines


def oom_view(report: OomReport) -> View:
    title = f"vram_magic: out of memory ({report.error})"
    lines = [report.message]
    if report.requested is not None:
        lines.append(f"the failed allocation asked for {format_bytes(report.requested)}")
    lines.extend(_measure_lines(report))
    lines.extend(_device_line(device) for device in report.devices)
    if report.top_holders:
        held = ", ".join(
            f"{h.name} {format_bytes(h.nbytes)} ({h.kind})" for h in report.top_holders
        )
        lines.append(f"largest holders: {held}")
    lines.append(f"stranded right now (%vram free returns it): {format_bytes(report.stranded)}")
    if report.frames_cleared:
        lines.append("the failed cell's frames were cleared, so the error itself holds no memory")
    table = _fix_table(report.fixes)
    text = "\n".join([title, *lines, *table])
    return View(report, text, _as_html("vram-magic-oom", title, table, lines))


def _fix_table(fixes: tuple[Fix, ...]) -> list[str]:
    """Rank, fix and saves aligned; how (long words) after them, flush left."""
    if not fixes:
        return []
    rows = [
        (str(rank), fix.action, ("≈ " if fix.estimate else "") + format_bytes(fix.saves))
        for rank, fix in enumerate(fixes, start=1)
    ]
    table = text_table(("#", "fix, by memory saved", "saves"), rows, left=2)
    hows = ["how", "---", *(_how(fix) for fix in fixes)]
    return [f"{line}  {how}" for line, how in zip(table, hows, strict=True)]
