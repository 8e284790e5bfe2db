"""Shell tier: per-cell history from real cells, cheap hooks that never break a cell."""

import sys

import pytest

import vram_magic
from vram_magic.actions.history import CellRecorder

MB = 2**20


def run(shell, code):
    return shell.run_cell(code, store_history=True)


def host(record):
    return record.on("host RAM")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="peak RSS reset is Linux's")
def test_cells_record_before_after_peak_and_new_names(vram):
    run(vram, "kept = torch.ones(25 * 2**20)")  # 100 MB, kept
    run(vram, "float(torch.ones(25 * 2**20).sum())")  # 100 MB, only during the cell
    kept, passing = vram_magic.history()[-2:]
    assert kept.grew[0] == ("kept", 100 * MB)
    assert host(kept).retained >= 90 * MB
    assert host(passing).peak - host(passing).before >= 90 * MB
    assert host(passing).retained < 20 * MB
    assert passing.grew == ()
    assert kept.execution_count + 1 == passing.execution_count
    assert kept.source == "kept = torch.ones(25 * 2**20)"
    run(vram, "del kept")


def grew(shell, code):
    run(shell, code)
    return dict(vram_magic.history()[-1].grew)


def test_grew_names_what_the_cell_bound_even_out_of_its_sight(vram):
    run(vram, "def bind():\n    global bound\n    bound = torch.ones(1000)")
    assert grew(vram, "bind()") == {"bound": 4000}  # bound in a function: a new name
    assert grew(vram, "bound.resize_(2000)") == {"bound": 8000}  # in place, by a cell naming it
    run(vram, "def rebind():\n    global bound\n    bound = torch.ones(2**20)")
    assert grew(vram, "rebind()") == {"bound": 4 * MB}  # rebound by a function the cell names
    assert grew(vram, "del bound") == {}
    assert grew(vram, "bound = torch.ones(2**20)") == {"bound": 4 * MB}  # not the deleted one's
    run(vram, "def unbind():\n    global bound\n    del bound")
    run(vram, "unbind()")
    assert grew(vram, "bind()") == {"bound": 4000}  # nothing left of it after unbind()
    run(vram, "class Keeper:\n    def grow(self):\n        held.append(torch.ones(2**24))")
    run(vram, "held, keeper = [], Keeper()")
    found = grew(vram, "keeper.grow()")  # in place, out of sight: found when memory moved
    moved = host(vram_magic.history()[-1])
    if moved.after - moved.before > MB or (moved.peak or 0) - moved.before > MB:
        assert found == {"held": 64 * MB}
    else:  # late in a long run the process's RSS can miss the 64 MB: nothing moved, by design
        assert found == {}
    run(vram, "del bound, bind, rebind, unbind, held, Keeper, keeper")


def test_history_magic_shows_table_and_chart(vram):
    run(vram, "small = torch.ones(1000)")
    run(vram, "other = 1")
    view = run(vram, "%vram history --last 2").result
    assert len(view.data) == 2
    assert "small = torch.ones(1000)" in view.text and "names that grew" in view.text
    assert "<svg" in view.html and "<table>" in view.html
    run(vram, "del small, other")


def test_a_failing_hook_never_breaks_the_cell(vram, monkeypatch, capsys):
    def broken(*args, **kwargs):
        raise RuntimeError("recorder exploded")

    monkeypatch.setattr(CellRecorder, "after", broken)
    first = run(vram, "6 * 7")
    second = run(vram, "6 * 8")
    assert first.success and first.result == 42 and second.result == 48
    errors = capsys.readouterr().err
    assert errors.count("vram_magic: cell tracking stopped") == 1
    assert "recorder exploded" in errors


def test_unload_removes_the_hooks(shell):
    before = {e: list(c) for e, c in shell.events.callbacks.items()}
    run(shell, "%load_ext vram_magic")
    assert len(shell.events.callbacks["post_run_cell"]) == len(before["post_run_cell"]) + 1
    run(shell, "%unload_ext vram_magic")
    assert {e: list(c) for e, c in shell.events.callbacks.items()} == before
    assert vram_magic.history() == ()
