"""Browser tier: the VRAM panel in Notebook 7 (the ``notebook`` package), in Chromium.

Notebook 7 is built from JupyterLab's parts but has no ILabShell and no status bar: the panel
is a right side panel, opened from View > Right Sidebar > Show VRAM, and the usage of the
notebook's kernel sits in the menu bar's row (a click opens the panel). The server and its fake
two-GPU NVML are those of tests/test_sidebar_browser.py (``fake_gpu_server``). Screenshots go
to test-artifacts/notebook7*.png.
"""

from __future__ import annotations

import pytest
from lab_server import (
    NOTEBOOK7_IDLE,
    browser_page,
    fake_gpu_server,
    free_from_the_panel,
    kernel_list_shown,
    put_kernels_on_gpus,
    run_first_cell,
    shot,
    skip_without_chromium,
)

skip_without_chromium()
pytest.importorskip("notebook", minversion="7")
playwright = pytest.importorskip("playwright.sync_api")
expect = playwright.expect
pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def notebook7(tmp_path_factory):  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("notebook7")
    private = tmp_path_factory.mktemp("notebook7-private")
    with fake_gpu_server(root, private, app="notebook") as (server, gpus):
        yield server, gpus


def test_panel_shows_gpus_and_the_notebooks_kernel_and_frees(notebook7):  # type: ignore[no-untyped-def]
    server, gpus = notebook7
    with browser_page(server, "notebooks/train.ipynb", "notebook7-failure") as page:
        page.wait_for_selector(".jp-Notebook .jp-Cell", timeout=60_000)
        run_first_cell(page, NOTEBOOK7_IDLE)
        current, other = put_kernels_on_gpus(server, gpus)

        # no status bar in Notebook 7: the item is in the menu bar's row instead
        status = page.locator(".vram-magic-status")
        expect(status).to_have_text("VRAM 3.3 / 40.0 GiB")
        expect(page.locator(".jp-StatusBar-Widget")).to_have_count(0)

        sidebar = page.locator("#vram-magic-sidebar")
        expect(sidebar).to_be_hidden()
        page.locator(".lm-MenuBar-itemLabel", has_text="View").click()
        page.locator(".lm-Menu-itemLabel", has_text="Right Sidebar").hover()
        page.locator(".lm-Menu-itemLabel", has_text="Show VRAM").click()
        expect(sidebar).to_be_visible()

        row = kernel_list_shown(sidebar, current, other)
        gauge0 = sidebar.locator('.vram-magic-gauge[data-index="0"]')
        expect(gauge0.locator('[data-part="current"] .vram-magic-legend-value')).to_have_text(
            "3.3 GiB"
        )
        # the side panel is wider than JupyterLab's sidebar, yet too narrow for two legend
        # columns: no entry may run into the next, nor a label be cut short
        cut = sidebar.locator(".vram-magic-legend-entry, .vram-magic-legend-label").evaluate_all(
            "nodes => nodes.filter(node => node.scrollWidth > node.clientWidth).length"
        )
        assert cut == 0
        shot(page, "notebook7")

        page.get_by_role("button", name="Collapse right side panel").click()
        expect(sidebar).to_be_hidden()
        status.click()
        expect(sidebar).to_be_visible()

        free_from_the_panel(row)
        shot(page, "notebook7-freed")
