"""Test-only Jupyter server config: the server's NVML answers from the recording in the file
named by ``VRAM_MAGIC_FAKE_NVML`` (re-read when it changes). Pass it with ``--config=``."""

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from fake_nvml import followed_session

from vram_magic.readings import nvml

nvml.set_default_session(followed_session(Path(os.environ["VRAM_MAGIC_FAKE_NVML"])))
