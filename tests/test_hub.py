"""Hub tier: a real JupyterHub (PyPI's, with npm's configurable-http-proxy) on loopback, two
local users created by the test, each with a single-user server that runs vram_magic's
extension. Each sees only their own kernels, the other's processes only as the folded sum, and
one user's token is refused on the other's /vram endpoints and /metrics. The single-user
servers' NVML is the fake (no GPU here), placing both users' real kernels on one GPU."""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest
from fake_nvml import load_recording
from lab_server import FAKE_NVML_CONFIG, free_port
from system_binaries import require

require("configurable-http-proxy", "npm install -g configurable-http-proxy")
if os.geteuid() != 0:
    pytest.skip("the hub tier creates local users: run it as root", allow_module_level=True)

USERS = ("vmhub-alice", "vmhub-bob")
GIB = 2**30
ADMIN_TOKEN = "vram-magic-hub-test-admin"
HUB_CONFIG = """
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_port}"
c.JupyterHub.db_url = "sqlite:///{folder}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{folder}/cookie_secret"
c.ConfigurableHTTPProxy.pid_file = "{folder}/proxy.pid"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = {users!r}
c.JupyterHub.spawner_class = "localprocess"
c.Spawner.cmd = [{singleuser!r}]
c.Spawner.args = [
    "--config={fake_nvml_config}",
    "--ServerApp.jpserver_extensions=vram_magic=True",
]
c.Spawner.environment = {{"VRAM_MAGIC_FAKE_NVML": "{gpus}"}}
c.Spawner.start_timeout = 60
c.Spawner.http_timeout = 60
c.JupyterHub.services = [{{"name": "test", "api_token": "{admin_token}"}}]
c.JupyterHub.load_roles = [
    {{
        "name": "test",
        "scopes": ["admin:users", "admin:servers", "tokens", "list:users"],
        "services": ["test"],
    }}
]
"""


class Hub:
    def __init__(self, url: str) -> None:
        self.url = url

    def call(self, path: str, token: str, body: Any = None, method: str | None = None) -> Any:
        request = urllib.request.Request(
            f"{self.url}/{path}",
            data=None if body is None else json.dumps(body).encode(),
            headers={"Authorization": f"token {token}", "Content-Type": "application/json"},
            method=method or ("GET" if body is None else "POST"),
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            text = response.read()
            return json.loads(text) if text and text.strip()[:1] in (b"{", b"[") else text

    def refused(self, path: str, token: str, body: Any = None) -> int:
        """The HTTP status of a request expected to fail."""
        try:
            self.call(path, token, body)
        except urllib.error.HTTPError as error:
            return error.code
        return 200


def create_users() -> None:
    for user in USERS:
        if subprocess.run(["id", user], capture_output=True).returncode != 0:
            subprocess.run(["useradd", "--create-home", user], check=True)


def remove_users() -> None:
    for user in USERS:
        for process in psutil.process_iter(["username"]):
            if process.info["username"] == user:
                process.kill()
        subprocess.run(["userdel", "--remove", user], capture_output=True)


def closed_folders() -> list[Path]:
    """Folders above the Python the users' servers run (the checkout's venv, and the Python it
    was made from) that other users cannot pass through: /root, where pyenv keeps Python."""
    found = []
    for start in (Path(sys.executable), Path(sys.executable).resolve()):
        for folder in start.parents:
            if not folder.stat().st_mode & stat.S_IXOTH and folder not in found:
                found.append(folder)
    return found


@contextmanager
def passable(folders: list[Path]) -> Iterator[None]:
    """Let other users pass through ``folders`` (search only, never list), as they were after."""
    modes = {folder: folder.stat().st_mode for folder in folders}
    try:
        for folder, mode in modes.items():
            folder.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
        yield
    finally:
        for folder, mode in modes.items():
            folder.chmod(stat.S_IMODE(mode))


def kernel_pid(user: str, kernel_id: str) -> int:
    """The PID of ``user``'s kernel ``kernel_id`` (its command line names its connection file)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        for process in psutil.process_iter(["username", "cmdline"]):
            line = " ".join(process.info["cmdline"] or ())
            if process.info["username"] == user and re.search(f"kernel-{kernel_id}.json", line):
                return process.pid
        time.sleep(0.2)
    raise AssertionError(f"no kernel process {kernel_id} of {user}")


@pytest.fixture(scope="module")
def hub() -> Iterator[tuple[Hub, dict[str, str], dict[str, str], Path]]:
    """The hub with both users' servers up; their tokens, their kernels' ids, the fake GPUs."""
    folder = Path(tempfile.mkdtemp(prefix="vram-magic-hub-"))
    folder.chmod(0o755)  # the users' servers read the fake GPUs from it
    gpus = folder / "gpus.json"
    gpus.write_text(json.dumps(load_recording("two_gpus_other_processes")))
    gpus.chmod(0o644)
    port = free_port()
    config = folder / "jupyterhub_config.py"
    config.write_text(
        HUB_CONFIG.format(
            port=port,
            hub_port=free_port(),
            proxy_port=free_port(),
            folder=folder,
            users=set(USERS),
            singleuser=str(Path(sys.executable).parent / "jupyterhub-singleuser"),
            fake_nvml_config=FAKE_NVML_CONFIG,
            gpus=gpus,
            admin_token=ADMIN_TOKEN,
        )
    )
    create_users()
    opened = passable(closed_folders())
    opened.__enter__()
    log = (folder / "hub.log").open("w")
    process = subprocess.Popen(
        [str(Path(sys.executable).parent / "jupyterhub"), f"--config={config}"],
        cwd=folder,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"},
    )
    hub = Hub(f"http://127.0.0.1:{port}")
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                hub.call("hub/api/", ADMIN_TOKEN)
                break
            except OSError:
                if time.monotonic() > deadline or process.poll() is not None:
                    pytest.fail("JupyterHub did not start: " + (folder / "hub.log").read_text())
                time.sleep(0.3)
        tokens, kernels = {}, {}  # allowed_users are in the hub already
        for user in USERS:
            tokens[user] = hub.call(f"hub/api/users/{user}/tokens", ADMIN_TOKEN, {})["token"]
            hub.call(f"hub/api/users/{user}/server", ADMIN_TOKEN, {})
        for user in USERS:
            wait_for_server(hub, user)
            body = {"path": "work.ipynb", "type": "notebook", "kernel": {"name": "python3"}}
            session = hub.call(f"user/{user}/api/sessions", tokens[user], body)
            kernels[user] = session["kernel"]["id"]
            # Free loads vram_magic in the kernel, whose series then appear
            hub.call(f"user/{user}/vram/kernels/{kernels[user]}/free", tokens[user], {})
        yield hub, tokens, kernels, gpus
    finally:
        process.terminate()
        process.wait(timeout=30)
        log.close()
        remove_users()
        opened.__exit__(None, None, None)
        shutil.rmtree(folder, ignore_errors=True)


def wait_for_server(hub: Hub, user: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        model = hub.call(f"hub/api/users/{user}", ADMIN_TOKEN)
        if model["servers"].get("", {}).get("ready"):
            return
        time.sleep(0.3)
    raise AssertionError(f"{user}'s server did not start")


def test_each_user_sees_their_own_kernels_and_the_other_only_as_a_sum(hub):  # type: ignore[no-untyped-def]
    server, tokens, kernels, gpus = hub
    alice, bob = USERS
    recording = load_recording("two_gpus_other_processes")
    first = recording["devices"][0]
    first["compute_processes"] = [
        {"pid": kernel_pid(alice, kernels[alice]), "usedGpuMemory": 3 * GIB},
        {"pid": kernel_pid(bob, kernels[bob]), "usedGpuMemory": 5 * GIB},
    ]
    gpus.write_text(json.dumps(recording))

    for user, other in ((alice, bob), (bob, alice)):
        own = 3 * GIB if user == alice else 5 * GIB
        listed = server.call(f"user/{user}/vram/kernels", tokens[user])["kernels"]
        assert [row["id"] for row in listed] == [kernels[user]]
        assert listed[0]["bytes"] == own
        gpu = server.call(f"user/{user}/vram/devices", tokens[user])["devices"][0]
        assert [p["kernel_id"] for p in gpu["processes"]] == [kernels[user]]
        assert gpu["other_users"] == {"count": 1, "bytes": 8 * GIB - own}
        assert kernels[other] not in json.dumps(gpu)
        metrics = server.call(f"user/{user}/metrics", tokens[user]).decode()
        deadline = time.monotonic() + 20  # the first collection after the kernel's file appeared
        while f'kernel_id="{kernels[user]}"' not in metrics and time.monotonic() < deadline:
            time.sleep(0.5)
            metrics = server.call(f"user/{user}/metrics", tokens[user]).decode()
        assert f'vram_magic_kernel_info{{kernel_id="{kernels[user]}"' in metrics
        assert f'user="{user}"' in metrics
        assert other not in metrics and kernels[other] not in metrics


def test_one_users_token_is_refused_on_the_others_server(hub):  # type: ignore[no-untyped-def]
    server, tokens, kernels, _ = hub
    alice, bob = USERS
    for path in ("vram/kernels", "vram/devices", "metrics", "api/kernels"):
        assert server.refused(f"user/{bob}/{path}", tokens[alice]) == 403, path
    forged = f"vram/kernels/{kernels[bob]}/restart"
    assert server.refused(f"user/{bob}/{forged}", tokens[alice], {}) == 403
    assert server.refused(f"user/{alice}/{forged}", tokens[alice], {}) == 404, (
        "alice's server knows no kernel of bob's"
    )
    assert server.refused(f"user/{bob}/vram/kernels/{kernels[bob]}/free", tokens[alice], {}) == 403
    assert server.call(f"user/{bob}/api/kernels", tokens[bob])[0]["id"] == kernels[bob]
