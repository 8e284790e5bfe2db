"""Shell tier: a bare %%fit over a real transformers Trainer, under the CPU budget.

The scenario that sends people looking for this tool: a Trainer built with
``per_device_train_batch_size=32`` runs out of memory on a small card. ``%%fit`` over
``trainer.train()`` must train at the largest divisor of 32 that fits (found here by training
fresh Trainers), keep the effective batch, finish the training, hand back every byte a failed
attempt took, and rerun with no out-of-memory error. Evaluation is sized on its own batch, a
failed attempt's optimizer steps are undone, and what accelerate prepared in a failed attempt is
released.
"""

from __future__ import annotations

import types

import pytest
import trainer_workload as workload
from IPython.core.error import UsageError

from vram_magic.actions.fit import torch_meter

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU budget: no CUDA here")
ROOM = 20 * 2**20  # with token_data(128, 64): batch 8 of 32's divisors fits, 16 does not
LEFT = 64 * 1024  # what an attempt may leave after its clean-up (allocator bookkeeping)


def run(shell, code):
    return shell.run_cell(code, store_history=True)


def fitted(shell, code):
    result = run(shell, code)
    assert result.success, result.error_in_exec
    return result.result.data


def ooms(result) -> int:
    return sum(a.outcome != "fits" for a in result.attempts)


def assert_clean_attempts(result) -> None:
    for attempt in result.attempts:
        if attempt.outcome != "fits":
            assert attempt.left is not None and attempt.left <= LEFT, attempt


@pytest.fixture
def trainer_shell(vram, monkeypatch):
    """The shell with the workload's helpers, and no size cached by another test's cell (the
    same cell over the same workload would start from it, with no prediction)."""
    from vram_magic.actions import fit as fit_module

    monkeypatch.setattr(fit_module, "_cache", {})
    workload.set_up(vram)
    before = set(vram.user_ns)
    yield vram
    run(vram, "%vram limit off")
    for name in set(vram.user_ns) - before:
        vram.user_ns.pop(name, None)


def test_bare_fit_trains_a_trainer_built_earlier(trainer_shell):
    shell = trainer_shell
    run(shell, "model = tiny_model('gpt2'); data = token_data(128, 64)")
    run(shell, "trainer = make_trainer(model, data, 32)")
    workload.limit_room(shell, ROOM)
    assert not run(shell, "trainer.train()").success  # 32 does not fit: the seed's scenario
    true_size = workload.largest_fitting_divisor(shell, "model", "data", 32)
    assert 1 < true_size < 32
    used = torch_meter().in_use()
    result = fitted(shell, "%%fit\ntrainer.train()").fits[0]
    trainer = shell.user_ns["trainer"]
    assert result.sized == "trainer.train()"
    assert result.size == true_size and result.accumulation == 32 // true_size
    assert trainer.args.per_device_train_batch_size == true_size
    assert trainer.args.gradient_accumulation_steps * true_size == 32 == result.effective
    assert trainer.state.global_step == trainer.args.max_steps
    assert ooms(result) == 0  # a traced step predicted the size: no attempt ran out
    assert result.predicted is not None and result.predicted.size == true_size
    optimizer_state = sum(
        t.numel() * t.element_size()
        for state in trainer.optimizer.state.values()
        for t in state.values()
        if torch.is_tensor(t)
    )
    assert torch_meter().in_use() - used <= optimizer_state + LEFT  # the trainer keeps only it
    text = run(shell, "%%fit\ntrainer.train()").result.text
    assert "(effective batch 32 kept)" in text and "cached" in text
    rerun = run(shell, "%%fit\ntrainer.train()").result.data.fits[0]
    assert ooms(rerun) == 0 and rerun.size == true_size
    assert (
        f"trainer.args.per_device_train_batch_size = {true_size}, "
        f"gradient_accumulation_steps = {32 // true_size}"
    ) in text


def test_no_accumulate_keeps_the_accumulation(trainer_shell):
    shell = trainer_shell
    run(shell, "model = tiny_model('gpt2'); data = token_data(128, 64)")
    run(shell, "trainer = make_trainer(model, data, 32, steps=2)")
    workload.limit_room(shell, ROOM)
    result = fitted(shell, "%%fit --no-accumulate\ntrainer.train()").fits[0]
    trainer = shell.user_ns["trainer"]
    assert result.effective is None and result.accumulation is None
    assert trainer.args.gradient_accumulation_steps == 2
    assert trainer.args.per_device_train_batch_size == result.size < 32


def test_optimizer_steps_of_a_failed_attempt_are_undone(trainer_shell):
    """Short rows first, long ones after, in order: 32 runs out at its second step, after one
    optimizer step. The weights after %%fit equal a clean run's at the chosen size. (Without
    the traced prediction, which sizes for the longest rows and would start below 32.)"""
    shell = trainer_shell
    run(
        shell,
        "from torch.utils.data import SequentialSampler\n"
        "class InOrder(Trainer):\n"
        "    def _get_train_sampler(self, *args, **kwargs):\n"
        "        return SequentialSampler(self.train_dataset)\n"
        "model = tiny_model('gpt2')\n"
        "data = token_data(32, 16) + token_data(32, 128, seed=2)\n"
        "trainer = make_trainer(model, data, 32, cls=InOrder)",
    )
    workload.limit_room(shell, ROOM)
    shown = run(shell, "%%fit --no-predict\ntrainer.train()").result
    result = shown.data.fits[0]
    assert result.weights_restored >= 1 and result.weights_unguarded is None
    assert_clean_attempts(result)
    assert "weights put back after" in shown.text
    run(shell, "%vram limit off")
    run(
        shell,
        "clean = tiny_model('gpt2')\n"
        f"reference = make_trainer(clean, data, {result.size}, {result.accumulation}, "
        "cls=InOrder)\n"
        "reference.train()",
    )
    fitted_weights = shell.user_ns["model"].state_dict()
    for name, weight in shell.user_ns["clean"].state_dict().items():
        assert torch.equal(fitted_weights[name], weight), name


def test_evaluate_sizes_the_eval_batch_only(trainer_shell):
    shell = trainer_shell
    run(shell, "model = tiny_model('gpt2'); data = token_data(128, 64)")
    run(
        shell,
        "trainer = make_trainer(model, data, 2, eval_data=data, per_device_eval_batch_size=128)",
    )
    workload.limit_room(shell, 6 * 2**20)
    assert not run(shell, "trainer.evaluate()").success
    result = fitted(shell, "%%fit\nmetrics = trainer.evaluate()").fits[0]
    trainer = shell.user_ns["trainer"]
    assert result.sized == "trainer.evaluate()" and ooms(result) >= 1
    assert trainer.args.per_device_eval_batch_size == result.size < 128
    assert trainer.args.per_device_train_batch_size == 2
    assert "eval_loss" in shell.user_ns["metrics"]
    assert_clean_attempts(result)


def test_evaluation_inside_train_shrinks_only_the_eval_batch(trainer_shell):
    shell = trainer_shell
    run(shell, "model = tiny_model('gpt2'); data = token_data(128, 64)")
    run(
        shell,
        "trainer = make_trainer(model, data, 2, max_steps=2, eval_data=data, "
        "eval_strategy='steps', eval_steps=1, per_device_eval_batch_size=128)",
    )
    workload.limit_room(shell, 6 * 2**20)
    result = fitted(shell, "%%fit\ntrainer.train()").fits[0]
    trainer = shell.user_ns["trainer"]
    assert ooms(result) == 0 and result.size == 2  # the train batch fitted as it was
    assert trainer.args.per_device_train_batch_size == 2
    assert trainer.state.global_step == 2
    (evaluation,) = result.inner
    assert evaluation.sized == "trainer.evaluate()" and ooms(evaluation) >= 1
    assert trainer.args.per_device_eval_batch_size == evaluation.size < 128
    assert any("eval_loss" in entry for entry in trainer.state.log_history)


def test_what_accelerate_prepared_in_a_failed_attempt_is_released(trainer_shell):
    shell = trainer_shell
    run(
        shell,
        "from accelerate import Accelerator\n"
        "accelerator = Accelerator(cpu=True)\n"
        "batch_size = 4096",
    )
    workload.limit_room(shell, 40 * 2**20)
    cell = (
        "%%fit\n"
        "net = torch.nn.Sequential(torch.nn.Linear(64, 1024), torch.nn.ReLU(), "
        "torch.nn.Linear(1024, 64))\n"
        "net, opt = accelerator.prepare(net, torch.optim.Adam(net.parameters()))\n"
        "loss = net(torch.randn(batch_size, 64)).pow(2).mean()\n"
        "accelerator.backward(loss)\n"
        "opt.step()\n"
        "del loss"
    )
    result = fitted(shell, cell).fits[0]
    assert ooms(result) >= 1 and result.size < 4096
    assert_clean_attempts(result)
    accelerator = shell.user_ns["accelerator"]
    assert len(accelerator._models) == len(accelerator._optimizers) == 1  # the last attempt's


def test_attribute_paths_size_a_plain_loop(trainer_shell):
    shell = trainer_shell
    shell.user_ns["cfg"] = types.SimpleNamespace(batch_size=4096, steps=1)
    run(shell, "net = torch.nn.Linear(64, 1024)")
    workload.limit_room(shell, 30 * 2**20)
    cell = (
        "%%fit --batch-size cfg.batch_size --accumulate cfg.steps\n"
        "out = net(torch.randn(cfg.batch_size, 64)).relu().sum()\n"
        "del out"
    )
    result = fitted(shell, cell).fits[0]
    cfg = shell.user_ns["cfg"]
    assert ooms(result) >= 1 and cfg.batch_size == result.size < 4096
    assert cfg.batch_size * cfg.steps == 4096
    assert [s.where for s in result.settings] == ["cfg.batch_size", "cfg.steps"]


@pytest.mark.parametrize(
    ("line", "cell", "said"),
    [
        ("", "trainer.train()", "the Trainer has no train_dataset"),
        ("--no-accumulate --accumulate steps", "trainer.train()", "not allowed with argument"),
        ("--batch-size cfg.nope", "pass", "cfg.nope does not exist: cfg has no attribute 'nope'"),
        ("--batch-size missing", "pass", "no variable named missing in this notebook"),
        ("", "trainer.evaluate()", "the Trainer has no eval_dataset to evaluate on"),
    ],
)
def test_bad_input_is_one_line(trainer_shell, line, cell, said):
    shell = trainer_shell
    shell.user_ns["cfg"] = types.SimpleNamespace(batch_size=8)
    run(shell, "trainer = make_trainer(tiny_model('gpt2'), None, 8)")
    error = run(shell, f"%%fit {line}\n{cell}").error_in_exec
    assert isinstance(error, UsageError), error
    assert said in str(error) and "\n" not in str(error)


def test_twin_fits_a_trainer_call(trainer_shell):
    import vram_magic

    shell = trainer_shell
    run(shell, "model = tiny_model('gpt2'); data = token_data(128, 64)")
    run(shell, "trainer = make_trainer(model, data, 32)")
    workload.limit_room(shell, ROOM)
    output, result = vram_magic.fit(shell.user_ns["trainer"].train)
    assert output.global_step == 2
    assert result.sized == "trainer.train()" and result.effective == 32 and result.size < 32


def test_a_variable_set_on_trainer_args_reaches_the_trainer(trainer_shell):
    """The cell sets the Trainer's batch from notebook variables; the Trainer read its batch at
    construction, so without %%fit's guard every attempt would run at 32."""
    shell = trainer_shell
    run(shell, "model = tiny_model('gpt2'); data = token_data(128, 64)")
    run(shell, "trainer = make_trainer(model, data, 32)\nbs, acc = 32, 1")
    workload.limit_room(shell, ROOM)
    cell = (
        "%%fit --batch-size bs --accumulate acc\n"
        "trainer.args.per_device_train_batch_size = bs\n"
        "trainer.args.gradient_accumulation_steps = acc\n"
        "trainer.train()"
    )
    result = fitted(shell, cell).fits[0]
    trainer = shell.user_ns["trainer"]
    assert result.size == shell.user_ns["bs"] == trainer._train_batch_size < 32
    assert shell.user_ns["bs"] * shell.user_ns["acc"] == 32
    assert trainer.state.global_step == trainer.args.max_steps
    assert_clean_attempts(result)


def test_growing_from_too_small_trains_once_at_the_chosen_size(trainer_shell):
    """From 1 x 32 the search grows; each run that fitted at a smaller size is undone, so the
    weights equal a clean run's at the chosen size (not three trainings in a row)."""
    shell = trainer_shell
    run(shell, "model = tiny_model('gpt2'); data = token_data(128, 64)")
    run(shell, "trainer = make_trainer(model, data, 1, steps=32)")
    workload.limit_room(shell, ROOM)
    result = fitted(shell, "%%fit --no-predict\ntrainer.train()  # from too small").fits[0]
    assert result.size > 1 and result.effective == 32 and ooms(result) <= 1
    assert sum(a.outcome == "fits" for a in result.attempts) >= 2  # it grew
    assert result.weights_restored >= 1
    run(shell, "%vram limit off")
    run(
        shell,
        "clean = tiny_model('gpt2')\n"
        f"reference = make_trainer(clean, data, {result.size}, {result.accumulation})\n"
        "reference.train()",
    )
    fitted_weights = shell.user_ns["model"].state_dict()
    for name, weight in shell.user_ns["clean"].state_dict().items():
        assert torch.equal(fitted_weights[name], weight), name


def test_the_prediction_sizes_for_the_longest_rows(trainer_shell):
    """Short and long rows mixed (the Trainer shuffles them): the traced step is the longest
    batch's, so no attempt runs out whichever rows come first."""
    shell = trainer_shell
    run(shell, "model = tiny_model('gpt2')")
    run(shell, "data = token_data(64, 16) + token_data(64, 96, seed=2)")
    run(shell, "trainer = make_trainer(model, data, 32, max_steps=4)")
    workload.limit_room(shell, ROOM)
    shown = run(shell, "%%fit\ntrainer.train()").result
    result = shown.data.fits[0]
    assert result.predicted is not None and result.predicted.size == result.size
    assert ooms(result) == 0 and len(result.attempts) == 1 and result.effective == 32
    assert shell.user_ns["trainer"].state.global_step == 4
    assert f"predicted before running: {result.size} fits" in shown.text


def test_a_step_that_cannot_be_traced_is_searched_as_before(trainer_shell):
    """A model whose forward reads a value (here a bounds check) cannot run on fake tensors:
    no prediction, and the search finds the size from its out-of-memory errors."""
    shell = trainer_shell
    run(
        shell,
        "class Checked(torch.nn.Module):\n"
        "    def __init__(self, inner):\n"
        "        super().__init__()\n"
        "        self.inner, self.config = inner, inner.config\n"
        "    def forward(self, input_ids=None, labels=None, attention_mask=None):\n"
        "        if int(input_ids.max()) >= self.config.vocab_size:\n"
        "            raise ValueError('a token outside the vocabulary')\n"
        "        return self.inner(input_ids, labels=labels, attention_mask=attention_mask)\n"
        "model = Checked(tiny_model('gpt2')); data = token_data(128, 64)\n"
        "trainer = make_trainer(model, data, 32)",
    )
    workload.limit_room(shell, ROOM)
    shown = run(shell, "%%fit\ntrainer.train()").result
    result = shown.data.fits[0]
    assert result.predicted is None and ooms(result) >= 1 and 1 < result.size < 32
    assert "predicted" not in shown.text


def test_a_hugging_face_dataset_with_text_columns_is_predicted(trainer_shell):
    """A ``datasets.Dataset`` (rows as tensors, a text column the model does not take, as a
    tokenized corpus has): its longest rows are collated and what the forward takes is kept."""
    pytest.importorskip("datasets")
    shell = trainer_shell
    run(
        shell,
        "import datasets\n"
        "rows = [row['input_ids'].tolist() for row in token_data(128, 64)]\n"
        "data = datasets.Dataset.from_dict({'input_ids': rows, 'labels': rows, "
        "'text': ['a line of text'] * len(rows)})\n"
        "data.set_format('torch', columns=['input_ids', 'labels'], output_all_columns=True)\n"
        "model = tiny_model('gpt2')\n"
        "trainer = make_trainer(model, data, 32)",
    )
    workload.limit_room(shell, ROOM)
    result = fitted(shell, "%%fit\ntrainer.train()").fits[0]
    assert result.predicted is not None and result.predicted.size == result.size
    assert ooms(result) == 0 and result.effective == 32


def test_bf16_over_a_model_prepared_in_float32_is_predicted_as_it_trains(trainer_shell):
    """A Trainer with ``bf16=True`` over a model that an earlier train() had accelerate prepare
    in float32 trains in float32 (accelerate prepares a model once): the prediction traces the
    step as it runs, so no attempt runs out, and the report says what brings bf16 in."""
    shell = trainer_shell
    run(shell, "model = tiny_model('gpt2'); data = token_data(128, 64)")
    assert run(shell, "make_trainer(model, data, 2).train()").success  # prepared in float32
    run(shell, "trainer = make_trainer(model, data, 32, bf16=True)")
    workload.limit_room(shell, 24 * 2**20)  # where a bf16 step at 16 would fit, and float32's 8
    true_size = workload.largest_fitting_divisor(shell, "model", "data", 32, bf16=True)
    assert true_size == workload.largest_fitting_divisor(shell, "model", "data", 32)
    shown = run(shell, "%%fit\ntrainer.train()").result
    result = shown.data.fits[0]
    assert result.predicted is not None and result.predicted.size == true_size == result.size
    assert ooms(result) == 0
    assert "model._is_accelerate_prepared = False" in shown.text


@pytest.mark.parametrize(
    "adapted, room",
    [(workload.LORA_MODEL, ROOM // 2), (workload.QLORA_MODEL, 8 * 2**20)],
    ids=["lora", "qlora"],
)
def test_lora_and_qlora_models_are_predicted_and_fitted(trainer_shell, adapted, room):
    """Fine-tuning through a Trainer with peft's LoRA adapters, over a float32 GPT-2 and (QLoRA)
    over a Llama loaded in 4 bits, whose bitsandbytes weights cannot hold fake tensors (the
    traced copy stands each 4-bit layer in with its packed weight): the prediction finds the
    largest fitting divisor and no attempt runs out."""
    shell = trainer_shell
    trainer = "data = token_data(128, 64)\ntrainer = make_trainer(model, data, 32)"
    setup = run(shell, f"{adapted}\n{trainer}")
    assert setup.success, setup.error_in_exec
    workload.limit_room(shell, room)
    true_size = workload.largest_fitting_divisor(shell, "model", "data", 32)
    assert 1 < true_size < 32
    shown = run(shell, "%%fit\ntrainer.train()").result
    result = shown.data.fits[0]
    assert result.predicted is not None and result.predicted.size == true_size == result.size
    assert ooms(result) == 0 and result.effective == 32
    assert shell.user_ns["trainer"].state.global_step == shell.user_ns["trainer"].args.max_steps
