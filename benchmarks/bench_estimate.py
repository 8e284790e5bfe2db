"""vram_magic.estimate's traced peak beside the measured peak of two real steps, and beside
accelerate's estimate-memory, for tiny models of five shapes.

    python benchmarks/bench_estimate.py             # three points a model; CUDA too on a GPU
    python benchmarks/bench_estimate.py --quick     # CI: one point a model and mode (~30 s)
    python benchmarks/bench_estimate.py --json out.json

Models (built from configs, nothing downloaded): GPT-2 and Llama (causal LM), BERT (masked LM),
T5 (seq2seq), ViT (image classification, three batch sizes at its 64 px images). Train modes:
``adam`` and ``none`` for all, ``lora`` and ``qlora`` for GPT-2 and Llama.

- predicted: ``vram_magic.estimate(config, batch=, seq=, train=).peak``, traced on fake tensors.
- measured: tests/measured_peak.py, which shares no code with vram_magic: the model, optimizer
  and batch built by the ordinary torch / transformers / peft / bitsandbytes calls, two real
  steps, counted by torch's profiler on the CPU (the running sum of its allocator events, its
  highest point during the steps).
- accelerate: ``accelerate estimate-memory``'s figure for the model, computed as its
  ``gather_data`` does (``AutoModel`` on empty weights in float32, so a base model without the
  head, and ``calculate_maximum_sizes``). adam: its "Training using Adam" in float32; none: its
  float32 "Total Size"; lora: its float16 "Total Size" (it has no LoRA figure; the nearest is
  the base loaded in half precision); qlora: its int4 "Total Size" (likewise). It counts no
  activations, which is why it is far under the measured peak.

Also timed: a second ``estimate`` of a tiny model (the first one pays the imports), and of a
Llama-2-7B-shaped config at 1 x 2048 tokens (adam), both medians of three (one for 7B in
--quick). On the CPU torch runs one thread, as bench_trainer does.

On a GPU (``torch.cuda.is_available()``) every row is measured on CUDA as well, by
``torch.cuda.max_memory_allocated()`` over two steps from a reset, beside the CPU's: ``-CPU`` is
the difference (CUDA's attention kernels keep other tensors than the CPU's), ``rounding`` what
the caching allocator's 512 B blocks add (allocated minus requested bytes at the peak); the
cuBLAS workspaces, made once per process before the rows, are measured apart.

Targets: on the CPU every row within 5% (|predicted / measured - 1| <= 0.05) and none worse
than 10%; on CUDA every row within 10% of max_memory_allocated. A tiny model's estimate under
1 s, the 7B config's under 30 s. Where CUDA is present the trace assumes its optimizers (torch's
foreach kernels, the CUDA default), so the CPU rows there are shown without their targets.
"""

from __future__ import annotations

import argparse
import copy
import gc
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _timing import Table, finish, number, summarise

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
import measured_peak as real

POINTS = [(1, 64), (4, 128), (8, 256)]  # (batch, seq)
VIT_BATCHES = [1, 8, 32]
QUICK_POINT, QUICK_VIT = (4, 128), 8
ADAPTERS = ("GPT-2", "Llama")  # the models lora and qlora run on


def configs() -> dict[str, Any]:
    """The tiny models, each naming the head it is built with."""
    import transformers as t

    return {
        "GPT-2": t.GPT2Config(
            n_layer=2, n_embd=128, n_head=4, vocab_size=2000, n_positions=512,
            architectures=["GPT2LMHeadModel"],
        ),
        "Llama": t.LlamaConfig(
            hidden_size=128, intermediate_size=344, num_hidden_layers=2, num_attention_heads=4,
            num_key_value_heads=2, vocab_size=2000, max_position_embeddings=512,
            architectures=["LlamaForCausalLM"],
        ),
        "BERT": t.BertConfig(
            hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
            vocab_size=2000, max_position_embeddings=512, architectures=["BertForMaskedLM"],
        ),
        "T5": t.T5Config(
            d_model=128, d_ff=512, d_kv=32, num_layers=2, num_heads=4, vocab_size=2000,
            architectures=["T5ForConditionalGeneration"],
        ),
        "ViT": t.ViTConfig(
            hidden_size=128, intermediate_size=512, num_hidden_layers=2, num_attention_heads=4,
            image_size=64, patch_size=8, num_labels=10, architectures=["ViTForImageClassification"],
        ),
    }  # fmt: skip


def llama_7b() -> Any:
    """Llama-2-7B's shape."""
    import transformers

    return transformers.LlamaConfig(
        hidden_size=4096,
        intermediate_size=11008,
        num_hidden_layers=32,
        num_attention_heads=32,
        num_key_value_heads=32,
        vocab_size=32000,
        max_position_embeddings=4096,
        architectures=["LlamaForCausalLM"],
    )


def rows_to_run(quick: bool) -> list[tuple[str, str, int, int | None]]:
    """(model, train, batch, seq) for each row; seq None for ViT (its image size decides)."""
    rows = []
    for name in configs():
        modes = ("adam", "none", "lora", "qlora") if name in ADAPTERS else ("adam", "none")
        if name == "ViT":
            points = [(b, None) for b in ([QUICK_VIT] if quick else VIT_BATCHES)]
        else:
            points = [QUICK_POINT] if quick else POINTS
        rows += [(name, train, b, s) for train in modes for b, s in points]
    return rows


def accelerate_figure(config: Any, train: str) -> int | None:
    """accelerate estimate-memory's nearest figure (see the module docstring); None without it."""
    try:
        import torch
        import transformers
        from accelerate import init_empty_weights
        from accelerate.commands.estimate import estimate_training_usage
        from accelerate.utils import calculate_maximum_sizes
    except ImportError:
        return None
    with init_empty_weights():  # a copy: from_config writes its dtype into the config
        model = transformers.AutoModel.from_config(copy.deepcopy(config), dtype=torch.float32)
    total, _ = calculate_maximum_sizes(model)
    if train == "adam":
        return int(max(estimate_training_usage(total, "float32").values()))
    return int(total // {"none": 1, "lora": 2, "qlora": 8}[train])


def median_seconds(call: Callable[[], object], times: int) -> float:
    samples = []
    for _ in range(times):
        began = time.perf_counter()
        call()
        samples.append(time.perf_counter() - began)
    return statistics.median(samples)


def cuda_workspaces() -> int:
    """Bytes CUDA's libraries keep in the allocator after a first training step (cuBLAS and
    cuBLASLt workspaces), from cleared workspaces: once per process, not in any row."""
    import torch

    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        clear()
    gc.collect()
    torch.cuda.empty_cache()
    before = torch.cuda.memory_allocated()
    config = configs()["GPT-2"]
    for train in ("adam", "lora"):  # float32 and bfloat16 matmuls, forward and backward
        real.cuda_peak(lambda train=train: real.real_step(config, train, 1, 16, device="cuda"))
    gc.collect()
    return torch.cuda.memory_allocated() - before


def mib(size: float | None) -> str:
    return "-" if size is None else f"{size / 2**20:.2f}"


def main() -> int:
    import torch
    import transformers

    import vram_magic

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one point a model and mode")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    transformers.logging.set_verbosity_error()  # the tiny configs' warnings
    transformers.utils.logging.disable_progress_bar()  # qlora's save and load
    warnings.filterwarnings("ignore", module="peft|transformers")  # deprecations, Conv1D
    cuda = torch.cuda.is_available()
    workspaces = cuda_workspaces() if cuda else None
    models = configs()

    columns = [("model", -6), ("train", -6), ("batch", 5), ("seq", 5), ("predicted", 10)]
    columns += [("measured", 10), ("ratio", 6), ("accelerate", 10), ("acc/meas", 8)]
    if cuda:
        columns += [("CUDA", 10), ("ratio", 6), ("-CPU", 7), ("rounding", 9)]
    print(
        f"estimate's traced peak vs two real steps · MiB · "
        f"{torch.cuda.get_device_name(0) + ' and ' if cuda else ''}CPU (torch's profiler) · "
        f"python {sys.version.split()[0]} · torch {torch.__version__} · "
        f"transformers {transformers.__version__}"
    )
    table = Table(columns)
    records = []
    for name, train, batch, seq in rows_to_run(args.quick):
        config = models[name]
        estimate = vram_magic.estimate(config, batch=batch, seq=seq, train=train)
        measured = real.measured_peak(config, train, batch, seq or 1)
        figure = accelerate_figure(config, train)
        record: dict[str, Any] = {
            "model": name,
            "train": train,
            "batch": batch,
            "seq": seq,
            "predicted": estimate.peak,
            "traced": estimate.traced,
            "measured": measured,
            "ratio": estimate.peak / measured,
            "accelerate": figure,
        }
        cells = [name, train, str(batch), str(seq or f"{config.image_size}px")]
        cells += [mib(estimate.peak), mib(measured), number(record["ratio"])]
        cells += [mib(figure), number(None if figure is None else figure / measured, 2)]
        if cuda:
            on_cuda = real.cuda_peak(
                lambda config=config, train=train, batch=batch, seq=seq: real.real_step(
                    config, train, batch, seq or 1, device="cuda"
                )
            )
            record["cuda"] = on_cuda["allocated"]
            record["cuda_ratio"] = estimate.peak / on_cuda["allocated"]
            record["cuda_rounding"] = on_cuda["allocated"] - on_cuda["requested"]
            cells += [mib(record["cuda"]), number(record["cuda_ratio"])]
            cells += [mib(record["cuda"] - measured), mib(record["cuda_rounding"])]
        if not estimate.traced:
            cells[-1] += f"  (not traced: {estimate.note})"
        table.print_row(cells)
        records.append(record)

    tiny = median_seconds(
        lambda: vram_magic.estimate(models["GPT-2"], batch=4, seq=128, train="adam"), 3
    )
    big = median_seconds(
        lambda: vram_magic.estimate(llama_7b(), batch=1, seq=2048, train="adam"),
        1 if args.quick else 3,
    )
    print(
        f"estimate's time: tiny GPT-2 {tiny:.2f} s (a second call), "
        f"Llama-2-7B shape at 1 x 2048 {big:.1f} s"
    )
    if cuda:
        roundings = [r["cuda_rounding"] for r in records]
        print(
            "attention: the trace runs transformers' sdpa path (torch's "
            "scaled_dot_product_attention) as the CPU dispatches it: with attention dropout "
            "(GPT-2, BERT) its math path, which keeps the attention weights and the dropout "
            "mask for the backward pass; CUDA runs a flash or memory-efficient kernel, which "
            "keeps neither (see -CPU)"
        )
        print(
            f"CUDA adds: cuBLAS/cuBLASLt workspaces {mib(workspaces)} MiB once per process "
            "(made at the first matmul, not in the rows); the caching allocator's rounding to "
            f"512 B blocks, at the peak median {statistics.median(roundings) / 1024:.1f} KiB, "
            f"most {max(roundings) / 1024:.1f} KiB; CUDA - CPU measured, median "
            f"{statistics.median(r['cuda'] - r['measured'] for r in records) / 2**20:.2f} MiB"
        )

    errors = [abs(r["ratio"] - 1) for r in records]
    within = sum(error <= 0.05 for error in errors)
    print(
        f"CPU: {within} of {len(records)} rows within 5%, worst |predicted / measured - 1| "
        f"{max(errors):.2e}, median {statistics.median(errors):.2e}"
        + (
            " (no target with CUDA present: the trace assumes its foreach optimizers)"
            if cuda
            else ""
        )
    )
    summary: dict[str, tuple[float, str, bool]] = {}
    if not cuda:
        summary["CPU rows within 5%"] = (within, f"== {len(records)}", within == len(records))
        summary["worst |predicted/measured - 1|"] = (max(errors), "<= 0.10", max(errors) <= 0.10)
    else:
        worst = max(abs(r["cuda_ratio"] - 1) for r in records)
        summary["worst |predicted/CUDA - 1|"] = (worst, "<= 0.10", worst <= 0.10)
    summary["seconds, tiny model"] = (tiny, "< 1", tiny < 1)
    summary["seconds, 7B config"] = (big, "< 30", big < 30)
    results, missed = summarise(summary)
    results += [{"measure": "row", **record} for record in records]
    where = torch.cuda.get_device_name(0) if cuda else "CPU"
    return finish(where, results, missed, args.json)


if __name__ == "__main__":
    sys.exit(main())
