"""The system programs the metrics and hub tiers drive (Debian's prometheus, npm's
configurable-http-proxy): a test skips with the install line where one is missing, except on
CI, where .ci/run installs them and a missing one fails."""

from __future__ import annotations

import os
import shutil

import pytest


def require(program: str, install: str) -> str:
    """The path of ``program``; skips the calling module without it (fails on CI)."""
    found = shutil.which(program)
    if found is None:
        message = f"{program} is not installed ({install})"
        if os.environ.get("CI"):
            pytest.fail(message + ", and CI must run this tier", pytrace=False)
        pytest.skip(message, allow_module_level=True)
    return found
