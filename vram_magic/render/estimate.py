"""``%vram estimate``: the anatomy of a step's peak, weights by dtype, and what fits where."""

from __future__ import annotations

from vram_magic.actions.estimate import CARDS_GB, Estimate
from vram_magic.actions.step_setup import ALL_LINEAR
from vram_magic.readings.model import Report
from vram_magic.render.gauge import Segment, bar, legend
from vram_magic.render.table import html_list, html_table, text_table
from vram_magic.render.units import format_bytes, format_percent
from vram_magic.render.view import View

PART_COLOURS = (
    ("weights", "#1c7ed6"),
    ("gradients", "#fab005"),
    ("optimizer", "#9c36b5"),
    ("activations", "#e8590c"),
    ("other", "#868e96"),
)
_TEXT_BAR = 40  # characters
_LETTERS = {"weights": "W", "gradients": "G", "optimizer": "O", "activations": "A", "other": "."}


def _step(estimate: Estimate) -> str:
    what = (
        "one forward pass (no_grad)" if estimate.train == "none" else f"one {estimate.train} step"
    )
    checkpointed = ", gradient checkpointing" if estimate.checkpointing else ""
    weights = (
        f"nf4 base, {estimate.dtype} compute"
        if estimate.train == "qlora"
        else f"{estimate.dtype} weights"
    )
    adapters = ""
    if estimate.lora_targets == (ALL_LINEAR,):
        adapters = ", LoRA adapters on every linear layer (peft names no defaults for this model)"
    elif estimate.lora_targets:
        adapters = f", LoRA adapters on {', '.join(estimate.lora_targets)} (peft's defaults)"
    step = f"{what} at {estimate.batch} x {estimate.seq} tokens, {weights}{adapters}"
    return step + checkpointed


def _needs(estimate: Estimate) -> list[tuple[str, int | None]]:
    kv = estimate.kv_cache or 0
    return [
        ("inference, bfloat16", estimate.weights["bfloat16"] + kv),
        ("inference, int8", estimate.weights["int8"] + kv),
        ("inference, nf4", estimate.weights["nf4"] + kv),
        (f"peak of {_step(estimate)}", estimate.peak),
    ]


def _segments(estimate: Estimate) -> list[Segment]:
    return [(part, colour, estimate.peak_parts.get(part, 0)) for part, colour in PART_COLOURS]


def _text_bar(estimate: Estimate) -> str:
    """The peak as a row of letters, one part after another (W weights, G gradients, ...)."""
    if not estimate.peak:
        return ""
    cells = "".join(
        _LETTERS[part] * round(_TEXT_BAR * size / estimate.peak)
        for part, _, size in _segments(estimate)
    )
    key = " ".join(f"{letter} {part}" for part, letter in _LETTERS.items())
    return f"[{cells[:_TEXT_BAR].ljust(_TEXT_BAR)}]  {key}"


def _notes(estimate: Estimate) -> list[str]:
    if estimate.traced:
        how = (
            f"traced: {_step(estimate)}, on fake tensors in {estimate.seconds:.1f} s "
            "(the real model and optimizer, nothing allocated; a loop's second step, with the "
            "optimizer state there already); torch's scaled-dot-product attention as on this "
            "machine; on CUDA the allocator rounds blocks up and cuBLAS keeps a workspace, so "
            "leave a few percent"
        )
    else:
        how = f"formula: {estimate.note}"
    per_item = (
        [f"each further sequence adds {format_bytes(estimate.per_item)} to the peak"]
        if estimate.per_item
        else []
    )
    kv = (
        f"KV cache for {estimate.batch} x {estimate.seq} tokens: {format_bytes(estimate.kv_cache)}"
        if estimate.kv_cache is not None
        else "KV cache: unknown for this model (no transformers config)"
    )
    quantized = "int8 and nf4 include bitsandbytes' constants; the rest of the model stays 16-bit"
    return [how, *per_item, kv, quantized]


def estimate_view(estimate: Estimate, report: Report | None = None) -> View:
    title = (
        f"Memory estimate for {estimate.model}: {estimate.params:,} parameters "
        f"({estimate.quantizable:,} in layers that 8/4-bit loading converts)"
    )
    anatomy_header = ("peak", "bytes", "share")
    anatomy_rows = [
        (part, format_bytes(size), format_percent(size, estimate.peak))
        for part, _, size in _segments(estimate)
    ] + [("total", format_bytes(estimate.peak), "")]
    weight_rows = [(dtype, format_bytes(size)) for dtype, size in estimate.weights.items()]
    free = [(f"cuda:{d.cuda_index} free", d.free) for d in (report.devices if report else ())]
    places = [*((f"{gb} GB", gb * 10**9) for gb in CARDS_GB), *free]
    header = ("needs", "bytes", *(name for name, _ in places))
    fit_rows = [
        (
            what,
            format_bytes(need),
            *(
                "-" if need is None or room is None else ("fits" if need <= room else "no")
                for _, room in places
            ),
        )
        for what, need in _needs(estimate)
    ]
    largest = [(name, str(batch)) for name, batch in estimate.largest_batch.items()]
    largest_header = ("largest batch", f"x {estimate.seq} tokens")
    tables_text = [
        *text_table(anatomy_header, anatomy_rows),
        _text_bar(estimate),
        *text_table(("weights", "bytes"), weight_rows),
        *text_table(header, fit_rows),
        *(text_table(largest_header, largest) if largest else []),
    ]
    text = "\n".join([title, f"Peak of {_step(estimate)}:", *tables_text, *_notes(estimate)])
    peak_bar = bar(estimate.peak, _segments(estimate), width="24rem")
    html = (
        f'<div class="vram-magic-estimate"><strong>{title}</strong>'
        f"<p>Peak of {_step(estimate)}: {format_bytes(estimate.peak)}</p>"
        f"<div>{peak_bar}</div>{legend(PART_COLOURS)}"
        + html_table(anatomy_header, anatomy_rows)
        + html_table(("weights", "bytes"), weight_rows)
        + html_table(header, fit_rows)
        + (html_table(largest_header, largest) if largest else "")
        + html_list(_notes(estimate))
        + "</div>"
    )
    return View(estimate, text, html)
