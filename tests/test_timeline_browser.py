"""Browser tier: the live panel's timeline, the per-cell chart and gauges that read cleanly, in
JupyterLab in Chromium; also the README's pictures.

The kernel's NVML answers from the H200 recording (tests/nvml_recordings/h200_recorded.json),
the server's from the same recording with the notebook's kernel as its process: the GPU
figures are that recording's, replayed through the real widgets; the tensors of the run live in
host RAM (no GPU here). Five cells run after ``%vram``, one allocating 256 MB and one running out
of memory under ``%vram limit``: the timeline must mark each with its number, show the rise and
the OOM; no gauge label may overlap its bar, in the panel, the report and the sidebar, light
and dark; every bar fills from the left. Screenshots go to test-artifacts/readme-*.png.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from fake_nvml import load_recording
from lab_server import (
    ARTIFACTS,
    NOTEBOOK7_IDLE,
    browser_page,
    fake_gpu_server,
    kernel_pids,
    run_first_cell,
    skip_without_chromium,
    write_notebook,
)

skip_without_chromium()
expect = pytest.importorskip("playwright.sync_api").expect
pytestmark = pytest.mark.browser

TESTS = Path(__file__).parent
SETUP = (
    f"import sys; sys.path.insert(0, {str(TESTS)!r})  # the recorded H200's NVML\n"
    "from fake_nvml import fake_session\n"
    "from vram_magic.readings import nvml\n"
    "nvml.set_default_session(fake_session('h200_recorded'))\n"
    "%load_ext vram_magic\n"
    "import time, torch"
)
LONG_NAMES = (  # the real gauges of two GPUs whose names are far longer than a column
    "import dataclasses\n"
    "from IPython.display import HTML\n"
    "from vram_magic.readings.report import read_report\n"
    "from vram_magic.render.panel import gauges_html\n"
    "two = nvml.NvmlSession(load_module=lambda: fake_session('two_gpus_other_processes').fake)\n"
    "nvml.set_default_session(two)\n"
    "report = read_report()\n"
    "names = ['NVIDIA A100-SXM4-40GB', 'NVIDIA A100-SXM4-80GB with a name longer than any']\n"
    "report = dataclasses.replace(report, devices=tuple(dataclasses.replace(d, name=n) "
    "for d, n in zip(report.devices, names)))\n"
    "nvml.set_default_session(fake_session('h200_recorded'))\n"
    "HTML(f'<div class=\"long-names\">{gauges_html(report, 0.5)}</div>')"
)
CELLS = [
    SETUP,  # [1]
    "%vram --interval 0.5",  # [2]
    "step = 0",  # [3]
    "time.sleep(1.5)",  # [4]
    "big = torch.ones(64 * 2**20)  # 256 MB",  # [5]
    "time.sleep(1.5)",  # [6]
    "%vram limit 400MB",  # [7]
    "huge = torch.ones(64 * 2**20)  # over the limit",  # [8]
    "%vram limit off",  # [9]
    "%vram history",  # [10]
    "%vram who",  # [11]
    "%vram report",  # [12]
    LONG_NAMES,  # [13]
]
OOM_CELL, ALLOCATING_CELL = 8, 5


@pytest.fixture(scope="module")
def lab(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("timeline")
    write_notebook(root / "session.ipynb", CELLS)
    args = ["--LabApp.expose_app_in_browser=True"]  # to switch themes
    private = tmp_path_factory.mktemp("timeline-private")
    with fake_gpu_server(root, private, args, recording="h200_recorded") as (
        server,
        gpus,
    ):
        yield server, gpus


def run_cells(page: Any) -> None:
    """Run every cell in turn, each after the one before finished (an error would abort the
    cells queued behind it)."""
    run_first_cell(page)  # again if the kernel was still connecting
    for number in range(2, len(CELLS) + 1):
        page.keyboard.press("Shift+Enter")
        prompt = page.locator(".jp-InputPrompt", has_text=f"[{number}]")
        expect(prompt).to_have_count(1, timeout=60_000)


def put_kernel_on_the_h200(server: Any, gpus: Path) -> None:
    """The server's NVML: the H200 recording, its process being the notebook's kernel."""
    (pid,) = kernel_pids(server).values()
    recording = load_recording("h200_recorded")
    recording["devices"][0]["compute_processes"][0]["pid"] = pid
    gpus.write_text(json.dumps(recording))


def boxes(locator: Any) -> list[dict[str, float]]:
    return [box for box in locator.evaluate_all(BOXES) if box["width"] and box["height"]]


BOXES = (
    "nodes => nodes.map(n => { const r = n.getBoundingClientRect(); "
    "return {x: r.x, y: r.y, width: r.width, height: r.height}; })"
)


def overlap(a: dict[str, float], b: dict[str, float]) -> bool:
    return (
        a["x"] < b["x"] + b["width"] - 0.5
        and b["x"] < a["x"] + a["width"] - 0.5
        and a["y"] < b["y"] + b["height"] - 0.5
        and b["y"] < a["y"] + a["height"] - 0.5
    )


def assert_clean_gauges(scope: Any, labels: str, bars: str, parts: str) -> int:
    """No label box meets a bar box, and each bar's first part starts at its left edge. The
    number of bars checked."""
    bar_boxes = boxes(scope.locator(bars))
    label_boxes = boxes(scope.locator(labels))
    assert bar_boxes and label_boxes, (labels, bars)
    clashes = [(a, b) for a in label_boxes for b in bar_boxes if overlap(a, b)]
    assert not clashes, clashes
    starts = scope.locator(bars).evaluate_all(
        f"""bars => bars.map(bar => {{
            const first = [...bar.querySelectorAll({parts!r})].find(
                p => p.getBoundingClientRect().width > 0);
            return first ? first.getBoundingClientRect().left - bar.getBoundingClientRect().left
                         : null; }})"""
    )
    filled = [start for start in starts if start is not None]
    assert filled and all(start < 2.5 for start in filled), starts
    return len(bar_boxes)


def output_of(page: Any, number: int) -> Any:
    cell = page.locator(".jp-CodeCell").filter(
        has=page.locator(".jp-InputPrompt", has_text=f"[{number}]")
    )
    return cell.locator(".jp-OutputArea")


def marks(page: Any, chart: str) -> dict[int, dict[str, str]]:
    found = page.locator(
        f'.vram-magic-timeline-chart[data-chart="{chart}"] .vram-magic-cell-mark'
    ).evaluate_all(
        "gs => gs.map(g => ({cell: g.dataset.cell, kind: g.dataset.kind, "
        "title: g.querySelector('title').textContent}))"
    )
    return {int(m["cell"]): m for m in found if m["cell"]}


def top_of_area(page: Any, chart: str) -> tuple[float, float]:
    """The host area's top edge at its first and last sample (SVG y: smaller is higher)."""
    points = page.locator(
        f'.vram-magic-timeline-chart[data-chart="{chart}"] polygon.area'
    ).first.get_attribute("points")
    ys = [float(pair.split(",")[1]) for pair in points.split()]
    upper = ys[: len(ys) // 2]
    return upper[0], upper[-1]


def test_timeline_history_and_gauges(lab):  # type: ignore[no-untyped-def]
    server, gpus = lab
    ARTIFACTS.mkdir(exist_ok=True)
    with browser_page(server, "lab/tree/session.ipynb", "timeline-failure") as page:
        page.set_viewport_size({"width": 1500, "height": 1000})
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        run_cells(page)
        put_kernel_on_the_h200(server, gpus)
        page.wait_for_timeout(1500)  # a few more samples after the last cell

        panel = page.locator(".widget-vbox").filter(has=page.locator(".vram-magic-timeline"))
        expect(panel.locator(".vram-magic-timeline-chart")).to_have_count(2)  # H200, host RAM
        host = marks(page, "host")
        assert set(range(3, OOM_CELL + 2)) <= set(host), host  # five cells and more, numbered
        assert host[OOM_CELL]["kind"] == "oom" and "out of memory" in host[OOM_CELL]["title"]
        assert page.locator('.vram-magic-timeline-chart[data-chart="host"] .label').filter(
            has_text=f"{OOM_CELL} OOM"
        ).count() in (0, 1)  # its label, where there was room for it
        rise = re.search(r"\(\+(\d+(?:\.\d+)?) MiB\)", host[ALLOCATING_CELL]["title"])
        assert rise and float(rise.group(1)) >= 200, host[ALLOCATING_CELL]["title"]
        first, last = top_of_area(page, "host")
        assert first - last > 5, (first, last)  # the area rose on screen
        assert "OutOfMemoryError" not in host[3]["title"]

        # the gauges: the panel's (H200), two GPUs with long names, the report's, the sidebar's
        assert_clean_gauges(
            panel,
            ".vram-magic-gauge-label, .vram-magic-gauge-figures",
            ".vram-magic-usage-bar",
            ".vram-magic-usage-part",
        )
        long_names = output_of(page, 13)
        assert (
            assert_clean_gauges(
                long_names,
                ".vram-magic-gauge-label, .vram-magic-gauge-figures",
                ".vram-magic-usage-bar",
                ".vram-magic-usage-part",
            )
            == 3
        )
        report = output_of(page, 12)
        assert_clean_gauges(
            report,
            "td:not(:has(.vram-magic-usage-bar)), th",
            ".vram-magic-usage-bar",
            ".vram-magic-usage-part",
        )

        history = output_of(page, 10)
        chart = history.locator("svg.vram-magic-history-chart")
        expect(chart).to_have_count(1)
        numbers = chart.locator(".vram-magic-history-cell").evaluate_all(
            "gs => gs.map(g => g.dataset.cell)"
        )
        assert [str(n) for n in range(3, 10)] == [n for n in numbers if 3 <= int(n) <= 9]
        assert chart.locator(".vram-magic-history-cell rect.after").count() == len(numbers)
        assert chart.locator("line.peak-tick").count() >= 1
        header = history.locator("th").all_inner_texts()
        assert len(header) <= 7, header

        panel.screenshot(path=str(ARTIFACTS / "readme-panel.png"))
        history.screenshot(path=str(ARTIFACTS / "readme-history.png"))
        output_of(page, 11).screenshot(path=str(ARTIFACTS / "readme-who.png"))
        report.screenshot(path=str(ARTIFACTS / "readme-report.png"))
        long_names.screenshot(path=str(ARTIFACTS / "long-names.png"))

        page.locator('.jp-SideBar li[data-id="vram-magic-sidebar"]').click()
        sidebar = page.locator("#vram-magic-sidebar")
        expect(sidebar.locator(".vram-magic-kernel-bytes").first).to_have_text("1.5 GiB")
        expect(sidebar.locator(".vram-magic-sparkline")).to_have_count(1)
        assert_clean_gauges(
            sidebar,
            ".vram-magic-gauge-name, .vram-magic-gauge-total, .vram-magic-legend-entry",
            ".vram-magic-bar",
            ".vram-magic-segment",
        )
        expect(page.locator(".vram-magic-status")).to_have_text(re.compile(r"VRAM 1\.5 / 140\.4"))
        sidebar.screenshot(path=str(ARTIFACTS / "readme-sidebar.png"))

        page.evaluate(
            "window.jupyterapp.commands.execute('apputils:change-theme', "
            "{theme: 'JupyterLab Dark'})"
        )
        page.wait_for_selector("body[data-jp-theme-light='false']", state="attached")
        # the new theme's style sheets lay the page out again: wait for the gauges to be drawn
        expect(panel.locator(".vram-magic-usage-bar").first).to_be_visible(timeout=30_000)
        expect(panel.locator(".vram-magic-gauge-label").first).to_be_visible(timeout=30_000)
        page.wait_for_timeout(1000)
        assert_clean_gauges(
            panel,
            ".vram-magic-gauge-label, .vram-magic-gauge-figures",
            ".vram-magic-usage-bar",
            ".vram-magic-usage-part",
        )
        colour = page.locator(".vram-magic-timeline .axis").first.evaluate(
            "n => getComputedStyle(n).fill"
        )
        assert colour != "rgb(0, 0, 0)", colour  # the scale follows the theme's text colour
        panel.screenshot(path=str(ARTIFACTS / "readme-panel-dark.png"))
        sidebar.screenshot(path=str(ARTIFACTS / "readme-sidebar-dark.png"))
        page.evaluate(
            "window.jupyterapp.commands.execute('apputils:change-theme', "
            "{theme: 'JupyterLab Light'})"
        )
        page.wait_for_selector("body[data-jp-theme-light='true']", state="attached")

        # Restart & restore, in short: how many came back, and where the time went
        row = sidebar.locator(".vram-magic-kernel").first
        row.locator('[data-action="restart"]').click()
        headline = row.locator(".vram-magic-result-headline")
        expect(headline).to_have_text(
            re.compile(r"^Restarted: \d+ of \d+ variables back$"), timeout=120_000
        )
        expect(row.locator(".vram-magic-result-text")).to_contain_text("imports")
        sidebar.screenshot(path=str(ARTIFACTS / "readme-sidebar-restored.png"))


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("timeline-notebook7")
    write_notebook(root / "session.ipynb", CELLS[:6])
    private = tmp_path_factory.mktemp("timeline-notebook7-private")
    with fake_gpu_server(root, private, app="notebook", recording="h200_recorded") as (server, _):
        yield server


def test_the_timeline_in_notebook7(notebook7):  # type: ignore[no-untyped-def]
    """The same widget in Notebook 7: the anywidget front end loads there too."""
    with browser_page(notebook7, "notebooks/session.ipynb", "timeline-notebook7-failure") as page:
        run_first_cell(page, NOTEBOOK7_IDLE)
        for number in range(2, 7):
            page.keyboard.press("Shift+Enter")
            expect(page.locator(".jp-InputPrompt", has_text=f"[{number}]")).to_have_count(
                1, timeout=60_000
            )
        page.wait_for_timeout(1500)
        expect(page.locator(".vram-magic-timeline-chart")).to_have_count(2)
        host = marks(page, "host")
        assert {3, 4, 5, 6} <= set(host), host
        rise = re.search(r"\(\+(\d+(?:\.\d+)?) MiB\)", host[ALLOCATING_CELL]["title"])
        assert rise and float(rise.group(1)) >= 200
        page.locator(".widget-vbox").first.screenshot(
            path=str(ARTIFACTS / "notebook7-timeline.png")
        )
