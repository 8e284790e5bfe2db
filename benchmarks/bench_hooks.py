"""Cell-hooks benchmark: ms that vram_magic's cell hooks add to every cell; exits 1 on a miss.

    python benchmarks/bench_hooks.py               # 1000 cells per configuration and heap
    python benchmarks/bench_hooks.py --quick       # smoke run: 100 cells, peers 10, session 1000
    python benchmarks/bench_hooks.py --json out.json

One real IPython shell runs the trivial cell ``x = 1`` (stored in history) under each
configuration, on two heaps: the small default namespace, then a big one (1,000 tensors bound to
t0..t999 and 1,000,000 other GC-tracked objects). torch is imported in both, as in a notebook
that uses vram_magic. The baseline (no extension) and vram_magic alternate in rounds, so a noisy
machine's drift hits both alike. The peers, ipyexperiments' CellLogger and ipython_memory_usage,
cost 50-150 ms a cell, so they run only --peer-cells cells each; they have no target, and a peer
that cannot be installed, imported or started prints why instead of a figure.

The long session then starts a fresh namespace and runs 5,000 cells each with and without the
hooks, in alternating blocks of the one session: vram_magic stays loaded (its history keeps every
record), only its cell hooks come off during the baseline's blocks. IPython adds an ``_iN`` name
per cell, so a hook that walks the namespace costs more with every cell; the target is that the
added ms over the first fifth of the cells and over the last fifth are within 20% of each other.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import re
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _timing import Table, finish, finite, mean, median, number, seconds

CELL = "x = 1"
WARMUP_CELLS = 3
TARGET_ADDED_MS = {"small": 0.3, "big": 1.0}
HEAP_TEXT = {
    "small": "default namespace",
    "big": "1,000 tensors t0..t999 + 1,000,000 lists",
}
TARGET_LONG_DRIFT = 1.2  # the larger of the first and last fifth's added ms / the smaller
LONG_BLOCK = 100  # cells each configuration runs before the other one's turn
RATIO_FLOOR_MS = 0.01  # below this vram_magic's added time is noise; ratios use the floor
SETTLE_S = 2.0  # how long a stopped peer's threads get to end before we count them as leaked


@dataclass
class Measured:
    """One configuration on one heap: per-cell times, or the reason there are none."""

    name: str
    samples: list[float] = field(default_factory=list)
    problem: str = ""
    notes: list[str] = field(default_factory=list)
    hooks: int = 0  # cell hooks that starting it registered
    extra_threads: int = 0  # most threads alive beyond those before it started

    def note(self) -> str:
        notes = [self.problem] if self.problem else []
        if self.name != Configuration.name and not self.problem:
            notes.append(f"{self.hooks} cell hooks" if self.hooks else "registers no cell hooks")
        if self.extra_threads:
            notes.append(f"up to {self.extra_threads} extra thread(s)")
        return "; ".join(dict.fromkeys(notes + self.notes))


class Configuration:
    """What runs around the cells: ``start`` registers hooks, ``stop`` removes them."""

    name = "no extension (baseline)"

    def __init__(self, shell: Any) -> None:
        self.shell = shell

    def start(self) -> None:
        pass

    def stop(self) -> list[str]:
        """Remove the hooks; return notes on anything worth reporting (threads left, ...)."""
        return []


class VramMagic(Configuration):
    name = "vram_magic"

    def start(self) -> None:
        self.shell.run_line_magic("load_ext", "vram_magic")

    def stop(self) -> list[str]:
        answer = self.shell.run_line_magic("unload_ext", "vram_magic")
        return [f"%unload_ext: {answer}"] if answer else []


class IPyExperiments(Configuration):
    """ipyexperiments with the experiment off: only its CellLogger, which hooks both events.

    CellLogger registers its hooks on ``IPython.get_ipython()``, which is our shell because
    ``InteractiveShell.instance()`` made it the singleton. Each cell it starts a thread that
    polls RSS without sleeping until the cell ends, and runs a full ``gc.collect()`` after it.
    """

    name = "ipyexperiments CellLogger"

    def start(self) -> None:
        from ipyexperiments import IPyExperimentsCPU

        self.experiment = IPyExperimentsCPU(exp_enable=False)

    def stop(self) -> list[str]:
        self.experiment.finish()
        del self.experiment
        return []


class MemoryUsage(Configuration):
    """ipython_memory_usage through its own magics, ``%imu_start`` and ``%imu_stop``.

    Each cell it starts a sampler thread that sleeps 0.1 s per sample (memory_profiler), and its
    post-cell hook takes one more 0.1 s sample: about 100 ms a cell.
    """

    name = "ipython_memory_usage"
    thread_marker = "during_execution_memory_sampler"

    def start(self) -> None:
        import ipython_memory_usage  # noqa: F401  (%load_ext would print an ImportError, not raise)

        self.shell.run_line_magic("load_ext", "ipython_memory_usage")
        self.shell.run_line_magic("imu_start", "")

    def stop(self) -> list[str]:
        self.shell.run_line_magic("imu_stop", "")
        at_stop = self.sampler_threads()
        deadline = time.monotonic() + SETTLE_S
        while self.sampler_threads() and time.monotonic() < deadline:
            time.sleep(0.05)
        left = self.sampler_threads()
        if left:  # they would sample on through the next measurements: end them
            import ipython_memory_usage.ipython_memory_usage as imu

            imu.keep_watching = False
        return [f"{at_stop} sampler threads alive at %imu_stop, {left} after {SETTLE_S:g} s"]

    def sampler_threads(self) -> int:
        return sum(self.thread_marker in thread.name for thread in threading.enumerate())


def hook_count(shell: Any) -> int:
    callbacks = shell.events.callbacks
    return len(callbacks["pre_run_cell"]) + len(callbacks["post_run_cell"])


def run_cells(shell: Any, count: int, into: Measured, threads_before: int) -> None:
    """Run ``count`` cells, appending each one's wall time in ms; output goes to a sink."""
    sink = io.StringIO()
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        for _ in range(WARMUP_CELLS):
            shell.run_cell(CELL, store_history=True)
        for _ in range(count):
            into.samples.append(seconds(lambda: shell.run_cell(CELL, store_history=True)) * 1000)
            extra = threading.active_count() - threads_before
            into.extra_threads = max(into.extra_threads, extra)
    if not into.problem:
        into.problem = hook_error(sink.getvalue())


def hook_error(output: str) -> str:
    """The first failing hook in a shell's output, e.g. "post_run_cell hook: RuntimeError: x"."""
    marker = "Error in callback "  # what IPython's EventManager prints before the traceback
    if marker not in output:
        return ""
    first = re.sub(r"\x1b\[[0-9;]*m", "", output).split(marker)[1]
    event = re.search(r"\(for (\w+)\)", first)
    lines = [line for line in first.splitlines() if line.strip()]
    return f"{event.group(1) if event else 'cell'} hook: {lines[-1][:80]}"


def measure(config: Configuration, count: int, into: Measured) -> None:
    """Start ``config``, run ``count`` cells, stop it; any failure becomes ``into.problem``."""
    shell = config.shell
    hooks_before, threads_before = hook_count(shell), threading.active_count()
    sink = io.StringIO()  # peers print banners on start and stop
    try:
        with contextlib.redirect_stdout(sink):
            config.start()
        into.hooks = hook_count(shell) - hooks_before
        run_cells(shell, count, into, threads_before)
        with contextlib.redirect_stdout(sink):
            into.notes += config.stop()
    except Exception as error:  # a peer that breaks on this machine must not end the benchmark
        into.problem = f"{type(error).__name__}: {error}".splitlines()[0][:100]
        return
    left_hooks = hook_count(shell) - hooks_before
    if left_hooks:
        into.problem = into.problem or f"stopping left {left_hooks} cell hooks registered"


def fill_big_heap(shell: Any) -> None:
    import torch

    shell.user_ns.update({f"t{i}": torch.zeros(16) for i in range(1000)})
    shell.user_ns["junk"] = [[i] for i in range(1_000_000)]


def measure_heap(
    shell: Any, cells: int, peer_cells: int, rounds: int
) -> tuple[Measured, Measured, list[Measured]]:
    """Baseline and vram_magic in alternating rounds, then each peer in one block."""
    baseline, ours = Measured(Configuration.name), Measured(VramMagic.name)
    per_round = max(1, cells // rounds)
    for _ in range(rounds):
        measure(Configuration(shell), per_round, baseline)
        measure(VramMagic(shell), per_round, ours)
    peers = []
    for peer in (IPyExperiments(shell), MemoryUsage(shell)):
        peers.append(Measured(peer.name))
        measure(peer, peer_cells, peers[-1])
    return baseline, ours, peers


def measure_long_session(shell: Any, cells: int) -> tuple[Measured, Measured]:
    """``cells`` cells each for the baseline and vram_magic, alternating in blocks, in one fresh
    session; vram_magic's note says how many records its history kept."""
    from vram_magic.ipython.extension import loaded_in

    shell.reset(new_session=True)
    shell.run_cell("import torch", store_history=True)
    baseline, ours = Measured(Configuration.name), Measured(VramMagic.name)
    config = VramMagic(shell)
    hooks_before, threads_before = hook_count(shell), threading.active_count()
    with contextlib.redirect_stdout(io.StringIO()):
        config.start()
    ours.hooks = hook_count(shell) - hooks_before
    state = loaded_in(shell)
    assert state is not None
    hooks = state.hooks
    while len(ours.samples) < cells:
        block = min(LONG_BLOCK, cells - len(ours.samples))
        hooks.unregister()
        run_cells(shell, block, baseline, threads_before)
        hooks.register()
        run_cells(shell, block, ours, threads_before)
    kept = f"history keeps {len(hooks.recorder.records):,} records (warm-up cells too)"
    ours.notes += [kept, f"{hooks.recorder.dropped} dropped", *config.stop()]
    return baseline, ours


def print_long_session(baseline: Measured, ours: Measured, results: list[dict[str, Any]]) -> bool:
    """The long-session rows; True when vram_magic's added ms stayed flat."""
    cells = len(ours.samples)
    fifth = max(1, cells // 5)
    first, last = slice(0, fifth), slice(cells - fifth, cells)
    print(
        f"long session: {cells:,} cells per configuration from a fresh namespace, alternating in "
        f"blocks of {LONG_BLOCK} (no peers); first: ms a cell over cells 1-{fifth:,}, last: over "
        f"{cells - fifth + 1:,}-{cells:,}; drift: the larger over the smaller (of added ms for "
        "vram_magic)"
    )
    table = Table(
        [
            ("configuration", -26),
            ("cells", 5),
            ("first ms", 8),
            ("last ms", 8),
            ("added first", 11),
            ("added last", 10),
            ("drift", 5),
            ("target", 7),
            ("  note", -6),
        ]
    )
    base = (median(baseline.samples[first]), median(baseline.samples[last]))
    added = (median(ours.samples[first]) - base[0], median(ours.samples[last]) - base[1])
    floored = [max(value, RATIO_FLOOR_MS) for value in added]
    drifts = {
        baseline.name: max(base) / min(base),
        ours.name: max(floored) / min(floored),
    }
    ok = not ours.problem and drifts[ours.name] <= TARGET_LONG_DRIFT
    for row in (baseline, ours):
        is_ours = row is ours
        shown = (median(row.samples[first]), median(row.samples[last]))
        table.print_row(
            [
                row.name,
                str(len(row.samples)),
                number(shown[0]),
                number(shown[1]),
                number(added[0] if is_ours else None),
                number(added[1] if is_ours else None),
                f"{drifts[row.name]:.2f}",
                f"<= {TARGET_LONG_DRIFT:g}" if is_ours else "-",
                "  " + row.note() + ("" if not is_ours or ok else "  MISSED"),
            ]
        )
        results.append(
            {
                "heap": "long session",
                "configuration": row.name,
                "cells": len(row.samples),
                "first_ms": finite(shown[0]),
                "last_ms": finite(shown[1]),
                "added_first_ms": finite(added[0]) if is_ours else None,
                "added_last_ms": finite(added[1]) if is_ours else None,
                "drift": finite(drifts[row.name]),
                "target_drift": TARGET_LONG_DRIFT if is_ours else None,
                "note": row.note(),
            }
        )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, help="cells per configuration (default 1000)")
    parser.add_argument("--peer-cells", type=int, help="cells per peer (default 50)")
    parser.add_argument("--rounds", type=int, default=5, help="baseline/vram_magic alternations")
    parser.add_argument("--long-cells", type=int, help="long-session cells (default 5000)")
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 100 cells, peers 10, long session 1000"
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    cells = args.cells or (100 if args.quick else 1000)
    peer_cells = args.peer_cells or (10 if args.quick else 50)
    long_cells = args.long_cells or (1000 if args.quick else 5000)

    import torch
    from IPython.core.interactiveshell import InteractiveShell
    from traitlets.config import Config

    config = Config()
    config.HistoryManager.hist_file = ":memory:"  # no SQLite writes, no history thread
    shell = InteractiveShell.instance(config=config)

    measured: dict[str, tuple[Measured, Measured, list[Measured]]] = {}
    objects: dict[str, int] = {}
    for heap in ("small", "big"):
        if heap == "big":
            fill_big_heap(shell)
        gc.collect()
        objects[heap] = len(gc.get_objects())
        print(f"measuring the {heap} heap ({objects[heap]:,} GC-tracked objects)", file=sys.stderr)
        measured[heap] = measure_heap(shell, cells, peer_cells, args.rounds)
    print(f"measuring a long session ({long_cells:,} cells each)", file=sys.stderr)
    long_session = measure_long_session(shell, long_cells)

    setup = f"python {sys.version.split()[0]} · torch {torch.__version__} · cell {CELL!r}"
    print(f"vram_magic cell-hooks benchmark · {setup}")
    for heap, text in HEAP_TEXT.items():
        print(f"  {heap} heap: {text}, {objects[heap]:,} GC-tracked objects")
    if peer_cells < cells:
        print(f"  peers run {peer_cells} cells each (--peer-cells), the others {cells}")
    print(f"  x ours: a peer's added ms / vram_magic's (taken as >= {RATIO_FLOOR_MS:g} ms)")
    table = Table(
        [
            ("heap", -5),
            ("configuration", -26),
            ("cells", 5),
            ("median ms", 9),
            ("mean ms", 8),
            ("added ms", 8),
            ("target", 7),
            ("x ours", 8),
            ("  note", -6),
        ]
    )
    missed: list[str] = []
    results: list[dict[str, Any]] = []
    for heap, (baseline, ours, peers) in measured.items():
        base_ms = median(baseline.samples)
        ours_added = median(ours.samples) - base_ms
        target = TARGET_ADDED_MS[heap]
        ours_ok = not ours.problem and ours_added <= target
        if not ours_ok:
            missed.append(f"vram_magic on the {heap} heap")
        for row in (baseline, ours, *peers):
            shown = not row.problem
            added = median(row.samples) - base_ms if row is not baseline and shown else None
            ratio = "-"
            if row in peers and added is not None and not ours.problem:
                floor = max(ours_added, RATIO_FLOOR_MS)  # ours at or below noise: a lower bound
                ratio = (">=" if floor > ours_added else "") + f"{added / floor:.0f}"
            table.print_row(
                [
                    heap,
                    row.name,
                    str(len(row.samples)) if shown else "-",
                    number(median(row.samples) if shown else None),
                    number(mean(row.samples) if shown else None),
                    number(added),
                    f"<= {target:g}" if row is ours else "-",
                    ratio,
                    "  " + row.note() + ("" if row is not ours or ours_ok else "  MISSED"),
                ]
            )
            results.append(
                {
                    "heap": heap,
                    "configuration": row.name,
                    "cells": len(row.samples) if shown else 0,
                    "median_ms": finite(median(row.samples)) if shown else None,
                    "mean_ms": finite(mean(row.samples)) if shown else None,
                    "added_ms": finite(added),
                    "target_added_ms": target if row is ours else None,
                    "note": row.note(),
                }
            )
    if not print_long_session(*long_session, results):
        missed.append("vram_magic over a long session")
    return finish(setup, results, missed, args.json)


if __name__ == "__main__":
    sys.exit(main())
