"""GPU tier (``pytest -m gpu``): CUDA tensors, a model and its optimizer go through a snapshot and
a fresh process and come back on CUDA, and the restore leaves nothing else on the GPU."""

import json
import os
import subprocess
import sys

import pytest

torch = pytest.importorskip("torch")
pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
]
MiB = 2**20

SAVE = """
import torch, vram_magic
x = torch.randn(1024, 1024, device="cuda")
half = x[512:]
model = torch.nn.Sequential(torch.nn.Linear(512, 512), torch.nn.ReLU(), torch.nn.Linear(512, 8))
model = model.cuda()
opt = torch.optim.Adam(model.parameters())
model(torch.randn(4, 512, device="cuda")).sum().backward()
opt.step()
probe = torch.randn(4, 512)
state = [v.cpu() for s in opt.state.values() for v in s.values() if v.dim()]
weights = [p.detach().cpu() for p in model.parameters()]
out = model(probe.cuda()).detach().cpu()
torch.save({"probe": probe, "out": out, "x": x.cpu(), "weights": weights, "state": state}, EXPECTED)
del probe, state, weights, out  # only the CUDA objects go into the snapshot
vram_magic.snapshot()
print("{}")
"""
RESTORE = """
import json, torch, vram_magic
result = vram_magic.restore(keep=True, to=TO)
facts = {
    "allocated": torch.cuda.memory_allocated() if torch.cuda.is_initialized() else 0,
    "peak": torch.cuda.max_memory_allocated() if torch.cuda.is_initialized() else 0,
    "reserved": torch.cuda.memory_reserved() if torch.cuda.is_initialized() else 0,
    "restored bytes": sum(s.nbytes for s in result.restored),
    "cuda initialised": torch.cuda.is_initialized(),
    "process": vram_magic.report().devices[0].this_process,
}
expected = torch.load(EXPECTED, weights_only=False)
device = "cpu" if TO else "cuda"
facts["devices"] = sorted({str(t.device.type) for t in
    [x, half, *model.parameters(), *(v for s in opt.state.values() for v in s.values()
     if v.dim())]})
state = [v.cpu() for s in opt.state.values() for v in s.values() if v.dim()]
out = model(expected["probe"].to(device)).detach().cpu()
facts["equal"] = (torch.equal(x.cpu(), expected["x"])
    and all(map(torch.equal, [p.detach().cpu() for p in model.parameters()], expected["weights"]))
    and len(state) == len(expected["state"]) and all(map(torch.equal, state, expected["state"]))
    # the same weights give the same outputs; on the CPU only up to its other rounding
    and torch.allclose(out, expected["out"], rtol=1e-4, atol=1e-5)
    and half.untyped_storage().data_ptr() == x.untyped_storage().data_ptr()
    and opt.param_groups[0]["params"][0] is model[0].weight)
print(json.dumps(facts))
"""
CONTEXT = """
import json, torch, vram_magic
torch.empty(1, device="cuda")  # a bare CUDA context: no kernel runs
torch.cuda.synchronize()
print(json.dumps({"process": vram_magic.report().devices[0].this_process,
                  "reserved": torch.cuda.memory_reserved()}))
"""


def python(code: str, tmp_path, **names) -> dict:
    setup = "".join(f"{name} = {value!r}\n" for name, value in names.items())
    done = subprocess.run(
        [sys.executable, "-c", f"EXPECTED = {str(tmp_path / 'expected.pt')!r}\n{setup}{code}"],
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "VRAM_MAGIC_SNAPSHOT_DIR": str(tmp_path / "snapshots")},
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_cuda_tensors_come_back_on_cuda_and_nothing_else(tmp_path):
    python(SAVE, tmp_path)
    facts = python(RESTORE, tmp_path, TO=None)
    assert facts["devices"] == ["cuda"] and facts["equal"]
    # the restored storages, each rounded to the allocator's 512-byte blocks, and no more:
    # nothing passed through the GPU on the way (the peak is the end state)
    assert facts["restored bytes"] <= facts["allocated"] <= facts["restored bytes"] + 64 * 512
    assert facts["peak"] == facts["allocated"]
    context = python(CONTEXT, tmp_path)
    if facts["process"] is not None and context["process"] is not None:
        # what NVML sees of the process: no more than a bare CUDA context plus torch's reserve
        # for the tensors (less where CUDA loads fewer kernel modules than the bare context did)
        extra = facts["process"] - context["process"] - (facts["reserved"] - context["reserved"])
        assert extra <= 64 * MiB


def test_to_cpu_never_touches_the_gpu(tmp_path):
    python(SAVE, tmp_path)
    facts = python(RESTORE, tmp_path, TO="cpu")
    assert facts["devices"] == ["cpu"] and facts["equal"]
    assert facts["cuda initialised"] is False
