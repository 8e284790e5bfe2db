"""Restart the kernel and get the namespace back: ``%vram restart`` and the panel's button.

The kernel takes a snapshot, marks it for its own next start, and asks for the restart through
its status file; in JupyterLab and Notebook 7 the VRAM extension's poll passes the request to
the server, which restarts the kernel and restores the snapshot in the new process. Where nothing
answers within ``settings.restart_wait`` seconds (VS Code, the classic notebook), the kernel exits
and its manager starts a new one; the restore then runs when vram_magic is loaded there. Outside
a Jupyter kernel there is nothing to restart: the snapshot is kept for ``%vram restore``.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable
from typing import Any

from vram_magic import api
from vram_magic.config import settings
from vram_magic.ipython.status_publisher import StatusPublisher
from vram_magic.protocol.kernel_status import current_kernel_id
from vram_magic.render.snapshot import snapshot_view


def restart_and_restore(
    shell: Any,
    status: StatusPublisher,
    exclude: Iterable[str] = (),
    say: Callable[[Any], None] = print,
    exit_process: Callable[[int], Any] = os._exit,
) -> None:
    """Snapshot, then have this kernel restarted; returns only where there is no kernel."""
    result = api.snapshot(exclude=tuple(exclude))
    say(snapshot_view(result))
    kernel_id = current_kernel_id()
    if kernel_id is None:
        say(
            "not a Jupyter kernel, so nothing to restart: start Python again, then "
            f"`%load_ext vram_magic` and `%vram restore {result.id}`"
        )
        return
    api.mark_pending(result.id, kernel_id)
    if status.request_restart() is not None:
        say("restarting: the VRAM sidebar restores this snapshot in the new kernel …")
        _flush()
        deadline = time.monotonic() + settings.restart_wait
        while time.monotonic() < deadline:  # the server stops this process meanwhile
            time.sleep(0.1)
    say(
        "no JupyterLab with vram_magic answered: this kernel stops now and Jupyter starts a new "
        "one; run `%load_ext vram_magic` there to restore the snapshot"
    )
    _flush()
    exit_process(0)


def _flush() -> None:
    """The last words must reach the notebook before the process ends."""
    sys.stdout.flush()
    sys.stderr.flush()
    time.sleep(0.2)  # ipykernel sends stdout from its IO thread
