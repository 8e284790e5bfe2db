"""Loading is cheap: importing vram_magic and %load_ext import neither torch nor transformers."""

import json
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).parent


def python(code: str) -> dict:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=TESTS
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_import_loads_nothing_heavy():
    loaded = python(
        "import sys, json, vram_magic;"
        "print(json.dumps(sorted(m for m in ('torch','transformers','IPython','pynvml','psutil')"
        " if m in sys.modules)))"
    )
    assert loaded == []


def test_load_ext_and_report_wait_for_torch():
    facts = python(
        """
import sys, json
from fake_nvml import fake_session
from IPython.testing.globalipapp import start_ipython
from vram_magic.readings import nvml
nvml.set_default_session(fake_session("one_gpu"))
shell = start_ipython()
shell.run_cell("%load_ext vram_magic")
before = shell.run_cell("%vram report").result
facts = {"torch_after_report": "torch" in sys.modules,
         "transformers": "transformers" in sys.modules,
         "said_not_imported": "torch: not imported yet" in repr(before)}
shell.run_cell("import torch")
after = shell.run_cell("%vram report").result
facts["imported_after"] = after.data.torch.imported
facts["version_shown"] = after.data.torch.version in repr(after)
print(json.dumps(facts))
"""
    )
    assert facts == {
        "torch_after_report": False,
        "transformers": False,
        "said_not_imported": True,
        "imported_after": True,
        "version_shown": True,
    }
