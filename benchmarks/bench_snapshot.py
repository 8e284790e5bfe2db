"""%vram snapshot + restore beside torch.save + torch.load, and beside dill's dump/load_module.

    python benchmarks/bench_snapshot.py                 # 2 GiB of tensors, 3 runs each
    python benchmarks/bench_snapshot.py --quick         # smoke run: 256 MB of tensors, 5 runs
    python benchmarks/bench_snapshot.py --json out.json

Part 1: the same float32 tensors (8 of them, SIZE in all) in a namespace go through
``snapshot`` + ``restore`` (verified, checksummed, each storage back on its device) and through
``torch.save`` + ``torch.load`` of a dict of them, alternating, in one folder, the page cache
flushed (``sync``) before each timed step. Target: median total time ratio <= 1.3, at any size
(--quick: 256 MB, where vram_magic's fixed costs weigh more; below that the noise of a busy
machine swamps the ratio: 64 MB, 3 runs, measured 0.93-1.52). At that size the first call's
one-off costs (~0.6 s) are a run's worth, so --quick takes 5 runs: with 3, they and one noisy run
set the median (measured 2.37).

Part 2: a typical notebook namespace (imports, a config dict, numpy arrays, CPU tensors, a model
class and instance, Adam after one step, a lambda, a function, a generator, an open file) is
saved by one process and loaded by a fresh one, by vram_magic and by ``dill.dump_module`` /
``dill.load_module``; also dill without the optimizer and the generator, which it cannot save.
Counted: variables back, and whether the user's open file still holds what was written to it.
Without dill (``pip install .[bench]``) its rows say so and are not run.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _timing import Table, finish, median, number, seconds

TARGET_RATIO = 1.3

NOTEBOOK = """
import json, os, sys
import numpy as np
import torch
from collections import OrderedDict
config = {"lr": 1e-3, "layers": [64, 64], "name": "bench"}
features = np.random.rand(256, 64)
labels = np.arange(256)
x = torch.randn(256, 64)
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(64, 64)
        self.b = torch.nn.Linear(64, 1)
    def forward(self, x):
        return self.b(torch.relu(self.a(x)))
model = Net()
opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
model(x).pow(2).mean().backward()
opt.step()
scale = lambda v: 2 * v
def predict(batch):
    return model(batch)
batches = (x[i : i + 32] for i in range(0, 256, 32))
log = open(LOG, "w")
log.write("written by the notebook\\n")
log.flush()
"""
USER_NAMES = (
    "[n for n in globals() if not n.startswith('_') and n not in "
    "{'LOG', 'STATE', 'WAY', 'vram_magic', 'dill', 'json', 'os', 'sys'}]"
)
SAVE = {
    "vram_magic": "import vram_magic\nvram_magic.snapshot()",
    "dill": "import dill\ndill.dump_module(STATE)",
    "dill, no opt or generator": "del opt, batches\nimport dill\ndill.dump_module(STATE)",
}
LOAD = {
    "vram_magic": "import vram_magic\nvram_magic.restore()",
    "dill": "import dill\ndill.load_module(STATE)",
}


def tensor_round_trip(size: int, repeat: int, folder: Path) -> tuple[list[float], list[float]]:
    """Seconds per run: (snapshot + restore, torch.save + torch.load)."""
    import torch

    from vram_magic.persistence.restore import restore
    from vram_magic.persistence.save import snapshot
    from vram_magic.persistence.store import Store

    store = Store(folder / "snapshots")
    namespace = {f"t{i}": torch.randn(size // 8 // 4) for i in range(8)}
    ours, theirs = [], []

    def ours_once() -> None:
        target: dict = {}
        os.sync()
        took = seconds(lambda: target.update(id=snapshot(None, namespace, store=store).id))
        os.sync()
        took += seconds(lambda: restore(target, target["id"], store=store))
        assert all(torch.equal(target[name], namespace[name]) for name in namespace)
        ours.append(took)

    def theirs_once() -> None:
        path, loaded = folder / "state.pt", {}
        os.sync()
        took = seconds(lambda: torch.save(namespace, path))
        os.sync()
        took += seconds(lambda: loaded.update(torch.load(path)))
        assert all(torch.equal(loaded[name], namespace[name]) for name in namespace)
        path.unlink()
        theirs.append(took)

    for run in range(repeat):
        for once in (ours_once, theirs_once) if run % 2 == 0 else (theirs_once, ours_once):
            once()
    return ours, theirs


def python(code: str, folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=folder,
        env={**os.environ, "VRAM_MAGIC_SNAPSHOT_DIR": str(folder / "snapshots")},
    )


def namespace_round_trip(way: str, folder: Path) -> dict:
    """Save in one process, load in a fresh one: variables back, seconds, the file intact."""
    if way.startswith("dill") and importlib.util.find_spec("dill") is None:
        return {"way": way, "had": None, "back": 0, "s": None, "problem": "dill not installed"}
    log = folder / f"{way}.log"
    setup = f"LOG = {str(log)!r}\nSTATE = {str(folder / 'state.pkl')!r}\nimport json, time\n"
    names = f"\nprint(json.dumps({USER_NAMES}), flush=True)\n"
    clock, took = "\n_t = time.perf_counter()\n", "\nprint(time.perf_counter() - _t, flush=True)"
    saved = python(setup + NOTEBOOK + names + clock + SAVE[way] + took, folder)
    lines = saved.stdout.splitlines()
    row = {"way": way, "had": len(json.loads(lines[0])) if lines else None, "back": 0, "s": None}
    if saved.returncode != 0:
        return {**row, "problem": (saved.stderr.strip().splitlines() or ["failed"])[-1][:70]}
    loaded = python(setup + clock + LOAD[way.split(",")[0]] + took + names, folder)
    if loaded.returncode != 0:
        return {**row, "problem": (loaded.stderr.strip().splitlines() or ["failed"])[-1][:70]}
    load_seconds, back = loaded.stdout.splitlines()[:2]
    return {
        **row,
        "back": len(json.loads(back)),
        "s": float(lines[1]) + float(load_seconds),
        "file intact": log.read_text() == "written by the notebook\n",
        "problem": "",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", help="tensor bytes: 2GiB (default), 512MB, 64M, ...")
    parser.add_argument("--repeat", type=int, help="runs of each (default 3)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 256 MB, 5 runs")
    parser.add_argument("--json", type=Path, default=None)
    options = parser.parse_args()
    import torch

    from vram_magic.actions.limit import parse_size

    size = parse_size(options.size or ("256MB" if options.quick else "2GiB"), None)
    repeat = options.repeat or (5 if options.quick else 3)

    folder = Path(tempfile.mkdtemp(prefix="bench_snapshot-"))
    try:
        ours, theirs = tensor_round_trip(size, repeat, folder)
        rows = [namespace_round_trip(way, folder) for way in SAVE]
    finally:
        shutil.rmtree(folder, ignore_errors=True)

    print(
        f"snapshot + restore vs torch.save + torch.load · {size / 2**30:.2f} GiB in 8 tensors · "
        f"{repeat} runs · python {sys.version.split()[0]} · torch {torch.__version__}"
    )
    table = Table([("", -28), ("median s", 9), ("min s", 7), ("max s", 7)])
    for label, runs in (("vram_magic snapshot+restore", ours), ("torch.save+torch.load", theirs)):
        table.print_row(
            [label, number(median(runs), 2), number(min(runs), 2), number(max(runs), 2)]
        )
    ratio = median(ours) / median(theirs)
    print(f"ratio: {ratio:.2f} (target <= {TARGET_RATIO})")
    print("\na notebook namespace through a fresh process")
    table = Table([("", -26), ("variables", 9), ("back", 5), ("s", 6), ("file", 6), ("", -40)])
    for row in rows:
        had = "-" if row["had"] is None else str(row["had"])
        intact = {True: "intact", False: "LOST", None: "-"}[row.get("file intact")]
        seconds_taken = number(row["s"], 2)
        table.print_row([row["way"], had, str(row["back"]), seconds_taken, intact, row["problem"]])
    missed = [] if ratio <= TARGET_RATIO else ["snapshot+restore / save+load"]
    results = [
        {"measure": "snapshot+restore s", "value": median(ours)},
        {"measure": "save+load s", "value": median(theirs)},
        {"measure": "ratio", "value": ratio, "target": TARGET_RATIO},
        *({"measure": f"namespace: {row['way']}", **row} for row in rows),
    ]
    return finish(f"{size} bytes of tensors", results, missed, options.json)


if __name__ == "__main__":
    sys.exit(main())
