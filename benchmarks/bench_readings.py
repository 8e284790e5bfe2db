"""Readings benchmark: import time, one full reading, and ``%vram report``; exits 1 on a miss.

    python benchmarks/bench_readings.py            # fake NVML with 8 recorded GPUs (CPU machine)
    python benchmarks/bench_readings.py --real     # the real NVML of this machine
    python benchmarks/bench_readings.py --quick    # smoke run: 5 imports, 50 readings
    python benchmarks/bench_readings.py --json out.json

Each figure is a median of repeated runs, printed beside a baseline measured in the same run.
The targets are per import and per reading, so --quick keeps them (medians of fewer runs).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

TARGET_IMPORT_MS = 50.0
TARGET_READING_MS = 5.0


def import_ms(module: str, runs: int) -> float:
    """Median wall time of ``import module`` in a fresh interpreter, in ms."""
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    samples = [
        float(
            subprocess.run(
                [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
            ).stdout
        )
        * 1000
        for _ in range(runs)
    ]
    return statistics.median(samples)


def median_ms(function: Callable[[], object], runs: int) -> float:
    function()  # warm caches: NVML start, device inventory, psutil
    samples = []
    for _ in range(runs):
        start = time.perf_counter()
        function()
        samples.append((time.perf_counter() - start) * 1000)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--real", action="store_true", help="use this machine's NVML")
    parser.add_argument("--runs", type=int, help="readings per row (default 200)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 5 imports, 50 readings")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    runs = args.runs or (50 if args.quick else 200)
    imports = 5 if args.quick else 15

    from IPython.core.interactiveshell import InteractiveShell

    from vram_magic.readings.nvml import NvmlSession, set_default_session
    from vram_magic.readings.report import read_report
    from vram_magic.render.html import render_html
    from vram_magic.render.text import render_text

    if args.real:
        session = NvmlSession()
        setup = "real NVML"
    else:
        from fake_nvml import fake_session

        session = fake_session("eight_gpus")
        setup = "fake NVML, 8 recorded GPUs"
    set_default_session(session)
    devices = len(read_report(session).devices)
    nvml = session.module()

    def raw_nvml_calls() -> None:
        """The floor: only the NVML calls a reading makes, nothing of ours."""
        if nvml is None:
            return
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            nvml.nvmlDeviceGetMemoryInfo(handle)
            nvml.nvmlDeviceGetComputeRunningProcesses(handle)

    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "vram_magic")

    def magic_report() -> None:
        view = shell.run_line_magic("vram", "report")
        render_text(view.data)
        render_html(view.data)

    rows = [
        (
            "import vram_magic",
            import_ms("vram_magic", imports),
            TARGET_IMPORT_MS,
            "import pynvml",
            import_ms("pynvml", imports),
        ),
        (
            f"one reading ({devices} GPUs)",
            median_ms(lambda: read_report(session), runs),
            TARGET_READING_MS,
            "raw NVML calls",
            median_ms(raw_nvml_calls, runs),
        ),
        (
            "%vram report (read+text+html)",
            median_ms(magic_report, runs // 4),
            None,
            "one reading",
            median_ms(lambda: read_report(session), runs),
        ),
    ]

    print(
        f"vram_magic readings benchmark · {setup} · medians of {imports} imports, {runs} readings"
        f" · python {sys.version.split()[0]}"
    )
    print(f"{'measure':32} {'median ms':>10} {'target':>8}  {'baseline':22} {'ms':>8} {'ratio':>6}")
    missed = []
    results = []
    for name, ours, target, base_name, base in rows:
        ok = target is None or ours <= target
        if not ok:
            missed.append(name)
        ratio = ours / base if base else float("nan")
        target_text = f"<= {target:g}" if target else "-"
        print(
            f"{name:32} {ours:10.3f} {target_text:>8}  {base_name:22} {base:8.3f} {ratio:6.1f}"
            f"{'' if ok else '  MISSED'}"
        )
        results.append(
            {
                "measure": name,
                "median_ms": ours,
                "target_ms": target,
                "baseline": base_name,
                "baseline_ms": base,
            }
        )
    if args.json:
        args.json.write_text(json.dumps({"setup": setup, "results": results}, indent=1))
    if missed:
        print("missed targets: " + ", ".join(missed))
        return 1
    print("all targets met")
    return 0


if __name__ == "__main__":
    sys.exit(main())
