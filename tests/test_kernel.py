"""Kernel tier: demo.ipynb runs top to bottom in a real ipykernel (nbclient)."""

from pathlib import Path

import pytest

nbclient = pytest.importorskip("nbclient")
nbformat = pytest.importorskip("nbformat")

pytestmark = pytest.mark.kernel
DEMO = Path(__file__).parent.parent / "demo.ipynb"


@pytest.fixture(scope="module")
def executed():
    notebook = nbformat.read(DEMO, as_version=4)
    nbclient.NotebookClient(
        notebook, timeout=120, kernel_name="python3", resources={"metadata": {"path": DEMO.parent}}
    ).execute()
    return notebook


def outputs(cell):
    return cell.get("outputs", [])


def test_demo_runs_without_errors(executed):
    errors = [o for c in executed.cells for o in outputs(c) if o.output_type == "error"]
    assert errors == []


def test_load_ext_does_not_import_torch(executed):
    check = next(c for c in executed.cells if c.source.startswith("import sys"))
    assert outputs(check)[0]["data"]["text/plain"] == "False"


def test_reports_are_html_in_the_notebook(executed):
    reports = [
        o["data"]
        for c in executed.cells
        if "%vram report" in c.source
        for o in outputs(c)
        if o.output_type == "execute_result"
    ]
    assert len(reports) == 4
    for data in reports:
        assert data["text/html"].startswith('<div class="vram-magic-report">')
        assert data["text/plain"].startswith("VRAM report")
    first, after_model = reports[0]["text/plain"], reports[1]["text/plain"]
    assert "torch: not imported yet" in first
    assert "torch 2." in after_model


def test_cpu_story_without_a_gpu(executed):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    text = "\n".join(
        o["data"]["text/plain"]
        for c in executed.cells
        for o in outputs(c)
        if o.output_type == "execute_result" and "%vram" in c.source
    )
    assert "no NVIDIA GPU visible: NVML library not found" in text
    twin = next(c for c in executed.cells if "vram_magic.report()" in c.source)
    printed = "".join(o.get("text", "") for o in outputs(twin))
    assert "GPU problem: no NVIDIA GPU visible: NVML library not found" in printed
