"""The REST endpoints under ``<base_url>/vram/``; authentication, XSRF and authorization are the
Jupyter server's own (kernels resource: reading for GET, writing for POST)."""

from __future__ import annotations

import json
import time
from typing import Any

from jupyter_server.auth.decorator import allow_unauthenticated, authorized
from jupyter_server.base.handlers import APIHandler, PrometheusMetricsHandler
from jupyter_server.utils import url_path_join
from tornado import web

from vram_magic import api
from vram_magic.readings.machine import read_machine
from vram_magic.server.kernel_call import KernelCallError, evaluate
from vram_magic.server.kernels import kernel_facts, list_kernels, notebooks, with_status
from vram_magic.server.metrics import VramMetrics
from vram_magic.server.processes import ProcessDirectory
from vram_magic.server.usage import (
    KernelFacts,
    devices_json,
    kernel_pid_map,
    kernels_json,
    own_status,
)

FREE_TIMEOUT = 120.0
LONG_CALL = 1800.0  # a snapshot or restore of many GB
REMOTE = "__import__('vram_magic.ipython.remote', fromlist=['_'])"
FREE_CALL = f"{REMOTE}.free_for_server()"
SNAPSHOT_CALL = f"{REMOTE}.snapshot_for_server()"
RESTORE_CALL = f"{REMOTE}.restore_for_server()"
RESTORE_WAITING_CALL = REMOTE + ".restore_waiting_for_server({!r})"
KERNEL_ID = r"(?P<kernel_id>[\w-]+)"
# between cells; a kernel started without a frontend stays "starting" on the server, yet answers
READY = {"idle", "starting"}

directory = ProcessDirectory()
answered_requests: set[str] = set()  # restart requests from kernels, each carried out once


class VramHandler(APIHandler):
    auth_resource = "kernels"

    def reply(self, body: dict[str, Any], status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body))

    async def kernel_facts(self) -> list[KernelFacts]:
        """Every running kernel of this server, with its notebook and its own status file."""
        kernels = await list_kernels(self.kernel_manager, self.session_manager)
        return [with_status(kernel) for kernel in kernels]

    def running_kernel(self, kernel_id: str) -> Any:
        if kernel_id not in self.kernel_manager:
            raise web.HTTPError(404, f"no running kernel {kernel_id}")
        return self.kernel_manager.get_kernel(kernel_id)


class DevicesHandler(VramHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        kernels = await self.kernel_facts()
        self.reply(devices_json(read_machine(), directory, kernel_pid_map(kernels)))


class KernelsHandler(VramHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        kernels = await self.kernel_facts()
        self.reply(kernels_json(read_machine(), kernels, directory))


class FreeHandler(VramHandler):
    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        kernel = self.running_kernel(kernel_id)
        state = getattr(kernel, "execution_state", "idle")
        if state not in READY:
            self.reply({"message": f"the kernel is {state}; free it when it is idle"}, 409)
            return
        try:
            answer = await evaluate(kernel, FREE_CALL, FREE_TIMEOUT)
        except KernelCallError as error:
            self.reply({"message": str(error)}, 504)
            return
        self.reply({"kernel_id": kernel_id, **json.loads(answer)})


class RestartHandler(VramHandler):
    """Snapshot, restart, restore. Started from the sidebar (the server takes the snapshot) or
    by ``%vram restart`` in the kernel (it took the snapshot and wrote a request id into its
    status file, which the sidebar passes on here). A failed snapshot never restarts."""

    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        kernel = self.running_kernel(kernel_id)
        try:
            request = json.loads(self.request.body or b"{}").get("request")
        except (ValueError, AttributeError):
            self.reply({"message": 'the body must be {} or {"request": ID}'}, 400)
            return
        if request is not None:
            refused = self._refuse_request(kernel_id, str(request))
            if refused:
                self.reply({"message": refused}, 409)
                return
            snapshot = None  # taken by the kernel before it asked
        else:
            state = getattr(kernel, "execution_state", "idle")
            if state not in READY:
                self.reply({"message": f"the kernel is {state}; restart it when it is idle"}, 409)
                return
            try:
                snapshot = json.loads(await evaluate(kernel, SNAPSHOT_CALL, LONG_CALL))
            except KernelCallError as error:
                self.reply({"message": f"not restarted: the snapshot failed: {error}"}, 409)
                return
        # a kernel that asked waits for it, its snapshot on disk: no need for a graceful stop
        started = time.monotonic()
        await self.kernel_manager.restart_kernel(kernel_id, now=request is not None)
        restart_seconds = time.monotonic() - started
        try:
            restored = json.loads(await evaluate(kernel, RESTORE_CALL, LONG_CALL))
        except KernelCallError as error:
            message = f"restarted, but the restore failed: {error}; the snapshot is kept"
            self.reply({"message": message}, 500)
            return
        texts = [part["text"] for part in (snapshot, restored) if part]
        self.reply(
            {
                "kernel_id": kernel_id,
                "snapshot": snapshot,
                "restore": restored,
                "restart_seconds": restart_seconds,  # the kernel's stop and start
                "text": "\n".join(texts),
            }
        )

    def _refuse_request(self, kernel_id: str, request: str) -> str | None:
        """Why a restart the kernel asked for cannot go ahead; None when it can (once)."""
        status = own_status(
            with_status(kernel_facts(self.kernel_manager, kernel_id, {})), directory
        )
        if status is None or status.restart != request:
            return "the kernel asked for no such restart"
        if request in answered_requests:
            return "that restart is already under way"
        answered_requests.add(request)
        return None


class WaitingHandler(VramHandler):
    """The snapshot an idle kernel left for a notebook when the server shut it down."""

    @web.authenticated
    @authorized
    async def get(self) -> None:
        notebook = self.get_argument("path")
        waiting = api.waiting_snapshot(notebook)
        found = None
        if waiting is not None:
            found = {
                "id": waiting.id,
                "created": waiting.created,
                "names": waiting.names,
                "nbytes": waiting.nbytes,
            }
        self.reply({"path": notebook, "snapshot": found})


class RestoreWaitingHandler(VramHandler):
    """Restore, in the notebook's new kernel, what its idle predecessor left (one click)."""

    @web.authenticated
    @authorized
    async def post(self, kernel_id: str) -> None:
        kernel = self.running_kernel(kernel_id)
        notebook = (await notebooks(self.session_manager)).get(kernel_id, (None, None))[0]
        if notebook is None:
            self.reply({"message": "the kernel has no notebook"}, 409)
            return
        state = getattr(kernel, "execution_state", "idle")
        if state not in READY:
            self.reply({"message": f"the kernel is {state}; restore when it is idle"}, 409)
            return
        try:
            answer = await evaluate(kernel, RESTORE_WAITING_CALL.format(notebook), LONG_CALL)
        except KernelCallError as error:
            self.reply({"message": f"not restored: {error}; the snapshot is kept"}, 500)
            return
        self.reply({"kernel_id": kernel_id, **json.loads(answer)})


class MetricsHandler(PrometheusMetricsHandler):
    """The server's own /metrics (its authentication: anonymous is refused as before), with
    vram_magic's series after the server's, written off the event loop (``metrics``)."""

    @allow_unauthenticated
    def get(self) -> None:
        super().get()
        self.write(self.settings["vram_magic_metrics"].exposition())


def setup_handlers(web_app: Any, metrics: VramMetrics) -> None:
    """The /vram endpoints, and /metrics: an extension's handlers come before the server's."""
    web_app.settings["vram_magic_metrics"] = metrics
    base = url_path_join(web_app.settings["base_url"], "vram")
    web_app.add_handlers(
        ".*$",
        [
            (url_path_join(web_app.settings["base_url"], "metrics"), MetricsHandler),
            (url_path_join(base, "devices"), DevicesHandler),
            (url_path_join(base, "kernels"), KernelsHandler),
            (url_path_join(base, "kernels", KERNEL_ID, "free"), FreeHandler),
            (url_path_join(base, "kernels", KERNEL_ID, "restart"), RestartHandler),
            (url_path_join(base, "kernels", KERNEL_ID, "restore-waiting"), RestoreWaitingHandler),
            (url_path_join(base, "waiting"), WaitingHandler),
        ],
    )
