"""The Jupyter server extension: REST endpoints the JupyterLab sidebar polls (``/vram/...``)."""

from __future__ import annotations

from typing import Any


def _load_jupyter_server_extension(serverapp: Any) -> None:
    from vram_magic.server.handlers import setup_handlers

    setup_handlers(serverapp.web_app)
    serverapp.log.info("vram_magic: /vram endpoints ready")
