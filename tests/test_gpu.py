"""GPU tier (``pytest -m gpu``): real CUDA, real NVML. Skipped where torch sees no CUDA device."""

import json
import os
import subprocess
import sys

import pytest

from vram_magic.readings.nvml import NvmlSession
from vram_magic.readings.report import read_report

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
GiB = 2**30


def first_device():
    return read_report(NvmlSession()).devices[0]


def fresh_python(code: str, **env: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, **env},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_reading_never_initialises_cuda():
    facts = fresh_python(
        "import json, torch, vram_magic; r = vram_magic.report();"
        "print(json.dumps({'init': torch.cuda.is_initialized(), 'devices': len(r.devices),"
        " 'problem': r.gpu_problem}))"
    )
    assert facts["init"] is False and facts["devices"] >= 1 and facts["problem"] is None


def test_one_gib_shows_in_torch_this_process_and_nvml():
    torch.zeros(1, device="cuda")  # the CUDA context exists before the measurement
    torch.cuda.synchronize()
    before = first_device()
    block = torch.empty(GiB, dtype=torch.uint8, device="cuda")
    torch.cuda.synchronize()
    after = first_device()
    assert after.problems == ()
    assert after.torch_allocated - before.torch_allocated == GiB
    assert after.this_process is not None, "NVML did not list this process"
    assert abs(after.this_process - before.this_process - GiB) <= 0.05 * GiB
    assert abs(after.used - before.used - GiB) <= 0.05 * GiB
    assert after.process_other > 0  # the CUDA context lives outside torch's allocator
    del block
    cached = first_device()
    assert cached.torch_cache >= GiB  # freed by Python, still held by the caching allocator
    torch.cuda.empty_cache()
    assert first_device().torch_cache < GiB


def test_cuda_index_matches_nvml_by_uuid():
    torch.zeros(1, device="cuda")
    device = first_device()
    torch_uuid = str(torch.cuda.get_device_properties(0).uuid)
    assert device.uuid.removeprefix("GPU-").removeprefix("MIG-") == torch_uuid
    assert device.name == torch.cuda.get_device_name(0)


def test_mask_by_uuid_and_abbreviated_uuid_before_cuda_starts():
    uuid = first_device().uuid
    code = (
        "import json, vram_magic; r = vram_magic.report();"
        "print(json.dumps([d.uuid for d in r.devices]))"
    )
    assert fresh_python(code, CUDA_VISIBLE_DEVICES=uuid) == [uuid]
    assert fresh_python(code, CUDA_VISIBLE_DEVICES=uuid[:12]) == [uuid]
    assert fresh_python(code, CUDA_VISIBLE_DEVICES="0") == [uuid]


def test_magic_on_a_real_gpu(shell):
    shell.run_cell("%load_ext vram_magic")
    shell.run_cell("import torch; held = torch.ones(256, 2**20, device='cuda')")
    text = repr(shell.run_cell("%vram report").result)
    shell.run_cell("del held\n%unload_ext vram_magic")
    assert torch.cuda.get_device_name(0) in text
    assert "CUDA initialised" in text


def test_another_process_shows_as_other():
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import torch, sys; x = torch.empty(512 * 2**20, dtype=torch.uint8, device='cuda');"
            "torch.cuda.synchronize(); print('ready', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        device = first_device()
        others = {usage.pid: usage.used for usage in device.other_processes}
        assert holder.pid in others, f"NVML lists {others}"
        assert others[holder.pid] >= 512 * 2**20
    finally:
        holder.communicate("")


# The census scenarios of test_census_shell.py, on CUDA, with the allocator as the witness.
@pytest.fixture
def cuda_vram(shell):
    from test_census_shell import finish, start

    start(shell, "cuda")
    yield shell
    finish(shell)


@pytest.mark.parametrize(
    "scenario",
    [
        "output cache, then del",
        "exception inside a function",
        "model and optimizer in a reference cycle",
        "loss kept with its graph",
        "_ after an expression",
        "closure capturing a tensor",
        "exception kept in a variable",
    ],
)
def test_census_scenarios_on_cuda(cuda_vram, scenario):
    from test_census_shell import check_scenario

    stranded, returned, dropped = check_scenario(
        cuda_vram, scenario, allocated=torch.cuda.memory_allocated
    )
    assert returned >= 0.99 * stranded
    assert dropped >= 0.99 * stranded  # the allocator agrees: the bytes really came back


def test_allocator_cache_after_del_is_named_and_returned(cuda_vram):
    from test_census_shell import SIZE, run

    run(cuda_vram, "x = torch.ones(SIZE // 4, device='cuda'); w = weakref.ref(x)")
    run(cuda_vram, "del x")
    census = run(cuda_vram, "%vram who").result.data
    (cache,) = census.by_kind("cache")
    assert cache.name == "allocator cache (cuda:0)" and cache.nbytes >= SIZE
    reserved = torch.cuda.memory_reserved()
    result = run(cuda_vram, "%vram free").result.data
    assert result.cache_returned >= 0.99 * SIZE
    assert reserved - torch.cuda.memory_reserved() >= 0.99 * SIZE


def test_cell_peak_comes_from_the_allocator(cuda_vram):
    from test_census_shell import SIZE, run

    import vram_magic

    run(cuda_vram, "float(torch.ones(SIZE // 4, device='cuda').sum())")
    memory = vram_magic.history()[-1].on("cuda:0")
    assert memory.peak - memory.before >= SIZE
    assert abs(memory.retained) < SIZE // 10


def test_timeline_and_history_chart_the_gpu(cuda_vram):
    """On a GPU the timeline stacks torch's bytes under NVML's line, and the per-cell chart
    and the timeline's cell mark take torch's cuda:0, where the memory moved."""
    from test_census_shell import SIZE, run

    import vram_magic
    from vram_magic.render.history import chart_device
    from vram_magic.render.timeline import cell_mark, timeline_sample

    run(cuda_vram, "held = torch.ones(SIZE // 4, device='cuda')")
    gpu = timeline_sample(read_report(NvmlSession()))["charts"][0]
    allocated, cache, rest, others = gpu["parts"]
    assert gpu["id"] == "cuda:0" and allocated >= SIZE and rest > 0  # the CUDA context
    assert allocated + cache + rest + others <= gpu["line"]  # within NVML's used
    records = vram_magic.history()
    assert chart_device(records[-3:]) == "cuda:0"
    assert cell_mark(records[-1])["memory"]["cuda:0"]["after"] >= SIZE
    run(cuda_vram, "del held")


def test_cuda_oom_report(cuda_vram, capsys):
    from test_census_shell import run

    run(
        cuda_vram,
        "def step():\n    held = torch.ones(2**20, device='cuda')\n"
        "    return torch.empty(2**40, dtype=torch.uint8, device='cuda')",
    )
    capsys.readouterr()
    result = run(cuda_vram, "step()")
    assert isinstance(result.error_in_exec, torch.OutOfMemoryError)
    out = capsys.readouterr().out
    assert "vram_magic: out of memory (OutOfMemoryError)" in out
    assert "the failed allocation asked for 1.00 TiB" in out
    assert "cuda:0" in out


def test_limit_caps_the_caching_allocator(cuda_vram):
    from test_census_shell import run

    import vram_magic

    try:
        limit = vram_magic.limit("2GiB")
        assert limit.device == "cuda:0" and limit.nbytes == 2 * GiB
        result = run(cuda_vram, "x = torch.empty(3 * 2**30, dtype=torch.uint8, device='cuda')")
        assert isinstance(result.error_in_exec, torch.OutOfMemoryError)
        assert run(cuda_vram, "x = torch.empty(2**30, dtype=torch.uint8, device='cuda')").success
    finally:
        vram_magic.limit("off")
        run(cuda_vram, "x = None")


def test_from_pretrained_falls_back_to_8bit_under_a_cuda_limit(cuda_vram, tmp_path):
    """A GPT-2-medium-shaped model saved locally; the limit leaves torch's allocator room
    between the 8-bit and the bfloat16 estimate, so %%fit loads it in 8-bit, on the GPU."""
    transformers = pytest.importorskip("transformers")
    pytest.importorskip("bitsandbytes")
    from fit_workload import allocator_room
    from test_census_shell import run

    import vram_magic

    medium = transformers.GPT2Config(n_layer=24, n_embd=1024, n_head=16)
    transformers.AutoModelForCausalLM.from_config(medium).save_pretrained(tmp_path)
    needs = vram_magic.estimate(str(tmp_path)).weights
    room = (needs["int8"] + needs["bfloat16"]) // 2
    cuda_vram.user_ns.update(batch_size=1, path=str(tmp_path))
    try:
        vram_magic.limit(allocator_room(room))
        result = run(
            cuda_vram,
            "%%fit\nfrom transformers import AutoModelForCausalLM\n"
            "llm = AutoModelForCausalLM.from_pretrained(path, device_map='cuda')",
        )
        assert result.success, result.error_in_exec
        assert "loaded in 8-bit" in result.result.text, result.result.text
        weight = cuda_vram.user_ns["llm"].transformer.h[0].attn.c_attn.weight
        assert type(weight).__name__ == "Int8Params" and weight.device.type == "cuda"
        assert torch.cuda.memory_reserved() <= room + 32 * 2**20  # NVML reads in 2 MiB pages
    finally:
        vram_magic.limit("off")
        cuda_vram.user_ns.pop("llm", None)
