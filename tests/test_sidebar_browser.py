"""Browser tier: the VRAM sidebar and status-bar item of the JupyterLab extension, in Chromium.

A real Jupyter server with the vram_magic server extension runs two notebook kernels; its NVML
is the fake of tests/jupyter_config_fake_nvml.py, answering from a two-GPU recording into which
the test writes the kernels' PIDs. The sidebar must show both GPUs and both kernels, the
current notebook's highlighted, free memory on request, and say clearly when there is no GPU
or no server extension. Screenshots (light and dark theme) go to test-artifacts/sidebar*.png.
"""

from __future__ import annotations

import re
import time
from contextlib import AbstractContextManager
from typing import Any

import pytest
from lab_server import (
    LabServer,
    browser_page,
    fake_gpu_server,
    free_from_the_panel,
    kernel_list_shown,
    kernel_pids,
    put_kernels_on_gpus,
    run_first_cell,
    shot,
    skip_without_chromium,
)

skip_without_chromium()
playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect
pytestmark = pytest.mark.browser

NO_GPU = {"devices": [], "reason": "no NVIDIA GPU visible: NVML Shared Library Not Found"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("lab")
    # to switch themes for the dark screenshot
    args = ["--LabApp.expose_app_in_browser=True"]
    with fake_gpu_server(root, tmp_path_factory.mktemp("lab-private"), args) as (server, gpus):
        yield server, gpus


def run_new_cell(page, code: str) -> Any:  # type: ignore[no-untyped-def]
    """Add a cell at the end, type ``code`` into it and run it; returns that cell."""
    cells = page.locator(".jp-Notebook .jp-Cell")
    count = cells.count()
    cells.last.locator(".jp-InputPrompt").click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # a new cell below, in command mode
    expect(cells).to_have_count(count + 1)
    page.keyboard.press("Enter")
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")
    return cells.nth(count)


def train_notebook(server: LabServer, failure: str) -> AbstractContextManager[Any]:
    """JupyterLab on train.ipynb; a screenshot ``failure``.png when the block fails."""
    return browser_page(server, "lab/tree/train.ipynb", failure)


def test_sidebar_shows_gpus_and_kernels_and_frees(lab):  # type: ignore[no-untyped-def]
    server, gpus = lab
    with train_notebook(server, "sidebar-failure") as page:
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        run_first_cell(page)
        current, other = put_kernels_on_gpus(server, gpus)

        page.locator('.jp-SideBar li[data-id="vram-magic-sidebar"]').click()
        sidebar = page.locator("#vram-magic-sidebar")
        row = kernel_list_shown(sidebar, current, other)
        gauge0 = sidebar.locator('.vram-magic-gauge[data-index="0"]')
        expect(gauge0.locator('[data-part="current"] .vram-magic-legend-value')).to_have_text(
            "3.3 GiB"
        )
        gauge1 = sidebar.locator('.vram-magic-gauge[data-index="1"]')
        expect(gauge1.locator('[data-part="kernels"] .vram-magic-legend-value')).to_have_text(
            "512.0 MiB"
        )
        expect(row.locator('[data-action="restart"]')).to_be_enabled()
        expect(page.locator(".vram-magic-status")).to_have_text("VRAM 3.3 / 40.0 GiB")
        shot(page, "sidebar")

        free_from_the_panel(row)
        shot(page, "sidebar-freed")

        page.evaluate(
            "window.jupyterapp.commands.execute("
            "'apputils:change-theme', {theme: 'JupyterLab Dark'})"
        )
        page.wait_for_selector('body[data-jp-theme-name="JupyterLab Dark"]', state="attached")
        page.wait_for_timeout(500)  # the theme's CSS applies after the attribute
        shot(page, "sidebar-dark")

        # requests carry a cache-busting query, hence patterns rather than globs
        page.route(re.compile(r"/vram/devices\?"), lambda route: route.fulfill(json=NO_GPU))
        expect(sidebar.locator(".vram-magic-gauges")).to_contain_text("no NVIDIA GPU visible")
        expect(page.locator(".vram-magic-status")).to_have_text("VRAM \N{EN DASH}")
        shot(page, "sidebar-no-gpu")

        page.route(
            re.compile(r"/vram/kernels\?"),
            lambda route: route.fulfill(status=500, json={"message": "NVML went away"}),
        )
        banner = sidebar.locator(".vram-magic-banner")
        expect(banner).to_contain_text("Could not read GPU memory")
        expect(banner).to_contain_text("NVML went away")
        expect(sidebar.locator(".vram-magic-kernel")).to_have_count(2)  # kept, greyed out
        shot(page, "sidebar-failed")

        page.unroute_all()
        page.route(re.compile(r"/vram/"), lambda route: route.fulfill(status=404, body="Nope"))
        # after failures the poll backs off, so the next reading may take a while
        expect(banner).to_contain_text("server extension vram_magic is not enabled", timeout=30_000)
        expect(sidebar.locator(".vram-magic-kernel")).to_have_count(0)
        shot(page, "sidebar-missing")


def test_restart_and_restore_keeps_the_variables(lab):  # type: ignore[no-untyped-def]
    """The sidebar's button, then ``%vram restart`` typed in a cell: each time a new kernel
    process (the execution count starts again at 1) with the variable defined before."""
    server, _ = lab
    with train_notebook(server, "sidebar-restart-failure") as page:
        page.wait_for_selector("text=| Idle", timeout=60_000)
        kernel = {s["path"]: s["kernel"]["id"] for s in server.api("api/sessions")}
        before = kernel_pids(server)[kernel["train.ipynb"]]
        cell = run_new_cell(page, "answer = 42")
        expect(cell.locator(".jp-InputPrompt")).to_have_text(re.compile(r"\[\d+\]"))

        page.locator('.jp-SideBar li[data-id="vram-magic-sidebar"]').click()
        row = page.locator(f'#vram-magic-sidebar [data-kernel-id="{kernel["train.ipynb"]}"]')
        row.locator('[data-action="restart"]').click()
        result = row.locator(".vram-magic-result-text")
        expect(result).to_contain_text("1 variable restored", timeout=90_000)
        expect(result).to_contain_text("answer")
        # in short: all came back, and where the time went; the tables behind a click
        expect(result.locator(".vram-magic-result-headline")).to_have_text(
            re.compile(r"^Restarted: (\d+) of \1 variables? back$")
        )
        expect(result).to_contain_text(
            re.compile(
                r"s in all: snapshot [\d.]+ s; kernel restart [\d.]+ s; restore [\d.]+ s: imports"
            )
        )
        tables = result.locator(".vram-magic-result-tables")
        expect(tables).to_be_hidden()
        result.locator("summary").click()
        expect(tables).to_be_visible()
        shot(page, "sidebar-restored")
        assert kernel_pids(server)[kernel["train.ipynb"]] != before, "a new kernel process"
        cell = run_new_cell(page, "print(answer + 1)")
        expect(cell.locator(".jp-OutputArea")).to_contain_text("43", timeout=30_000)
        expect(cell.locator(".jp-InputPrompt")).to_have_text("[1]:")

        before = kernel_pids(server)[kernel["train.ipynb"]]
        cell = run_new_cell(page, "%vram restart")
        expect(cell.locator(".jp-OutputArea")).to_contain_text("1 variable saved")
        deadline = time.monotonic() + 60
        while kernel_pids(server).get(kernel["train.ipynb"]) in (before, None):
            assert time.monotonic() < deadline, "the kernel was not restarted"
            page.wait_for_timeout(200)
        page.wait_for_selector("text=| Idle", timeout=60_000)
        shot(page, "sidebar-magic-restart")
        cell = run_new_cell(page, "print(answer * 2)")
        expect(cell.locator(".jp-OutputArea")).to_contain_text("84", timeout=30_000)
        expect(cell.locator(".jp-InputPrompt")).to_have_text("[1]:")
