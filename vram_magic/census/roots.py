"""Where a census starts: the user's variables, then the places IPython and Python hide objects.

Hidden places are ones a user cannot see in their namespace yet keep tensors alive: the output
cache (``Out[12]``, ``_12``, ``_``, ``__``, ``___``), the last exception (``sys.last_*``) and the
locals of its frames, and IPython's record of the last cell's result and its last traceback.

Every root knows where it lives (a ``Location`` per name) and how to drop itself from there, so
nobody has to read a place back out of a display label.
"""

from __future__ import annotations

import contextlib
import re
import sys
import traceback
import types
from dataclasses import dataclass
from typing import Any

from vram_magic.census.model import CACHE, HIDDEN, UNKNOWN, VARIABLE

_OUTPUT_NAME = re.compile(r"_\d+$|_{1,3}$")
_LAST_OUTPUTS = ("_", "__", "___")

# Where a root lives.
IN_NAMESPACE = "variable"  # a name the user bound
OUTPUT_CACHE = "output cache entry"  # Out[number]
UNDERSCORE = "underscore name"  # _number, or _, __, ___ (in the namespace or IPython's displayhook)
SYS_LAST = "sys.last_*"  # the last uncaught exception, as Python keeps it
IPYTHON_TRACEBACK = "IPython's traceback"  # the traceback IPython's formatter keeps
LAST_RESULT = "last result"  # IPython's record of the last cell: its result and its error
CYCLE = "cycle"  # collectable reference cycles: no name at all, the garbage collector frees them

# A root's place: whose it is. A holder's kind (variable, hidden, graph, ...) is another word.
USER = "user"  # the user chose to keep it, by binding a name
HIDDEN_PLACE = "hidden"  # kept by IPython or Python, out of the user's sight: nobody chose it


def place_of(where: str) -> str:
    return USER if where == IN_NAMESPACE else HIDDEN_PLACE


def is_stranded(place: str | None, kind: str) -> bool:
    """The one answer to "did nobody choose to keep this?": what ``%vram free`` without names
    returns. Anything reached from a hidden place (a closure under a user's variable is the
    user's), collectable cycles, and torch's cache; never what no holder was found for."""
    if kind == CACHE:
        return True
    return kind != UNKNOWN and place == HIDDEN_PLACE


def clear_traceback(tb: types.TracebackType | None) -> None:
    """Drop the locals of every frame of a traceback. Reading ``f_locals`` afterwards re-syncs the
    dict Python 3.11/3.12 cache on a frame, which ``frame.clear()`` alone leaves holding values."""
    traceback.clear_frames(tb)
    while tb is not None:
        with contextlib.suppress(Exception):
            tb.tb_frame.f_locals  # noqa: B018
        tb = tb.tb_next


def clear_exception(error: BaseException | None) -> None:
    """Drop the locals of every frame the exception (and its chained ones) hold."""
    seen: set[int] = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        clear_traceback(error.__traceback__)
        error = error.__context__ or error.__cause__


@dataclass(frozen=True)
class Location:
    """One name of a root: where it lives (one of the constants above), the name shown for it,
    and the output cache's number for ``Out[number]`` and ``_number``."""

    where: str
    name: str
    number: int | None = None

    def drop(self, shell: Any | None, namespace: dict[str, Any], value: Any) -> None:
        """Remove the reference this location holds to ``value``. A variable is the user's and
        is only ever deleted by its name (``%vram free NAME``), never here."""
        if self.where == IN_NAMESPACE:
            return
        hidden_names = getattr(shell, "user_ns_hidden", {})  # IPython keeps _, _N there too
        if hidden_names.get(self.name) is value:
            del hidden_names[self.name]
        if self.where == OUTPUT_CACHE:
            (namespace.get("Out") or {}).pop(self.number, None)
        elif self.where == UNDERSCORE and self.number is not None:
            namespace.pop(self.name, None)
        elif self.where == UNDERSCORE:
            if namespace.get(self.name) is value:
                namespace[self.name] = ""
            hook = getattr(shell, "displayhook", None)
            if getattr(hook, self.name, None) is value:
                setattr(hook, self.name, "")
        elif self.where == SYS_LAST:
            for attribute in ("last_exc", "last_value", "last_traceback", "last_type"):
                if hasattr(sys, attribute):
                    if attribute != "last_type" and isinstance(
                        getattr(sys, attribute), BaseException
                    ):
                        clear_exception(getattr(sys, attribute))
                    delattr(sys, attribute)
        elif self.where == IPYTHON_TRACEBACK and shell is not None:
            shell.InteractiveTB.tb = None
        elif self.where == LAST_RESULT:
            last = getattr(shell, "last_execution_result", None)
            if last is not None:
                clear_exception(last.error_in_exec)
                last.result = None
                last.error_in_exec = None


@dataclass
class Root:
    """A starting point: where it lives, and ``others``, other places of the very same object."""

    location: Location
    value: Any
    others: list[Location]

    @property
    def name(self) -> str:
        return self.location.name

    @property
    def where(self) -> str:
        return self.location.where

    @property
    def place(self) -> str:
        return place_of(self.location.where)

    @property
    def kind(self) -> str:
        """The holder kind of what the root reaches directly: a variable, or something hidden."""
        return VARIABLE if self.place == USER else HIDDEN

    @property
    def stranded(self) -> bool:
        return is_stranded(self.place, self.kind)

    @property
    def aliases(self) -> list[str]:
        return [location.name for location in self.others]

    @property
    def label(self) -> str:
        return " / ".join([self.name, *self.aliases])

    def drop(self, shell: Any | None, namespace: dict[str, Any]) -> None:
        """Remove every hidden reference to the root's object, and the locals of its frames."""
        value = self.value
        for location in (self.location, *self.others):
            location.drop(shell, namespace, value)
        if isinstance(value, BaseException):
            clear_exception(value)
        elif isinstance(value, types.TracebackType):
            clear_traceback(value)


def variable_root(name: str, value: Any) -> Root:
    return Root(Location(IN_NAMESPACE, name), value, [])


def _add(roots: dict[int, Root], location: Location, value: Any) -> None:
    """Add a root, or record ``location`` as another place of a root of the same object."""
    if value is None or isinstance(value, (str, int, float, bool)):
        return
    known = roots.get(id(value))
    if known is None:
        roots[id(value)] = Root(location, value, [])
    elif location.name != known.name and location.name not in known.aliases:
        known.others.append(location)


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
        _add(roots, Location(IN_NAMESPACE, name), value)
    for number, value in sorted((namespace.get("Out") or {}).items()):
        _add(roots, Location(OUTPUT_CACHE, f"Out[{number}]", number), value)
    for name in sorted(n for n in namespace if _OUTPUT_NAME.match(n)):
        number = None if name in _LAST_OUTPUTS else int(name[1:])
        _add(roots, Location(UNDERSCORE, name, number), namespace[name])
    for name in ("last_exc", "last_value", "last_traceback"):
        _add(roots, Location(SYS_LAST, f"sys.{name}"), getattr(sys, name, None))
    if shell is not None:
        hook = getattr(shell, "displayhook", None)
        for name in _LAST_OUTPUTS:
            _add(roots, Location(UNDERSCORE, name), getattr(hook, name, None))
        last = getattr(shell, "last_execution_result", None)
        if last is not None:
            _add(roots, Location(LAST_RESULT, "last cell's result"), last.result)
            _add(roots, Location(LAST_RESULT, "last cell's error"), last.error_in_exec)
        formatter = getattr(shell, "InteractiveTB", None)
        tb = getattr(formatter, "tb", None)
        _add(roots, Location(IPYTHON_TRACEBACK, "IPython's last traceback"), tb)
    return list(roots.values())
