"""Actions: things vram_magic does (free, record cell history, explain an OOM), as dataclasses."""
