"""Actions the Jupyter server asks a kernel to run, each a fixed call returning JSON.

The server evaluates these as user expressions of silent execute requests: they take no input
from the request, so no endpoint can run code of its caller's choosing, and a silent request
leaves the notebook's history and execution count alone.
"""

from __future__ import annotations

import json
import os
from typing import Any

from vram_magic import api
from vram_magic.ipython.extension import loaded_in
from vram_magic.protocol.kernel_status import current_kernel_id
from vram_magic.render.actions import free_view
from vram_magic.render.snapshot import restore_view, snapshot_view


def _shell() -> Any:
    """The kernel's shell, with vram_magic loaded (the server may call before the user did)."""
    from IPython import get_ipython

    shell = get_ipython()
    if loaded_in(shell) is None:
        shell.extension_manager.load_extension("vram_magic")
    return shell


def free_for_server() -> str:
    """Free stranded memory and say what came back."""
    shell = _shell()
    result = api.free()
    state = loaded_in(shell)
    if state is not None:
        state.hooks.status.refresh()
    released = [{"holder": r.holder, "bytes": r.nbytes} for r in result.released]
    return json.dumps({"freed": result.total, "released": released, "text": free_view(result).text})


def snapshot_for_server() -> str:
    """Snapshot the namespace and mark it for the restore after this kernel's restart."""
    _shell()
    kernel_id = current_kernel_id()
    if kernel_id is None:
        raise RuntimeError("not a Jupyter kernel: no connection file")
    result = api.snapshot()
    api.mark_pending(result.id, kernel_id)
    return _snapshot_json(result)


def snapshot_idle_for_server(notebook: str) -> str:
    """Before the server shuts this idle kernel down: snapshot the namespace and leave it
    waiting for the notebook's next kernel."""
    _shell()
    result = api.snapshot()
    # the server knows the notebook by its path; the next kernel by JPY_SESSION_NAME
    for name in {notebook, os.environ.get("JPY_SESSION_NAME") or notebook}:
        api.leave_waiting(result.id, name)
    return _snapshot_json(result)


def restore_for_server() -> str:
    """In the restarted kernel: restore the snapshot marked for it, then load vram_magic."""
    result = api.restore_pending()
    _shell()
    return _restore_json(result)


def restore_waiting_for_server(notebook: str) -> str:
    """In a notebook's new kernel: restore the snapshot its idle predecessor left."""
    _shell()
    return _restore_json(api.restore_waiting(notebook))


def _snapshot_json(result: api.SnapshotResult) -> str:
    return json.dumps(
        {
            "id": result.id,
            "saved": [saved.name for saved in result.saved],
            "unsaved": [{"name": u.name, "reason": u.reason} for u in result.unsaved],
            "bytes": result.nbytes,
            "seconds": result.seconds,
            "text": snapshot_view(result).text,
        }
    )


def _restore_json(result: api.RestoreResult | None) -> str:
    if result is None:
        return json.dumps({"id": None, "restored": [], "skipped": [], "text": "nothing to restore"})
    return json.dumps(
        {
            "id": result.id,
            "restored": [saved.name for saved in result.restored],
            "skipped": [{"name": u.name, "reason": u.reason} for u in result.skipped],
            "seconds": result.seconds,
            "import_seconds": result.import_seconds,
            "tensor_seconds": result.tensor_seconds,
            "text": restore_view(result).text,
        }
    )
