"""Metrics tier: a real Prometheus (Debian's package) scrapes two real Jupyter servers, one per
user, and PromQL through its HTTP API gives the per-notebook and per-user sums; every query of
the Grafana dashboard in docs/ runs against it. The servers' NVML is the fake (no GPU here),
placing their real kernels on two GPUs; the kernels read it too, so vram_magic there sees the
GPUs (and torch, on a CPU, holds nothing on them)."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from fake_nvml import kernels_env, load_recording
from lab_server import (
    FAKE_NVML_CONFIG,
    TOKEN,
    LabServer,
    free_port,
    kernel_pids,
    lab_server,
    wait_for_answer,
)
from system_binaries import require

PROMETHEUS = require("prometheus", "apt-get install prometheus")
DASHBOARD = Path(__file__).parent.parent / "docs" / "grafana-vram-magic.json"
GIB = 2**30
# notebook -> (user, bytes on GPU 0, bytes on GPU 1); bare.ipynb never loads vram_magic
NOTEBOOKS = {
    "train.ipynb": ("alice", 3 * GIB, 1 * GIB),
    "eval.ipynb": ("alice", 2 * GIB, 0),
    "bare.ipynb": ("alice", 5 * GIB, 0),
    "bob.ipynb": ("bob", 0, 4 * GIB),
}


def prometheus_config(targets: list[str]) -> str:
    """The scrape config the README shows: the server's token as a bearer credential."""
    return json.dumps(  # JSON is YAML
        {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "jupyter",
                    "metrics_path": "/metrics",
                    "authorization": {"type": "Bearer", "credentials": TOKEN},
                    "static_configs": [{"targets": targets}],
                }
            ],
        }
    )


class Prometheus:
    def __init__(self, url: str) -> None:
        self.url = url

    def query(self, promql: str) -> list[dict[str, Any]]:
        address = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(address, timeout=10) as response:
            answer = json.loads(response.read())
        assert answer["status"] == "success", answer
        return answer["data"]["result"]

    def by(self, promql: str, label: str) -> dict[str, float]:
        return {r["metric"].get(label, ""): float(r["value"][1]) for r in self.query(promql)}

    def wait(self, promql: str, expected: Any, label: str, timeout: float = 40) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            found = self.by(promql, label)
            if found == expected or time.monotonic() > deadline:
                return found
            time.sleep(0.5)


@pytest.fixture(scope="module")
def servers(tmp_path_factory) -> Iterator[tuple[dict[str, LabServer], Prometheus]]:  # type: ignore[no-untyped-def]
    root = tmp_path_factory.mktemp("metrics")
    gpus = root / "gpus.json"
    recording = load_recording("two_gpus_other_processes")
    gpus.write_text(json.dumps(recording))
    args = [
        f"--config={FAKE_NVML_CONFIG}",
        "--ServerApp.jpserver_extensions=vram_magic=True",
        "--VramMagic.metrics_interval=0.5",
        "--VramMagic.hostname=gpu-node-1",
    ]
    with ExitStack() as stack:
        started = {}
        for user in ("alice", "bob"):
            (root / user).mkdir()
            env = {**kernels_env(root, gpus), "JUPYTERHUB_USER": user}
            log = root / f"{user}.log"
            started[user] = stack.enter_context(lab_server(root / user, args, env, log=log))
        for notebook, (user, _, _) in NOTEBOOKS.items():
            server = started[user]
            body = {"path": notebook, "type": "notebook", "kernel": {"name": "python3"}}
            kernel_id = server.api("api/sessions", body)["kernel"]["id"]
            if notebook != "bare.ipynb":  # Free loads vram_magic in the kernel
                server.api(f"vram/kernels/{kernel_id}/free", {})
        first, second = recording["devices"]
        first["compute_processes"], second["compute_processes"] = [], []
        for server in started.values():
            sessions = {s["kernel"]["id"]: s["path"] for s in server.api("api/sessions")}
            for kernel_id, pid in kernel_pids(server).items():
                _, on_first, on_second = NOTEBOOKS[sessions[kernel_id]]
                for device, size in ((first, on_first), (second, on_second)):
                    if size:
                        device["compute_processes"].append({"pid": pid, "usedGpuMemory": size})
        gpus.write_text(json.dumps(recording))

        config = root / "prometheus.yml"
        config.write_text(
            prometheus_config([s.url.removeprefix("http://") for s in started.values()])
        )
        port = free_port()
        prometheus = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={config}",
                f"--storage.tsdb.path={root / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(root / "prometheus.log").open("w"),
        )
        stack.callback(prometheus.wait, 20)
        stack.callback(prometheus.terminate)
        url = f"http://127.0.0.1:{port}"
        wait_for_answer(f"{url}/-/ready", prometheus, f"prometheus (log: {root}/prometheus.log)")
        yield started, Prometheus(url)


def test_per_notebook_and_per_user_sums(servers):  # type: ignore[no-untyped-def]
    _, prometheus = servers
    per_notebook = prometheus.wait(
        "sum by (notebook) (vram_magic_kernel_gpu_memory_bytes)",
        {"train.ipynb": 4 * GIB, "eval.ipynb": 2 * GIB, "bob.ipynb": 4 * GIB},
        "notebook",
    )
    assert per_notebook == {"train.ipynb": 4 * GIB, "eval.ipynb": 2 * GIB, "bob.ipynb": 4 * GIB}
    per_user = prometheus.by("sum by (user) (vram_magic_kernel_gpu_memory_bytes)", "user")
    assert per_user == {"alice": 6 * GIB, "bob": 4 * GIB}
    assert prometheus.query('vram_magic_kernel_info{notebook="bare.ipynb"}') == []
    assert prometheus.by("count by (user) (vram_magic_kernel_info)", "user") == {
        "alice": 2,
        "bob": 1,
    }
    up = prometheus.by('up{job="jupyter"}', "instance")
    assert set(up.values()) == {1.0}, up


def test_the_gpu_series_join_on_dcgm_exporters_labels(servers):  # type: ignore[no-untyped-def]
    _, prometheus = servers
    recording = load_recording("two_gpus_other_processes")
    uuids = {d["uuid"] for d in recording["devices"]}
    totals = prometheus.query("max by (UUID, Hostname) (vram_magic_gpu_memory_total_bytes)")
    assert {r["metric"]["UUID"] for r in totals} == uuids
    assert {r["metric"]["Hostname"] for r in totals} == {"gpu-node-1"}
    # what a notebook holds as a share of its GPU, joined the way dcgm-exporter's series join
    share = prometheus.query(
        "sum by (notebook, UUID) (label_replace(vram_magic_kernel_gpu_memory_bytes, "
        '"UUID", "$1", "gpu_uuid", "(.*)")) / on (UUID) group_left '
        "max by (UUID) (vram_magic_gpu_memory_total_bytes)"
    )
    assert {r["metric"]["notebook"] for r in share} == {"train.ipynb", "eval.ipynb", "bob.ipynb"}
    assert all(0 < float(r["value"][1]) < 1 for r in share)


def test_every_dashboard_query_answers(servers):  # type: ignore[no-untyped-def]
    _, prometheus = servers
    prometheus.wait("count(vram_magic_kernel_info)", {"": 3.0}, "")
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {"$host": ".*", "$user": ".*", "$idle_seconds": "0"}
    queries = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    assert len(queries) >= 6
    for query in queries:
        for name, value in variables.items():
            query = query.replace(name, value)
        assert "$" not in query, query
        deadline = time.monotonic() + 20  # increase() needs two scrapes
        while not (result := prometheus.query(query)) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert result, f"no answer to the dashboard's {query}"
