"""A bare %%fit over ``trainer.train()`` beside ``Trainer(auto_find_batch_size=True)``.

    python benchmarks/bench_trainer.py              # CUDA where there is a GPU, else the CPU
    python benchmarks/bench_trainer.py --quick      # CI: GPT-2 only, max_steps 1 (~45 s)
    python benchmarks/bench_trainer.py --json out.json

Workloads: tests/trainer_workload.py's tiny GPT-2- and BERT-shaped models (BERT's masked-LM
labels are the input ids: memory is what is measured), each with its own room under
``%vram limit``. Without a GPU that is the CPU budget; on CUDA the allocator's cap at 16x the
room (it reserves in 2 and 20 MiB blocks) on top of the CUDA context, with 64x the rows (a
batch larger than the data set is capped by it, and would fit). Every run builds a fresh
Trainer on a model of the same seed and gets the same room.

The true largest batch T is found once per workload by bisection over real training runs at
accumulation >= 2, which needs more than accumulation 1 (earlier micro-batches' gradients are
alive in each backward): auto_find_batch_size, which keeps accumulation 1, can beat it. For
each start, the largest divisor of its effective batch that trains is found the same way.

- 4x too large: 4T x 1 (a notebook written for a bigger card).
- 8x too small: max(T // 8, 1) x the first power of two that makes the effective batch >= 2T
  (32 for both CPU workloads, as in tests/test_fit_trainer.py). At least 2T so that growing is
  capped by the divisors, not by the effective batch; a power of two because people pick one,
  and it is the hard case for divisors (the largest one <= T can be just above T / 2).

auto_find_batch_size only shrinks, by 10% per OOM, and leaves the accumulation alone; its OOMs
are counted by wrapping the Trainer's inner loop, which accelerate retries. ``steps``: the
optimizer steps the final optimizer took (max_steps when the model was trained once). On the
CPU torch runs one thread: the tiny models' ops are too small to share, and on a busy machine
two threads spin against each other (measured 5-10x slower, and noisy).

Targets, on %%fit: median chosen / true divisor >= 0.9, median OOMs on a first run 0 (the
search starts from a traced step's prediction, actions/fit_predict.py), 0 on
every rerun (the same cell again, from the cached size), the effective batch exact in every
row, and median seconds until a run fits <= 0.5x auto_find_batch_size's.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import io
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _timing import Table, finish, number, summarise

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import trainer_workload as workload
from fit_workload import allocator_room

WORKLOADS = {  # name: (tiny_model kind, room on the CPU)
    "GPT-2-shaped": ("gpt2", 20 * 2**20),
    "BERT-shaped": ("bert", 24 * 2**20),
}
ROWS, LENGTH = 128, 64  # token_data; on CUDA 4 x CUDA_SCALE times the rows
CUDA_SCALE = 16
ROW_WORDS = {"4x": "4x too large", "8x": "8x too small"}


def set_room(shell: Any, room: int) -> None:
    """``%vram limit`` that leaves ``room`` above what is alive now (model, data, trainer):
    the CPU budget's live bytes, or on CUDA the allocator's reserved bytes plus the context."""
    import torch

    import vram_magic

    if not torch.cuda.is_available():
        workload.limit_room(shell, room)
        return
    vram_magic.limit("off")
    gc.collect()
    torch.cuda.empty_cache()
    vram_magic.limit(allocator_room(torch.cuda.memory_reserved() + room))


def unlimit() -> None:
    import vram_magic

    vram_magic.limit("off")
    gc.collect()


def quiet(shell: Any, code: str) -> Any:
    """Run a cell as a notebook would, without %%fit's table or the Trainer's metrics."""
    with contextlib.redirect_stdout(io.StringIO()):
        return shell.run_cell(code, store_history=True)


def build(shell: Any, kind: str, size: int, steps: int, max_steps: int, **extra: Any) -> Any:
    """A fresh ``trainer`` in the notebook, on a fresh model of the same seed, before the limit."""
    unlimit()
    shell.user_ns.pop("trainer", None)
    gc.collect()
    options = "".join(f", {name}={value!r}" for name, value in extra.items())
    made = quiet(
        shell,
        f"trainer = make_trainer(tiny_model({kind!r}), data, {size}, {steps}, "
        f"max_steps={max_steps}{options})",
    )
    if not made.success:
        raise SystemExit(f"could not build the Trainer: {made.error_in_exec!r}")
    return shell.user_ns["trainer"]


def optimizer_steps(trainer: Any) -> int | None:
    """Steps the trainer's optimizer took: max_steps when the model was trained once."""
    optimizer = getattr(trainer, "optimizer", None)
    if optimizer is None:
        return None
    steps = [int(state["step"]) for state in optimizer.state.values() if "step" in state]
    return max(steps, default=0)


def measured(shell: Any, kind: str, room: int, max_steps: int, find: Any) -> int:
    """``find(shell, "model", "data", **extra)``: a truth from real runs, under the room."""
    unlimit()
    quiet(shell, f"model = tiny_model({kind!r})")
    quiet(shell, "make_trainer(model, data, 1, 1, max_steps=1).train()")  # model on the device
    set_room(shell, room)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            return find(shell, "model", "data", max_steps=max_steps)
    finally:
        unlimit()
        shell.user_ns.pop("model", None)


def true_largest(shell: Any, kind: str, room: int, max_steps: int, scale: int, rows: int) -> int:
    """The largest batch that trains at accumulation >= 2, any size: bisection at an effective
    batch of at least twice it (sizes above half of it would run at accumulation 1)."""
    effective = 32 * scale
    while True:
        if effective > rows:
            raise SystemExit(f"{kind}: batches up to {effective} need more than {rows} rows")

        def find(*args: Any, effective: int = effective, **extra: Any) -> int:
            return workload.largest_fitting(*args, effective, **extra)

        largest = measured(shell, kind, room, max_steps, find)
        if largest == 0:
            raise SystemExit(f"{kind}: not even a batch of 1 trains in {room} bytes")
        if 2 * (largest + 1) <= effective:
            return largest
        while effective < 2 * (largest + 1):
            effective *= 2


def true_divisor(shell: Any, kind: str, room: int, max_steps: int, effective: int) -> int:
    """The largest divisor of ``effective`` that trains, trying them from the top."""

    def find(*args: Any, **extra: Any) -> int:
        return workload.largest_fitting_divisor(*args, effective, **extra)

    return measured(shell, kind, room, max_steps, find)


def fit_row(shell: Any, kind: str, room: int, cell: str, size: int, steps: int, max_steps: int):
    """%%fit's first run and rerun from this start: (first result, seconds, kept, steps, rerun)."""
    trainer = build(shell, kind, size, steps, max_steps)
    set_room(shell, room)
    began = time.perf_counter()
    outcome = quiet(shell, cell)
    seconds = time.perf_counter() - began
    unlimit()
    if not outcome.success:
        raise SystemExit(f"%%fit failed: {outcome.error_in_exec!r}")
    first = outcome.result.data.fits[0]
    args = trainer.args
    effective = size * steps
    kept = (
        first.effective == effective
        and first.size * first.accumulation == effective
        and args.per_device_train_batch_size * args.gradient_accumulation_steps == effective
    )
    trained = optimizer_steps(trainer)
    del trainer
    build(shell, kind, size, steps, max_steps)
    set_room(shell, room)
    again = quiet(shell, cell)
    unlimit()
    if not again.success:
        raise SystemExit(f"%%fit failed on the rerun: {again.error_in_exec!r}")
    return first, seconds, kept, trained, again.result.data.fits[0]


def auto_row(shell: Any, kind: str, room: int, size: int, steps: int, max_steps: int):
    """auto_find_batch_size from this start: (chosen or None, OOMs, seconds, kept, steps)."""
    trainer = build(shell, kind, size, steps, max_steps, auto_find_batch_size=True)
    tried: list[int] = []
    inner = trainer._inner_training_loop  # what accelerate's find_executable_batch_size retries

    def counted(batch_size: int | None = None, *args: Any, **kwargs: Any) -> Any:
        tried.append(batch_size)
        return inner(batch_size, *args, **kwargs)

    trainer._inner_training_loop = counted
    set_room(shell, room)
    began = time.perf_counter()
    outcome = quiet(shell, "trainer.train()")
    seconds = time.perf_counter() - began
    unlimit()
    chosen = trainer._train_batch_size if outcome.success else None
    assert chosen is None or chosen == trainer.state.train_batch_size
    kept = chosen is not None and chosen * trainer.args.gradient_accumulation_steps == size * steps
    trained = optimizer_steps(trainer)
    del trainer.__dict__["_inner_training_loop"], trainer
    return chosen, len(tried) - 1, seconds, kept, trained


def starts(largest: int) -> dict[str, tuple[int, int]]:
    """The two starts, (per-device batch, accumulation), as the module docstring says."""
    small = max(largest // 8, 1)
    accumulation = 1
    while small * accumulation < 2 * largest:
        accumulation *= 2
    return {"4x": (4 * largest, 1), "8x": (small, accumulation)}


def main() -> int:
    import torch
    import transformers
    from IPython.core.interactiveshell import InteractiveShell

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="GPT-2 only, max_steps=1")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    if not cuda:
        torch.set_num_threads(1)  # see the module docstring
    scale = CUDA_SCALE if cuda else 1
    max_steps = 1 if args.quick else 2
    workloads = dict(list(WORKLOADS.items())[:1]) if args.quick else WORKLOADS

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "vram_magic")
    workload.set_up(shell)
    transformers.logging.set_verbosity_error()  # the tiny configs' token-id warnings
    if cuda:  # the shared make_trainer trains on the CPU; the same one on the GPU
        assert "use_cpu=True" in workload.SETUP
        quiet(shell, workload.SETUP.replace("use_cpu=True", "use_cpu=False"))
    rows_of_data = ROWS * (4 * CUDA_SCALE if cuda else 1)
    quiet(shell, f"data = token_data({rows_of_data}, {LENGTH})")
    build(shell, "gpt2", 1, 1, 1)
    quiet(shell, "%%fit\ntrainer.train()  # imports and first calls, before anything is timed")

    rows, records, notes = [], [], []
    for name, (kind, cpu_room) in workloads.items():
        room = cpu_room * scale
        label = f"{name}, {room // 2**20} MiB"
        began = time.perf_counter()
        true_max = true_largest(shell, kind, room, max_steps, scale, rows_of_data)
        for key, (size, steps) in starts(true_max).items():
            effective = size * steps
            if size > rows_of_data:
                raise SystemExit(f"{label}: a batch of {size} is more than {rows_of_data} rows")
            divisor = true_divisor(shell, kind, room, max_steps, effective)
            cell = f"%%fit\ntrainer.train()  # {label}, {ROW_WORDS[key]}"
            first, seconds, kept, trained, rerun = fit_row(
                shell, kind, room, cell, size, steps, max_steps
            )
            chosen, auto_ooms, auto_seconds, auto_kept, auto_trained = auto_row(
                shell, kind, room, size, steps, max_steps
            )
            record = {
                "workload": label,
                "start": f"{ROW_WORDS[key]}: {size} x {steps}",
                "effective": effective,
                "true": true_max,
                "true_divisor": divisor,
                "fit_size": first.size,
                "fit_accumulation": first.accumulation,
                "fit_attempts": [[a.size, a.outcome] for a in first.attempts],
                "fit_ooms": sum(a.outcome != "fits" for a in first.attempts),
                "rerun_ooms": sum(a.outcome != "fits" for a in rerun.attempts),
                "rerun_from_cache": rerun.from_cache,
                "fit_seconds": seconds,
                "fit_kept": kept,
                "fit_steps": trained,
                "auto_size": chosen,
                "auto_ooms": auto_ooms,
                "auto_seconds": auto_seconds,
                "auto_kept": auto_kept,
                "auto_steps": auto_trained,
            }
            records.append(record)
            auto_ratio = (chosen or 0) / true_max, (chosen or 0) / divisor
            rows.append(
                [
                    label,
                    f"{key} {size}x{steps}",
                    str(true_max),
                    str(divisor),
                    f"{first.size}x{first.accumulation}",
                    number(first.size / true_max, 2),
                    number(first.size / divisor, 2),
                    str(record["fit_ooms"]),
                    str(record["rerun_ooms"]),
                    number(seconds, 1),
                    "yes" if kept else "NO",
                    f"{trained}/{max_steps}",
                    "-" if chosen is None else f"{chosen}x{steps}",
                    number(auto_ratio[0], 2),
                    number(auto_ratio[1], 2),
                    str(auto_ooms),
                    number(auto_seconds, 1),
                    "yes" if auto_kept else "no",
                    f"{auto_trained}/{max_steps}",
                ]
            )
            tried = ", ".join(
                f"{a.size} {'fits' if a.outcome == 'fits' else 'OOM'}" for a in first.attempts
            )
            notes.append(f"{label}, {ROW_WORDS[key]}: %%fit tried {tried}")
            if trained != max_steps:
                notes.append(
                    f"  note: its model took {trained} optimizer steps for max_steps {max_steps}:"
                    " each size that fitted trained it (a fit is not undone when the search grows)"
                )
            if auto_trained != max_steps:
                notes.append(
                    f"  note: auto_find_batch_size's model took {auto_trained} optimizer steps "
                    f"for max_steps {max_steps}: a failed attempt's steps are kept"
                )
        notes.append(f"{label}: {time.perf_counter() - began:.0f} s in all")

    where = "CPU budget"
    if cuda:
        where = f"{torch.cuda.get_device_name(0)}, rooms x{CUDA_SCALE}"
    print(
        f"%%fit over trainer.train() vs Trainer(auto_find_batch_size=True) · {where} · "
        f"max_steps {max_steps} · python {sys.version.split()[0]} · torch {torch.__version__} · "
        f"transformers {transformers.__version__}"
    )
    table = Table(
        [
            ("workload", -21),
            ("start", -10),
            ("true", 5),
            ("div", 4),
            ("%%fit", 7),
            ("/true", 5),
            ("/div", 5),
            ("OOMs", 4),
            ("rerun", 5),
            ("s", 5),
            ("kept", 4),
            ("steps", 5),
            ("auto", 7),
            ("/true", 5),
            ("/div", 5),
            ("OOMs", 4),
            ("s", 5),
            ("kept", 4),
            ("steps", 5),
        ]
    )
    for row in rows:
        table.print_row(row)
    for note in notes:
        print(note)

    def median(key: str, over: str = "true_divisor") -> float:
        return statistics.median((r[key] or 0) / r[over] for r in records)

    fit_time = statistics.median(r["fit_seconds"] for r in records)
    auto_time = statistics.median(r["auto_seconds"] for r in records)
    print(
        f"auto_find_batch_size: median chosen/true {median('auto_size', 'true'):.2f}, "
        f"chosen/true-divisor {median('auto_size'):.2f}, mean OOMs "
        f"{statistics.fmean(r['auto_ooms'] for r in records):.2f}, median {auto_time:.1f} s; "
        f"%%fit median chosen/true {median('fit_size', 'true'):.2f}, median {fit_time:.1f} s"
    )
    first_ooms = statistics.median(r["fit_ooms"] for r in records)
    rerun_ooms = sum(r["rerun_ooms"] for r in records)
    summary = {
        "median chosen/true divisor": (median("fit_size"), ">= 0.9", median("fit_size") >= 0.9),
        "median OOMs, first run (traced prediction)": (first_ooms, "== 0", first_ooms == 0),
        "OOMs on reruns": (rerun_ooms, "== 0", rerun_ooms == 0),
        "rows with the effective batch exact": (
            sum(r["fit_kept"] for r in records),
            f"== {len(records)}",
            all(r["fit_kept"] for r in records),
        ),
        "median seconds, %%fit / auto_find": (
            fit_time / auto_time,
            "<= 0.5",
            fit_time <= 0.5 * auto_time,
        ),
    }
    results, missed = summarise(summary)
    results += [{"measure": "row", **record} for record in records]
    return finish(where, results, missed, args.json)


if __name__ == "__main__":
    sys.exit(main())
