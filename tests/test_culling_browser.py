"""Browser tier: an idle notebook's kernel is shut down by the server's culling (3 s here), and
reopening the notebook in JupyterLab shows a notification whose one click restores its
variables. A real server and kernels, Debian's Chromium; the fake NVML puts the kernel on a GPU.
"""

from __future__ import annotations

import json
import time

import pytest
from lab_server import (
    browser_page,
    fake_gpu_server,
    kernel_pids,
    run_first_cell,
    skip_without_chromium,
)

skip_without_chromium()
playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect
pytestmark = pytest.mark.browser

GIB = 2**30
CULLING = [
    "--VramMagic.cull_idle_seconds=3",
    f"--VramMagic.cull_min_bytes={GIB}",
    "--VramMagic.metrics_interval=0.3",
]


def train_kernel(server) -> str | None:  # type: ignore[no-untyped-def]
    sessions = {s["path"]: s["kernel"]["id"] for s in server.api("api/sessions")}
    return sessions.get("train.ipynb")


def test_reopening_a_culled_notebook_offers_its_variables_back(tmp_path, monkeypatch):  # type: ignore[no-untyped-def]
    monkeypatch.setenv("VRAM_MAGIC_SNAPSHOT_DIR", str(tmp_path / "snapshots"))
    root, private = tmp_path / "root", tmp_path / "private"
    root.mkdir()
    with fake_gpu_server(root, private, CULLING) as (server, gpus):
        with browser_page(server, "lab/tree/train.ipynb", "culling-failure") as page:
            page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
            run_first_cell(page)  # loads vram_magic, weights = 256 MB
            culled = train_kernel(server)
            recording = json.loads(gpus.read_text())
            recording["devices"][0]["compute_processes"][0]["pid"] = kernel_pids(server)[culled]
            gpus.write_text(json.dumps(recording))  # 3.3 GiB on GPU 0
        deadline = time.monotonic() + 60
        while culled in kernel_pids(server):
            assert time.monotonic() < deadline, "the idle kernel was not culled"
            time.sleep(0.3)

        with browser_page(server, "lab/tree/train.ipynb", "culling-reopen-failure") as page:
            note = page.locator(".jp-toast-message", has_text="wait in snapshot")
            expect(note).to_contain_text(
                "train.ipynb: its idle kernel was shut down", timeout=60_000
            )
            run_new_cell(page, "%load_ext vram_magic")  # the new kernel says so too
            expect(page.locator(".jp-OutputArea-output").last).to_contain_text(
                "this notebook's variables wait in snapshot", timeout=60_000
            )
            page.get_by_role("button", name="Restore").click()
            done = page.locator(".jp-toast-message", has_text="variables restored")
            expect(done).to_be_visible(timeout=60_000)
            assert train_kernel(server) not in (None, culled)
            run_new_cell(page, "print(int(weights.sum()))")
            expect(page.locator(".jp-OutputArea-output").last).to_have_text(str(64 * 2**20))


def run_new_cell(page, code: str) -> None:  # type: ignore[no-untyped-def]
    """Add a cell below the last one, type ``code`` into it and run it."""
    page.locator(".jp-Notebook .jp-Cell").last.click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")
    page.keyboard.press("Enter")
    page.keyboard.insert_text(code)
    page.keyboard.press("Shift+Enter")
