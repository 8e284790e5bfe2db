"""What the server knows of its kernels: notebook, state, PID, last activity, status file.

Gathered in two steps so that a caller off the event loop can do the slow part: the kernel
manager and the sessions are read on the loop (``list_kernels``), the kernels' own status files
from disk afterwards (``with_status``), from any thread.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from vram_magic.protocol.kernel_status import read_status, status_path
from vram_magic.server.usage import KernelFacts


async def notebooks(session_manager: Any) -> dict[str, tuple[Any, Any]]:
    """Kernel id -> (notebook path, session name), for the kernels that have a notebook."""
    return {
        s["kernel"]["id"]: (s.get("path"), s.get("name"))
        for s in await session_manager.list_sessions()
        if s.get("kernel")
    }


async def list_kernels(kernel_manager: Any, session_manager: Any) -> list[KernelFacts]:
    """Every running kernel, without its status file (see ``with_status``)."""
    found = await notebooks(session_manager)
    return [kernel_facts(kernel_manager, k, found) for k in kernel_manager.list_kernel_ids()]


def kernel_facts(
    kernel_manager: Any, kernel_id: str, notebooks: dict[str, tuple[Any, Any]]
) -> KernelFacts:
    kernel = kernel_manager.get_kernel(kernel_id)
    path, notebook = notebooks.get(kernel_id, (None, None))
    activity = getattr(kernel, "last_activity", None)
    return KernelFacts(
        id=kernel_id,
        name=kernel.kernel_name,
        execution_state=getattr(kernel, "execution_state", "unknown"),
        pid=getattr(getattr(kernel, "provisioner", None), "pid", None),
        path=path,
        notebook=notebook or (os.path.basename(path) if path else None),
        status=None,
        connection=getattr(kernel, "connection_file", "") or "",
        last_activity=activity.timestamp() if activity is not None else None,
    )


def with_status(kernel: KernelFacts) -> KernelFacts:
    """``kernel`` with its own status file read (None where it has none)."""
    if not kernel.connection:
        return kernel
    return dataclasses.replace(kernel, status=read_status(status_path(kernel.connection)))
