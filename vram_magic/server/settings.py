"""The server extension's settings, read from the Jupyter server's config (``c.VramMagic.*``)."""

from __future__ import annotations

import os
import socket

from traitlets import Float, Int, Unicode, default
from traitlets.config import Configurable


class VramMagic(Configurable):
    metrics_interval = Float(
        2.0,
        help="Seconds between two collections of vram_magic's /metrics series; a scrape serves "
        "the latest, so it never waits for NVML, /proc or the kernels' files.",
    ).tag(config=True)
    hostname = Unicode(
        help="The host label of every series (Hostname on the per-GPU ones, as dcgm-exporter "
        "names it). Default: $NODE_NAME (Kubernetes' downward API), else the host name.",
    ).tag(config=True)
    cull_idle_seconds = Float(
        0.0,
        help="Snapshot and shut down a kernel idle for longer than this that holds at least "
        "cull_min_bytes of GPU memory; its notebook finds the snapshot waiting. 0: never.",
    ).tag(config=True)
    cull_min_bytes = Int(
        1,
        help="The GPU memory (bytes, per kernel, all GPUs) below which an idle kernel is left "
        "alone.",
    ).tag(config=True)

    @default("hostname")
    def _default_hostname(self) -> str:
        return os.environ.get("NODE_NAME") or socket.gethostname()
