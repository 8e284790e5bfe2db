"""Print what a real training notebook session shows: %vram report, who, history and free.

Runs a small GPT-2 (built from a config, no download) for one training step in a real IPython
shell, then strands memory the usual ways. Used for the README's examples; on a GPU machine:
``python scripts/example-session.py``.
"""

from IPython.testing.globalipapp import start_ipython

CELLS = [
    "%load_ext vram_magic",
    "import torch\nfrom transformers import GPT2Config, GPT2LMHeadModel\n"
    "device = 'cuda' if torch.cuda.is_available() else 'cpu'\n"
    "model = GPT2LMHeadModel(GPT2Config(n_layer=6, n_embd=1024, n_head=16)).to(device)\n"
    "opt = torch.optim.AdamW(model.parameters(), lr=1e-4)",
    "batch = torch.randint(0, 50257, (8, 512), device=device)\n"
    "loss = model(batch, labels=batch).loss\nloss.backward(); opt.step()",
    "loss = model(batch, labels=batch).loss  # kept with its graph",
    "logits = model(batch).logits\nlogits.float().softmax(-1)[:, -1]",
    "del logits",
]
SHOW = [
    "%vram report",
    "%vram who --top 8",
    "%vram history",
    "%vram free",
    "%vram report",
    "activations = torch.empty(2**40, dtype=torch.uint8, device=device)  # 1 TiB: out of memory",
]


def main() -> None:
    shell = start_ipython()
    for cell in CELLS:
        result = shell.run_cell(cell, store_history=True)
        if not result.success:
            raise SystemExit(f"cell failed: {cell}")
    for line in SHOW:
        print(f">>> {line}")
        result = shell.run_cell(line, store_history=True).result
        if result is not None:
            print(repr(result))
        print()


if __name__ == "__main__":
    main()
