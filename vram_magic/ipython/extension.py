"""Loading and unloading into an IPython shell; unloading removes everything loading added."""

from __future__ import annotations

from typing import Any

from vram_magic.ipython.magics import VramMagics

_loaded: dict[int, VramMagics] = {}


def load(shell: Any) -> None:
    if id(shell) in _loaded:
        return
    magics = VramMagics(shell)
    shell.register_magics(magics)
    _loaded[id(shell)] = magics


def unload(shell: Any) -> None:
    magics = _loaded.pop(id(shell), None)
    if magics is None:
        return
    manager = shell.magics_manager
    for kind, table in magics.magics.items():
        for name in table:
            manager.magics[kind].pop(name, None)
    manager.registry.pop(type(magics).__name__, None)
