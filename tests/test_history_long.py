"""Long sessions: a cell's history work does not grow with the cells before it, and the history
stays bounded. Unit tier: NameSizes and CellRecorder driven without a shell."""

from collections.abc import ItemsView, KeysView, ValuesView

import torch

from vram_magic.actions.history import CellRecorder, NameSizes


class CountingNamespace(dict):
    """A namespace that counts the names read out of it, so a walk over all of them shows."""

    def __init__(self, *args):
        super().__init__(*args)
        self.read = 0

    def __iter__(self):
        for name in super().__iter__():
            self.read += 1
            yield name

    def __reversed__(self):
        for name in super().__reversed__():
            self.read += 1
            yield name

    def keys(self):  # views whose walks go through __iter__; ``in`` reads no names
        return KeysView(self)

    def items(self):
        return ItemsView(self)

    def values(self):
        return ValuesView(self)


def test_a_trivial_cell_reads_a_few_names_however_long_the_session():
    namespace = CountingNamespace({f"_i{n}": "x = 1" for n in range(1, 20_001)})
    namespace["t"] = torch.ones(10)
    names = NameSizes()
    assert names.update(namespace, True, None) == [("t", 40)]  # the first update reads them all
    for cell in range(20_001, 20_101):
        namespace[f"_i{cell}"] = "x = 1"  # what IPython adds before each cell
        namespace["x"] = 1
        namespace.read = 0
        assert names.update(namespace, False, cell, "x = 1") == []
        assert namespace.read <= 4  # names new since the last cell, where they start, the last


def test_names_bound_or_deleted_out_of_the_cells_sight_are_found():
    namespace = {"a": 1}
    names = NameSizes()
    names.update(namespace, False, 1, "a = 1")
    del namespace["a"]  # a function the cell calls deletes the last name, binds two, rebinds it
    namespace["hidden"] = torch.ones(10)
    namespace["a"] = 1
    assert names.update(namespace, False, 2, "f()") == [("hidden", 40)]
    del namespace["hidden"]  # deleted out of sight: forgotten, so binding it again is growth
    assert names.update(namespace, False, 3, "g()") == []
    namespace["hidden"] = torch.ones(10)
    assert names.update(namespace, False, 4, "h()") == [("hidden", 40)]
    assert names.first_cell == {"hidden": 4}


def test_the_history_keeps_the_last_cells_and_counts_the_dropped():
    recorder = CellRecorder(length=3)
    namespace = {}
    for cell in range(1, 6):
        recorder.before(f"x{cell} = torch.ones({cell})")
        namespace[f"x{cell}"] = torch.ones(cell)
        recorder.after(namespace, cell, None)
    assert [record.execution_count for record in recorder.records] == [3, 4, 5]
    assert recorder.records[-1].grew == (("x5", 20),)
    assert recorder.dropped == 2


def test_only_the_users_names_are_tracked_one_name_at_a_time():
    hidden = {"open": open, "_oh": {}}
    namespace = CountingNamespace({**hidden, "Out": hidden["_oh"], "_5": torch.ones(10)})
    names = NameSizes(hidden_names=hidden)
    assert names.update(namespace, True, None) == []  # IPython's entries, the output cache
    namespace["open"] = torch.ones(10)  # the user rebinding a hidden name makes it theirs
    assert names.update(namespace, False, 1, "open = torch.ones(10)") == [("open", 40)]
