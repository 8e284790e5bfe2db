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
    errors = [
        c.source
        for c in executed.cells
        for o in outputs(c)
        if o.output_type == "error" and "raises-exception" not in c.metadata.get("tags", [])
    ]
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
    assert len(reports) == 4  # %vram report cells
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


def cell_with(executed, source):
    return next(c for c in executed.cells if c.source.strip() == source)


def test_who_finds_every_stranded_holder(executed):
    text = outputs(cell_with(executed, "%vram who"))[0]["data"]["text/plain"]
    for holder in ("Out[", "sys.last_value", "loss (autograd graph)", "scorer (closure)"):
        assert holder in text, holder
    assert "vram-magic-census" in outputs(cell_with(executed, "%vram who"))[0]["data"]["text/html"]


def test_free_returns_what_who_found(executed):
    freed = outputs(cell_with(executed, "%vram free"))[0]["data"]["text/plain"]
    assert "%vram free returned 200.0 MiB" in freed  # the output cache and the last exception
    named = outputs(cell_with(executed, "%vram free loss scorer"))[0]["data"]["text/plain"]
    assert "deleted: loss, scorer" in named
    assert "loss (autograd graph)" in named and "scorer (closure)" in named


def test_history_and_the_oom_report(executed):
    history = outputs(cell_with(executed, "%vram history --last 8"))[0]["data"]
    assert "<svg" in history["text/html"] and "names that grew" in history["text/plain"]
    oom = next(c for c in executed.cells if c.source.startswith("too_big"))
    kinds = [o.output_type for o in outputs(oom)]
    assert "error" in kinds  # the traceback stays; the report comes after it
    report = next(o for o in outputs(oom) if o.output_type == "display_data")
    assert "vram_magic: out of memory" in report["data"]["text/plain"]
    assert kinds.index("error") < outputs(oom).index(report)


def test_demo_opens_the_live_panel(executed):
    live = cell_with(executed, "%vram")
    bundle = next(o for o in outputs(live) if o.output_type == "display_data")["data"]
    assert "application/vnd.jupyter.widget-view+json" in bundle
    assert 'data-device="host"' in bundle["text/html"]  # readable in a static export


def test_demo_estimates_a_7b_shape(executed):
    cell = "%vram estimate llama_7b_shape --batch 4 --seq 2048 --train qlora"
    plain = outputs(cell_with(executed, cell))[0]["data"]["text/plain"]
    assert "6,738,415,616 parameters" in plain  # the Llama-2-7B shape, counted on meta
    assert "inference, nf4" in plain
    assert "Peak of one qlora step at 4 x 2048 tokens, nf4 base" in plain and "traced:" in plain


def test_demo_fits_a_cell_under_a_limit(executed):
    fitted = next(c for c in executed.cells if c.source.startswith("%%fit"))
    plain = outputs(fitted)[0]["data"]["text/plain"]
    assert plain.startswith("%%fit: batch_size = ") and "out of memory" in plain
    printed = next(c for c in executed.cells if c.source.startswith('print("batch_size is now"'))
    size = int(outputs(printed)[0]["text"].split()[-1])
    assert 0 < size < 40_000


def test_demo_fits_a_trainer(executed):
    """The seed's story with a Trainer: it runs out at 32, the report says what to set, a bare
    %%fit trains at a size that fits with the effective batch kept."""
    failed = next(c for c in executed.cells if c.source == "trainer.train()")
    report = next(o for o in outputs(failed) if o.output_type == "display_data")
    assert "per_device_train_batch_size=" in report["data"]["text/plain"]
    fitted = next(c for c in executed.cells if c.source == "%%fit\ntrainer.train()")
    plain = next(o for o in outputs(fitted) if o.output_type == "execute_result")
    assert "(effective batch 32 kept)" in plain["data"]["text/plain"]
    printed = next(c for c in executed.cells if c.source.startswith('print(\n    "batch"'))
    words = outputs(printed)[0]["text"].split()
    batch, accumulation, steps = int(words[1]), int(words[4]), int(words[-1])
    assert batch * accumulation == 32 and batch < 32 and steps == 2


def test_demo_snapshots_and_restores(executed):  # type: ignore[no-untyped-def]
    def text(marker: str) -> str:
        cell = next(c for c in executed.cells if c.cell_type == "code" and marker in c.source)
        return "".join(o.get("data", {}).get("text/plain", "") for o in outputs(cell))

    saved = text("%vram snapshot")
    assert "not saved: progress — generator" in saved
    assert "not saved: train_log — open file" in saved
    restored = text("%vram restore")
    assert "variables restored" in restored and "skipped" not in restored
    assert text("train_log.close()") == "(torch.Size([2, 64]), 'SGD', True)"
