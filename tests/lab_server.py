"""What the browser tier shares: a real JupyterLab server, and Debian's Chromium to drive it.

Never a downloaded browser (no ``playwright install``): Playwright launches /usr/bin/chromium.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).parent.parent / "test-artifacts"
TOKEN = "vram-magic-browser-test"


def skip_without_chromium() -> None:
    """Skip the calling test module where Debian's Chromium is missing (but never on CI)."""
    if not Path(CHROMIUM).exists() and not os.environ.get("CI"):
        pytest.skip(
            "Debian's chromium is not installed (apt-get install chromium)",
            allow_module_level=True,
        )


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_notebook(path: Path, cells: Sequence[str]) -> None:
    notebook = {
        "cells": [
            {
                "cell_type": "code",
                "metadata": {},
                "source": cell,
                "outputs": [],
                "execution_count": None,
            }
            for cell in cells
        ],
        "metadata": {
            "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}
        },
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    path.write_text(json.dumps(notebook))


@dataclass
class LabServer:
    url: str
    process: subprocess.Popen

    def api(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """A REST call to the server with the test token; POST when there is a body."""
        request = urllib.request.Request(
            f"{self.url}/{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"},
            method="GET" if body is None else "POST",
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read() or b"null")


@contextmanager
def lab_server(
    root: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    log: Path | None = None,
) -> Iterator[LabServer]:
    """``jupyter lab`` on 127.0.0.1 serving ``root`` with the test token, until the block ends."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "jupyter",
        "lab",
        "--no-browser",
        f"--port={port}",
        f"--IdentityProvider.token={TOKEN}",
        f"--ServerApp.root_dir={root}",
        "--ServerApp.open_browser=False",
        *args,
    ]
    if os.geteuid() == 0:
        command.append("--allow-root")
    with open(log or os.devnull, "w") as output:
        server = subprocess.Popen(
            command, stdout=output, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=2)
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    pytest.fail("the Jupyter server did not start")
                time.sleep(0.5)
        yield LabServer(url, server)
    finally:
        server.terminate()
        server.wait(timeout=20)


def launch_chromium(driver: Any) -> Any:
    """Debian's Chromium under Playwright (``driver`` is a ``sync_playwright()`` instance)."""
    return driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
