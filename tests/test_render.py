"""Unit: the text and HTML reports say the same things, and say what could not be read."""

from fake_nvml import fake_session

from vram_magic.readings.report import read_report
from vram_magic.render.html import render_html
from vram_magic.render.text import render_text


def test_text_table_has_every_gpu_and_the_split():
    text = render_text(read_report(fake_session("two_gpus_other_processes"), environ={}))
    lines = text.splitlines()
    assert lines[0].startswith("VRAM report") and "driver 535.161.08" in lines[0]
    header = lines[1]
    for column in (
        "total",
        "used",
        "free",
        "this kernel",
        "torch allocated",
        "torch cache",
        "context+other",
        "other processes",
    ):
        assert column in header
    assert lines[3].startswith("cuda:0 (nvml 0)") and "40.00 GiB" in lines[3]
    assert "3.29 GiB" in lines[3]  # this kernel: 3 GiB + 300 MiB
    assert "20.00 GiB (2)" in lines[3]
    assert "2 (sizes n/a)" in lines[4]
    assert "cuda:0 other processes: pid 41234 12.00 GiB, pid 41377 8.00 GiB" in text
    assert "Host RAM: this process" in text


def test_top_limits_listed_processes():
    report = read_report(fake_session("two_gpus_other_processes"), environ={})
    text = render_text(report, top=1)
    assert "pid 41234 12.00 GiB, and 1 more" in text
    assert "other processes:" not in render_text(report, top=0)


def test_problems_are_shown_not_hidden():
    report = read_report(fake_session("processes_raise"), environ={})
    text = render_text(report)
    assert "cuda:1 process list: Unknown Error" in text
    html = render_html(report)
    assert "cuda:1 process list: Unknown Error" in html


def test_html_has_table_bar_and_escapes():
    report = read_report(fake_session("one_gpu"), environ={})
    html = render_html(report)
    assert html.startswith('<div class="vram-magic-report">')
    assert html.count("<tr>") == 2  # header + one GPU
    assert "NVIDIA GeForce RTX 4090" in html and "width:" in html  # usage bar segments
    assert "<script" not in html


def test_no_gpu_report_says_so_plainly():
    report = read_report(fake_session({"init_error": "NVMLError_LibraryNotFound", "devices": []}))
    text = render_text(report)
    assert text.splitlines()[1] == "no NVIDIA GPU visible: NVML library not found"
    assert "Host RAM" in text and "torch" in text
    assert "<table>" not in render_html(report)
