"""%%fit under %vram limit: a real training loop whose memory grows with the batch.

On a machine without CUDA the limit is the CPU budget, 120 MB; with CUDA (``-m gpu``) it is the
caching allocator's cap, 2 GB above what the CUDA context already holds (the allocator reserves
in blocks of 2 and 20 MiB, which would swamp a budget of a few dozen MiB). The true
largest fitting batch is found by search in the test (each probe a real run under the same
limit); %%fit must get within 10% of it with at most 2 OOMs from a start 4x too large, grow from
a start 8x too small, rerun with 0 OOMs, leave live tensor bytes where they were, and keep the
effective batch exact with --accumulate. Without any memory reading it still converges.
"""

import re

import pytest
from fit_workload import TRAIN, allocator_room, largest_fitting
from IPython.core.error import UsageError
from trainer_workload import limit_room

from vram_magic.actions.fit import torch_meter

torch = pytest.importorskip("torch")
cpu_only = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU budget: no CUDA here")
ROOM = {"cpu": 120 * 10**6, "cuda": 2 * 10**9}  # what the training loop may use

SETUP = """
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(64, 2048), torch.nn.ReLU(), torch.nn.Linear(2048, 64))
model = model.to(DEV)
opt = torch.optim.SGD(model.parameters(), lr=0.01)
model(torch.randn(2, 64, device=DEV)).sum().backward()  # start CUDA's libraries before the limit
opt.zero_grad()
"""


def run(shell, code):
    return shell.run_cell(code, store_history=True)


@pytest.fixture(
    scope="module",
    params=[
        pytest.param("cpu", marks=cpu_only),
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
            ],
        ),
    ],
)
def trained(shell, request):
    run(shell, f"%load_ext vram_magic\nimport torch\nDEV = {request.param!r}")
    run(shell, SETUP)
    run(shell, f"%vram limit {allocator_room(ROOM[request.param])}")
    yield shell, largest_fitting(shell)
    run(shell, "%vram limit off\ndel model, opt")
    run(shell, "%unload_ext vram_magic")


@pytest.fixture
def loaded(shell):
    """vram_magic loaded (and torch imported) for one test; the shell left as found, so it
    stays loaded where ``trained`` loaded it for the module."""
    from vram_magic.ipython.extension import loaded_in

    was_loaded = loaded_in(shell) is not None
    run(shell, "%load_ext vram_magic\nimport torch")
    yield shell
    if not was_loaded:
        run(shell, "%unload_ext vram_magic")


def fit(shell, start: int, options: str = "", marker: str = ""):
    """%%fit the training cell from ``start``; a ``marker`` makes it a cell of its own (cache)."""
    shell.user_ns["batch_size"] = start
    run(shell, "%vram free")  # %%fit frees stranded memory first; measure from there
    meter = torch_meter()
    used = meter.in_use()
    result = run(shell, f"%%fit --batch-size batch_size {options}\n{TRAIN}# {marker}")
    assert result.success, result.error_in_exec
    grads = sum(4 * p.numel() for p in shell.user_ns["model"].parameters())  # a run leaves these
    assert abs(meter.in_use() - used) <= grads + 64 * 1024  # no failed attempt left bytes
    for attempt in result.result.data.fits[0].attempts:
        if attempt.outcome != "fits":  # after each OOM, back to where the cell started
            assert attempt.left is not None and attempt.left <= 64 * 1024, attempt
    return result.result.data.fits[0]


def ooms(result) -> int:
    return sum(a.outcome != "fits" for a in result.attempts)


def test_from_four_times_too_large(trained):
    shell, true_max = trained
    result = fit(shell, 4 * true_max)
    assert 0.9 * true_max <= result.size <= true_max
    assert ooms(result) <= 2
    assert shell.user_ns["batch_size"] == result.size
    rerun = fit(shell, 4 * true_max)
    assert rerun.from_cache and ooms(rerun) == 0 and rerun.size == result.size


def test_grows_from_eight_times_too_small(trained):
    shell, true_max = trained
    result = fit(shell, max(true_max // 8, 1), options="--headroom 0.02", marker="grow")
    assert not result.from_cache
    assert 0.9 * true_max <= result.size <= true_max


def test_probe_fits_the_line_before_a_large_size(trained):
    shell, true_max = trained
    result = fit(shell, 4 * true_max, options="--probe", marker="probe")
    probes = [a for a in result.attempts if a.probe]
    assert [(a.size, a.outcome) for a in probes] == [
        (true_max // 4, "fits"),
        (true_max // 2, "fits"),
    ]
    assert 0.9 * true_max <= result.size <= true_max
    assert ooms(result) <= 1
    assert "fits (probe)" in run(shell, f"%%fit --probe\n{TRAIN}# probe, shown").result.text


def test_accumulate_keeps_the_effective_batch(trained):
    shell, true_max = trained
    effective = 4 * true_max - (4 * true_max) % 8
    shell.user_ns["steps"] = 1
    shell.user_ns["batch_size"] = effective
    result = run(
        shell, f"%%fit --batch-size batch_size --accumulate steps\n{TRAIN}"
    ).result.data.fits[0]
    assert shell.user_ns["batch_size"] * shell.user_ns["steps"] == effective
    assert effective % result.size == 0 and result.accumulation == effective // result.size


@pytest.mark.parametrize(
    "error",
    [
        'RuntimeError("CUDA out of memory.")',
        'RuntimeError("CUDA error: out of memory")',
        'RuntimeError("CUBLAS_STATUS_ALLOC_FAILED when calling cublasCreate(handle)")',
        """RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 8")""",
        'RuntimeError("MPS backend out of memory (MPS allocated: 1.00 GB)")',
        'torch.OutOfMemoryError("CUDA out of memory.")',
    ],
)
def test_without_memory_readings_it_still_converges(loaded, error):
    shell = loaded
    shell.user_ns["batch_size"] = 128
    result = run(shell, f"%%fit\nif batch_size > 8:\n    raise {error}")
    assert result.success, result.error_in_exec
    assert shell.user_ns["batch_size"] == 8


def test_other_errors_run_once_and_propagate(loaded):
    shell = loaded
    shell.user_ns.update(batch_size=16, runs=0)
    result = run(shell, "%%fit\nruns += 1\nraise ValueError('not about memory')")
    assert isinstance(result.error_in_exec, ValueError) and shell.user_ns["runs"] == 1


def test_bad_fit_input(loaded):
    shell = loaded
    shell.user_ns["batch_size"] = "large"
    error = run(shell, "%%fit\nsize = batch_size").error_in_exec
    assert isinstance(error, UsageError) and "batch_size must be a positive int" in str(error)
    error = run(shell, "%%fit --max-oom x\npass").error_in_exec
    assert isinstance(error, UsageError) and "invalid count value: 'x'" in str(error)


@cpu_only
def test_quantize_auto_loads_in_8bit_when_16bit_will_not_fit(loaded, tmp_path):
    shell = loaded
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("bitsandbytes")
    run(shell, "%vram limit off")  # the module's limit is for the training cell
    config = transformers.GPT2Config(n_layer=8, n_embd=512, n_head=8, vocab_size=1000)
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path)
    run(shell, "from transformers import AutoModelForCausalLM")
    limit_room(shell, 40 * 10**6)  # float32 needs ~100 MiB, bfloat16 ~50 MiB, 8-bit ~26 MiB
    shell.user_ns.update(batch_size=1, path=str(tmp_path))
    try:
        result = run(shell, "%%fit\nllm = AutoModelForCausalLM.from_pretrained(path)")
        assert result.success, result.error_in_exec
        said = re.search(
            r"float32 needs ([\d.]+) MiB, ([\d.]+) MiB free: loaded in 8-bit", result.result.text
        )
        assert said and float(said.group(1)) > 40 > float(said.group(2))
        weight = shell.user_ns["llm"].transformer.h[0].attn.c_attn.weight
        assert type(weight).__name__ == "Int8Params"
        plain = transformers.PreTrainedModel.from_pretrained  # put back after the cell
        assert "fitting_loads" not in getattr(plain, "__qualname__", "")
    finally:
        shell.user_ns.pop("llm", None)
        run(shell, "%vram limit off")
