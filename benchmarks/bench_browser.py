"""Browser-tab benchmark: the CPU the JupyterLab tab spends with the live panel open.

    python benchmarks/bench_browser.py              # a minute with the panel, a minute without
    python benchmarks/bench_browser.py --seconds 30
    python benchmarks/bench_browser.py --quick      # smoke run: 15 s each

A real JupyterLab with the vram_magic server extension (its sidebar polls too) serves a notebook
whose kernel opens ``%vram`` at 2 Hz, its NVML the recorded H200 (tests/nvml_recordings); the
page is Debian's Chromium under Playwright. Chromium's own performance metrics (CDP
``Performance.getMetrics``: ``TaskDuration``, the seconds its renderer's main thread was busy)
are read before and after each run: first with the panel open (gauges and the timeline redrawn
every sample), then in the same tab after ``%vram --close``. Target: at most 5% of one core with
the panel open. A --quick run is short and shares the machine with whatever else runs: it checks
what the panel adds (open minus closed) against the same 5%, a gross regression only, and says so.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from _timing import ROOT, Table, finish, number

sys.path.insert(0, str(ROOT / "tests"))
from lab_server import CHROMIUM, TOKEN, fake_gpu_server, launch_chromium, write_notebook

TARGET_PERCENT = 5.0
SETUP = (
    f"import sys; sys.path.insert(0, {str(ROOT / 'tests')!r})\n"
    "from fake_nvml import fake_session\n"
    "from vram_magic.readings import nvml\n"
    "nvml.set_default_session(fake_session('h200_recorded'))\n"
    "%load_ext vram_magic"
)
CELLS = [SETUP, "%vram --interval 0.5", "%vram --close"]


def busy_seconds(cdp) -> float:  # type: ignore[no-untyped-def]
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    return next(m["value"] for m in metrics if m["name"] == "TaskDuration")


def tab_percent(page, cdp, duration: float) -> float:  # type: ignore[no-untyped-def]
    """The renderer main thread's busy share of one core over ``duration`` seconds."""
    page.wait_for_timeout(2000)  # what the last action started settles first
    busy, started = busy_seconds(cdp), time.monotonic()
    page.wait_for_timeout(duration * 1000)
    return 100 * (busy_seconds(cdp) - busy) / (time.monotonic() - started)


def run_cell(page, number: int) -> None:  # type: ignore[no-untyped-def]
    page.keyboard.press("Shift+Enter")
    page.locator(".jp-InputPrompt", has_text=f"[{number}]").wait_for(timeout=60_000)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, help="length of each run (default 60)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 15 s each")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    duration = args.seconds or (15.0 if args.quick else 60.0)
    setup = f"JupyterLab in Chromium, fake NVML (recorded H200), {duration:g} s per run"
    if not Path(CHROMIUM).exists():
        print(
            f"vram_magic browser benchmark: skipped, Debian's chromium is not installed ({setup})"
        )
        return 0
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as folder:
        root, private = Path(folder) / "root", Path(folder) / "private"
        root.mkdir()
        private.mkdir()
        write_notebook(root / "panel.ipynb", CELLS)
        with (
            fake_gpu_server(root, private, recording="h200_recorded") as (server, _),
            sync_playwright() as driver,
        ):
            # the sidebar at its default interval, not the tests' 0.5 s
            (private / "settings" / "vram-magic" / "plugin.jupyterlab-settings").write_text(
                '{"refreshInterval": 1}'
            )
            browser = launch_chromium(driver)
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(f"{server.url}/lab/tree/panel.ipynb?token={TOKEN}")
            page.wait_for_selector("text=| Idle", timeout=60_000)
            page.locator(".jp-Cell").first.click()
            page.keyboard.press("Escape")
            run_cell(page, 1)
            run_cell(page, 2)
            page.wait_for_selector(".vram-magic-timeline-chart", timeout=60_000)
            cdp = page.context.new_cdp_session(page)
            cdp.send("Performance.enable")
            with_panel = tab_percent(page, cdp, duration)
            run_cell(page, 3)
            without = tab_percent(page, cdp, duration)
            browser.close()

    print(f"vram_magic browser benchmark · {setup} · python {sys.version.split()[0]}")
    table = Table(
        [
            ("measure", -34),
            ("ours", 8),
            ("target", 8),
            ("baseline", -28),
            ("value", 8),
            ("unit", -14),
        ]
    )
    judged = with_panel - without if args.quick else with_panel
    ok = judged <= TARGET_PERCENT
    name = "tab with the panel open at 2 Hz"
    table.print_row(
        [
            name,
            number(with_panel),
            f"<= {TARGET_PERCENT:g}",
            "the same tab, panel closed",
            number(without),
            "% of one core"
            + ("  (quick: the target checks open minus closed)" if args.quick else "")
            + ("" if ok else "  MISSED"),
        ]
    )
    results = [
        {
            "measure": name,
            "ours": with_panel,
            "target": TARGET_PERCENT,
            "baseline": "the same tab, panel closed",
            "baseline_value": without,
            "unit": "% of one core",
        }
    ]
    return finish(setup, results, [] if ok else [name], args.json)


if __name__ == "__main__":
    sys.exit(main())
