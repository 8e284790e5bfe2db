"""Which shell records its cells, and into which ``CellRecorder``.

The state the Python twins need from a loaded extension (``history()``, the names ``who()``
dates by cell) lives here, below the front doors, so the twins never import the IPython front
door that loaded it. Keyed by the shell itself, weakly: an ``id`` can be reused by a later
object, and a shell that goes away takes its recorder with it.
"""

from __future__ import annotations

import weakref
from typing import Any

from vram_magic.actions.history import CellRecorder

_recorders: weakref.WeakKeyDictionary[Any, CellRecorder] = weakref.WeakKeyDictionary()


def start_recording(shell: Any) -> CellRecorder:
    """The recorder of ``shell``'s cells from now on (``%load_ext``)."""
    recorder = _recorders[shell] = CellRecorder(hidden_names=shell.user_ns_hidden)
    return recorder


def stop_recording(shell: Any) -> None:
    _recorders.pop(shell, None)


def recorder_of(shell: Any | None) -> CellRecorder | None:
    """The recorder of ``shell``'s cells, None where vram_magic is not loaded."""
    return _recorders.get(shell) if shell is not None else None
