"""%vram limit: sizes are read strictly; without a GPU a budget on live CPU tensor bytes raises
real torch.OutOfMemoryError (CUDA's wording), which the OOM report then explains."""

import pytest
from IPython.core.error import UsageError

from vram_magic.actions.limit import LimitError, current_limit, parse_size

torch = pytest.importorskip("torch")
MB = 2**20


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("8GB", 8 * 10**9),
        ("8GiB", 8 * 2**30),
        ("7.5G", int(7.5 * 2**30)),
        ("512MB", 512 * 10**6),
        ("512M", 512 * 2**20),
        ("60%", 600),
        ("1024", 1024),
    ],
)
def test_parse_size(text, expected):
    assert parse_size(text, total=1000) == expected


@pytest.mark.parametrize("text", ["12 parsecs", "abc", "150%", "8XB", ""])
def test_bad_sizes_are_one_line(text):
    with pytest.raises(LimitError) as error:
        parse_size(text, total=1000)
    assert "\n" not in str(error.value)


@pytest.mark.skipif(torch.cuda.is_available(), reason="the CPU budget is for machines without CUDA")
def test_cpu_budget_raises_real_oom_and_follows_frees(vram, capsys):
    def run(code):
        return vram.run_cell(code, store_history=True)

    try:
        assert "limit 286.1 MiB on cpu" in run("%vram limit 300MB").result.text
        assert run("a = torch.ones(50 * 2**20)").success  # 200 MB fits
        capsys.readouterr()
        failed = run("b = torch.ones(50 * 2**20)")  # 200 MB more does not
        assert isinstance(failed.error_in_exec, torch.OutOfMemoryError)
        assert "Tried to allocate 200.00 MiB" in str(failed.error_in_exec)
        out = capsys.readouterr().out
        assert "vram_magic: out of memory (OutOfMemoryError)" in out
        assert "the failed allocation asked for 200.0 MiB" in out
        assert run("del a\nb = torch.ones(50 * 2**20)").success  # freed bytes count again
        assert "limit (%vram limit): 286.1 MiB on cpu" in run("%vram report").result.text
        run("%vram limit off")
        assert current_limit() is None
        assert run("c = torch.ones(100 * 2**20)").success  # 400 MB, no limit now
    finally:
        run("%vram limit off")
        run("del b, c")


def test_unload_lifts_the_limit(shell):
    shell.run_cell("%load_ext vram_magic")
    shell.run_cell("%vram limit 10GB")
    assert current_limit() is not None
    shell.run_cell("%unload_ext vram_magic")
    assert current_limit() is None


def test_bad_limit_input(vram):
    error = vram.run_cell("%vram limit 12parsecs").error_in_exec
    assert isinstance(error, UsageError) and "cannot read '12parsecs' as a size" in str(error)
