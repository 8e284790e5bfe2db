"""Actions the Jupyter server asks a kernel to run, each a fixed call returning JSON.

The server evaluates ``free_for_server()`` as a user expression in a silent execute request:
it takes no input from the request, so no endpoint can run code of its caller's choosing, and
a silent request leaves the notebook's history and execution count alone.
"""

from __future__ import annotations

import json

from vram_magic.actions.free import free
from vram_magic.ipython.extension import loaded_in
from vram_magic.render.actions import free_view


def free_for_server() -> str:
    """Load vram_magic here if needed, free stranded memory, and say what came back."""
    from IPython import get_ipython

    shell = get_ipython()
    if loaded_in(shell) is None:
        shell.extension_manager.load_extension("vram_magic")
    result = free(shell, shell.user_ns)
    state = loaded_in(shell)
    if state is not None:
        state.hooks.status.refresh()
    return json.dumps({"freed": result.total, "text": free_view(result).text})
