"""Which tensors only unreachable reference cycles keep alive, found without collecting anything.

``gc.collect()`` would answer by freeing them (and running finalizers, clearing weak references).
Instead this runs the collector's own test on a small set: climb the candidates' referrers until
nothing new refers to them, then count, for each object, the references that come from inside the
set. An object with more references than that is held from outside (a module, a thread, C code);
whatever such objects reach is alive. The rest is cyclic garbage.
"""

from __future__ import annotations

import gc
import sys
from collections import Counter
from typing import Any

CLIMB_LIMIT = 50_000


def _stack_frame_ids() -> set[int]:
    frame, ids = sys._getframe(), set()
    while frame is not None:
        ids.add(id(frame))
        frame = frame.f_back
    return ids


def _is_arguments_of(referrer: Any, frontier: list[Any]) -> bool:
    return (
        type(referrer) is tuple
        and len(referrer) == len(frontier)
        and all(a is b for a, b in zip(referrer, frontier, strict=True))
    )


def _climb(candidates: list[Any], members: dict[int, Any]) -> bool:
    """Fill ``members`` with everything that refers to the candidates, transitively.
    False when the set grows past ``CLIMB_LIMIT`` (then nothing is called garbage)."""
    own = _stack_frame_ids() | {id(members), id(candidates)}
    frontier = list(candidates)
    while frontier:
        own.add(id(frontier))
        referrers = gc.get_referrers(*frontier)
        own.add(id(referrers))
        frontier = []
        for referrer in referrers:
            if _is_arguments_of(referrer, frontier):
                continue  # the tuple gc.get_referrers(*frontier) was called with
            if id(referrer) not in members and id(referrer) not in own:
                members[id(referrer)] = referrer
                frontier.append(referrer)
        del referrers
        if len(members) > CLIMB_LIMIT:
            return False
    return True


def _internal_references(members: dict[int, Any]) -> Counter[int]:
    """For each member, how many references come from other members (as gc counts them).
    A function of its own so no loop variable outlives it and skews the refcounts."""
    internal: Counter[int] = Counter()
    for member in members.values():
        for referent in gc.get_referents(member):
            if id(referent) in members:
                internal[id(referent)] += 1
    return internal


def unreachable_ids(candidates: list[Any]) -> set[int]:
    """ids of the candidates that nothing but unreachable cycles refers to."""
    members: dict[int, Any] = {id(o): o for o in candidates}
    if not _climb(candidates, members):
        return set()
    internal = _internal_references(members)
    # Our own references to a member (the dict, the loop variable, getrefcount's argument) are
    # measured on a sentinel that nothing else holds; candidates also sit in their list.
    sentinel = object()
    members[id(sentinel)] = sentinel
    sentinel_id = id(sentinel)
    del sentinel
    counts = {key: sys.getrefcount(member) for key, member in members.items()}
    del members[sentinel_id]
    ours = counts.pop(sentinel_id)
    candidate_ids = {id(o) for o in candidates}
    stack = [
        members[key]
        for key, count in counts.items()
        if count - ours - (key in candidate_ids) > internal[key]
    ]
    alive: set[int] = set()
    while stack:
        member = stack.pop()
        if id(member) not in alive:
            alive.add(id(member))
            stack.extend(r for r in gc.get_referents(member) if id(r) in members)
    return candidate_ids - alive
