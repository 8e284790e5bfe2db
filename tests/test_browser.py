"""Browser tier: JupyterLab in Debian's Chromium, driven by Playwright, shows the live panel.

A real Jupyter server runs a notebook that loads vram_magic, opens ``%vram`` and then allocates
200 MB; the panel must render (no "Error displaying widget") and its numbers must follow. A
screenshot is saved under test-artifacts/ for a person to look at.
"""

import re
import shutil
import time

import pytest
from lab_server import (
    ARTIFACTS,
    CHROMIUM,
    TOKEN,
    lab_server,
    launch_chromium,
    skip_without_chromium,
    write_notebook,
)

CELLS = [
    "%load_ext vram_magic\nimport torch",
    "%vram --interval 0.25",
    "import time\ntime.sleep(2)\nbig = torch.ones(50 * 2**20)  # 200 MB",
]

skip_without_chromium()
playwright = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    root = tmp_path_factory.mktemp("lab")
    write_notebook(root / "live.ipynb", CELLS)
    with lab_server(root) as server:
        yield server.url


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
        browser = launch_chromium(driver)
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
