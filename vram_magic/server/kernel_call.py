"""Evaluate one fixed vram_magic call in a running kernel and return the string it produced.

The call travels as a user expression of a silent execute request: the kernel runs it between
cells, records no history, and answers on the shell channel, where it cannot be confused with
the notebook's own output.
"""

from __future__ import annotations

import ast
import time
import uuid
from queue import Empty
from typing import Any


class KernelCallError(RuntimeError):
    """The kernel did not answer in time, or the call raised there."""


async def evaluate(kernel_manager: Any, expression: str, timeout: float) -> str:
    """Evaluate ``expression`` (which must return a str) in the kernel of ``kernel_manager``."""
    client = kernel_manager.client(session=_own_session(kernel_manager.session))
    client.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
    try:
        msg_id = client.execute("", silent=True, user_expressions={"result": expression})
        reply = await _reply_to(client, msg_id, time.monotonic() + timeout)
    finally:
        client.stop_channels()
    if reply is None:
        raise KernelCallError(f"the kernel did not answer within {timeout:g} s")
    result = reply["content"].get("user_expressions", {}).get("result", {})
    if result.get("status") != "ok":
        why = f"{result.get('ename', 'error')}: {result.get('evalue', '')}".strip(": ")
        raise KernelCallError(f"the kernel could not run it ({why})")
    return ast.literal_eval(result["data"]["text/plain"])


def _own_session(shared: Any) -> Any:
    """The kernel's session (its key) under a new session id. A kernel's shell socket routes
    replies by that id, and every client made by one kernel manager shares it: two connected
    at once (a frontend's, ours) lose each other's replies."""
    own = shared.clone()
    own.session = str(uuid.uuid4())
    return own


async def _reply_to(client: Any, msg_id: str, deadline: float) -> dict | None:
    """The shell reply to ``msg_id``, or None at ``deadline``; other replies are skipped."""
    while (left := deadline - time.monotonic()) > 0:
        try:
            reply = await client.get_shell_msg(timeout=left)
        except Empty:
            return None
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply
    return None
