"""The training cell that %%fit is measured on, in tests/test_fit.py and benchmarks/bench_fit.py:
a real loop whose memory grows with the batch, the limit that leaves it a given room, and the
search for the true largest batch that fits under that limit."""

from __future__ import annotations

from typing import Any

TRAIN = """
x = torch.randn(batch_size, model[0].in_features, device=DEV)
for _ in range(2):
    loss = model(x).pow(2).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
del x, loss
"""


def allocator_room(nbytes: int) -> str:
    """The ``%vram limit`` that leaves torch ``nbytes``: on CUDA the limit also counts the CUDA
    context and libraries, outside torch's allocator, so they go on top."""
    import torch

    import vram_magic

    if not torch.cuda.is_available():
        return str(nbytes)
    return str(nbytes + (vram_magic.report().devices[0].process_other or 0))


def fits(shell: Any, size: int) -> bool:
    """Run TRAIN at ``size`` as %%fit's attempts run (from an emptied cache); after an OOM, drop
    what the failed run had bound and free it."""
    import torch

    shell.user_ns["batch_size"] = size
    torch.cuda.empty_cache()  # a no-op without CUDA
    try:
        exec(compile(TRAIN, "<probe>", "exec"), shell.user_ns)
        return True
    except torch.OutOfMemoryError:
        for name in ("x", "loss"):
            shell.user_ns.pop(name, None)
        shell.run_line_magic("vram", "free")
        return False


def largest_fitting(shell: Any) -> int:
    """The true largest batch that fits, by doubling then bisection over real runs."""
    lo, hi = 1, 1
    while fits(shell, hi):
        lo, hi = hi, hi * 2
    while hi - lo > 1:
        middle = (lo + hi) // 2
        lo, hi = (middle, hi) if fits(shell, middle) else (lo, middle)
    return lo
