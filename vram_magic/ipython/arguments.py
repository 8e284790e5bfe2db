"""Parsing of ``%vram`` lines: one subcommand, its options, and one-line errors for bad input."""

from __future__ import annotations

import argparse
import re
import shlex
from collections.abc import Callable

from IPython.core.error import UsageError

from vram_magic import api


class HelpShown(Exception):
    """``--help`` printed its text; the magic has nothing more to do."""


def _count(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError(text)
    return value


_count.__name__ = "count"  # argparse names the type in its message: "invalid count value: 'x'"


def _device(text: str) -> str:
    """A device name, checked against the devices here so a typo is not an empty census."""
    if text.isdigit():
        text = f"cuda:{text}"
    if not re.fullmatch(r"cpu|mps|cuda(:\d+)?", text):
        raise ValueError(text)
    try:
        api.check_device(text)
    except api.DeviceError as error:
        raise argparse.ArgumentTypeError(str(error)) from None
    return text


_device.__name__ = "device"


def _seconds(text: str) -> float:
    value = float(text)
    if not 0.05 <= value <= 60:
        raise ValueError(text)
    return value


_seconds.__name__ = "interval (0.05 to 60 seconds)"


def _build_live(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--interval", type=_seconds, default=0.5, metavar="S", help="seconds between updates"
    )
    parser.add_argument("--close", action="store_true", help="close every live panel")


def _build_report(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--top", type=_count, default=3, metavar="N", help="other processes listed per GPU"
    )
    parser.add_argument("--device", type=_count, default=None, metavar="D", help="only cuda:D")


def _build_who(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--top", type=_count, default=20, metavar="N", help="holders shown")
    parser.add_argument(
        "--device", type=_device, default=None, metavar="D", help="cpu, cuda, cuda:0, mps or 0"
    )
    parser.add_argument("--all", action="store_true", help="every holder and every path")


def _build_history(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--last", type=_count, default=30, metavar="N", help="cells shown")


def _build_free(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("names", nargs="*", metavar="NAME", help="variables to delete as well")
    parser.add_argument("--dry-run", action="store_true", help="say what would be freed")
    parser.add_argument("--top", type=_count, default=5, metavar="N", help="holders still shown")


def _build_estimate(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", metavar="MODEL", help="a variable, local folder, config.json or hub id"
    )
    parser.add_argument("--batch", type=_count, default=1, metavar="B", help="sequences at once")
    parser.add_argument(
        "--seq", type=_count, default=None, metavar="L", help="tokens per sequence (2048)"
    )
    parser.add_argument(
        "--train",
        default="adam",
        metavar="T",
        help="adam, adamw, adamw8bit, sgd, lora, qlora, or none (inference)",
    )
    parser.add_argument(
        "--dtype", default=None, metavar="D", help="the weights' dtype: float32, bfloat16, float16"
    )
    parser.add_argument(
        "--checkpointing", action="store_true", help="with gradient checkpointing on"
    )


def _build_limit(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("size", metavar="SIZE", help="8GB, 8GiB, 7.5G, 512MB, 60%%, or off")


def _build_snapshot(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--exclude", nargs="+", default=[], metavar="NAME", help="variables not to save"
    )


def _build_restore(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", nargs="?", default=None, metavar="ID", help="default: the latest")
    parser.add_argument("--to", choices=("cpu",), default=None, help="load every tensor to cpu")
    parser.add_argument("--keep", action="store_true", help="keep the snapshot after restoring")


def _build_snapshots(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--delete", default=None, metavar="ID", help="remove this snapshot")


SUBCOMMANDS: dict[str, tuple[str, Callable[[argparse.ArgumentParser], None]]] = {
    "live": ("live gauges in a notebook (the text report in a terminal)", _build_live),
    "report": (
        "per-GPU memory: NVML, this kernel (torch), other processes; host RAM",
        _build_report,
    ),
    "who": ("live tensors grouped by the names and hidden holders keeping them", _build_who),
    "history": ("memory before, after and at the peak of each cell", _build_history),
    "free": ("release stranded memory (and the named variables)", _build_free),
    "estimate": (
        "memory a model needs: a training step's peak traced on fake tensors, weights by dtype",
        _build_estimate,
    ),
    "limit": ("emulate a smaller GPU: cap what this kernel may allocate", _build_limit),
    "snapshot": ("save the namespace to disk (tensors with their devices)", _build_snapshot),
    "restore": ("load a snapshot back (tensors to their devices)", _build_restore),
    "snapshots": ("list the snapshots on disk", _build_snapshots),
    "restart": (
        "snapshot, restart the kernel, restore (in JupyterLab: no typing)",
        _build_snapshot,
    ),
}
DEFAULT_SUBCOMMAND = "live"


def valid_subcommands() -> str:
    return ", ".join(SUBCOMMANDS)


class _OneLineParser(argparse.ArgumentParser):
    """argparse that raises ``UsageError`` with one line instead of printing and exiting."""

    def error(self, message: str) -> None:  # type: ignore[override]
        usage = " ".join(self.format_usage().split()).removeprefix("usage: ")
        also = (
            f". Valid subcommands: {valid_subcommands()}" if self.prog.startswith("%vram") else ""
        )
        raise UsageError(f"{self.prog}: {message}. Usage: {usage}{also}")

    def exit(self, status: int = 0, message: str | None = None) -> None:  # type: ignore[override]
        raise HelpShown


_NEGATIVE = re.compile(r"-[\d.]")


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
    if name == "limit" and words and _NEGATIVE.match(words[0]):
        words.insert(0, "--")  # "-5GB" is a SIZE (refused as negative), not an unknown option
    description, build = SUBCOMMANDS[name]
    parser = _OneLineParser(prog=f"%vram {name}", description=description)
    build(parser)
    return name, parser.parse_args(words)


def _fraction(text: str) -> float:
    value = float(text)
    if not 0 <= value < 1:
        raise ValueError(text)
    return value


_fraction.__name__ = "headroom (0 to 1)"


def parse_fit_line(line: str) -> api.FitOptions:
    """Options of ``%%fit``; bad input -> one-line UsageError."""
    parser = _OneLineParser(prog="%%fit", description="run the cell at a batch size that fits")
    parser.add_argument("--batch-size", default=None, metavar="VAR")
    accumulation = parser.add_mutually_exclusive_group()
    accumulation.add_argument("--accumulate", default=None, metavar="VAR")
    accumulation.add_argument("--no-accumulate", action="store_true")
    parser.add_argument("--max-oom", type=_count, default=8, metavar="N")
    parser.add_argument("--headroom", type=_fraction, default=0.05, metavar="P")
    parser.add_argument("--quantize", choices=("auto", "8bit", "4bit", "off"), default=None)
    parser.add_argument("--probe", action="store_true")
    parser.add_argument("--no-predict", action="store_true")
    try:
        options = parser.parse_args(shlex.split(line))
    except ValueError as error:
        raise UsageError(f"%%fit: {error}") from None
    return api.FitOptions(
        batch_size=options.batch_size,
        accumulate=options.accumulate,
        keep_effective=not options.no_accumulate,
        max_oom=options.max_oom,
        headroom=options.headroom,
        quantize=options.quantize,
        probe=options.probe,
        predict=not options.no_predict,
    )
