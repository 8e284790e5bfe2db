"""Where a census starts: the user's variables, then the places IPython and Python hide objects.

Hidden holders are things a user cannot see in their namespace yet keep tensors alive: the output
cache (``Out[12]``, ``_12``, ``_``, ``__``, ``___``), the last exception (``sys.last_*``) and the
locals of its frames, and IPython's record of the last cell's result.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Any

from vram_magic.census.model import HIDDEN, VARIABLE

_OUTPUT_NAME = re.compile(r"_\d+$|_{1,3}$")


@dataclass
class Root:
    """A named starting point; ``aliases`` are other names for the very same object."""

    name: str
    kind: str
    value: Any
    aliases: list[str]

    @property
    def label(self) -> str:
        return " / ".join([self.name, *self.aliases])


def _add(roots: dict[int, Root], name: str, kind: str, value: Any) -> None:
    """Add a root, or record ``name`` as an alias when the same object is already a root."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return
    known = roots.get(id(value))
    if known is None:
        roots[id(value)] = Root(name, kind, value, [])
    elif name not in known.aliases and name != known.name:
        known.aliases.append(name)


def user_variables(namespace: dict[str, Any], hidden_names: dict[str, Any]) -> dict[str, Any]:
    """Names the user bound, without IPython's own entries and its output-cache names."""
    return {
        name: value
        for name, value in namespace.items()
        if not (name in hidden_names and hidden_names[name] is value)
        and not _OUTPUT_NAME.match(name)
        and not (name.startswith("_i") and isinstance(value, str))
        and name not in {"In", "Out", "exit", "quit", "get_ipython"}
    }


def find_roots(shell: Any | None, namespace: dict[str, Any]) -> list[Root]:
    """User variables first (a tensor both kinds hold counts for the user's name), then hidden."""
    roots: dict[int, Root] = {}
    hidden_names = getattr(shell, "user_ns_hidden", {}) if shell is not None else {}
    for name, value in user_variables(namespace, hidden_names).items():
        _add(roots, name, VARIABLE, value)
    for number, value in sorted((namespace.get("Out") or {}).items()):
        _add(roots, f"Out[{number}]", HIDDEN, value)
    for name in sorted(n for n in namespace if _OUTPUT_NAME.match(n)):
        _add(roots, name, HIDDEN, namespace[name])
    for name in ("last_exc", "last_value", "last_traceback"):
        _add(roots, f"sys.{name}", HIDDEN, getattr(sys, name, None))
    if shell is not None:
        hook = getattr(shell, "displayhook", None)
        for name in ("_", "__", "___"):
            _add(roots, name, HIDDEN, getattr(hook, name, None))
        last = getattr(shell, "last_execution_result", None)
        if last is not None:
            _add(roots, "last cell's result", HIDDEN, last.result)
            _add(roots, "last cell's error", HIDDEN, last.error_in_exec)
        formatter = getattr(shell, "InteractiveTB", None)
        _add(roots, "IPython's last traceback", HIDDEN, getattr(formatter, "tb", None))
    return list(roots.values())
