"""Out-of-memory errors: recognised, the request parsed, a ranked report printed after the
traceback, and the failed cell's frames cleared so the error itself strands nothing."""

import pytest

from vram_magic.actions.oom import is_oom, requested_bytes

GiB = 2**30


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ("CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.65 GiB total)", 2 * GiB),
        ("CUDA out of memory. Tried to allocate 512.00 MiB", 512 * 2**20),
        ("DefaultCPUAllocator: can't allocate memory: you tried to allocate 123456 bytes.", 123456),
        (
            "MPS backend out of memory (MPS allocated: 1.2 GB). Tried to allocate 256.00 MB",
            256 << 20,
        ),
        ("CUDA error: out of memory", None),
    ],
)
def test_requested_bytes(message, expected):
    assert requested_bytes(message) == expected


def test_recognises_out_of_memory_errors():
    torch = pytest.importorskip("torch")
    assert is_oom(torch.OutOfMemoryError("CUDA out of memory."))
    for text in (
        "CUDA error: out of memory",
        "CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)",
        "[enforce fail] DefaultCPUAllocator: can't allocate memory: you tried to allocate 8 bytes",
        "MPS backend out of memory (MPS allocated: 1 GB)",
    ):
        assert is_oom(RuntimeError(text)), text
    assert not is_oom(RuntimeError("cuDNN error: CUDNN_STATUS_NOT_SUPPORTED"))  # memory not short
    assert not is_oom(ValueError("CUDA out of memory"))
    assert not is_oom(RuntimeError("shape mismatch"))
    assert not is_oom(None)


def run(shell, code):
    return shell.run_cell(code, store_history=True)


def test_real_cpu_oom_gets_a_report_and_frees_the_frames(vram, capsys):
    run(
        vram,
        "model = torch.nn.Linear(1024, 1024)\n"
        "def step():\n    activations = torch.ones(25 * 2**20)\n    global w\n"
        "    w = weakref.ref(activations)\n    return torch.empty(2**60, dtype=torch.uint8)",
    )
    capsys.readouterr()
    result = run(vram, "step()")
    assert isinstance(result.error_in_exec, RuntimeError)
    out = capsys.readouterr().out
    traceback_at, report_at = out.find("DefaultCPUAllocator"), out.find("vram_magic: out of memory")
    assert 0 <= traceback_at < report_at, out
    assert "the failed allocation asked for 1024.00 PiB" in out
    assert "fix, by memory saved" in out and "load in 4-bit" in out and "load in 8-bit" in out
    assert "the failed cell's frames were cleared" in out
    assert vram.user_ns["w"]() is None  # the 100 MB local did not survive in the traceback


def test_frames_kept_when_asked(vram):
    import vram_magic

    vram_magic.settings.clear_frames_on_oom = False
    try:
        run(
            vram,
            "def step():\n    activations = torch.ones(1000)\n    global w\n"
            "    w = weakref.ref(activations)\n"
            "    raise torch.OutOfMemoryError('CUDA out of memory. Tried to allocate 2.00 GiB')",
        )
        run(vram, "step()")
        assert vram.user_ns["w"]() is not None  # kept for post-mortem debugging, as asked
    finally:
        vram_magic.settings.clear_frames_on_oom = True


def test_fixes_are_ranked_by_bytes_saved(vram):
    from vram_magic.actions.history import CellMemory, CellRecord
    from vram_magic.actions.oom import explain_oom
    from vram_magic.census.take import take_census

    run(vram, "big = torch.nn.Linear(2048, 2048)")
    record = CellRecord(7, "train()", 0.0, 1.0, (CellMemory("cuda:0", 0, 0, 6 * GiB),), ())
    error = RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
    census = take_census(vram, vram.user_ns)
    report = explain_oom(error, census, (), record, vram.user_ns, frames_cleared=True)
    saves = [fix.saves for fix in report.fixes]
    assert saves == sorted(saves, reverse=True)
    by_action = {fix.action: fix.saves for fix in report.fixes}
    assert by_action["halve the batch"] == (6 * GiB + 2 * GiB) // 2
    weight_bytes = 2048 * 2048 * 4
    assert by_action["load in 8-bit"] == weight_bytes - 2048 * 2048
    assert by_action["load in 4-bit"] == weight_bytes - 2048 * 2048 // 2
    assert report.requested == 2 * GiB
    assert "check the failed allocation's shape" not in by_action  # no device readings given


def test_a_request_larger_than_the_gpu_points_at_the_shape(vram):
    from fake_nvml import fake_session

    from vram_magic.actions.oom import explain_oom
    from vram_magic.census.take import take_census
    from vram_magic.readings.report import read_report

    devices = read_report(fake_session("one_gpu"), environ={}).devices  # a 24 GB card
    error = RuntimeError("CUDA out of memory. Tried to allocate 1024.00 GiB")
    report = explain_oom(error, take_census(vram, vram.user_ns), devices, None, {}, True)
    first = report.fixes[0]
    assert first.action == "check the failed allocation's shape" and first.saves == 1024 * GiB


def test_no_two_guesses_show_the_same_number():
    from vram_magic.actions.oom import Fix, _distinct_guesses

    fixes = [
        Fix("halve the batch", 100, "", True),
        Fix("gradient checkpointing", 100, "", True),
        Fix("free stranded memory", 100, frees=()),
        Fix("a model half the size", 40, "", True),
    ]
    assert [f.action for f in _distinct_guesses(fixes)] == [
        "halve the batch",
        "free stranded memory",
        "a model half the size",
    ]


def test_a_free_fix_holds_names_and_the_view_writes_the_magic():
    from vram_magic.actions.oom import Fix
    from vram_magic.render.actions import _how

    assert _how(Fix("free stranded memory", 100, frees=())) == "%vram free"
    assert _how(Fix("free what the failed cell kept", 100, frees=("loss", "x"))).startswith(
        "%vram free loss x"
    )
