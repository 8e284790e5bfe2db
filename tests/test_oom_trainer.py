"""Shell tier, real transformers: the out-of-memory report speaks the failed cell's terms (a
Trainer's arguments, a batch variable, ``generate``'s KV cache) with numbers computed from what
the cell measured or from steps traced on fake tensors, and the sizes it suggests really fit.

Each test runs out of memory under ``%vram limit`` (the CPU budget, real OutOfMemoryErrors),
reads the report the post-run hook printed, and then runs at the suggested size.
"""

import shutil

import pytest
from measured_peak import profiled
from trainer_workload import LORA_MODEL, QLORA_MODEL, limit_room, set_up, train_fits

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU budget: no CUDA here")

MiB = 2**20
HELPERS = (
    "transformers",
    "Trainer",
    "TrainingArguments",
    "tiny_model",
    "token_data",
    "pad_batch",
    "make_trainer",
    "VOCAB",
    "DEVICE",
)


def run(shell, code):
    return shell.run_cell(code, store_history=True)


@pytest.fixture
def reports(monkeypatch):
    """Every OomReport the post-run hook displays, as it is rendered."""
    from vram_magic.ipython import hooks

    seen = []
    render = hooks.oom_view

    def view(report):
        seen.append(report)
        return render(report)

    monkeypatch.setattr(hooks, "oom_view", view)
    return seen


@pytest.fixture
def notebook(vram):
    """The shell with the Trainer workload's helpers; the limit and every name a test made
    removed afterwards (``names``: what the test binds)."""
    import vram_magic

    set_up(vram)
    names: list[str] = []
    yield vram, names
    vram_magic.limit("off")
    shutil.rmtree(vram.user_ns.pop("OUTPUT"), ignore_errors=True)
    for name in (*HELPERS, *names):
        vram.user_ns.pop(name, None)


def report_of(shell, capsys, reports, code):
    """Run ``code``, which must run out of memory: (the printed report, the OomReport)."""
    capsys.readouterr()
    result = run(shell, code)
    assert isinstance(result.error_in_exec, torch.OutOfMemoryError), result.error_in_exec
    out = capsys.readouterr().out
    assert "vram_magic: out of memory" in out, out
    return out[out.index("vram_magic: out of memory") :], reports[-1]


def failed_training(shell, capsys, reports, setup: str, room: int):
    """Run ``setup`` (it binds model, data and trainer), then ``trainer.train()`` with ``room``
    left under the limit, which it must exceed: (the printed report, its fixes by action)."""
    result = run(shell, setup)
    assert result.success, result.error_in_exec
    limit_room(shell, room)
    out, report = report_of(shell, capsys, reports, "trainer.train()")
    return out, report, {fix.action: fix for fix in report.fixes}


def suggested_batch(fix) -> tuple[int, int]:
    """The per-device batch and accumulation steps a batch fix sets."""
    chosen = dict(fix.setting)
    return chosen["per_device_train_batch_size"], chosen["gradient_accumulation_steps"]


def distinct_estimates(report):
    from vram_magic.render.units import format_bytes

    shown = [format_bytes(fix.saves) for fix in report.fixes if fix.estimate]
    return len(shown) == len(set(shown))


def real_train_peak(shell, lora: bool = False, prepared: bool = False, **arguments) -> int:
    """The peak of a fresh Trainer's train() over the notebook's model, data and batch 32, above
    what was live before, counted by torch's profiler (not vram_magic). The model as accelerate
    prepares it anew, unless ``prepared`` (as the train() that failed left it)."""
    import copy

    import peft

    def trainer():
        model = copy.deepcopy(shell.user_ns["model"])
        model._is_accelerate_prepared = prepared
        if lora:
            model = peft.get_peft_model(model, peft.LoraConfig(task_type="CAUSAL_LM"))
        return shell.user_ns["make_trainer"](model, shell.user_ns["data"], 32, **arguments)

    return profiled(lambda held: held.pop().train(), trainer)


def test_a_trainer_gets_its_own_arguments_and_a_batch_that_fits(notebook, reports, capsys):
    """Each fix's bytes are traced (this model's step on fake tensors beside the one that
    failed): the suggested batch fits and twice it does not, and what gradient checkpointing,
    bf16 and LoRA save equals what real trainings with them save. bf16 on the same model
    object needs the step the report names: the train() that failed had accelerate prepare
    the model in float32, and accelerate prepares a model once."""
    shell, names = notebook
    names += ["model", "data", "trainer"]
    setup = (
        "model = tiny_model('gpt2'); data = token_data(128, 64)\n"
        "trainer = make_trainer(model, data, 32)"
    )
    out, report, fixes = failed_training(shell, capsys, reports, setup, 20 * MiB)

    batch = fixes["a smaller batch, same effective batch"]
    size, steps = suggested_batch(batch)
    assert size * steps == 32 and size <= 16 and batch.traced and not batch.estimate
    assert (
        f"per_device_train_batch_size={size}, gradient_accumulation_steps={steps} "
        "(effective batch 32 kept)" in out
    ), out
    assert "%%fit" in out and "the Trainer's fixes are traced" in out
    for setting in ("gradient_checkpointing=True", 'optim="adamw_bnb_8bit"', "bf16=True"):
        assert setting in out, setting
    assert "LoRA adapters (peft)" in out
    assert [fix.saves for fix in report.fixes] == sorted(
        (fix.saves for fix in report.fixes), reverse=True
    )

    assert train_fits(shell, "model", "data", size, steps)  # the suggested size really fits
    assert size * 2 > 16 or not train_fits(shell, "model", "data", size * 2, steps // 2)

    run(shell, "%vram limit off")
    base = real_train_peak(shell)
    assert "model._is_accelerate_prepared = False" in out
    assert real_train_peak(shell, bf16=True, prepared=True) == base  # what the step is for
    for action, variant in (
        ("gradient checkpointing", {"gradient_checkpointing": True}),
        ("bf16 mixed precision", {"bf16": True}),
        ("LoRA adapters (peft)", {"lora": True}),
    ):
        saved = base - real_train_peak(shell, **variant)
        assert fixes[action].traced and abs(fixes[action].saves - saved) <= 0.05 * base, action


def test_bf16_that_does_not_take_effect_is_still_a_fix(notebook, reports, capsys):
    """A Trainer with ``bf16=True`` over a model a float32 train() prepared trains in float32
    (accelerate prepares a model once): its report still offers bf16, traced, with the step
    that brings it in, and a real training after that step saves what the report says."""
    shell, names = notebook
    names += ["model", "data", "trainer"]
    setup = (
        "model = tiny_model('gpt2'); data = token_data(128, 64)\n"
        "make_trainer(model, data, 2).train()  # prepares the model in float32\n"
        "trainer = make_trainer(model, data, 32, bf16=True)"
    )
    out, _, fixes = failed_training(shell, capsys, reports, setup, 20 * MiB)
    bf16 = fixes["bf16 mixed precision"]
    assert bf16.traced and bf16.prepared and "model._is_accelerate_prepared = False" in out
    run(shell, "%vram limit off")
    saved = real_train_peak(shell) - real_train_peak(shell, bf16=True)
    assert abs(bf16.saves - saved) <= 0.05 * real_train_peak(shell)


def test_a_lora_trainer_gets_the_fixes_that_save_something(notebook, reports, capsys):
    """A Trainer fine-tuning peft LoRA adapters: the batch it suggests is traced and fits; no
    LoRA row (it is LoRA already) and no 8-bit optimizer row (bitsandbytes keeps small tensors'
    state, the adapters', in 32 bits: it would save nothing), nor any other row under 1 KiB."""
    shell, names = notebook
    names += ["model", "data", "trainer", "peft"]
    setup = f"{LORA_MODEL}\ndata = token_data(128, 64); trainer = make_trainer(model, data, 32)"
    _, report, fixes = failed_training(shell, capsys, reports, setup, 10 * MiB)
    batch = fixes["a smaller batch, same effective batch"]
    assert batch.traced
    assert train_fits(shell, "model", "data", *suggested_batch(batch))
    assert "LoRA adapters (peft)" not in fixes and "8-bit optimizer" not in fixes
    assert min(fix.saves for fix in report.fixes) >= 1024


def test_a_qlora_trainer_gets_traced_fixes_and_no_loading_it_has(notebook, reports, capsys):
    """QLoRA through a Trainer (LoRA over a model loaded in 4 bits): its fixes are traced on
    the 4-bit layers' stand-ins, the batch fits, and no row says to load it in 4 or 8 bits
    (a larger model another cell left in the namespace may still be named)."""
    shell, names = notebook
    names += ["model", "data", "trainer", "nf4_model", "with_lora"]
    setup = f"{QLORA_MODEL}\ndata = token_data(128, 64); trainer = make_trainer(model, data, 32)"
    _, report, fixes = failed_training(shell, capsys, reports, setup, 4 * MiB)
    batch = fixes["a smaller batch, same effective batch"]
    assert batch.traced and fixes["gradient checkpointing"].traced
    assert train_fits(shell, "model", "data", *suggested_batch(batch))
    loading = [fix.how for fix in report.fixes if fix.action.startswith("load in")]
    assert not any(how.startswith("model:") for how in loading), loading  # others' models may


LOOP = """
for step in range(2):
    x = torch.randn(batch_size, 256)
    loss = net(x).square().mean()
    loss.backward()
net.zero_grad(set_to_none=True)
"""


def test_a_plain_loop_gets_its_batch_variable(notebook, reports, capsys):
    shell, names = notebook
    names += ["net", "batch_size", "x", "loss", "step"]
    run(
        shell,
        "net = torch.nn.Sequential(\n"
        "    torch.nn.Linear(256, 2048), torch.nn.GELU(), torch.nn.Linear(2048, 256)\n"
        ")\nbatch_size = 512",
    )
    limit_room(shell, 12 * MiB)
    out, report = report_of(shell, capsys, reports, LOOP)
    fixes = {fix.action: fix for fix in report.fixes}
    batch = fixes["a smaller batch"]
    ((name, size),) = batch.setting
    assert name == "batch_size" and batch.assign and 1 <= size <= 256
    assert f"batch_size = {size}" in out and "%%fit" in out
    kept = fixes["free what the failed cell kept"]  # the loop's names hold the graph
    assert kept.frees == ("loss", "x") and "%vram free loss x" in out
    assert distinct_estimates(report), out

    run(shell, "%vram free loss x")
    shell.user_ns["batch_size"] = size
    again = run(shell, LOOP)
    assert again.success, again.error_in_exec  # the suggested batch really fits


GENERATE = "out = model.generate(prompts, max_new_tokens={}, do_sample=False, pad_token_id=0)"


def test_generate_gets_its_kv_cache(notebook, reports, capsys):
    shell, names = notebook
    names += ["model", "prompts", "out"]
    run(
        shell,
        "config = transformers.GPT2Config(n_layer=4, n_embd=128, n_head=4, vocab_size=100)\n"
        "model = transformers.GPT2LMHeadModel(config).eval(); del config\n"
        "prompts = torch.randint(0, 100, (32, 4))",
    )
    limit_room(shell, 2 * MiB)  # the prompts fit, and the cache runs out a few tokens later
    out, report = report_of(shell, capsys, reports, GENERATE.format(100))
    config = shell.user_ns["model"].config

    def cache(batch, new_tokens):  # keys and values of every layer, float32
        head_dim = config.n_embd // config.n_head
        return 2 * config.n_layer * batch * (4 + new_tokens) * config.n_head * head_dim * 4

    from vram_magic.render.units import format_bytes

    assert report.kv_cache.nbytes() == cache(32, 100)
    assert f"= {format_bytes(cache(32, 100))}" in out and "32 prompts x (4 + 100 tokens)" in out
    fixes = {fix.action: fix for fix in report.fixes}
    prompts = fixes["fewer prompts per generate call"]
    assert 1 <= prompts.prompts <= 16 and not prompts.estimate
    assert prompts.saves == cache(32, 100) - cache(prompts.prompts, 100)
    assert f"generate on {prompts.prompts} prompts per call" in out
    shorter = fixes["fewer new tokens"]
    ((name, new_tokens),) = shorter.setting
    assert name == "max_new_tokens" and 1 <= new_tokens <= 50
    assert shorter.saves == cache(32, 100) - cache(32, new_tokens)
    assert f"max_new_tokens={new_tokens}" in out
    assert "halve the batch" not in fixes and "gradient checkpointing" not in fixes

    again = run(shell, GENERATE.format(new_tokens))
    assert again.success, again.error_in_exec  # the cut cache really fits
