"""The transformers workloads %%fit is measured on, in tests/test_fit_trainer.py and
benchmarks/bench_trainer.py: tiny GPT-2- and BERT-shaped models built from configs (no weights
are downloaded), token datasets, a Trainer maker, the CPU budget that leaves a cell a given room,
and the true largest train batch found by real runs of fresh Trainers."""

from __future__ import annotations

import gc
import tempfile
from typing import Any

from fit_workload import allocator_room

SETUP = '''
import torch, transformers
from transformers import Trainer, TrainingArguments

def tiny_model(kind="gpt2", seed=0, width=64):
    """A GPT-2- or BERT-shaped language model, randomly initialised from a config."""
    torch.manual_seed(seed)
    if kind == "gpt2":
        config = transformers.GPT2Config(
            n_layer=2, n_embd=width, n_head=2, vocab_size=VOCAB, n_positions=512,
            bos_token_id=0, eos_token_id=0,
        )
        return transformers.GPT2LMHeadModel(config).to(DEVICE)
    config = transformers.BertConfig(
        vocab_size=VOCAB, hidden_size=width, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=2 * width, max_position_embeddings=512,
    )
    return transformers.BertForMaskedLM(config).to(DEVICE)

def token_data(count, length, seed=1):
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, VOCAB, (count, length), generator=generator)
    return [{"input_ids": row, "labels": row.clone()} for row in rows]

def pad_batch(rows):
    """Pads each batch to its longest row (labels with -100), as tokenizers' collators do."""
    longest = max(len(r["input_ids"]) for r in rows)
    def padded(key, fill):
        return torch.stack([
            torch.cat([r[key], torch.full((longest - len(r[key]),), fill, dtype=r[key].dtype)])
            for r in rows
        ])
    mask = torch.stack([
        torch.cat([torch.ones(len(r["input_ids"]), dtype=torch.long),
                   torch.zeros(longest - len(r["input_ids"]), dtype=torch.long)])
        for r in rows
    ])
    return {"input_ids": padded("input_ids", 0), "labels": padded("labels", -100),
            "attention_mask": mask}

def make_trainer(model, data, batch, steps=1, max_steps=2, cls=Trainer, eval_data=None, **extra):
    args = TrainingArguments(
        output_dir=OUTPUT, max_steps=max_steps, per_device_train_batch_size=batch,
        gradient_accumulation_steps=steps, report_to=[], save_strategy="no",
        logging_strategy="no", use_cpu=DEVICE == "cpu", disable_tqdm=True, seed=0, **extra,
    )
    return cls(
        model=model, args=args, train_dataset=data, eval_dataset=eval_data,
        data_collator=pad_batch,
    )
'''

VOCAB = 500

# Cells binding ``model`` to a fine-tuning model: peft's LoRA adapters on the tiny GPT-2, and
# QLoRA's: the same adapters on a tiny Llama that transformers loads in 4 bits (bitsandbytes)
LORA_MODEL = (
    "import peft\n"
    "model = peft.get_peft_model(tiny_model('gpt2'), peft.LoraConfig(task_type='CAUSAL_LM'))"
)
QLORA_MODEL = (
    "from measured_peak import nf4_model, with_lora\n"
    "model = with_lora(nf4_model(transformers.LlamaConfig(hidden_size=64, "
    "intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, "
    "num_key_value_heads=2, vocab_size=VOCAB, architectures=['LlamaForCausalLM']), DEVICE))"
)


def set_up(shell: Any, device: str = "cpu") -> None:
    """Define the workload's helpers in the shell's namespace, for models on ``device``."""
    shell.user_ns.update(
        VOCAB=VOCAB, DEVICE=device, OUTPUT=tempfile.mkdtemp(prefix="vram_magic-trainer-")
    )
    shell.run_cell(SETUP, store_history=False, silent=True)


def limit_room(shell: Any, room: int) -> int:
    """``%vram limit`` at what this kernel holds now plus ``room``; returns the limit. On CUDA
    that is torch's reserved memory and the CUDA context (a limit counts both); on the CPU the
    live tensor bytes the budget counts."""
    import torch

    import vram_magic
    from vram_magic.actions.limit import cpu_budget

    gc.collect()
    if torch.cuda.is_available():
        vram_magic.limit("off")
        torch.cuda.empty_cache()
        limit = int(allocator_room(torch.cuda.memory_reserved() + room))  # context on top
        vram_magic.limit(str(limit))
        return limit
    vram_magic.limit("1TB")
    budget = cpu_budget()
    assert budget is not None, "the CPU budget is for machines without CUDA"
    total = budget.used + room
    vram_magic.limit(str(total))
    return total


def train_fits(shell: Any, model: str, data: str, batch: int, steps: int, **extra: Any) -> bool:
    """Train a fresh Trainer of the notebook's ``model`` on ``data`` at ``batch`` under the limit
    in force; everything it made is dropped afterwards, gradients too."""
    import torch

    namespace = shell.user_ns
    trainer = namespace["make_trainer"](namespace[model], namespace[data], batch, steps, **extra)
    try:
        trainer.train()
        return True
    except torch.OutOfMemoryError:
        return False
    finally:
        namespace[model].zero_grad(set_to_none=True)
        del trainer
        gc.collect()


def largest_fitting(shell: Any, model: str, data: str, effective: int, **extra: Any) -> int:
    """The largest size that fits, by bisection over fresh Trainers at an effective batch of
    ``effective`` (accumulation ``effective // size``, rounded down for non-divisors)."""
    lo, hi = 0, effective + 1
    while hi - lo > 1:
        middle = (lo + hi) // 2
        if train_fits(shell, model, data, middle, max(effective // middle, 1), **extra):
            lo = middle
        else:
            hi = middle
    return lo


def largest_fitting_divisor(shell: Any, model: str, data: str, effective: int, **extra) -> int:
    """The largest divisor of ``effective`` that fits, trying them from the top."""
    for size in sorted((d for d in range(1, effective + 1) if effective % d == 0), reverse=True):
        if train_fits(shell, model, data, size, effective // size, **extra):
            return size
    return 0
