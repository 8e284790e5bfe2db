"""The live panel's timeline and the per-cell chart: kernel tier (a real ipykernel through
jupyter_client), the static export (nbclient + nbconvert), and unit checks of what they draw.

The timeline sends one small message per reading and one per cell, never the whole history
again; a view that says hello gets what the kernel kept. A static HTML export keeps the
per-cell chart as SVG.
"""

from __future__ import annotations

import json
import re
import time

import pytest
from real_kernel import Kernel

from vram_magic.actions.history import CellMemory, CellRecord
from vram_magic.readings.cell_memory import HOST
from vram_magic.render.history import chart_device, history_svg, history_view
from vram_magic.render.timeline import cell_mark, timeline_sample

pytest.importorskip("anywidget")
MIB = 2**20


def record(
    cell: int, memory: tuple[CellMemory, ...], error: str | None = None, source: str = "x = 1"
) -> CellRecord:
    return CellRecord(cell, source, 1000.0 + cell, 0.5, memory, (), error)


def test_a_cell_mark_carries_its_number_peak_and_out_of_memory_error():
    oom = record(
        7,
        (
            CellMemory("cuda:0", 100 * MIB, 100 * MIB, 900 * MIB),
            CellMemory("cuda:0 process", 1, 1, 1),
            CellMemory(HOST, 5, 6, 7),
        ),
        "OutOfMemoryError",
        "huge = torch.ones(2**33)",
    )
    mark = cell_mark(oom)
    assert mark["cell"] == 7 and mark["oom"] and mark["end"] == pytest.approx(1007.5)
    assert mark["memory"] == {  # torch's cuda:0 and host RAM: the charts there are
        "cuda:0": {"before": 100 * MIB, "after": 100 * MIB, "peak": 900 * MIB},
        "host": {"before": 5, "after": 6, "peak": 7},
    }
    assert not cell_mark(record(8, (), "ValueError"))["oom"]


def test_a_sample_is_small_and_stacks_the_gauges_parts(use_recording):  # type: ignore[no-untyped-def]
    from vram_magic.readings.report import read_report

    use_recording("h200_recorded")
    sample = timeline_sample(read_report())
    gpu, host = sample["charts"]
    assert gpu["id"] == "cuda:0" and gpu["label"] == "cuda:0 (nvml 0) NVIDIA H200"
    assert gpu["line"] == 2271084544 and gpu["total"] == 150754820096
    # CUDA is not initialised here: this process's NVML figure is all context+other
    assert gpu["parts"] == [0, 0, 1616904192, 0]
    assert host["id"] == "host" and host["parts"][0] > 0
    assert len(json.dumps(sample)) < 600


def test_the_history_chart_picks_the_gpu_that_changed_and_draws_shapes():
    quiet = CellMemory("cuda:0", 0, 0, 0)
    busy = CellMemory("cuda:1", 0, 300 * MIB, 800 * MIB)
    flat_nvml = CellMemory("cuda:1 process", 900 * MIB, 900 * MIB, 900 * MIB)
    records = [record(n, (quiet, busy, flat_nvml, CellMemory(HOST, 0, MIB, MIB))) for n in (3, 4)]
    assert chart_device(records) == "cuda:1"
    # without a GPU in torch, host RAM: not NVML's flat process line
    cpu_only = [record(3, (flat_nvml, CellMemory(HOST, 0, 200 * MIB, 250 * MIB)))]
    assert chart_device(cpu_only) == HOST
    svg = history_svg(records, "cuda:1")
    assert svg.count('class="after"') == 2 and svg.count('class="peak"') == 2
    assert svg.count('class="peak-tick"') == 2 and 'stroke-dasharray="3 2"' in svg
    assert re.findall(r'data-cell="(\d+)"', svg) == ["3", "4"]
    assert ">800.0 MiB<" in svg and ">400.0 MiB<" in svg and ">0 B<" in svg  # the scale
    failed = history_svg([record(5, (busy,), "OutOfMemoryError")], "cuda:1")
    assert "#e03131" in failed and ">OOM<" in failed


def test_the_history_table_is_narrow_and_keeps_the_rest_in_tooltips():
    memory = (
        CellMemory("cuda:0", 0, 300 * MIB, 800 * MIB),
        CellMemory("cuda:1", 0, 0, 0),
        CellMemory(HOST, 0, MIB, MIB),
    )
    view = history_view([record(3, memory, source="a" * 60)])
    header = re.findall(r"<th(?: [^>]*)?>(.*?)</th>", view.html)
    assert header == ["cell", "code", "time", "after", "peak", "change", "names that grew"]
    assert "a" * 32 + "…" in view.html  # the code cut short, whole in the tooltip
    tooltip = re.search(r'<tr title="([^"]*)"', view.html).group(1)
    assert "a" * 60 in tooltip and "cuda:1: after 0 B" in tooltip and "host RAM" in tooltip
    assert "cuda:1 after" in view.text  # the terminal keeps every device's columns


# --- kernel tier ----------------------------------------------------------------------------


def custom_messages(messages: list[dict]) -> list[dict]:
    return [
        m["content"]["data"]["content"]
        for m in messages
        if m["msg_type"] == "comm_msg" and m["content"]["data"].get("method") == "custom"
    ]


@pytest.mark.kernel
def test_the_timeline_sends_one_small_message_a_tick_and_one_a_cell():
    kernel = Kernel()
    try:
        kernel.execute("%load_ext vram_magic\nimport torch, time")
        opened = kernel.execute("%vram --interval 0.2")
        kernel.execute("x = torch.ones(2**20)")
        messages = kernel.execute("time.sleep(1.5)")
        sent = custom_messages(opened + messages)
        samples = [m for m in sent if m["kind"] == "sample"]
        cells = [m["mark"] for m in sent if m["kind"] == "cell"]
        assert len(samples) >= 5  # 1.5 s at 0.2 s
        assert max(len(json.dumps(m)) for m in samples) < 1000  # one sample, not the history
        # a running cell's mark at its start, then the finished one with its number
        assert [(c["cell"], c["end"] is None) for c in cells][-2:] == [(None, True), (4, False)]
        # a view that renders now asks for what it missed, and gets the window's samples
        comm_id = next(
            m["content"]["comm_id"]
            for m in opened
            if m["msg_type"] == "comm_open" and "Timeline" in json.dumps(m["content"]["data"])
        )
        hello = kernel.client.session.msg(
            "comm_msg",
            {"comm_id": comm_id, "data": {"method": "custom", "content": {"kind": "hello"}}},
        )
        kernel.client.shell_channel.send(hello)
        history = None
        deadline = time.monotonic() + 30
        while history is None and time.monotonic() < deadline:
            message = kernel.client.get_iopub_msg(timeout=30)
            for content in custom_messages([message]):
                if content["kind"] == "history":
                    history = content
        assert history is not None
        assert len(history["samples"]) >= len(samples)
        assert [c["cell"] for c in history["cells"]][-3:] == [2, 3, 4]
    finally:
        kernel.stop()


@pytest.mark.kernel
def test_a_static_html_export_shows_the_chart_and_the_gauges(tmp_path):  # type: ignore[no-untyped-def]
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    nbconvert = pytest.importorskip("nbconvert")
    cells = [
        "%load_ext vram_magic\nimport torch",
        "%vram",
        "big = torch.ones(32 * 2**20)",
        "del big",
        "%vram history",
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    html, _ = nbconvert.HTMLExporter().from_notebook_node(notebook)
    (tmp_path / "exported.html").write_text(html)
    assert html.count('class="vram-magic-history-chart"') >= 1
    history = html[html.index("VRAM history") :]
    assert re.findall(r'vram-magic-history-cell" data-cell="(\d+)"', history)[:3] == ["2", "3", "4"]
    # the panel's last gauges: in the widget state the export embeds, and as the output's
    # text/html, which a code host renders where widgets do not run
    assert "vram-magic-live" in html
    (panel,) = [o for o in notebook.cells[1].outputs if "text/html" in o.get("data", {})]
    assert 'class="vram-magic-live"' in panel["data"]["text/html"]
    assert 'data-device="host"' in panel["data"]["text/html"]
