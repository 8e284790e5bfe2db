"""Bytes to labelled binary units, only at the edge: everything inside stays integer bytes."""

from __future__ import annotations

_UNITS = ("KiB", "MiB", "GiB", "TiB", "PiB")


def format_bytes(count: int | None, unknown: str = "n/a") -> str:
    """``1536 -> '1.5 KiB'``, ``3 * 2**30 -> '3.00 GiB'``; None (not known) -> ``unknown``."""
    if count is None:
        return unknown
    sign = "-" if count < 0 else ""
    value = float(abs(count))
    if value < 1024:
        return f"{sign}{int(value)} B"
    for unit in _UNITS:
        value /= 1024
        if value < 1024 or unit == _UNITS[-1]:
            digits = 2 if unit in {"GiB", "TiB", "PiB"} else 1
            return f"{sign}{value:.{digits}f} {unit}"
    raise AssertionError("unreachable")


def format_percent(part: int | None, whole: int | None) -> str:
    if part is None or not whole:
        return ""
    return f"{100 * part / whole:.0f}%"


def count_of(count: int, noun: str) -> str:
    """``1 variable``, ``2 variables``."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"
