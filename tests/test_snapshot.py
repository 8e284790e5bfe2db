"""%vram snapshot / restore / snapshots in a real IPython shell: what is saved, what comes back
(equal, shared, on its device), what is reported instead, and one-line errors for bad input."""

import io
import socket
import sys
import threading

import pytest
from IPython.core.error import UsageError

import vram_magic
from vram_magic.persistence.pickling import unsavable_reason
from vram_magic.persistence.restore import Placement
from vram_magic.persistence.store import DATA, Store

torch = pytest.importorskip("torch")
np = pytest.importorskip("numpy")

NOTEBOOK = """
import json
import numpy as np
from collections import OrderedDict
config = {"lr": 0.01, "layers": [4, 8], "name": "demo"}
arr = np.arange(12.0).reshape(3, 4)
base = torch.arange(100.0)
view = base[10:20]
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 8)
        self.b = torch.nn.Linear(8, 2)
    def forward(self, x):
        return self.b(torch.relu(self.a(x))) * SCALE
SCALE = 3
torch.manual_seed(0)
model = Net()
opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
model(torch.randn(5, 4)).sum().backward()
opt.step()
double = lambda x: 2 * x
def predict(x):
    return model(x)
gen = (i for i in range(3))
log = open(LOG, "w")
log.write("kept")
log.flush()
holder = {"rows": gen, "n": 1}
_private = 1
"""
NAMES = ["json", "np", "OrderedDict", "config", "arr", "base", "view", "Net", "SCALE", "model"]
NAMES += ["opt", "double", "predict", "gen", "log", "holder", "_private", "LOG"]


def run(shell, code):
    result = shell.run_cell(code, store_history=True)
    if result.error_in_exec is not None:
        raise result.error_in_exec
    return result.result


@pytest.fixture
def notebook(vram, snapshot_dir, tmp_path):
    """The shell after NOTEBOOK ran, with no variables left by earlier tests (the shell is
    shared); its names are deleted afterwards and the earlier ones put back."""
    ns = vram.user_ns
    earlier = {
        name: ns.pop(name)
        for name in list(ns)
        if name[0] != "_" and name not in vram.user_ns_hidden and name not in {"torch", "weakref"}
    }
    ns["LOG"] = str(tmp_path / "log.txt")
    run(vram, NOTEBOOK)
    log = ns["log"]
    yield vram
    log.close()
    for name in NAMES:
        ns.pop(name, None)
    ns.update(earlier)


def test_snapshot_then_restore_in_a_cleared_namespace(notebook, snapshot_dir):
    ns = notebook.user_ns
    probe = torch.randn(3, 4)
    expected = {
        "out": ns["model"](probe).detach().clone(),
        "state": {k: v.clone() for k, v in ns["opt"].state[ns["model"].a.weight].items()},
        "grad": ns["model"].a.weight.grad.clone(),
        "arr": ns["arr"].copy(),
    }
    saved = run(notebook, "%vram snapshot")
    assert saved.text.startswith(f"%vram snapshot {saved.data.id}: 16 variables saved")
    assert "not saved: gen — generator <genexpr>: its position cannot be saved" in saved.text
    assert f"not saved: log — open file '{ns['LOG']}' (mode 'w'): reopen it yourself" in (
        saved.text
    )
    assert "not saved: holder — holds generator <genexpr>" in saved.text
    assert saved.html.startswith('<div class="vram-magic-save"><strong>%vram snapshot')
    assert {s.name: s.how for s in saved.data.saved}["OrderedDict"] == (
        "from collections import OrderedDict"
    )
    for name in NAMES:
        if name not in {"LOG", "_private"}:
            ns.pop(name, None)

    restored = run(notebook, "%vram restore")
    assert restored.text.startswith(f"%vram restore {saved.data.id}: 16 variables restored")
    assert "not in the snapshot: gen — generator" in restored.text
    assert "gen" not in ns and "log" not in ns and "holder" not in ns
    assert torch.equal(ns["model"](probe), expected["out"])
    assert torch.equal(ns["model"].a.weight.grad, expected["grad"])
    weight = ns["model"].a.weight
    assert ns["opt"].param_groups[0]["params"][0] is weight  # the optimizer drives the model
    assert all(torch.equal(ns["opt"].state[weight][k], v) for k, v in expected["state"].items())
    assert ns["view"].untyped_storage().data_ptr() == ns["base"].untyped_storage().data_ptr()
    assert np.array_equal(ns["arr"], expected["arr"]) and ns["arr"].flags.writeable
    assert ns["config"] == {"lr": 0.01, "layers": [4, 8], "name": "demo"}
    assert isinstance(ns["model"], ns["Net"]) and ns["np"] is np
    assert ns["double"](21) == 42 and torch.equal(ns["predict"](probe), expected["out"])
    run(notebook, "SCALE = 0")  # the restored functions see the live namespace, as before
    assert not ns["predict"](probe).any()
    ns["opt"].step()  # and training goes on
    with open(ns["LOG"]) as log:
        assert log.read() == "kept"  # the file was never reopened (nor truncated)
    assert "removed (restored)" in restored.text and not list(snapshot_dir.glob("2*"))


def test_shared_storage_is_written_once(notebook):
    result = vram_magic.snapshot()
    sizes = {s.name: s.nbytes for s in result.saved}
    assert sizes["base"] == 400 and sizes["view"] == 0  # the view rides on base's storage
    weights = 4 * (4 * 8 + 8 + 8 * 2 + 2)
    assert sizes["model"] == 2 * weights  # the weights and their gradients
    assert sizes["opt"] == 2 * weights + 4 * 4  # exp_avg, exp_avg_sq, 4 steps; not the weights
    data = Store().folder(result.id) / DATA
    assert data.stat().st_size == sum(sizes.values())


def test_exclude_and_what_is_not_user_state(notebook):
    run(notebook, "shown = %vram snapshots")
    result = vram_magic.snapshot(exclude=["arr", "model", "opt", "predict"])
    names = {s.name for s in result.saved} | {u.name for u in result.unsaved}
    assert {"arr", "model", "opt", "predict", "_private", "In", "Out", "shown"}.isdisjoint(names)
    assert "config" in names and "LOG" in names


def test_a_variable_that_fails_to_load_does_not_stop_the_others(vram, snapshot_dir, tmp_path):
    (tmp_path / "localmod.py").write_text("class Thing:\n    pass\n")
    sys.path.insert(0, str(tmp_path))
    try:
        run(vram, "from localmod import Thing\nthing = Thing()\npair = [thing, 2]\nafter = 7")
        snap = vram_magic.snapshot()
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("localmod")
    for name in ("Thing", "thing", "pair", "after"):
        del vram.user_ns[name]
    result = run(vram, "%vram restore").data
    skipped = {u.name: u.reason for u in result.skipped}
    assert skipped["Thing"].startswith("could not be restored: ModuleNotFoundError")
    assert skipped["thing"].startswith("could not be restored: ModuleNotFoundError")
    assert skipped["pair"] == "shares objects with thing, which could not be restored"
    assert vram.user_ns.pop("after") == 7
    assert result.kept and Store().ids() == [snap.id]  # kept until a restore fully succeeds


def test_listing_keep_and_delete(notebook, snapshot_dir):
    first = vram_magic.snapshot(exclude=["model", "opt"])
    second = vram_magic.snapshot()
    listed = run(notebook, "%vram snapshots")
    assert [info.id for info in listed.data] == [first.id, second.id]
    assert f"2 snapshot(s) in {snapshot_dir}, oldest first" in listed.text
    run(notebook, f"%vram restore {first.id} --keep --to cpu")
    assert [info.id for info in vram_magic.snapshots()] == [first.id, second.id]
    assert run(notebook, f"%vram snapshots --delete {first.id}").text == (
        f"snapshot {first.id} deleted"
    )
    assert [info.id for info in vram_magic.snapshots()] == [second.id]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("%vram restore nosuchid", "%vram restore: no snapshot nosuchid; `%vram snapshots` lists"),
        ("%vram restore ../../etc", "%vram restore: no snapshot ../../etc;"),
        ("%vram snapshots --delete x", "%vram snapshots: no snapshot x;"),
        ("%vram snapshot --exclude nope", "%vram snapshot: cannot exclude nope: no such variable"),
        ("%vram restore --to cuda", "%vram restore: argument --to: invalid choice: 'cuda'"),
        ("%vram restore", "%vram restore: no snapshots in "),
    ],
)
def test_bad_input_is_one_line(vram, snapshot_dir, line, message):
    error = vram.run_cell(line).error_in_exec
    assert isinstance(error, UsageError) and str(error).startswith(message)
    assert "\n" not in str(error)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_a_device_that_is_not_here_falls_back_to_cpu():
    place = Placement(None)
    assert place("cuda:0") == "cpu" and place("cuda:0") == "cpu" and place("cpu") == "cpu"
    assert place.notes == ["cuda:0 is not available here: its tensors were loaded to cpu"]
    assert Placement("cpu")("cuda:1") == "cpu"


def test_reasons_for_what_cannot_be_saved(tmp_path):
    loader = torch.utils.data.DataLoader(torch.arange(8.0), batch_size=2)
    thread = threading.Thread(target=print, name="worker")
    path = tmp_path / "closed.txt"
    with open(path, "w") as closed, socket.socket() as sock:
        pass
    assert unsavable_reason(iter(loader)) == (
        "DataLoader iterator: its position and workers cannot be saved; call iter(loader) again"
    )
    assert unsavable_reason(thread) == "thread 'worker': start it again"
    assert unsavable_reason(sock) == "socket: connect it again"
    assert unsavable_reason(closed) == f"closed file '{path}'"
    assert unsavable_reason(io.BytesIO(b"data")) is None  # in memory: pickled with its bytes
    assert unsavable_reason(loader) is None  # the loader itself is saved


def test_a_restore_says_where_its_time_went(notebook):
    """Imports (the notebook's ``import`` lines, and the modules its pickled classes live in)
    apart from the tensors' bytes: what the sidebar's Restart & restore summary shows."""
    notebook.user_ns["colorsys"] = __import__("colorsys")
    saved = run(notebook, "%vram snapshot").data
    sys.modules.pop("colorsys")  # imported again by the restore
    back = vram_magic.restore(saved.id)
    assert "colorsys" in sys.modules and "colorsys" in {s.name for s in back.restored}
    assert back.import_seconds > 0 and back.tensor_seconds > 0
    assert back.import_seconds + back.tensor_seconds <= back.seconds
    notebook.user_ns.pop("colorsys")
