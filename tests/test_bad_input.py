"""Shell tier: bad input to every ``%vram`` subcommand and ``%%fit`` is one line naming the
problem, never a traceback; the Python twins raise the actions' errors with the same words."""

import pytest
from IPython.core.error import UsageError

import vram_magic
from vram_magic.actions.free import FreeError
from vram_magic.actions.limit import LimitError, current_limit
from vram_magic.census.take import DeviceError, devices_here

torch = pytest.importorskip("torch")


def run(shell, code):
    return shell.run_cell(code, store_history=True)


def refused(shell, capsys, code) -> str:
    """The one-line error a bad cell gives; what the user sees is that line and nothing else."""
    capsys.readouterr()
    error = run(shell, code).error_in_exec
    assert type(error) is UsageError, error
    message = str(error)
    assert message and "\n" not in message
    shown = capsys.readouterr()
    assert shown.err == f"UsageError: {message}\n" and shown.out == ""  # no traceback
    return message


@pytest.fixture
def lifted(vram):
    """The shell, with any limit a test set lifted afterwards."""
    yield vram
    run(vram, "%vram limit off")


def test_limit_zero_is_refused_and_the_limit_in_force_stays(lifted, capsys):
    run(lifted, "held = torch.ones(2**20)")  # 4 MiB of live CPU tensors, at least
    try:
        assert run(lifted, "%vram limit 10GB").success
        said = refused(lifted, capsys, "%vram limit 0")
        assert said.startswith("%vram limit: '0' leaves no room: this kernel already holds ")
        assert said.endswith("; ask for more, or free memory first (%vram free)")
        if not torch.cuda.is_available():
            assert "MiB of live CPU tensors, which the budget counts" in said
            assert "'1MB' leaves no room" in refused(lifted, capsys, "%vram limit 1MB")
        assert current_limit().nbytes == 10 * 10**9  # a refused size changes nothing
        with pytest.raises(LimitError) as twin:
            vram_magic.limit("0")
        assert said == f"%vram limit: {twin.value}"
    finally:
        run(lifted, "del held")


@pytest.mark.parametrize("size", ["-5GB", "-5", "-0.5G", "-60%"])
def test_negative_limit_says_so(lifted, capsys, size):
    said = refused(lifted, capsys, f"%vram limit {size}")
    assert said == f"%vram limit: '{size}': a size cannot be negative"
    with pytest.raises(LimitError) as twin:
        vram_magic.limit(size)
    assert said == f"%vram limit: {twin.value}"
    assert current_limit() is None


def test_who_on_a_device_that_does_not_exist(vram, capsys, use_recording):
    use_recording("two_gpus_other_processes")
    here = devices_here()
    if not torch.cuda.is_initialized():  # else torch's own GPUs are the visible ones
        assert here == ("cpu", "cuda:0", "cuda:1")  # the recording's two GPUs
    said = refused(vram, capsys, "%vram who --device cuda:99")
    assert said.startswith(
        f"%vram who: argument --device: no device cuda:99 (devices: {', '.join(here)}). Usage: "
    )
    with pytest.raises(DeviceError) as twin:
        vram_magic.who(device="cuda:99")
    assert str(twin.value) == f"no device cuda:99 (devices: {', '.join(here)})"
    assert str(twin.value) in said
    with pytest.raises(DeviceError, match=r"^no device gpu7 "):
        vram_magic.who(device="gpu7")  # the twin has no parser to catch the spelling
    assert run(vram, f"%vram who --device {here[-1]}").success


def test_who_without_a_gpu_lists_only_the_cpu(vram, capsys):
    if devices_here() != ("cpu",):
        pytest.skip("this machine has a GPU")
    said = refused(vram, capsys, "%vram who --device 0")
    assert said.startswith("%vram who: argument --device: no device cuda:0 (devices: cpu). ")


def test_free_names_each_variable_once(vram):
    run(vram, "a = torch.ones(10); b = torch.ones(10)")
    result = run(vram, "%vram free a a").result
    assert result.data.deleted == ("a",)
    assert result.text.count("deleted: a") == 1 and "a, a" not in result.text
    run(vram, "a = torch.ones(10)")
    assert vram_magic.free("b", "a", "b").deleted == ("b", "a")  # first mention's order
    with pytest.raises(FreeError, match=r"^no variable named gone in this notebook$"):
        vram_magic.free("gone", "gone")


BAD = [
    ("%vram bogus", "%vram: unknown subcommand 'bogus'. Valid subcommands: live, report, who"),
    ('%vram report "unclosed', "%vram: No closing quotation"),
    ("%vram --frobnicate", "%vram live: unrecognized arguments: --frobnicate"),
    ("%vram live --interval 0", "argument --interval: invalid interval (0.05 to 60 seconds)"),
    ("%vram live --interval x", "invalid interval (0.05 to 60 seconds) value: 'x'"),
    ("%vram report --device x", "%vram report: argument --device: invalid count value: 'x'"),
    ("%vram report --device 9", "%vram report: no device cuda:9 (visible: "),
    ("%vram report --top 1.5", "argument --top: invalid count value: '1.5'"),
    ("%vram who --device gpu7", "%vram who: argument --device: invalid device value: 'gpu7'"),
    ("%vram who --device cuda:", "invalid device value: 'cuda:'"),
    ("%vram who --device cuda:99", "argument --device: no device cuda:99 (devices: cpu"),
    ("%vram who --top x", "%vram who: argument --top: invalid count value: 'x'"),
    ("%vram history --last -1", "%vram history: argument --last: invalid count value: '-1'"),
    ("%vram history extra", "%vram history: unrecognized arguments: extra"),
    ("%vram free no_such_name", "%vram free: no variable named no_such_name in this notebook"),
    ("%vram free --top x", "%vram free: argument --top: invalid count value: 'x'"),
    ("%vram estimate", "%vram estimate: the following arguments are required: MODEL"),
    ("%vram estimate {missing}", "%vram estimate: could not read a model config from '{missing}'"),
    ("%vram estimate bad_number", "%vram estimate: cannot estimate a int: give a model"),
    ("%vram estimate m --train bogus", "%vram estimate: --train must be one of adam, adamw,"),
    ("%vram estimate m --batch 0", "%vram estimate: --batch must be at least 1, not 0"),
    ("%vram estimate m --dtype int3", "%vram estimate: --dtype must be one of float32,"),
    ("%vram estimate m --batch -1", "%vram estimate: argument --batch: invalid count value: '-1'"),
    ("%vram estimate m --seq x", "%vram estimate: argument --seq: invalid count value: 'x'"),
    ("%vram limit", "%vram limit: the following arguments are required: SIZE"),
    ("%vram limit 12parsecs", "%vram limit: cannot read '12parsecs' as a size: use 8GB"),
    ("%vram limit 1.2.3GB", "%vram limit: cannot read '1.2.3GB' as a size"),
    ("%vram limit .", "%vram limit: cannot read '.' as a size"),
    ("%vram limit 150%", "%vram limit: '150%': a percentage needs a known total and 0 < P <= 100"),
    ("%vram limit 0%", "%vram limit: '0%': a percentage needs a known total"),
    ("%vram limit 0", "%vram limit: '0' leaves no room: this kernel already holds"),
    ("%vram limit -5GB", "%vram limit: '-5GB': a size cannot be negative"),
    ("%vram limit 5GB 6GB", "%vram limit: unrecognized arguments: 6GB"),
    ("%vram snapshot --exclude", "argument --exclude: expected at least one argument"),
    ("%vram snapshot --exclude nope", "%vram snapshot: cannot exclude nope: no such variable"),
    ("%vram restore", "%vram restore: no snapshots in "),
    ("%vram restore nonexistent-id", "%vram restore: no snapshot nonexistent-id"),
    ("%vram restore --to cuda", "%vram restore: argument --to: invalid choice: 'cuda'"),
    ("%vram snapshots --delete nope", "%vram snapshots: no snapshot nope"),
    ("%vram snapshots --delete", "argument --delete: expected one argument"),
    ("%vram restart --exclude", "%vram restart: argument --exclude: expected at least one"),
    ("%vram restart --exclude nope", "%vram restart: not restarted: cannot exclude nope"),
    ("%%fit --max-oom x\npass", "%%fit: argument --max-oom: invalid count value: 'x'"),
    ("%%fit --max-oom -1\npass", "%%fit: argument --max-oom: invalid count value: '-1'"),
    ("%%fit --headroom 2\npass", "%%fit: argument --headroom: invalid headroom (0 to 1) value"),
    ("%%fit --quantize 3bit\npass", "%%fit: argument --quantize: invalid choice: '3bit'"),
    ("%%fit --accumulate a --no-accumulate\npass", "not allowed with argument --accumulate"),
    ("%%fit --batch-size\npass", "%%fit: argument --batch-size: expected one argument"),
    ("%%fit extra\npass", "%%fit: unrecognized arguments: extra"),
    ("%%fit --batch-size nope\npass", "%%fit: no variable named nope in this notebook"),
    ("%%fit --batch-size bad_text\npass", "%%fit: bad_text must be a positive int variable"),
    ("%%fit --batch-size bad_number.size\npass", "%%fit: bad_number.size does not exist"),
]


@pytest.mark.parametrize(("line", "says"), BAD, ids=[line for line, _ in BAD])
def test_bad_input_is_one_line(vram, capsys, snapshot_dir, tmp_path, monkeypatch, line, says):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # a missing model is looked for locally only
    missing = str(tmp_path / "no-such-model")
    vram.user_ns.update(bad_number=1, bad_text="large", batch_size=8)
    try:
        said = refused(vram, capsys, line.format(missing=missing))
        assert says.format(missing=missing) in said
        assert current_limit() is None
    finally:
        for name in ("bad_number", "bad_text", "batch_size"):
            vram.user_ns.pop(name, None)
