"""Idle kernels give their GPU memory back, and keep their variables (opt-in:
``c.VramMagic.cull_idle_seconds``).

A kernel idle for longer than that and holding at least ``cull_min_bytes`` is snapshotted (in
the kernel, between cells, like ``%vram snapshot``), the snapshot is left waiting for its
notebook, and only then is the kernel shut down. A busy kernel is never touched; one whose
snapshot failed stays up and the server's log says why (it is tried again after it has been
idle that long once more: the failed attempt counts as activity).
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

from vram_magic import api
from vram_magic.render.units import format_bytes
from vram_magic.server.kernel_call import KernelCallError, evaluate
from vram_magic.server.sample import KernelSample, Sample

SNAPSHOT_TIMEOUT = 1800.0  # many GB of tensors
REMOTE = "__import__('vram_magic.ipython.remote', fromlist=['_'])"
IDLE = {"idle", "starting"}  # between cells (a kernel never connected to stays "starting")


SETTLE = 2.0  # seconds for the kernel's idle state to follow the snapshot's reply


class IdleCuller:
    def __init__(self, serverapp: Any, idle_seconds: float, min_bytes: int) -> None:
        self.serverapp = serverapp
        self.idle_seconds = idle_seconds
        self.min_bytes = max(min_bytes, 1)
        self._culling: dict[str, asyncio.Future] = {}  # kernel id -> its cull under way

    def due(self, kernel: KernelSample) -> bool:
        return (
            kernel.execution_state in IDLE
            and kernel.idle_seconds is not None
            and kernel.idle_seconds >= self.idle_seconds
            and kernel.nbytes >= self.min_bytes
            and kernel.id not in self._culling
        )

    async def look(self, sample: Sample) -> None:
        """Called with every new sample (see ``metrics.VramMetrics``); a snapshot of many GB
        takes a while, so each cull runs apart and the samples go on."""
        for kernel in sample.kernels:
            if self.due(kernel):
                self._culling[kernel.id] = asyncio.ensure_future(self._cull_once(kernel))

    async def _cull_once(self, kernel: KernelSample) -> None:
        try:
            await self.cull(kernel)
        except Exception as error:  # a kernel that vanished meanwhile, ...
            self.serverapp.log.warning("vram_magic: culling kernel %s: %s", kernel.id, error)
        finally:
            self._culling.pop(kernel.id, None)

    async def cull(self, kernel: KernelSample) -> None:
        manager, log = self.serverapp.kernel_manager, self.serverapp.log
        if kernel.id not in manager:
            return
        running = manager.get_kernel(kernel.id)
        what = f"kernel {kernel.id} ({kernel.notebook or 'no notebook'})"
        if getattr(running, "execution_state", "unknown") not in IDLE:
            return  # it woke up since the sample
        notebook = kernel.notebook or f"kernel-{kernel.id}"
        call = f"{REMOTE}.snapshot_idle_for_server({notebook!r})"
        try:
            snapshot = json.loads(await evaluate(running, call, SNAPSHOT_TIMEOUT))
        except KernelCallError as error:
            log.warning(
                "vram_magic: %s idle for %.0f s, holding %s, stays up: its snapshot failed: %s",
                what,
                kernel.idle_seconds,
                format_bytes(kernel.nbytes),
                error,
            )
            return
        if not await self._settles(running):  # a cell came in behind the snapshot
            api.delete_snapshot(snapshot["id"])
            log.info("vram_magic: %s stays up: it ran a cell during its snapshot", what)
            return
        await manager.shutdown_kernel(kernel.id)
        log.info(
            "vram_magic: %s idle for %.0f s gave back %s: shut down, its variables wait in "
            "snapshot %s for the notebook's next kernel",
            what,
            kernel.idle_seconds,
            format_bytes(kernel.nbytes),
            snapshot["id"],
        )

    @staticmethod
    async def _settles(kernel: Any) -> bool:
        """Whether the kernel is idle again within ``SETTLE`` seconds of the snapshot (its
        state follows status messages, which may trail the reply)."""
        deadline = time.monotonic() + SETTLE
        while getattr(kernel, "execution_state", "unknown") not in IDLE:
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True
