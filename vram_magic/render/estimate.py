"""``%vram estimate``: weights by dtype, training and inference totals, and what fits where."""

from __future__ import annotations

from vram_magic.actions.estimate import CARDS_GB, Estimate
from vram_magic.readings.model import Report
from vram_magic.render.table import html_list, html_table, text_table
from vram_magic.render.units import format_bytes
from vram_magic.render.view import View


def _needs(estimate: Estimate) -> list[tuple[str, int | None]]:
    kv = estimate.kv_cache or 0
    return [
        ("inference, bfloat16", estimate.weights["bfloat16"] + kv),
        ("inference, int8", estimate.weights["int8"] + kv),
        ("inference, nf4", estimate.weights["nf4"] + kv),
        (f"training ({estimate.train})", estimate.training),
    ]


def estimate_view(estimate: Estimate, report: Report | None = None) -> View:
    title = (
        f"Memory estimate for {estimate.model}: {estimate.params:,} parameters "
        f"({estimate.quantizable:,} in layers that 8/4-bit loading converts)"
    )
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
    notes = [
        f"KV cache for {estimate.batch} x {estimate.seq} tokens: {format_bytes(estimate.kv_cache)}"
        if estimate.kv_cache is not None
        else "KV cache: unknown for this model (no transformers config)",
        "training counts weights, gradients and optimizer state with fp32 master weights; "
        "activations come on top (measure them with %vram history)",
        "int8 and nf4 include bitsandbytes' constants; the rest of the model stays 16-bit",
    ]
    text = "\n".join(
        [
            title,
            *text_table(("weights", "bytes"), weight_rows),
            *text_table(header, fit_rows),
            *notes,
        ]
    )
    html = (
        f'<div class="vram-magic-estimate"><strong>{title}</strong>'
        + html_table(("weights", "bytes"), weight_rows)
        + html_table(header, fit_rows)
        + html_list(notes)
        + "</div>"
    )
    return View(estimate, text, html)
