"""Shell tier, real frameworks: a trained ``transformers.Trainer`` is named the way a user would.

A tiny GPT-2 built from a config (no download) trains two steps on CPU; ``who`` must then name
its tensors through ``trainer.model`` and ``trainer.optimizer.state[<parameter name>]``, not
through whichever back-reference the walk met first.
"""

import shutil

import pytest

pytest.importorskip("transformers")

SETUP = """
import tempfile
import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

config = GPT2Config(
    n_layer=2, n_embd=32, n_head=2, vocab_size=100, n_positions=64, bos_token_id=0, eos_token_id=0
)
tokens = torch.arange(16) % 100
dataset = [{"input_ids": tokens + i, "labels": tokens + i} for i in range(8)]
output_dir = tempfile.mkdtemp()
args = TrainingArguments(
    output_dir=output_dir, max_steps=2, per_device_train_batch_size=4, report_to=[],
    save_strategy="no", logging_strategy="no", use_cpu=True, disable_tqdm=True,
)
trainer = Trainer(model=GPT2LMHeadModel(config), args=args, train_dataset=dataset)
trainer.train()
"""
CREATED = (  # what SETUP binds: removed afterwards, the shell is shared with later tests
    "trainer",
    "args",
    "dataset",
    "config",
    "tokens",
    "output_dir",
    "tempfile",
    "GPT2Config",
    "GPT2LMHeadModel",
    "Trainer",
    "TrainingArguments",
)


def test_trainer_paths_are_the_ones_a_user_would_write(vram):
    outcome = vram.run_cell(SETUP, store_history=True)
    try:
        assert outcome.success, outcome.error_in_exec
        census = vram.run_cell(
            "import vram_magic\nvram_magic.who(keep_all=True)", store_history=True
        ).result
        holder = next(h for h in census.holders if "trainer" in h.name.split(" / "))
        paths = [entry.path for entry in holder.entries]
        assert any(p.startswith("trainer.model.") for p in paths), paths
        assert any(
            p.startswith("trainer.optimizer.state[transformer.") and p.endswith("].exp_avg")
            for p in paths
        ), paths
        every = [entry.path for h in census.holders for entry in h.entries]
        assert not [p for p in every if "state[param]" in p]
        assert not [p for p in every if "callback_handler" in p or "param_groups" in p]
    finally:
        shutil.rmtree(vram.user_ns.get("output_dir", "missing"), ignore_errors=True)
        for name in CREATED:
            vram.user_ns.pop(name, None)
