"""Loading and unloading into an IPython shell; unloading removes everything loading added."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from vram_magic.actions.limit import clear_limit
from vram_magic.ipython.hooks import CellHooks
from vram_magic.ipython.magics import VramMagics
from vram_magic.readings.sampler import sampler


@dataclass
class Loaded:
    magics: VramMagics
    hooks: CellHooks


_loaded: dict[int, Loaded] = {}


def loaded_in(shell: Any) -> Loaded | None:
    """What vram_magic added to ``shell``, if it is loaded there."""
    return _loaded.get(id(shell)) if shell is not None else None


def load(shell: Any) -> None:
    if id(shell) in _loaded:
        return
    hooks = CellHooks(shell)
    magics = VramMagics(shell, hooks.live)
    shell.register_magics(magics)
    hooks.register()
    hooks.status.start()
    _loaded[id(shell)] = Loaded(magics, hooks)


def unload(shell: Any) -> None:
    state = _loaded.pop(id(shell), None)
    if state is None:
        return
    state.hooks.unregister()
    state.hooks.live.close_all()
    state.hooks.status.stop()
    sampler.stop()
    clear_limit()
    manager = shell.magics_manager
    for kind, table in state.magics.magics.items():
        for name in table:
            manager.magics[kind].pop(name, None)
    manager.registry.pop(type(state.magics).__name__, None)
