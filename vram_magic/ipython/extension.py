"""Loading and unloading into an IPython shell; unloading removes everything loading added."""

from __future__ import annotations

import os
import sys
import weakref
from dataclasses import dataclass
from typing import Any

from vram_magic import api
from vram_magic.ipython.hooks import CellHooks
from vram_magic.ipython.magics import VramMagics
from vram_magic.protocol.kernel_status import current_kernel_id
from vram_magic.readings.sampler import sampler
from vram_magic.render.snapshot import restore_view
from vram_magic.render.units import format_bytes


@dataclass
class Loaded:
    magics: VramMagics
    hooks: CellHooks


# keyed by the shell itself, weakly: an id can be reused by a later object
_loaded: weakref.WeakKeyDictionary[Any, Loaded] = weakref.WeakKeyDictionary()


def loaded_in(shell: Any) -> Loaded | None:
    """What vram_magic added to ``shell``, if it is loaded there."""
    return _loaded.get(shell) if shell is not None else None


def load(shell: Any) -> None:
    if shell in _loaded:
        return
    hooks = CellHooks(shell)
    magics = VramMagics(shell, hooks.live, hooks.status)
    shell.register_magics(magics)
    hooks.register()
    hooks.status.start()
    _loaded[shell] = Loaded(magics, hooks)
    _restore_after_restart(shell)
    _announce_waiting()


def _restore_after_restart(shell: Any) -> None:
    """A kernel that ``%vram restart`` stopped outside JupyterLab gets its namespace back when
    vram_magic is loaded in its successor (the snapshot was marked for this kernel id)."""
    kernel_id = current_kernel_id()
    if kernel_id is None:
        return
    try:
        result = api.restore_pending(kernel_id)
    except Exception as error:  # never break %load_ext: the snapshot stays on disk
        print(
            f"vram_magic: the snapshot waiting for this kernel was not restored ({error}); "
            "`%vram snapshots` lists it, `%vram restore ID` tries again",
            file=sys.stderr,
        )
        return
    if result is not None:
        from IPython.display import display

        display(restore_view(result))


def _announce_waiting() -> None:
    """Say so when this notebook's previous kernel was shut down while idle and left its
    variables in a snapshot (the server's idle culling); they are restored only when asked."""
    notebook = os.environ.get("JPY_SESSION_NAME")
    if not notebook:
        return
    try:
        waiting = api.waiting_snapshot(notebook)
    except Exception:  # never break %load_ext over a notice
        return
    if waiting is not None:
        print(
            f"vram_magic: this notebook's variables wait in snapshot {waiting.id} "
            f"({waiting.names} variables, {format_bytes(waiting.nbytes)}), saved when its "
            f"idle kernel was shut down to give its GPU memory back: `%vram restore {waiting.id}` "
            "brings them back"
        )


def unload(shell: Any) -> None:
    state = _loaded.pop(shell, None)
    if state is None:
        return
    state.hooks.unregister()
    state.hooks.live.close_all()
    state.hooks.status.stop()
    sampler.stop()
    api.clear_limit()
    api.stop_recording(shell)
    manager = shell.magics_manager
    for kind, table in state.magics.magics.items():
        for name in table:
            manager.magics[kind].pop(name, None)
    manager.registry.pop(type(state.magics).__name__, None)
