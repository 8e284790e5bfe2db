"""Shell tier: memory stranded the usual ways is named by %vram who and returned by %vram free.

Each scenario strands about 100 MB of CPU tensors in a real IPython shell. ``who`` must name the
right holder and kind; ``free`` must return at least 99% of it, proven by weak references to the
tensors and by the measured bytes; a bystander variable stays untouched.
"""

import gc

import pytest
from IPython.core.error import UsageError

from vram_magic.actions.free import Kept
from vram_magic.census.model import Release

MB = 2**20
SIZE = 100 * MB

SCENARIOS = {
    "output cache, then del": (
        ["x = torch.ones(SIZE // 4, device=DEV); w = weakref.ref(x)", "x", "del x"],
        "Out[",
        "hidden",
        "",
    ),
    "exception inside a function": (
        [
            "def boom():\n    big = torch.ones(SIZE // 4, device=DEV)\n"
            "    global w\n    w = weakref.ref(big)\n    raise ValueError('boom')",
            "boom()",
        ],
        "sys.last_value",
        "hidden",
        "",
    ),
    "model and optimizer in a reference cycle": (
        [
            "gc.disable()\nclass Trainer: pass\ntrainer = Trainer()\n"
            "trainer.model = torch.nn.Linear(5120, 5120, bias=False, device=DEV)\n"
            "trainer.opt = torch.optim.SGD(trainer.model.parameters(), lr=0.1)\n"
            "trainer.me = trainer\nw = weakref.ref(trainer.model.weight)\ndel trainer",
        ],
        "reference cycles",
        "hidden",
        "",
    ),
    "loss kept with its graph": (
        [
            "layer = torch.nn.Linear(1024, 1024, device=DEV)\n"
            "activations = torch.ones(SIZE // 4 // 1024, 1024, device=DEV)\n"
            "loss = layer(activations).relu().sum()\nw = weakref.ref(activations)\n"
            "del activations, layer",
        ],
        "loss (autograd graph)",
        "graph",
        "loss",
    ),
    "_ after an expression": (
        ["torch.ones(SIZE // 4, device=DEV) + 1", "w = weakref.ref(_)"],
        "_",
        "hidden",
        "",
    ),
    "closure capturing a tensor": (
        [
            "def make():\n    captured = torch.ones(SIZE // 4, device=DEV)\n    global w\n"
            "    w = weakref.ref(captured)\n    return lambda: captured.sum()",
            "fn = make()",
        ],
        "fn (closure)",
        "hidden",
        "fn",
    ),
    "exception kept in a variable": (
        [
            "def fail():\n    big = torch.ones(SIZE // 4, device=DEV)\n"
            "    global w\n    w = weakref.ref(big)\n    raise KeyError('x')",
            "try:\n    fail()\nexcept KeyError as error:\n    kept_error = error",
        ],
        "kept_error (traceback frames)",
        "hidden",
        "kept_error",
    ),
}


def run(shell, code):
    return shell.run_cell(code, store_history=True)


def start(shell, device):
    """Load vram_magic, define SIZE, DEV and a bystander, and start from nothing stranded."""
    run(shell, "%load_ext vram_magic")
    run(shell, f"import gc, weakref, torch\nSIZE = {SIZE}\nDEV = {device!r}")
    run(shell, f"bystander = torch.ones({MB // 4}, device=DEV)")
    run(shell, "%vram free")


def finish(shell):
    gc.enable()
    run(shell, "%vram free")
    run(shell, "%unload_ext vram_magic")


@pytest.fixture
def vram(shell):
    start(shell, "cpu")
    yield shell
    finish(shell)


def check_scenario(shell, scenario, allocated=lambda: 0):
    """Strand memory the scenario's way; who must name it, free must return it. Returns
    (bytes stranded per who, bytes returned per free, drop of ``allocated()`` across free)."""
    cells, holder_part, kind, free_names = SCENARIOS[scenario]
    for code in cells:
        run(shell, code)
    census = run(shell, "%vram who --all").result.data
    matching = [h for h in census.holders if holder_part in h.name and h.kind == kind]
    assert matching, [(h.name, h.kind, h.nbytes) for h in census.holders]
    stranded = sum(h.nbytes for h in matching)
    assert stranded >= SIZE

    bystander_id = id(shell.user_ns["bystander"])
    before = allocated()
    result = run(shell, f"%vram free {free_names}").result.data
    dropped = before - allocated()
    assert shell.user_ns["w"]() is None, "the stranded tensor is still alive"
    returned = sum(r.nbytes for r in result.released if holder_part in r.holder)
    assert returned >= 0.99 * stranded, result
    assert id(shell.user_ns["bystander"]) == bystander_id
    assert shell.user_ns["bystander"].sum().item() == MB // 4
    return stranded, returned, dropped


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_who_names_and_free_returns(vram, scenario):
    check_scenario(vram, scenario)


def test_dry_run_frees_nothing(vram):
    run(vram, "x = torch.ones(SIZE // 4, device=DEV); w = weakref.ref(x)")
    run(vram, "x")
    run(vram, "del x")
    result = run(vram, "%vram free --dry-run").result.data
    assert result.dry_run and result.total >= SIZE
    assert vram.user_ns["w"]() is not None
    assert "would return" in repr(run(vram, "%vram free --dry-run").result)


def test_free_names_a_user_variable_that_still_pins(vram):
    run(
        vram,
        "model = torch.nn.Linear(5120, 5120, bias=False)\n"
        "class Box: pass\nholder = Box(); holder.model = model",
    )
    view = run(vram, "%vram free model").result
    result = view.data
    assert "model" not in vram.user_ns and "holder" in vram.user_ns
    assert Kept("model", "holder.model", "holder") in result.kept
    assert (
        "model: holder.model still holds the same memory; "
        "release it with `del holder.model` or `%vram free holder`"
    ) in view.text
    run(vram, "del holder")


def test_holders_carry_their_root_stranded_and_a_release_as_facts(vram):
    run(vram, "layer = torch.nn.Linear(8, 8)\nloss = layer(torch.ones(2, 8)).sum()")
    run(
        vram,
        "def make():\n    t = torch.ones(100)\n    global w\n    w = weakref.ref(t)\n"
        "    return lambda: t",
    )
    run(vram, "fn = make()")
    run(vram, "torch.ones(300)")
    view = run(vram, "%vram who --all").result
    holders = view.data.holders
    by_name = {h.name: h for h in holders}
    graph = by_name["loss (autograd graph)"]
    assert (graph.root, graph.stranded) == ("loss", False)
    assert graph.release == Release(("loss",), detach=True)
    assert "%vram free loss, or loss = loss.detach()" in view.text
    closure = by_name["fn (closure)"]  # a hidden kind of holder, under the user's own name
    assert closure.kind == "hidden" and (closure.root, closure.stranded) == ("fn", False)
    assert closure.release == Release(("fn",))
    out = next(h for h in holders if h.root.startswith("Out["))
    assert out.stranded and out.kind == "hidden" and out.release == Release()
    assert view.data.stranded_bytes == sum(h.nbytes for h in holders if h.stranded)
    would = run(vram, "%vram free --dry-run").result.data
    # a cell later, ``_`` and the last cell's result name other outputs: compare the roots
    stranded_roots = {h.root for h in holders if h.stranded}
    assert {r.holder.split(" / ")[0] for r in would.released} == stranded_roots
    run(vram, "%vram free")
    assert vram.user_ns["w"]() is not None, "a closure under a user's variable is not stranded"
    run(vram, "%vram free fn")
    assert vram.user_ns["w"]() is None and "fn" not in vram.user_ns
    run(vram, "del layer, loss")


def test_who_paths_name_parameters_gradients_and_optimizer_state(vram):
    run(
        vram,
        "net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.Linear(8, 2))\n"
        "opt = torch.optim.Adam(net.parameters())\n"
        "net(torch.ones(3, 8)).sum().backward(); opt.step()\n"
        "batches = [torch.ones(4) for _ in range(3)]; cfg = {'emb': torch.ones(5)}",
    )
    census = run(vram, "%vram who --all").result.data
    paths = {entry.path for holder in census.holders for entry in holder.entries}
    assert {"net.0.weight", "net.1.bias", "net.0.weight.grad"} <= paths
    assert "opt.state[0.weight].exp_avg" in paths
    assert {"batches[2]", "cfg['emb']"} <= paths
    run(vram, "del net, opt, batches, cfg")


def test_shared_storage_counted_once(vram):
    run(vram, "base = torch.ones(1000); view = base[10:20]; alias = base")
    census = run(vram, "%vram who --all").result.data
    owners = [h for h in census.holders if {"base", "view", "alias"} & set(h.name.split(" / "))]
    assert sum(h.nbytes for h in owners) == 4000
    run(vram, "del base, view, alias")


def test_census_keeps_nothing_alive(vram):
    run(vram, "x = torch.ones(1000); w = weakref.ref(x)")
    census = run(vram, "%vram who").result.data
    run(vram, "del x")
    assert vram.user_ns["w"]() is None
    assert census.total_bytes > 0


@pytest.mark.parametrize(
    ("line", "says"),
    [
        ("%vram free no_such_name", "%vram free: no variable named no_such_name"),
        ("%vram who --top -1", "%vram who: argument --top: invalid count value: '-1'"),
        ("%vram who --device gpu7", "invalid device value: 'gpu7'"),
        ("%vram history --last x", "invalid count value: 'x'"),
    ],
)
def test_bad_input_gets_one_line(vram, line, says):
    error = run(vram, line).error_in_exec
    assert isinstance(error, UsageError) and says in str(error) and "\n" not in str(error)


def test_default_arguments_and_unknown_holders(vram):
    import types

    run(vram, "def scale(x, weights=torch.ones(1000)):\n    return x * weights")
    library = types.ModuleType("some_library")  # a module keeping a tensor in a global
    library.cache = __import__("torch").ones(2000)
    import sys

    sys.modules["some_library"] = library
    try:
        census = run(vram, "%vram who --all").result.data
        by_name = {h.name: h for h in census.holders}
        assert by_name["scale (default argument)"].kind == "hidden"
        assert by_name["scale (default argument)"].entries[0].path == "scale.<default 0>"
        assert by_name["no holder found"].kind == "unknown"
        assert by_name["no holder found"].nbytes >= 8000  # reported, never dropped
    finally:
        del sys.modules["some_library"], library
        run(vram, "del scale")


def test_device_filter(vram, use_recording):
    use_recording("one_gpu")  # a cuda:0 to filter on, even on a machine without a GPU
    run(vram, "on_cpu = torch.ones(1000)")
    on_cpu = run(vram, "%vram who --device cpu").result.data
    assert on_cpu.holder("on_cpu") is not None and on_cpu.device_filter == "cpu"
    on_cuda = run(vram, "%vram who --device cuda:0").result.data
    assert on_cuda.holder("on_cpu") is None
    run(vram, "del on_cpu")
