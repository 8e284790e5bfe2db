"""Evaluate one fixed vram_magic call in a running kernel and return the string it produced.

The call travels as a user expression of a silent execute request: the kernel runs it between
cells, records no history, and answers on the shell channel, where it cannot be confused with
the notebook's own output.
"""

from __future__ import annotations

import ast
import time
from typing import Any


class KernelCallError(RuntimeError):
    """The kernel did not answer in time, or the call raised there."""


async def evaluate(kernel_manager: Any, expression: str, timeout: float) -> str:
    """Evaluate ``expression`` (which must return a str) in the kernel of ``kernel_manager``."""
    client = kernel_manager.client()
    client.start_channels(shell=True, iopub=False, stdin=False, hb=False, control=False)
    try:
        msg_id = client.execute("", silent=True, user_expressions={"result": expression})
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise KernelCallError(f"the kernel did not answer within {timeout:g} s")
            try:
                reply = await client.get_shell_msg(timeout=left)
            except Exception as error:  # queue.Empty on timeout
                raise KernelCallError(f"the kernel did not answer within {timeout:g} s") from error
            if reply["parent_header"].get("msg_id") == msg_id:
                break
    finally:
        client.stop_channels()
    result = reply["content"].get("user_expressions", {}).get("result", {})
    if result.get("status") != "ok":
        why = f"{result.get('ename', 'error')}: {result.get('evalue', '')}".strip(": ")
        raise KernelCallError(f"the kernel could not run it ({why})")
    return ast.literal_eval(result["data"]["text/plain"])
