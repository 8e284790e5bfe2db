"""The batch-size search of ``%%fit`` (actions/fit.py) against a cell whose memory is known
exactly: need = fixed + per_item x size, taken as the fixed part and then the batch's share in
equal requests, running out at the first request over the room. So the sizes it tries, the OOMs
and the size it chooses are known in advance, and pinned."""

from typing import Any

import pytest

from vram_magic.actions import fit as fit_module
from vram_magic.actions.fit import (
    ROOM_BUCKET,
    FitResult,
    Meter,
    Prediction,
    Setting,
    Target,
    divisors,
    fit,
)

torch = pytest.importorskip("torch")
MiB = 2**20
FIXED, PER_ITEM, STEPS = 64 * MiB, 4 * MiB, 4


class Cell:
    """A fake cell and its meter; ``limit`` is the largest size that fits (room to the byte)."""

    def __init__(self, limit: int, measured: bool = True, extra_room: int = 0) -> None:
        self.room = FIXED + PER_ITEM * limit + extra_room
        self.measured = measured
        self.size = 0
        self.applied: list[int] = []
        self.used = self.peak = self.start = 0
        self.errors: list[BaseException] = []
        self.undone = self.cleaned = 0

    def apply(self, size: int) -> tuple[Setting, ...]:
        self.size = size
        self.applied.append(size)
        return (Setting("batch_size", size),)

    def run(self) -> None:
        for request in [FIXED] + [PER_ITEM // STEPS * self.size] * STEPS:
            if self.used + request > self.room:
                error = torch.OutOfMemoryError(
                    f"CUDA out of memory. Tried to allocate {request} bytes. GPU 0 has a total "
                    "capacity of 80.00 GiB"
                )
                self.errors.append(error)
                raise error
            self.used += request
            self.peak = max(self.peak, self.used)
        self.used = 0  # a run that finishes frees what it took

    def undo(self) -> None:
        self.undone += 1

    def clean_up(self, error: BaseException) -> None:
        assert error is self.errors[-1]
        self.cleaned += 1
        self.used = 0  # the failed attempt's memory given back

    def reset(self) -> None:
        self.start = self.peak = self.used

    def meter(self) -> Meter:
        if not self.measured:  # nothing measured: neither growth nor room
            return Meter(lambda: self.used, lambda: None, self.reset, lambda: None, "cuda:0")
        return Meter(
            lambda: self.used,
            lambda: self.peak - self.start,
            self.reset,
            lambda: self.room,
            "cuda:0",
        )

    def fit(
        self,
        start: int,
        key: str = "cell",
        allowed: list[int] | None = None,
        effective: int | None = None,
        fixed: int = 0,
        **options: Any,
    ) -> FitResult:
        """``fit`` of this cell from ``start``; ``options`` are fit's (max_oom, shrink_only)."""
        target = Target("batch_size", start, self.apply, allowed, self.undo, effective, fixed=fixed)
        return fit(self.run, target, self.meter(), key, self.clean_up, **options)


@pytest.fixture(autouse=True)
def empty_cache(monkeypatch):
    """Each case starts with no size remembered from another."""
    monkeypatch.setattr(fit_module, "_cache", {})


def ooms(result) -> int:
    return sum(a.outcome != "fits" for a in result.attempts)


def tried(result) -> list[tuple[int, str]]:
    return [(a.size, a.outcome) for a in result.attempts]


LIMITS = (24, 100, 1000, 4096)
STARTS = {"4x too large": 4.0, "3x too large": 3.0, "exact": 1.0, "8x too small": 0.125}

# (true limit, start) -> (OOMs, chosen size), computed once and checked sensible below.
MEASURED = {
    (24, "4x too large"): (2, 24),
    (24, "3x too large"): (2, 22),
    (24, "exact"): (0, 24),
    (24, "8x too small"): (0, 22),
    (24, "1"): (0, 22),
    (100, "4x too large"): (2, 100),
    (100, "3x too large"): (2, 94),
    (100, "exact"): (0, 100),
    (100, "8x too small"): (0, 94),
    (100, "1"): (0, 94),
    (1000, "4x too large"): (2, 957),
    (1000, "3x too large"): (2, 945),
    (1000, "exact"): (0, 1000),
    (1000, "8x too small"): (0, 949),
    (1000, "1"): (0, 949),
    (4096, "4x too large"): (2, 3898),
    (4096, "3x too large"): (2, 3886),
    (4096, "exact"): (0, 4096),
    (4096, "8x too small"): (0, 3890),
    (4096, "1"): (0, 3890),
}
BLIND = {
    (24, "4x too large"): (6, 24),
    (24, "3x too large"): (4, 24),
    (24, "exact"): (0, 24),
    (24, "8x too small"): (0, 3),
    (24, "1"): (0, 1),
    (100, "4x too large"): (7, 100),
    (100, "3x too large"): (4, 99),
    (100, "exact"): (0, 100),
    (100, "8x too small"): (0, 12),
    (100, "1"): (0, 1),
    (1000, "4x too large"): (7, 1000),
    (1000, "3x too large"): (5, 984),
    (1000, "exact"): (0, 1000),
    (1000, "8x too small"): (0, 125),
    (1000, "1"): (0, 1),
    (4096, "4x too large"): (7, 4096),
    (4096, "3x too large"): (5, 4032),
    (4096, "exact"): (0, 4096),
    (4096, "8x too small"): (0, 512),
    (4096, "1"): (0, 1),
}


def start_of(limit: int, start: str) -> int:
    return 1 if start == "1" else max(int(limit * STARTS[start]), 1)


def check_outcome(cell: Cell, result, limit: int) -> None:
    """What holds for every search: the cell last ran at the chosen size, which fits; every
    attempt before was undone, every OOM cleaned up; nothing that failed was chosen."""
    assert result.attempts[-1].outcome == "fits"
    assert result.attempts[-1].size == result.size == cell.size
    assert result.size <= limit and not result.from_cache
    assert cell.undone == len(result.attempts) - 1
    assert cell.cleaned == ooms(result) == len(cell.errors)
    failed = {a.size for a in result.attempts if a.outcome != "fits"}
    assert all(size > limit for size in failed) and result.size not in failed


@pytest.mark.parametrize(("limit", "start"), list(MEASURED), ids=[f"{n}-{s}" for n, s in MEASURED])
def test_measured_search(limit, start):
    cell = Cell(limit)
    result = cell.fit(start_of(limit, start))
    check_outcome(cell, result, limit)
    assert (ooms(result), result.size) == MEASURED[(limit, start)]
    assert result.size >= 0.9 * limit  # the line fitted to the measurements lands close
    if start in ("4x too large", "3x too large"):
        assert ooms(result) <= 2  # the failures' bound and halving: then it fits
    else:
        assert ooms(result) == 0  # growing by the measured line never oversteps
    assert result.room == cell.room and result.headroom >= 0


@pytest.mark.parametrize(("limit", "start"), list(BLIND), ids=[f"{n}-{s}" for n, s in BLIND])
def test_without_any_measurement_it_bisects(limit, start):
    cell = Cell(limit, measured=False)
    result = cell.fit(start_of(limit, start))
    check_outcome(cell, result, limit)
    assert (ooms(result), result.size) == BLIND[(limit, start)]
    if start_of(limit, start) > limit:
        assert result.size >= 0.98 * limit  # bisected to within 2%
        assert all(a.need is None for a in result.attempts)
    else:
        assert tried(result) == [(start_of(limit, start), "fits")]  # no room known: no growing


def test_blind_search_halves_then_bisects():
    result = Cell(100, measured=False).fit(300)
    assert tried(result) == [
        (300, "out of memory"),
        (150, "out of memory"),
        (75, "fits"),
        (112, "out of memory"),
        (93, "fits"),
        (102, "out of memory"),
        (97, "fits"),
        (99, "fits"),  # 99 and 102 are within 2% of each other: done
    ]


DIVISORS_OF_96 = [d for d in range(1, 97) if 96 % d == 0]


@pytest.mark.parametrize(
    ("limit", "start", "attempts"),
    [
        (5, 96, [(96, "out of memory"), (32, "out of memory"), (16, "out of memory"),
                 (8, "out of memory"), (4, "fits")]),
        (40, 96, [(96, "out of memory"), (48, "out of memory"), (24, "fits")]),
        (40, 1, [(1, "fits"), (3, "fits"), (32, "fits")]),
        (100, 96, [(96, "fits")]),
        (100, 1, [(1, "fits"), (6, "fits"), (48, "fits")]),
    ],
)  # fmt: skip
def test_only_allowed_sizes_are_tried(limit, start, attempts):
    """Sizes that keep an effective batch of 96 exact: only divisors of 96 run."""
    cell = Cell(limit)
    result = cell.fit(start, allowed=DIVISORS_OF_96, effective=96)
    check_outcome(cell, result, limit)
    assert tried(result) == attempts
    assert all(a.size in DIVISORS_OF_96 for a in result.attempts)
    assert result.accumulation == 96 // result.size and result.effective == 96


def test_known_fixed_costs_predict_from_one_run():
    """Through zero, one fitting run at 1 predicts small (the fixed part counted per item);
    through the known fixed part it predicts the size at once."""
    assert tried(Cell(100).fit(1)) == [(1, "fits"), (6, "fits"), (94, "fits")]
    known = Cell(100).fit(1, key="known", fixed=FIXED)
    assert tried(known) == [(1, "fits"), (94, "fits")]


def test_shrink_only_stops_at_the_first_fit():
    grown = Cell(100).fit(300)
    assert tried(grown)[2:] == [(75, "fits"), (90, "fits"), (94, "fits")]  # grows after a fit
    shrunk = Cell(100).fit(300, key="nested", shrink_only=True)
    assert tried(shrunk) == [(300, "out of memory"), (150, "out of memory"), (75, "fits")]
    assert shrunk.size == 75
    assert tried(Cell(100).fit(12, key="small", shrink_only=True)) == [(12, "fits")]


def test_a_rerun_in_the_same_room_goes_straight_to_the_size():
    first = Cell(1000).fit(4000)
    assert ooms(first) == 2 and not first.from_cache
    cell = Cell(1000)
    rerun = cell.fit(4000)
    assert rerun.from_cache and tried(rerun) == [(first.size, "fits")]
    assert cell.size == first.size and ooms(rerun) == 0
    a_little_more = Cell(1000, extra_room=PER_ITEM).fit(4000)  # the same bucket of room
    assert a_little_more.from_cache and tried(a_little_more) == [(first.size, "fits")]
    elsewhere = Cell(1000, extra_room=ROOM_BUCKET).fit(4000)  # another room: searched again
    assert not elsewhere.from_cache
    assert tried(elsewhere) == [(4000, "out of memory"), (2000, "out of memory"), (1000, "fits")]
    other_cell = Cell(1000).fit(4000, key="another cell")
    assert not other_cell.from_cache and ooms(other_cell) == 2


def test_max_oom_reraises_the_last_oom():
    cell = Cell(0)  # the fixed part alone fills the room: no size fits
    with pytest.raises(torch.OutOfMemoryError) as raised:
        cell.fit(1024, max_oom=2)
    assert cell.applied == [1024, 57, 28]  # two OOMs allowed, the third ends the search
    assert raised.value is cell.errors[-1]
    assert cell.undone == cell.cleaned == 3


def test_no_size_fits_reraises_after_trying_one():
    cell = Cell(0)
    with pytest.raises(torch.OutOfMemoryError) as raised:
        cell.fit(8)
    assert raised.value is cell.errors[-1]
    assert cell.applied == [8, 4, 2, 1]  # halved down to 1, where nothing smaller is left


# ``%%fit`` predicts first: a traced need (here the cell's exact line) gives the starting size.


@pytest.mark.parametrize("limit", LIMITS)
@pytest.mark.parametrize("start", ["4x too large", "8x too small", "1"])
@pytest.mark.parametrize("allowed", [None, "divisors"])
def test_a_traced_line_finds_the_largest_size_in_a_few_traces(limit, start, allowed):
    from vram_magic.actions.fit_predict import largest_fitting

    sizes = divisors(4 * limit) if allowed else list(range(1, 4 * limit + 1))
    traced: list[int] = []

    def need(size: int) -> int:
        traced.append(size)
        return FIXED + PER_ITEM * size

    best, needed, traces = largest_fitting(
        need, FIXED + PER_ITEM * limit, sizes, start_of(limit, start)
    )
    assert best == max(s for s in sizes if s <= limit) and needed == FIXED + PER_ITEM * best
    assert traces == len(traced) == len(set(traced)) <= 4  # a line is found in two traces


def test_a_step_that_grows_faster_than_a_line_is_still_checked():
    from vram_magic.actions.fit_predict import largest_fitting

    best, _, traces = largest_fitting(lambda size: size * size, 10_000, list(range(1, 1000)), 1)
    assert best == 100 and traces <= 12


@pytest.mark.parametrize("start", ["4x too large", "8x too small"])
def test_a_prediction_starts_the_search_where_it_fits_and_stops_there(start):
    cell = Cell(100)
    predictions: list[int] = []

    def predict(budget: int) -> Prediction:
        predictions.append(budget)
        size = (budget - FIXED) // PER_ITEM
        return Prediction(size, FIXED + PER_ITEM * size, 2, 0.1)

    target = Target("batch_size", start_of(100, start), cell.apply, undo=cell.undo, predict=predict)
    result = fit(cell.run, target, cell.meter(), "cell", cell.clean_up, headroom=0.0)
    assert tried(result) == [(100, "fits")] and result.predicted.size == 100
    assert predictions == [cell.room]


def test_a_prediction_too_large_falls_back_to_the_search():
    cell = Cell(100)
    target = Target(
        "batch_size",
        400,
        cell.apply,
        undo=cell.undo,
        predict=lambda budget: Prediction(150, 1, 2, 0.1),
    )
    result = fit(cell.run, target, cell.meter(), "cell", cell.clean_up, headroom=0.0)
    check_outcome(cell, result, 100)
    assert tried(result)[0] == (150, "out of memory") and result.size >= 90
