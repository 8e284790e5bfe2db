"""Parsing of ``%vram`` lines: one subcommand, its options, and one-line errors for bad input."""

from __future__ import annotations

import argparse
import shlex
from collections.abc import Callable

from IPython.core.error import UsageError


class HelpShown(Exception):
    """``--help`` printed its text; the magic has nothing more to do."""


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


_count.__name__ = "count"  # argparse names the type in its message: "invalid count value: 'x'"


def _build_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--top", type=_count, default=3, metavar="N", help="other processes listed per GPU"
    )
    parser.add_argument("--device", type=_count, default=None, metavar="D", help="only cuda:D")


SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "report": (
        "per-GPU memory: NVML, this kernel (torch), other processes; host RAM",
        _build_report,
    ),
}
DEFAULT_SUBCOMMAND = "report"


def valid_subcommands() -> str:
    return ", ".join(SUBCOMMANDS)


class _OneLineParser(argparse.ArgumentParser):
    """argparse that raises ``UsageError`` with one line instead of printing and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        usage = " ".join(self.format_usage().split()).removeprefix("usage: ")
        raise UsageError(
            f"{self.prog}: {message}. Usage: {usage}. Valid subcommands: {valid_subcommands()}"
        )

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise HelpShown


def parse_vram_line(line: str) -> tuple[str, argparse.Namespace]:
    """``"report --top 5"`` -> ("report", Namespace(top=5, device=None)); else UsageError."""
    try:
        words = shlex.split(line)
    except ValueError as error:
        raise UsageError(f"%vram: {error}. Valid subcommands: {valid_subcommands()}") from None
    name = words.pop(0) if words and not words[0].startswith("-") else DEFAULT_SUBCOMMAND
    if name not in SUBCOMMANDS:
        raise UsageError(
            f"%vram: unknown subcommand {name!r}. Valid subcommands: {valid_subcommands()}"
        )
    description, build = SUBCOMMANDS[name]
    parser = _OneLineParser(prog=f"%vram {name}", description=description)
    build(parser)
    return name, parser.parse_args(words)
