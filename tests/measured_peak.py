"""The peak of two real training steps (or forward passes), measured apart from vram_magic.

What ``vram_magic.estimate`` predicts is checked against this, by tests/test_estimate.py and
benchmarks/bench_estimate.py alike. The model, its optimizer and its batches are built here by
the ordinary torch / transformers / peft / bitsandbytes calls a notebook makes, and memory is
counted by torch itself: on the CPU the profiler's allocator events (every allocation and free
of the run, with its size), on CUDA ``torch.cuda.max_memory_allocated()``.

A step is a training loop's: ``model.train()`` (``from_pretrained`` leaves a model in eval mode,
and dropout changes memory), the loss taken and the outputs dropped, backward, the optimizer's
step and ``zero_grad(set_to_none=True)``, twice, so that the second step runs with the
optimizer's state there. ``train="none"``: ``model.eval()`` and two forward passes under
``torch.no_grad()`` without labels.
"""

from __future__ import annotations

import copy
import gc
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import transformers

os.environ.setdefault("KINETO_LOG_LEVEL", "6")  # not the profiler's start/stop line each run
STEPS = "STEPS"  # the profiler's mark where the measured steps begin
_PEFT_TASKS = {"ForCausalLM": "CAUSAL_LM", "LMHeadModel": "CAUSAL_LM"}
_PEFT_TASKS |= {"ForConditionalGeneration": "SEQ_2_SEQ_LM", "ForSequenceClassification": "SEQ_CLS"}


@dataclass
class RealStep:
    """A real model, its optimizer (None: forward passes only) and one batch for it."""

    model: Any
    optimizer: Any | None
    batch: dict[str, Any]


def model_class(config: Any) -> Any:
    """The class named by the config's ``architectures`` (every config here names one)."""
    return getattr(transformers, config.architectures[0])


def batch_for(model: Any, batch: int, seq: int, labels: bool) -> dict[str, Any]:
    """Inputs of the model's head: pixel values and one label per image for a vision model,
    token ids and one label per token otherwise (decoder ids too for an encoder-decoder)."""
    config = model.config
    device = next(model.parameters()).device
    if hasattr(config, "image_size"):
        side = config.image_size
        dtype = next(model.parameters()).dtype
        inputs = {"pixel_values": torch.randn(batch, config.num_channels, side, side, dtype=dtype)}
        if labels:
            inputs["labels"] = torch.randint(0, config.num_labels, (batch,))
    else:
        inputs = {"input_ids": torch.randint(0, config.vocab_size, (batch, seq))}
        if config.is_encoder_decoder:
            inputs["decoder_input_ids"] = torch.randint(0, config.vocab_size, (batch, seq))
        if labels:
            inputs["labels"] = torch.randint(0, config.vocab_size, (batch, seq))
    return {name: value.to(device) for name, value in inputs.items()}


def with_lora(model: Any) -> Any:
    """peft's LoRA with its defaults (its target modules for the model type)."""
    import peft

    name = type(model).__name__
    task = next(task for end, task in _PEFT_TASKS.items() if name.endswith(end))
    return peft.get_peft_model(model, peft.LoraConfig(task_type=task))


def nf4_model(config: Any, device: str) -> Any:
    """The model saved and loaded again as transformers loads one in 4 bits (nf4, bf16 compute)."""
    quantization = transformers.BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_compute_dtype=torch.bfloat16
    )
    with tempfile.TemporaryDirectory() as folder:
        model_class(config)(config).save_pretrained(folder)
        return model_class(config).from_pretrained(
            folder, quantization_config=quantization, dtype=torch.bfloat16, device_map=device
        )


def real_step(
    config: Any,
    train: str,
    batch: int,
    seq: int,
    dtype: str | None = None,
    checkpointing: bool = False,
    device: str = "cpu",
) -> RealStep:
    """The model of ``config`` ready to train as ``train`` says, in ``dtype`` (default float32,
    bfloat16 under the adapters of lora and qlora), and a batch of ``batch`` x ``seq``."""
    config = copy.deepcopy(config)  # building and saving write into a config: not the caller's
    chosen = getattr(torch, dtype or ("bfloat16" if train in ("lora", "qlora") else "float32"))
    if train == "qlora":
        model = nf4_model(config, device)
    else:
        model = model_class(config)(config).to(device=device, dtype=chosen)
    if checkpointing:
        model.gradient_checkpointing_enable({"use_reentrant": False})
    if train in ("lora", "qlora"):
        model = with_lora(model)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer: Any = None
    if train == "adam":
        optimizer = torch.optim.Adam(trainable)
    elif train in ("adamw", "lora", "qlora"):
        optimizer = torch.optim.AdamW(trainable)
    elif train == "sgd":
        optimizer = torch.optim.SGD(trainable, lr=1e-3, momentum=0.9)
    elif train == "adamw8bit":
        import bitsandbytes

        optimizer = bitsandbytes.optim.AdamW8bit(trainable)
    return RealStep(model, optimizer, batch_for(model, batch, seq, labels=optimizer is not None))


def run_steps(step: RealStep, count: int = 2) -> None:
    """``count`` real training steps, or forward passes under ``no_grad`` without an optimizer."""
    model, optimizer = step.model, step.optimizer
    if optimizer is None:
        model.eval()
        with torch.no_grad():
            for _ in range(count):
                model(**step.batch)
        return
    model.train()
    for _ in range(count):
        loss = model(**step.batch).loss  # the outputs are dropped once the loss is taken
        loss.backward()
        del loss
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def profiled_peak(build: Callable[[], RealStep]) -> int:
    """Bytes live at the highest point of two steps on the CPU, from the profiler's allocator
    events: a running sum over every allocation and free since before ``build`` made the model
    (so the model, optimizer and batch are in it), its highest value once the steps began."""

    def steps(prepared: list[RealStep]) -> None:
        run_steps(prepared.pop())

    return profiled(steps, build)


def profiled(run: Callable[[Any], Any], prepare: Callable[[], Any] = lambda: None) -> int:
    """Bytes live at the highest point of ``run(prepare())`` on the CPU, above what was live
    before ``prepare`` (its allocations count, its peak does not), from the profiler's
    allocator events. ``run`` takes a list holding what ``prepare`` made, so that it can let
    go of it."""
    from torch.profiler import ProfilerActivity, profile, record_function

    gc.collect()
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        prepared = [prepare()]
        with record_function(STEPS):
            run(prepared)
        del prepared
    events = prof.profiler.kineto_results.events()
    mark = min(e.start_ns() for e in events if e.name() == STEPS)
    live = peak = 0
    for event in sorted((e for e in events if e.name() == "[memory]"), key=lambda e: e.start_ns()):
        live += event.nbytes()
        if event.start_ns() >= mark:
            peak = max(peak, live)
    return peak


def cuda_peak(build: Callable[[], RealStep]) -> dict[str, int]:
    """Bytes at the highest point of two steps on CUDA from a reset made before ``build`` (so
    the model, optimizer and batch are in it): ``allocated``, ``torch.cuda.max_memory_allocated()``
    (blocks rounded up to 512 B), and ``requested``, the bytes asked for (unrounded)."""
    gc.collect()
    torch.cuda.empty_cache()
    torch.cuda.synchronize()
    before = torch.cuda.memory_stats()
    torch.cuda.reset_peak_memory_stats()
    step = build()
    run_steps(step)
    torch.cuda.synchronize()
    after = torch.cuda.memory_stats()
    del step
    gc.collect()
    torch.cuda.empty_cache()
    return {
        kind: after[f"{kind}_bytes.all.peak"] - before[f"{kind}_bytes.all.current"]
        for kind in ("allocated", "requested")
    }


def measured_peak(config: Any, train: str, batch: int, seq: int, **options: Any) -> int:
    """The peak of two real steps of ``real_step(config, train, batch, seq, **options)``, on
    ``options["device"]`` (default the CPU)."""
    device = options.get("device", "cpu")

    def build() -> RealStep:
        return real_step(config, train, batch, seq, **options)

    if str(device).startswith("cuda"):
        return cuda_peak(build)["allocated"]
    return profiled_peak(build)
