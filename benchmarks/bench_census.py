"""Census benchmark: ``vram_magic.who()`` on a heap of 100,000 tensors; exits 1 on a miss.

    python benchmarks/bench_census.py              # 100,000 tensors, 1,000,000 other objects
    python benchmarks/bench_census.py --quick      # smoke run: 10x smaller heap, 3 runs
    python benchmarks/bench_census.py --json out.json

The tensors (``torch.zeros(4)`` each, in one list bound in the user namespace of a real IPython
shell with vram_magic loaded) sit among 1,000,000 other GC-tracked objects. The peer is
pytorch_memlab's ``MemReporter().report()`` on the same heap in the same run, its printout sent
to a buffer. A bare ``gc.collect()`` and one pass over ``gc.get_objects()`` picking tensors are
printed as reference points: a census that must see every tensor can hardly beat the second.
The time target is set for the full heap; on a smaller one (--quick) it still must hold, which
catches only a gross regression, and the row says so. The ratio to MemReporter holds at any size.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from _timing import Table, finish, finite, median, number, seconds

TARGET_WHO_S = 0.8  # on the full heap
FULL_TENSORS, FULL_OBJECTS = 100_000, 1_000_000
TARGET_RATIO = 2.0  # MemReporter's time / who()'s


@dataclass
class Timing:
    """Median seconds of a few runs, or the reason there is none."""

    seconds: float | None = None
    problem: str = ""
    note: str = ""

    def shown(self) -> str:
        return number(self.seconds) if self.problem == "" else "-"


def time_runs(function: Callable[[], object], runs: int) -> Timing:
    """Median of ``runs`` timed calls after one untimed call; a failure becomes ``problem``."""
    try:
        function()  # warm: imports, caches
        return Timing(median([seconds(function) for _ in range(runs)]))
    except Exception as error:  # a missing or broken census or peer is a row, not a crash
        return Timing(problem=f"{type(error).__name__}: {error}".splitlines()[0][:100])


def time_who(runs: int) -> Timing:
    import vram_magic

    last: dict[str, Any] = {}

    def census() -> None:
        last["census"] = vram_magic.who()

    timing = time_runs(census, runs)
    if "census" in last:  # a sanity check that it saw the heap
        timing.note = f"saw {last['census'].tensor_count:,} tensors"
    return timing


def time_memreporter(runs: int) -> Timing:
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # it prints when CUDA is missing
            from pytorch_memlab import MemReporter
    except Exception as error:  # not installed, or broken with this torch
        return Timing(problem=f"pytorch_memlab: {type(error).__name__}: {error}"[:100])

    # isinstance() over every object touches torch.distributed.reduce_op, which warns once
    warnings.filterwarnings("ignore", category=FutureWarning, module="pytorch_memlab")
    printed = io.StringIO()

    def report() -> None:
        printed.seek(0)
        printed.truncate()
        with contextlib.redirect_stdout(printed):
            MemReporter().report()

    timing = time_runs(report, runs)
    if not timing.problem:
        timing.note = f"MemReporter prints {printed.getvalue().count(chr(10)):,} lines"
    return timing


def build_heap(shell: Any, tensors: int, others: int) -> None:
    """The tensors in the user namespace, the other objects too, so that both stay alive."""
    import torch

    shell.user_ns["tensors"] = [torch.zeros(4) for _ in range(tensors)]
    shell.user_ns["junk"] = [[i] for i in range(others)]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tensors", type=int, help="live CPU tensors (default 100,000)")
    parser.add_argument("--objects", type=int, help="other GC-tracked objects (default 1,000,000)")
    parser.add_argument("--runs", type=int, help="timed runs per row (default 5)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 10x smaller heap, 3 runs")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    tensors = args.tensors or FULL_TENSORS // scale
    others = args.objects or FULL_OBJECTS // scale
    runs = args.runs or (3 if args.quick else 5)

    import torch
    from IPython.core.interactiveshell import InteractiveShell

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "vram_magic")
    build_heap(shell, tensors, others)
    gc.collect()
    tracked = len(gc.get_objects())

    def tensor_pass() -> list[object]:
        return [o for o in gc.get_objects() if type(o) is torch.Tensor]

    who = time_who(runs)
    peer = time_memreporter(runs)
    collect = time_runs(gc.collect, runs)
    scan = time_runs(tensor_pass, runs)

    setup = (
        f"{tensors:,} CPU tensors + {others:,} other objects ({tracked:,} GC-tracked)"
        f" · median of {runs} · python {sys.version.split()[0]} · torch {torch.__version__}"
    )
    print(f"vram_magic census benchmark · {setup}")
    table = Table(
        [
            ("measure", -28),
            ("median s", 9),
            ("target", 7),
            ("  peer", -26),
            ("s", 7),
            ("peer/ours", 9),
            ("target", 6),
            ("  note", -6),
        ]
    )
    ratio = peer.seconds / who.seconds if who.seconds and peer.seconds else None
    who_ok = who.seconds is not None and who.seconds <= TARGET_WHO_S
    # a peer that cannot run here leaves the ratio unchecked rather than failing the benchmark
    ratio_ok = bool(peer.problem) or (ratio is not None and ratio >= TARGET_RATIO)
    missed = [
        name for name, ok in (("who() time", who_ok), ("who() vs MemReporter", ratio_ok)) if not ok
    ]
    notes = [who.problem or who.note, peer.problem or peer.note]
    if tensors < FULL_TENSORS or others < FULL_OBJECTS:
        notes.insert(0, f"time target set for {FULL_TENSORS:,} tensors: a gross regression only")
    if peer.problem:
        notes.append("ratio not checked")
    table.print_row(
        [
            "vram_magic.who()",
            who.shown(),
            f"<= {TARGET_WHO_S:g}",
            "  MemReporter().report()",
            peer.shown(),
            number(ratio, 1),
            f">= {TARGET_RATIO:g}",
            "  " + "; ".join(n for n in notes if n) + ("  MISSED" if missed else ""),
        ]
    )
    for name, timing in (("gc.collect()", collect), ("gc.get_objects() tensor pass", scan)):
        note = timing.problem or "reference"
        table.print_row([name, timing.shown(), "-", "  -", "-", "-", "-", "  " + note])

    results = [
        {
            "measure": name,
            "median_s": finite(timing.seconds),
            "target_s": target,
            "note": timing.problem or timing.note,
        }
        for name, timing, target in (
            ("vram_magic.who()", who, TARGET_WHO_S),
            ("MemReporter().report()", peer, None),
            ("gc.collect()", collect, None),
            ("gc.get_objects() tensor pass", scan, None),
        )
    ]
    results.append({"measure": "MemReporter / who", "ratio": ratio, "target_ratio": TARGET_RATIO})
    return finish(setup, results, missed, args.json)


if __name__ == "__main__":
    sys.exit(main())
