"""Which stray tensors only unreachable reference cycles keep alive: asked of the collector itself.

One collection runs with ``gc.DEBUG_SAVEALL``, so whatever it finds unreachable is parked in
``gc.garbage`` instead of being freed; the tensors among it are the cycle's, the rest are held
from outside (a module global, a thread, C code). The parked objects are then released back to
the collector, which frees them at its next run or at ``%vram free``. As in any collection, their
weak references are cleared and finalizers run: they were already unreachable.
"""

from __future__ import annotations

import gc
import weakref
from typing import Any


def split_cycles(stray: list[Any]) -> tuple[list[Any], list[Any]]:
    """(tensors only cycles hold, tensors held elsewhere). Takes ownership of ``stray``."""
    wanted = {id(t): weakref.ref(t) for t in stray}
    stray.clear()  # no strong reference of ours may make the cycles look reachable
    flags, parked_before = gc.get_debug(), len(gc.garbage)
    gc.set_debug(flags | gc.DEBUG_SAVEALL)
    try:
        gc.collect()
        in_cycles = [o for o in gc.garbage[parked_before:] if id(o) in wanted]
    finally:
        gc.set_debug(flags)
        del gc.garbage[parked_before:]
    cyclic = {id(t) for t in in_cycles}
    held = [t for key, ref in wanted.items() if key not in cyclic and (t := ref()) is not None]
    return in_cycles, held
