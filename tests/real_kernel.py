"""A real ipykernel driven through jupyter_client, for the kernel-tier tests."""

from __future__ import annotations

import json
import os
import queue
import time


class Kernel:
    """One kernel process; ``env`` is added to this process's environment for it."""

    def __init__(self, **env: str) -> None:
        from jupyter_client.manager import start_new_kernel

        self.manager, self.client = start_new_kernel(
            kernel_name="python3", env={**os.environ, **env}
        )

    def execute(self, code: str, timeout: float = 60) -> list[dict]:
        """Run ``code``; return every IOPub message of that request until the kernel is idle."""
        msg_id = self.client.execute(code)
        messages = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = self.client.get_iopub_msg(timeout=timeout)
            messages.append(message)
            state = message["content"].get("execution_state")
            if message["parent_header"].get("msg_id") == msg_id and state == "idle":
                return messages
        raise TimeoutError(code)

    def run(self, code: str, timeout: float = 60) -> str:
        """Run ``code``; its printed output and result as text, or AssertionError with the
        traceback when it raised."""
        text = []
        for message in self.execute(code, timeout):
            content = message["content"]
            if message["msg_type"] == "error":
                raise AssertionError("\n".join(content["traceback"]))
            if message["msg_type"] == "stream":
                text.append(content["text"])
            if message["msg_type"] in {"execute_result", "display_data"}:
                text.append(content["data"].get("text/plain", ""))
        return "".join(text)

    def run_until_exit(self, code: str, timeout: float = 60) -> str:
        """Run ``code``, which ends the kernel process; what it printed before it did."""
        self.client.execute(code)
        text = []
        deadline = time.monotonic() + timeout
        while self.manager.is_alive():
            if time.monotonic() > deadline:
                raise TimeoutError(code)
            try:
                message = self.client.get_iopub_msg(timeout=0.2)
            except queue.Empty:
                continue
            if message["msg_type"] == "stream":
                text.append(message["content"]["text"])
            if message["msg_type"] == "display_data":
                text.append(message["content"]["data"].get("text/plain", ""))
        return "".join(text)

    def value(self, expression: str):  # type: ignore[no-untyped-def]
        for message in self.execute(f"import json; print(json.dumps({expression}))"):
            if message["msg_type"] == "stream":
                return json.loads(message["content"]["text"])
        raise AssertionError(expression)

    def restart(self, timeout: float = 60) -> None:
        """A fresh kernel process on the same connection (and the same kernel id)."""
        self.manager.restart_kernel(now=True)
        self.client.wait_for_ready(timeout=timeout)

    def stop(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)
