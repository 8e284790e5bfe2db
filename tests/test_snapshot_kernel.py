"""Kernel tier: a notebook's namespace goes through %vram snapshot, a real kernel restart
(jupyter_client) and %vram restore; every savable value comes back equal and working."""

import pytest
from real_kernel import Kernel

pytest.importorskip("jupyter_client")
pytest.importorskip("numpy")
pytestmark = pytest.mark.kernel

NOTEBOOK = """
%load_ext vram_magic
import json
import numpy as np
import torch
from collections import OrderedDict
config = {"lr": 0.01, "layers": [4, 8], "name": "demo"}
arr = np.linspace(0, 1, 12).reshape(3, 4)
t = torch.randn(6, 4)
class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 8)
        self.b = torch.nn.Linear(8, 2)
    def forward(self, x):
        return self.b(torch.relu(self.a(x)))
model = Net()
opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
model(t).pow(2).mean().backward()
opt.step()
double = lambda x: 2 * x
def predict(x):
    return model(x)
gen = (i for i in range(3))
log = open(LOG, "w")
log.write("kept")
log.flush()
"""
CHECKS = """
expected = torch.load(EXPECTED, weights_only=False)
state, saved = opt.state_dict(), expected["opt"]
checks = {
    "model": torch.equal(model(expected["probe"]), expected["out"]),
    "predict": torch.equal(predict(expected["probe"]), expected["out"]),
    "optimizer state": all(
        torch.equal(state["state"][i][k], value)
        for i, values in saved["state"].items()
        for k, value in values.items()
    ),
    "param groups": state["param_groups"] == saved["param_groups"],
    "optimizer drives the model": opt.param_groups[0]["params"][0] is model.a.weight,
    "tensor": torch.equal(t, expected["t"]),
    "array": bool((arr == expected["arr"]).all()),
    "config": config == {"lr": 0.01, "layers": [4, 8], "name": "demo"},
    "lambda": double(21) == 42,
    "class": isinstance(model, Net) and type(model).__name__ == "Net",
    "imports": np.__name__ == "numpy" and json.dumps([1]) == "[1]" and OrderedDict is not None,
    "unsaved absent": not {"gen", "log"} & set(globals()),
}
"""
SAVE_EXPECTED = """
probe = torch.randn(3, 4)
torch.save({"probe": probe, "out": model(probe).detach(), "opt": opt.state_dict(), "t": t,
            "arr": arr}, EXPECTED)
del probe
"""


def test_namespace_survives_a_kernel_restart(tmp_path):
    kernel = Kernel(VRAM_MAGIC_SNAPSHOT_DIR=str(tmp_path / "snapshots"))
    paths = f"LOG = {str(tmp_path / 'log.txt')!r}\nEXPECTED = {str(tmp_path / 'expected.pt')!r}"
    try:
        kernel.run(paths + NOTEBOOK + SAVE_EXPECTED)
        saved = kernel.run("%vram snapshot")
        assert ": 14 variables saved" in saved  # 16 names, 2 of them unsavable
        assert "not saved: gen — generator <genexpr>: its position cannot be saved" in saved
        assert f"not saved: log — open file '{tmp_path / 'log.txt'}' (mode 'w')" in saved

        kernel.restart()
        assert kernel.value("'model' in globals()") is False
        restored = kernel.run("%load_ext vram_magic\n%vram restore")
        assert ": 14 variables restored in" in restored and "skipped" not in restored
        assert "not in the snapshot: log — open file" in restored
        kernel.run(paths + CHECKS)
        assert kernel.value("checks") == {name: True for name in kernel.value("list(checks)")}
        assert (tmp_path / "log.txt").read_text() == "kept"  # never reopened, never truncated

        # %vram restart where no JupyterLab answers: the kernel exits, its manager starts a new
        # one, and loading vram_magic there restores the snapshot marked for this kernel id
        kernel.run("vram_magic_settings = __import__('vram_magic').settings")
        kernel.run("vram_magic_settings.restart_wait = 0.5")
        said = kernel.run_until_exit("%vram restart")
        assert "variables saved" in said and "no JupyterLab with vram_magic answered" in said
        kernel.restart()
        restored = kernel.run("%load_ext vram_magic")
        assert ": 18 variables restored in" in restored  # the 14, and 4 made by the checks
        kernel.run(paths + CHECKS)
        assert all(kernel.value("checks").values())
        assert "restored" not in kernel.run("%reload_ext vram_magic"), "once only"
    finally:
        kernel.stop()


def test_the_panels_restart_button(tmp_path):
    """The live panel's Restart & restore, clicked where no JupyterLab answers: the panel shows
    the snapshot, the kernel stops, and its successor gets the variables back on load."""
    kernel = Kernel(VRAM_MAGIC_SNAPSHOT_DIR=str(tmp_path / "snapshots"))
    try:
        kernel.run("%load_ext vram_magic\nsteps = [1, 2, 3]\n%vram")
        kernel.run("__import__('vram_magic').settings.restart_wait = 0.3")
        panel = (  # an expression, so the snapshot holds no name but the user's
            "__import__('vram_magic.ipython.extension', fromlist=['_'])"
            ".loaded_in(get_ipython()).hooks.live.panels[0]"
        )
        click = (
            f"next(b for box in {panel}.widget.children for b in getattr(box, 'children', ())"
            " if b.description == 'Restart & restore').click()"
        )
        kernel.run_until_exit(click)
        kernel.restart()
        assert "1 variable restored" in kernel.run("%load_ext vram_magic")
        assert kernel.value("steps") == [1, 2, 3]
    finally:
        kernel.stop()
