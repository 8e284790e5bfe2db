"""%%fit beside accelerate's find_executable_batch_size, on the same workloads and starts.

    python benchmarks/bench_fit.py                  # CUDA where there is a GPU, else the CPU
    python benchmarks/bench_fit.py --quick          # smoke run: the first workload only
    python benchmarks/bench_fit.py --json out.json

Both run under ``%vram limit``: without a GPU the CPU budget, which raises real
``torch.OutOfMemoryError``; on CUDA the caching allocator's cap, set to 16 times the workload's
size (the allocator reserves in blocks of 2 and 20 MiB, which would swamp a few dozen MiB) on
top of what the CUDA context and libraries hold. For each workload the true largest fitting
batch is found by bisection over real runs; each method then starts 4x too large and 8x too
small. Printed: the chosen size over the true largest, out-of-memory errors, wall time,
%%fit's rerun, and ``%%fit --probe`` (two small runs first). Targets: median chosen/true
>= 0.9, mean OOMs on a first run <= 1.5, 0 on a rerun. --quick runs the first workload only
(the full run's first two rows) and hides %%fit's own tables; the targets are ratios and counts,
so they stay. Without accelerate its columns show ``-``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _timing import Table, finish, number, summarise

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from fit_workload import TRAIN, allocator_room, fits, largest_fitting

WORKLOADS = {
    "MLP 64-2048-64, 120 MB": (
        "torch.nn.Sequential(torch.nn.Linear(64, 2048), torch.nn.ReLU(), "
        "torch.nn.Linear(2048, 64))",
        120 * 10**6,
    ),
    "MLP 256-1024-1024-256, 200 MB": (
        "torch.nn.Sequential(torch.nn.Linear(256, 1024), torch.nn.GELU(), "
        "torch.nn.Linear(1024, 1024), torch.nn.GELU(), torch.nn.Linear(1024, 256))",
        200 * 10**6,
    ),
}
CUDA_SCALE = 16


def accelerate_run(find: Any, namespace: dict, code: Any, start: int) -> tuple[int, int, float]:
    """accelerate's ``find_executable_batch_size`` from ``start``: chosen size, OOMs, seconds."""
    import torch

    calls = []

    @find(starting_batch_size=start)
    def train(batch_size: int) -> int:
        calls.append(batch_size)
        namespace["batch_size"] = batch_size
        try:
            exec(code, namespace)
        except torch.OutOfMemoryError:
            for name in ("x", "loss"):
                namespace.pop(name, None)
            raise
        return batch_size

    began = time.perf_counter()
    chosen = train()
    return chosen, len(calls) - 1, time.perf_counter() - began


def main() -> int:
    import torch
    from IPython.core.interactiveshell import InteractiveShell

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: the first workload only")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    try:
        from accelerate.utils import find_executable_batch_size
    except ImportError as error:  # the peer is optional: %%fit's targets do not need it
        find_executable_batch_size, peer_problem = None, f"accelerate: {error}"
    else:
        peer_problem = ""
    device = "cuda" if torch.cuda.is_available() else "cpu"  # where %vram limit applies
    scale = CUDA_SCALE if device == "cuda" else 1
    workloads = dict(list(WORKLOADS.items())[:1]) if args.quick else WORKLOADS
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "vram_magic")
    namespace = shell.user_ns
    namespace.update(torch=torch, DEV=device)
    code = compile(TRAIN, "<train>", "exec")

    def fit_cell(cell: str) -> Any:
        """One %%fit cell's result; --quick hides its table (one per run), the full run shows it."""
        with contextlib.redirect_stdout(io.StringIO()) if args.quick else contextlib.nullcontext():
            return shell.run_cell(cell).result.data.fits[0]

    rows, ratios, first_ooms, rerun_ooms = [], [], [], []
    for workload, (model, limit) in workloads.items():
        shell.run_line_magic("vram", "limit off")
        exec(
            f"model = {model}.to(DEV)\nopt = torch.optim.SGD(model.parameters(), lr=0.01)",
            namespace,
        )
        fits(shell, 1)  # CUDA's libraries start before the limit is measured
        shell.run_line_magic("vram", f"limit {allocator_room(scale * limit)}")
        true_max = largest_fitting(shell)
        for label, start in (("4x too large", 4 * true_max), ("8x too small", true_max // 8)):
            namespace["batch_size"] = start
            began = time.perf_counter()
            result = fit_cell(f"%%fit\n{TRAIN}# {workload} {label}")
            ours_time = time.perf_counter() - began
            ours_ooms = sum(a.outcome != "fits" for a in result.attempts)
            namespace["batch_size"] = start
            rerun = fit_cell(f"%%fit\n{TRAIN}# {workload} {label}")
            namespace["batch_size"] = start
            probed = fit_cell(f"%%fit --probe\n{TRAIN}# {workload} {label}, probed")
            peer = ["-"] * 4
            if find_executable_batch_size is not None:
                chosen, theirs_ooms, theirs_time = accelerate_run(
                    find_executable_batch_size, namespace, code, start
                )
                peer = [
                    str(chosen),
                    number(chosen / true_max, 2),
                    str(theirs_ooms),
                    number(theirs_time, 2),
                ]
            ratios.append(result.size / true_max)
            first_ooms.append(ours_ooms)
            rerun_ooms.append(sum(a.outcome != "fits" for a in rerun.attempts))
            probed_ooms = sum(a.outcome != "fits" for a in probed.attempts)
            rows.append(
                [
                    workload,
                    label,
                    str(true_max),
                    str(result.size),
                    number(result.size / true_max, 2),
                    str(ours_ooms),
                    number(ours_time, 2),
                    str(rerun_ooms[-1]),
                    str(probed.size),
                    number(probed.size / true_max, 2),
                    str(probed_ooms),
                    *peer,
                ]
            )
    shell.run_line_magic("vram", "limit off")

    where = "CPU budget"
    if device == "cuda":
        where = f"{torch.cuda.get_device_name(0)}, budgets x{CUDA_SCALE}"
    print(
        f"%%fit vs accelerate find_executable_batch_size · {where} · python "
        f"{sys.version.split()[0]} · torch {torch.__version__}"
    )
    table = Table(
        [
            ("workload", -30),
            ("start", -13),
            ("true", 6),
            ("fit", 6),
            ("/true", 6),
            ("OOMs", 5),
            ("s", 6),
            ("rerun", 6),
            ("probe", 6),
            ("/true", 6),
            ("OOMs", 5),
            ("accel", 6),
            ("/true", 6),
            ("OOMs", 5),
            ("s", 6),
        ]
    )
    for row in rows:
        table.print_row(row)
    if peer_problem:
        print(f"{peer_problem}: its columns are not measured (pip install accelerate)")
    summary = {
        "median chosen/true": (
            statistics.median(ratios),
            ">= 0.9",
            statistics.median(ratios) >= 0.9,
        ),
        "mean OOMs, first run": (
            statistics.fmean(first_ooms),
            "<= 1.5",
            statistics.fmean(first_ooms) <= 1.5,
        ),
        "OOMs on rerun": (sum(rerun_ooms), "== 0", sum(rerun_ooms) == 0),
    }
    results, missed = summarise(summary)
    return finish(where, results, missed, args.json)


if __name__ == "__main__":
    sys.exit(main())
