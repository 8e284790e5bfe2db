"""The Jupyter server extension: REST endpoints the JupyterLab sidebar polls (``/vram/...``),
vram_magic's series on the server's ``/metrics``, and the opt-in idle culling."""

from __future__ import annotations

from typing import Any


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from vram_magic.server.culling import IdleCuller
    from vram_magic.server.handlers import setup_handlers
    from vram_magic.server.metrics import VramMetrics, keep_one
    from vram_magic.server.settings import VramMagic

    settings = VramMagic(parent=serverapp)
    metrics = VramMetrics(serverapp, settings.hostname, settings.metrics_interval)
    setup_handlers(serverapp.web_app, metrics)
    if settings.cull_idle_seconds > 0:
        culler = IdleCuller(serverapp, settings.cull_idle_seconds, settings.cull_min_bytes)
        metrics.listeners.append(culler.look)
    keep_one(metrics)
    serverapp.io_loop.add_callback(metrics.start)
    serverapp.log.info("vram_magic: /vram endpoints and /metrics series ready")
