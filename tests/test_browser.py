"""Browser tier: JupyterLab in Debian's Chromium, driven by Playwright, shows the live panel.

A real Jupyter server runs a notebook that loads vram_magic, opens ``%vram`` and then allocates
200 MB; the panel must render (no "Error displaying widget") and its numbers must follow. A
screenshot is saved under test-artifacts/ for a person to look at.
"""

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
TOKEN = "vram-magic-browser-test"
CELLS = [
    "%load_ext vram_magic\nimport torch",
    "%vram --interval 0.25",
    "import time\ntime.sleep(2)\nbig = torch.ones(50 * 2**20)  # 200 MB",
]

if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
    pytest.skip(
        "Debian's chromium is not installed (apt-get install chromium)", allow_module_level=True
    )
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.browser


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "metadata": {},
                "source": c,
                "outputs": [],
                "execution_count": None,
            }
            for c in CELLS
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    (root / "live.ipynb").write_text(json.dumps(notebook))
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        f"--port={port}",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False",
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"{base}/api/status?token={TOKEN}", timeout=2)
            break
        except OSError:
            time.sleep(0.5)
    else:
        server.kill()
        pytest.fail("the Jupyter server did not start")
    yield base
    server.terminate()
    server.wait(timeout=20)


def host_rss(page) -> int:
    return int(page.locator('[data-device="host"]').first.get_attribute("data-rss"))


def run_first_cells(page) -> None:
    """Run the first two cells; a kernel still connecting drops the request, so try again."""
    for _ in range(4):
        page.wait_for_selector("text=| Idle", timeout=60_000)
        page.locator(".jp-Cell").first.click()
        page.keyboard.press("Escape")
        for _ in CELLS[:2]:
            page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_selector(".vram-magic-live", timeout=15_000)
            return
        except playwright.Error:
            continue
    page.screenshot(path=str(ARTIFACTS / "live-panel-failure.png"), full_page=True)
    pytest.fail("the live panel did not appear; see test-artifacts/live-panel-failure.png")


def test_live_panel_renders_and_follows_an_allocation(lab):
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright.sync_playwright() as driver:
        browser = driver.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.goto(f"{lab}/lab/tree/live.ipynb?token={TOKEN}")
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        run_first_cells(page)
        before = host_rss(page)
        before = host_rss(page)
        page.keyboard.press("Shift+Enter")  # allocate 200 MB after a pause
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and host_rss(page) - before < 150 * 2**20:
            time.sleep(0.25)
        after = host_rss(page)
        page.screenshot(path=str(ARTIFACTS / "live-panel.png"), full_page=True)
        page.locator(".widget-vbox").first.screenshot(path=str(ARTIFACTS / "live-panel-only.png"))
        text = page.locator(".jp-Notebook").inner_text()
        browser.close()
    assert "Error displaying widget" not in text
    assert "host RAM" in text and re.search(r"every 0\.25 s", text)
    assert after - before >= 150 * 2**20, (before, after)


def test_chromium_is_debians():
    assert shutil.which("chromium") == CHROMIUM
