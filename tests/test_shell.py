"""Shell tier: a real IPython shell runs %load_ext, %vram report, bad input and %unload_ext."""

import threading

import pytest
from IPython.core.error import UsageError

from vram_magic.ipython.extension import loaded_in
from vram_magic.render.view import View


def run(shell, line):
    result = shell.run_cell(line, store_history=True)
    return result


@pytest.fixture
def loaded(shell):
    run(shell, "%load_ext vram_magic")
    yield shell
    run(shell, "%unload_ext vram_magic")


def shown(shell, result):
    """(text/plain as this terminal shell formats it, the HTML a notebook frontend would get)."""
    data, _ = shell.display_formatter.format(result.result)
    return data["text/plain"], result.result._repr_html_()


def test_report_in_a_real_shell(loaded, use_recording):
    use_recording("two_gpus_other_processes")
    result = run(loaded, "%vram report")
    assert result.success, result.error_in_exec
    assert isinstance(result.result, View)
    text, html = shown(loaded, result)
    assert "cuda:1 (nvml 1)" in text and "NVIDIA A100-SXM4-40GB" in text
    assert html.startswith('<div class="vram-magic-report">') and "<table>" in html
    assert loaded.user_ns["Out"][result.execution_count] is result.result


def test_bare_vram_shows_the_report(loaded, use_recording):
    use_recording("one_gpu")
    text, _ = shown(loaded, run(loaded, "%vram"))
    assert "NVIDIA GeForce RTX 4090" in text


def test_without_a_gpu_says_so(loaded):
    result = run(loaded, "%vram report")
    text, _ = shown(loaded, result)
    if "no NVIDIA GPU visible" not in text:
        pytest.skip("this machine has an NVIDIA GPU")
    assert "no NVIDIA GPU visible: NVML library not found" in text
    assert "Host RAM: this process" in text


def test_device_and_top_options(loaded, use_recording):
    use_recording("eight_gpus")
    text, _ = shown(loaded, run(loaded, "%vram report --device 3 --top 0"))
    assert "cuda:3 (nvml 3)" in text and "cuda:2" not in text
    assert "other processes:" not in text


@pytest.mark.parametrize(
    ("line", "says"),
    [
        (
            "%vram bogus",
            "%vram: unknown subcommand 'bogus'. "
            "Valid subcommands: live, report, who, history, free",
        ),
        ("%vram report --top x", "%vram report: argument --top: invalid count value: 'x'"),
        ("%vram report --top -2", "invalid count value: '-2'"),
        ("%vram report --frobnicate", "unrecognized arguments: --frobnicate"),
        ('%vram report "unclosed', "%vram: No closing quotation"),
        ("%vram report --device 9", "%vram report: no device cuda:9"),
    ],
)
def test_bad_input_is_one_line_usage_error(loaded, use_recording, line, says):
    use_recording("one_gpu")
    result = run(loaded, line)
    error = result.error_in_exec
    assert isinstance(error, UsageError)
    assert says in str(error)
    assert "\n" not in str(error)
    if "no device" not in says:
        assert "Valid subcommands: live, report, who, history, free" in str(error)


def test_help_prints_options(loaded, capsys):
    result = run(loaded, "%vram report --help")
    assert result.success and result.result is None
    assert "--top N" in capsys.readouterr().out


def test_unload_removes_every_magic_and_thread(shell):
    threads_before = set(threading.enumerate())
    run(shell, "%load_ext vram_magic")
    try:
        assert "vram" in shell.magics_manager.magics["line"]
        assert run(shell, "%unload_ext vram_magic").success
        assert "vram" not in shell.magics_manager.magics["line"]
        assert "vram" not in shell.magics_manager.magics["cell"]
        assert "VramMagics" not in shell.magics_manager.registry
        assert set(threading.enumerate()) <= threads_before
        assert isinstance(run(shell, "%vram report").error_in_exec, UsageError)  # not found
        # and it loads again after an unload
        run(shell, "%load_ext vram_magic")
        assert run(shell, "%vram report").success
    finally:  # the shared shell is left as found, whatever failed above
        run(shell, "%unload_ext vram_magic")
    assert loaded_in(shell) is None
