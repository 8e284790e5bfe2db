"""``%%fit``: run a cell at the largest batch size that fits, learning from every attempt.

Each attempt measures the memory the cell needed above where it started: its peak when it ran,
its peak plus the failed request when it ran out. On CUDA that is the allocator's reserved
memory, grown from an emptied cache: what runs into the card's free memory or a ``%vram limit``
cap, rounding and fragmentation included. Two such points fit the line
``need = fixed + per_item * size``; one point is taken as ``per_item * size``. The next size is
the line's largest size under the room left (less ``headroom``), kept strictly between the
largest size that ran and the smallest that failed; without any measurement it bisects (halving
first). It grows as well as shrinks, and the answer is cached per (cell, device, room) so a rerun
goes straight to it and stops there. With ``probe`` the cell first runs at 1/16 and 1/8 of the
start, which fit the line before any large size is tried. The cell body runs once per attempt.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from vram_magic.actions.oom import is_oom, requested_bytes

ROOM_BUCKET = 256 * 2**20
_cache: dict[tuple[str, str, int], int] = {}  # (cell and call, device, room) -> size


@dataclass(frozen=True)
class Attempt:
    size: int
    outcome: str  # "fits", "out of memory"
    need: int | None  # bytes above the cell's start: peak, or peak + the failed request
    seconds: float
    left: int | None = None  # after an OOM and its clean-up: bytes still held above the start
    probe: bool = False  # a run at a small size, only to measure (--probe)


@dataclass(frozen=True)
class Setting:
    """One value a fit set, and where: ``trainer.args.gradient_accumulation_steps`` = 4."""

    where: str
    value: int


@dataclass(frozen=True)
class Prediction:
    """What a traced step said before any attempt: the largest size within the room."""

    size: int | None  # None: not even the smallest size fits
    need: int | None  # that size's traced bytes above the attempt's start
    traces: int
    seconds: float
    precision_dropped: bool = False  # the step traced without the mixed precision asked for


@dataclass(frozen=True)
class FitResult:
    sized: str  # what was sized: a variable, ``trainer.train()``, ``classify(...)``
    attempts: tuple[Attempt, ...]
    size: int  # the size the call last ran at, successfully
    accumulation: int | None
    room: int | None  # bytes the cell could use when it started
    from_cache: bool
    settings: tuple[Setting, ...] = ()  # what the chosen size was written to
    effective: int | None = None  # the effective batch (size x accumulation) kept exactly
    inner: tuple[FitResult, ...] = ()  # fits inside this call: an evaluation inside train()
    weights_restored: int = 0  # attempts at other sizes whose optimizer steps were undone
    weights_unguarded: int | None = None  # bytes of weights that could not be kept aside
    predicted: Prediction | None = None  # the traced prediction the search started from

    @property
    def failed_seconds(self) -> float:
        return sum(a.seconds for a in self.attempts if a.outcome != "fits")

    @property
    def headroom(self) -> int | None:
        fitted = [a.need for a in self.attempts if a.outcome == "fits" and a.size == self.size]
        if self.room is None or not fitted or fitted[-1] is None:
            return None
        return self.room - fitted[-1]


@dataclass
class Target:
    """What one fit sizes: where the size goes, which sizes keep an effective batch exact, and
    how to undo an attempt that is not the last (it ran out, or fitted at another size), beyond
    what is released after every out-of-memory error."""

    sized: str
    start: int
    apply: Callable[[int], tuple[Setting, ...]]  # writes the size; returns what it set
    allowed: list[int] | None = None  # sizes that keep an exact effective batch, ascending
    undo: Callable[[], None] = lambda: None
    effective: int | None = None
    workload: str = ""  # what else tells one call's memory from another's with the same code
    fixed: int = 0  # bytes each run needs whatever the size (gradients, optimizer state)
    predict: Callable[[int], Prediction | None] | None = None  # budget -> traced largest size


@dataclass
class Meter:
    """Where memory is measured: live bytes now, how far use grew above the last ``reset`` at
    its peak (None: not measured), and the room a cell has."""

    in_use: Callable[[], int]
    grown: Callable[[], int | None]
    reset: Callable[[], None]
    room: Callable[[], int | None]
    device: str
    exact: bool = False  # grows by the live storages a traced step counts (no allocator rounding)


BLIND = Meter(lambda: 0, lambda: None, lambda: None, lambda: None, "cpu")


def divisors(number: int) -> list[int]:
    """The sizes that split an effective batch of ``number`` exactly, ascending."""
    return [d for d in range(1, number + 1) if number % d == 0]


@dataclass
class _Search:
    room: int | None
    headroom: float
    allowed: list[int] | None  # sizes that keep an exact effective batch, ascending
    fixed: int = 0  # bytes of every run's need known not to grow with the size
    ceiling: int | None = None  # the smallest size a traced step says does not fit
    good: dict[int, int | None] = field(default_factory=dict)
    bad: dict[int, int | None] = field(default_factory=dict)

    def snap(self, size: int) -> int:
        if self.allowed is None:
            return max(size, 1)
        fitting = [s for s in self.allowed if s <= size]
        return fitting[-1] if fitting else self.allowed[0]

    def _predict(self) -> int | None:
        """The largest size the measurements say fits. Sizes that ran give exact needs; a
        failure gives only a lower bound (the run stopped early), so from failures alone the
        guess is also kept to at most half the smallest failing size."""
        if self.room is None:
            return None
        budget = self.room * (1 - self.headroom)
        exact = sorted((s, n) for s, n in self.good.items() if n)
        if len(exact) >= 2:
            (s0, n0), (s1, n1) = exact[0], exact[-1]
            per_item = (n1 - n0) / (s1 - s0)
            if per_item > 0:
                return int((budget - (n0 - per_item * s0)) / per_item)
        if exact:
            size, need = exact[-1]
            fixed = self.fixed if self.fixed < need else 0
            # through the known fixed costs (else zero: errs small, as unknown fixed costs count)
            return int((budget - fixed) * size / (need - fixed))
        bounds = [n / s for s, n in self.bad.items() if n]
        if not bounds:
            return None
        return min(int(budget / max(bounds)), min(self.bad) // 2)

    def next_size(self) -> int | None:
        """The next size to try, or None when the largest fitting size is known."""
        lo = max(self.good, default=0)
        hi = min([*self.bad, *([self.ceiling] if self.ceiling else [])], default=None)
        if hi is not None and hi - lo <= max(1, lo // 50):
            return None
        if hi is None and self.room is None:
            return None  # it fits, and without a measure of the room growing is blind
        guess = self._predict()
        if guess is None:  # nothing measured: halve below a failure, bisect, double above
            guess = (
                hi // 2 if hi is not None and not self.good else (lo + hi) // 2 if hi else lo * 2
            )
        if self.good and guess <= lo * 1.02:
            return None  # the measurements say the largest size that ran is (nearly) the most
        if hi is not None and guess >= hi:
            guess = (lo + hi) // 2
        guess = self.snap(guess)
        if guess in self.good or guess in self.bad or (self.good and guess <= lo):
            return None
        return guess


def fit(
    run: Callable[[], None],
    target: Target,
    meter: Meter,
    key: str,
    clean_up: Callable[[BaseException], None],
    max_oom: int = 8,
    headroom: float = 0.05,
    probe: bool = False,
    shrink_only: bool = False,
) -> FitResult:
    """Run ``run`` at sizes chosen from its measured memory; re-raise anything but an OOM.
    ``shrink_only`` stops at the first size that fits (a fit nested in another one, unmeasured)."""
    room = meter.room()
    cache_key = (key, meter.device, (room or 0) // ROOM_BUCKET)
    cached = cache_key in _cache
    search = _Search(room, headroom, target.allowed, target.fixed)
    attempts: list[Attempt] = []
    settings: tuple[Setting, ...] = ()
    last_oom: BaseException | None = None
    start = target.start
    probes = (  # without a measure of the room, a probe teaches nothing
        sorted({search.snap(max(start // 16, 1)), search.snap(max(start // 8, 1))})
        if probe and room is not None and not cached
        else []
    )
    probing = bool(probes)
    predicted = None
    if target.predict is not None and room is not None and not cached and not probing:
        # where the meter counts what a trace counts, the whole room is the budget; an
        # allocator's reserved memory rounds and fragments, so the headroom stays
        predicted = target.predict(room if meter.exact else int(room * (1 - headroom)))
        if predicted is not None:
            start = predicted.size or search.snap(1)
            above = [s for s in (target.allowed or [start + 1]) if s > start]
            search.ceiling = above[0] if above else None
    size: int | None = probes.pop(0) if probing else search.snap(_cache.get(cache_key, start))
    while size is not None:
        if attempts and attempts[-1].outcome == "fits":
            target.undo()  # another run follows: it starts from where the first one did
        settings = target.apply(size)
        base = meter.in_use()
        meter.reset()
        began = time.perf_counter()
        try:
            run()
        except BaseException as error:
            if not is_oom(error):
                raise
            asked = requested_bytes(str(error))
            grown = meter.grown()
            need = grown + asked if asked is not None and grown is not None else None
            seconds = time.perf_counter() - began
            search.bad[size] = need
            target.undo()
            clean_up(error)
            left = meter.in_use() - base if grown is not None else None
            attempts.append(Attempt(size, "out of memory", need, seconds, left, probe=probing))
            probes.clear()  # a larger probe would run out too
            last_oom = error
            if len([a for a in attempts if a.outcome != "fits"]) > max_oom:
                break
        else:
            need = meter.grown()
            attempts.append(Attempt(size, "fits", need, time.perf_counter() - began, probe=probing))
            search.good[size] = need
            if (cached and len(attempts) == 1) or (shrink_only and not probing):
                break  # the size this cell fitted before, in the same room, fits again
        probing = bool(probes)
        size = probes.pop(0) if probing else search.next_size()
    best = max(search.good, default=None)
    ended_well = attempts[-1].outcome == "fits" and attempts[-1].size == best
    if best is not None and not ended_well:  # leave the effects of a run at the chosen size
        if attempts[-1].outcome == "fits":
            target.undo()
        settings = target.apply(best)
        run()
        attempts.append(Attempt(best, "fits", search.good[best], 0.0))
    if best is None:
        assert last_oom is not None
        raise last_oom  # the OOM report follows, as for any cell that ran out of memory
    _cache[cache_key] = best
    accumulation = target.effective // best if target.effective else None
    return FitResult(
        target.sized,
        tuple(attempts),
        best,
        accumulation,
        room,
        cached,
        settings=settings,
        effective=target.effective,
        predicted=predicted,
    )


def torch_meter() -> Meter:
    """CUDA's allocator when torch uses a GPU, the ``%vram limit`` CPU budget otherwise."""
    from vram_magic.actions.limit import cpu_budget

    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available() and torch.cuda.is_initialized():
        return _cuda_meter(torch)
    budget = cpu_budget()
    if budget is not None:
        start = [0]

        def reset() -> None:
            start[0] = budget.used
            budget.reset_peak()

        return Meter(
            lambda: budget.used,
            lambda: budget.peak - start[0],
            reset,
            lambda: budget.limit - budget.used,
            "cpu",
            exact=True,
        )
    return BLIND


def _cuda_meter(torch: Any) -> Meter:
    """Live bytes are the allocator's allocated memory; growth and room are its reserved
    memory, measured from an emptied cache, against the card's free memory and a
    ``%vram limit`` cap (which the card's free memory knows nothing of)."""
    from vram_magic.actions.limit import current_limit

    start = [0]

    def reset() -> None:
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        start[0] = torch.cuda.memory_reserved()

    def room() -> int:
        torch.cuda.empty_cache()
        free, _ = torch.cuda.mem_get_info()
        limit = current_limit()
        if limit is not None and limit.allocator_cap is not None:
            free = min(free, limit.allocator_cap - torch.cuda.memory_reserved())
        return int(max(free, 0))

    return Meter(
        torch.cuda.memory_allocated,
        lambda: torch.cuda.max_memory_reserved() - start[0],
        reset,
        room,
        "cuda:0",
    )
