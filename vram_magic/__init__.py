"""vram_magic: see, free and fit GPU memory from a notebook.

``%load_ext vram_magic`` registers ``%vram``. Importing this package is cheap on purpose: it
imports neither torch nor IPython; the public names below load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "report": "vram_magic.api",
    "who": "vram_magic.api",
    "history": "vram_magic.api",
    "free": "vram_magic.api",
    "fit": "vram_magic.api",
    "fit_cell": "vram_magic.api",
    "FitOptions": "vram_magic.actions.fit_sizing",
    "FitResult": "vram_magic.actions.fit",
    "CellFit": "vram_magic.actions.fit_cell",
    "estimate": "vram_magic.api",
    "limit": "vram_magic.api",
    "snapshot": "vram_magic.api",
    "restore": "vram_magic.api",
    "snapshots": "vram_magic.api",
    "delete_snapshot": "vram_magic.api",
    "mark_pending": "vram_magic.api",
    "restore_pending": "vram_magic.api",
    "Estimate": "vram_magic.actions.estimate",
    "settings": "vram_magic.config",
    "Census": "vram_magic.census.model",
    "Holder": "vram_magic.census.model",
    "CellRecord": "vram_magic.actions.history",
    "FreeResult": "vram_magic.actions.free",
    "SnapshotResult": "vram_magic.persistence.save",
    "SnapshotInfo": "vram_magic.persistence.save",
    "RestoreResult": "vram_magic.persistence.restore",
    "Report": "vram_magic.readings.model",
    "DeviceReading": "vram_magic.readings.model",
    "HostReading": "vram_magic.readings.model",
    "TorchReading": "vram_magic.readings.model",
    "ProcessUsage": "vram_magic.readings.model",
}

__all__ = [*_LAZY, "load_ipython_extension", "unload_ipython_extension"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vram_magic' has no attribute {name!r}")


def load_ipython_extension(shell: Any) -> None:
    """Called by ``%load_ext vram_magic``."""
    from vram_magic.ipython.extension import load

    load(shell)


def unload_ipython_extension(shell: Any) -> None:
    """Called by ``%unload_ext vram_magic``: removes every magic, hook and thread it added."""
    from vram_magic.ipython.extension import unload

    unload(shell)


def _jupyter_server_extension_points() -> list[dict[str, str]]:
    """Where the Jupyter server finds the extension behind the sidebar."""
    return [{"module": "vram_magic.server"}]


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab sidebar shipped inside the package."""
    return [{"src": "labextension", "dest": "vram-magic"}]
