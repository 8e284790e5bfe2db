"""What the browser tier shares: a real JupyterLab (or Notebook 7) server, and Debian's
Chromium to drive it.

Never a downloaded browser (no ``playwright install``): Playwright launches /usr/bin/chromium.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import psutil
import pytest
from fake_nvml import load_recording

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
# the server's NVML answers from the file named by VRAM_MAGIC_FAKE_NVML: pass it with --config=
FAKE_NVML_CONFIG = Path(__file__).parent / "jupyter_config_fake_nvml.py"
MIB = 2**20
# a notebook whose kernel the fake NVML shows with 3.3 GiB (see put_kernels_on_gpus)
TRAIN_CELLS = ["%load_ext vram_magic\nimport torch\nweights = torch.ones(64 * 2**20)  # 256 MB"]
SETTINGS = {
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": {"fetchNews": "false"},
    "vram-magic/plugin.jupyterlab-settings": {"refreshInterval": 0.5},
}
# the notebook's kernel is ready: JupyterLab's status bar says so. Notebook 7 has none, so its
# toolbar's indicator tells (no use in JupyterLab, where it reads idle before the kernel starts)
LAB_IDLE = "text=| Idle"
NOTEBOOK7_IDLE = '.jp-Notebook-ExecutionIndicator[data-status="idle"]'


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


def wait_for_answer(url: str, process: subprocess.Popen, what: str, timeout: float = 60) -> None:
    """Wait until ``url`` answers; fail the test when ``process`` ends first or time runs out."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                pytest.fail(f"{what} did not start")
            time.sleep(0.3)


@contextmanager
def lab_server(
    root: Path,
    args: Sequence[str] = (),
    env: dict[str, str] | None = None,
    log: Path | None = None,
    app: Literal["lab", "notebook"] = "lab",
) -> Iterator[LabServer]:
    """``jupyter lab`` (or ``jupyter notebook``, Notebook 7) on 127.0.0.1 serving ``root`` with
    the test token, until the block ends."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "jupyter",
        app,
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
        wait_for_answer(f"{url}/api/status?token={TOKEN}", server, "the Jupyter server")
        yield LabServer(url, server)
    finally:
        server.terminate()
        server.wait(timeout=20)


@contextmanager
def fake_gpu_server(
    root: Path,
    private: Path,
    args: Sequence[str] = (),
    app: Literal["lab", "notebook"] = "lab",
    recording: str = "two_gpus_other_processes",
) -> Iterator[tuple[LabServer, Path]]:
    """``lab_server`` with the vram_magic server extension, a fresh layout and fast-polling
    settings (kept in ``private``), whose NVML answers from a recording (two GPUs by default):
    the file it yields beside the server, which a test may rewrite (with as many GPUs).
    ``root`` gets train.ipynb (it loads vram_magic and holds 256 MB) and eval.ipynb."""
    write_notebook(root / "train.ipynb", TRAIN_CELLS)
    write_notebook(root / "eval.ipynb", ["print('evaluating')"])
    settings = private / "settings"
    for plugin, values in SETTINGS.items():
        (settings / plugin).parent.mkdir(parents=True, exist_ok=True)
        (settings / plugin).write_text(json.dumps(values))
    gpus = private / "gpus.json"
    gpus.write_text(json.dumps(load_recording(recording)))
    env = {
        "VRAM_MAGIC_FAKE_NVML": str(gpus),
        # a fresh layout and default settings on every run
        "JUPYTERLAB_WORKSPACES_DIR": str(private / "workspaces"),
        "JUPYTERLAB_SETTINGS_DIR": str(settings),
    }
    args = [
        f"--config={FAKE_NVML_CONFIG}",
        "--ServerApp.jpserver_extensions=vram_magic=True",
        *args,
    ]
    with lab_server(root, args, env, log=private / "jupyter.log", app=app) as server:
        yield server, gpus


def launch_chromium(driver: Any) -> Any:
    """Debian's Chromium under Playwright (``driver`` is a ``sync_playwright()`` instance)."""
    return driver.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@contextmanager
def browser_page(server: LabServer, path: str, failure: str) -> Iterator[Any]:
    """A Chromium page on ``path`` of the server; a screenshot ``failure``.png when the block
    fails."""
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as driver:
        browser = launch_chromium(driver)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        try:
            page.goto(f"{server.url}/{path}?token={TOKEN}")
            yield page
        except Exception:
            page.screenshot(path=str(ARTIFACTS / f"{failure}.png"))
            raise
        finally:
            browser.close()


def run_first_cell(page: Any, idle: str = LAB_IDLE) -> None:
    """Run the first cell once ``idle`` shows; a kernel still connecting drops the request, so
    try again."""
    from playwright.sync_api import Error

    for _ in range(4):
        page.wait_for_selector(idle, timeout=60_000)
        page.locator(".jp-Cell").first.click()
        page.keyboard.press("Escape")
        page.keyboard.press("Shift+Enter")
        try:
            page.wait_for_selector(".jp-InputPrompt:has-text('[1]')", timeout=20_000)
            return
        except Error:
            continue
    pytest.fail("the first cell did not run")


def shot(page: Any, name: str) -> None:
    """Screenshots of the page and of the VRAM panel alone, ``name``.png and ``name``-panel.png."""
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    page.locator("#vram-magic-sidebar").screenshot(path=str(ARTIFACTS / f"{name}-panel.png"))


def kernel_pids(server: LabServer) -> dict[str, int]:
    """Kernel id -> PID, from the server's live children (the REST API does not tell PIDs)."""
    pids = {}
    for child in psutil.Process(server.process.pid).children(recursive=True):
        try:
            command = " ".join(child.cmdline())
        except psutil.Error:  # a kernel just stopped by a restart, not yet reaped
            continue
        found = re.search(r"kernel-([\w-]+)\.json", command)
        if found:
            pids[found.group(1)] = child.pid
    return pids


def put_kernels_on_gpus(server: LabServer, gpus: Path) -> tuple[str, str]:
    """Start eval.ipynb's kernel beside train.ipynb's and put both on the fake GPUs: the
    recording's "self" (3.3 GiB on GPU 0) becomes train.ipynb's kernel, and eval.ipynb's takes
    512 MiB on GPU 1, where a process of the recording held no figure. Their kernel ids."""
    server.api(
        "api/sessions", {"path": "eval.ipynb", "type": "notebook", "kernel": {"name": "python3"}}
    )
    sessions = {s["path"]: s["kernel"]["id"] for s in server.api("api/sessions")}
    current, other = sessions["train.ipynb"], sessions["eval.ipynb"]
    pids = kernel_pids(server)
    recording = load_recording("two_gpus_other_processes")
    gpu0, gpu1 = recording["devices"]
    gpu0["compute_processes"][0]["pid"] = pids[current]
    gpu1["compute_processes"][1] = {"pid": pids[other], "usedGpuMemory": 512 * MIB}
    gpus.write_text(json.dumps(recording))
    return current, other


def free_from_the_panel(row: Any) -> None:
    """Click a kernel row's Free, see the server's answer, and the row's largest variable that
    the kernel reports once vram_magic is loaded there."""
    from playwright.sync_api import expect

    row.locator('[data-action="free"]').click()
    expect(row.locator(".vram-magic-result-text")).to_contain_text(
        re.compile("free", re.IGNORECASE), timeout=60_000
    )
    expect(row.locator('[data-action="free"]')).to_be_enabled()
    expect(row.locator(".vram-magic-kernel-detail")).to_contain_text("largest: weights")


def kernel_list_shown(sidebar: Any, current: str, other: str) -> Any:
    """Two GPU gauges, and both kernels, largest first: train.ipynb's (3.3 GiB, highlighted as
    the current notebook's), then the other. The current kernel's row."""
    from playwright.sync_api import expect

    row = sidebar.locator(f'[data-kernel-id="{current}"]')
    expect(sidebar.locator(".vram-magic-gauge")).to_have_count(2)
    expect(row).to_have_class(re.compile("vram-magic-current"))
    expect(row.locator(".vram-magic-kernel-name")).to_have_text("train.ipynb")
    expect(row.locator(".vram-magic-kernel-bytes")).to_have_text("3.3 GiB")
    kernels = sidebar.locator(".vram-magic-kernel")
    expect(kernels).to_have_count(2)
    expect(kernels.nth(1)).to_have_attribute("data-kernel-id", other)
    expect(kernels.nth(1)).not_to_have_class(re.compile("vram-magic-current"))
    return row
