"""Stacked usage bars: one per GPU (this kernel's parts, other processes, free) and one for RAM.

One order and one palette everywhere (the report, the live panel, its timeline, and the
sidebar's style sheet): this kernel's parts first, from the left, then other processes; free
space is what stays empty on the right.
"""

from __future__ import annotations

from html import escape

from vram_magic.readings.model import DeviceReading, HostReading
from vram_magic.render.units import format_bytes

Segment = tuple[str, str, int]  # (label, colour, bytes)

DEVICE_SEGMENTS = (
    ("torch allocated", "#e8590c"),
    ("torch cache", "#fab005"),
    ("context+other", "#9c36b5"),
    ("other processes", "#1c7ed6"),
)
HOST_SEGMENTS = (("this process", "#e8590c"), ("other programs", "#1c7ed6"))


def device_segments(device: DeviceReading) -> list[Segment]:
    """Where torch's figures are unknown (CUDA not initialised in this kernel) the rest of this
    process's NVML figure still shows, as context+other."""
    allocated, cache = device.torch_allocated or 0, device.torch_cache or 0
    rest = device.process_other
    if rest is None and device.this_process is not None:
        rest = max(device.this_process - allocated - cache, 0)
    sizes = (allocated, cache, rest or 0, device.other_processes_total or 0)
    return [
        (label, colour, size) for (label, colour), size in zip(DEVICE_SEGMENTS, sizes, strict=True)
    ]


def host_segments(host: HostReading) -> list[Segment]:
    used = (host.total or 0) - (host.available or 0)
    rss = host.process_rss or 0
    sizes = (rss, max(used - rss, 0))
    return [
        (label, colour, size) for (label, colour), size in zip(HOST_SEGMENTS, sizes, strict=True)
    ]


def bar(total: int | None, segments: list[Segment], width: str = "14rem") -> str:
    """A bar ``width`` wide whose coloured parts are the segments' shares of ``total``. Sizes are
    in rem: the bar sets ``font-size:0`` (no gaps between parts), which would zero any em size."""
    if not total:
        return ""
    spans = "".join(
        f'<span class="vram-magic-usage-part" title="{escape(label)}: {format_bytes(size)}" '
        f'style="display:inline-block;height:100%;width:{100 * size / total:.2f}%;'
        f'background:{colour}"></span>'
        for label, colour, size in segments
        if size > 0
    )
    return (
        f'<div class="vram-magic-usage-bar" style="width:{width};height:0.9rem;'
        "border:1px solid #adb5bd;border-radius:3px;overflow:hidden;white-space:nowrap;"
        f'font-size:0;display:inline-block;vertical-align:middle;text-align:left">{spans}</div>'
    )


def legend(segments: tuple[tuple[str, str], ...]) -> str:
    items = "".join(
        f'<span style="margin-right:1em"><span style="display:inline-block;width:0.8em;'
        f'height:0.8em;background:{colour}"></span> {escape(label)}</span>'
        for label, colour in segments
    )
    return f'<div style="font-size:85%;margin:0.2em 0">{items}</div>'
