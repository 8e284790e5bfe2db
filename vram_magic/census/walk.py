"""Walk from one root to every tensor it keeps alive, naming the path the way a user would type it.

``model.encoder.layers.3.mlp.weight.grad``, ``batches[3]``, ``cfg["emb"]``,
``opt.state[fc1.weight].exp_avg``, ``fn.<closure big>``, ``err.__traceback__ → f() local big``.
The walk is iterative (no recursion limit), visits each object once across all roots, and skips
large containers of plain values in bulk so a million unrelated objects cost milliseconds.
It is breadth-first, public edges before back-references: an object's path is the shortest one a
user would write (``trainer.model.lm_head.weight``), not the first one met
(``trainer.callback_handler.lr_scheduler.optimizer.param_groups[0]['params'][0]``).
"""

from __future__ import annotations

import dataclasses
import gc
import types
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from vram_magic.census.model import GRAPH, HIDDEN

ATOMIC: frozenset[type] = frozenset(
    {int, float, complex, bool, str, bytes, bytearray, type(None), range, slice, type(...)}
)
_PLAIN = (list, tuple, dict, set, frozenset)
_NEVER = (types.ModuleType, type, types.BuiltinFunctionType, types.CodeType)
_BULK_CHECK_ABOVE = 32
_SCAN_AT_MOST = 256  # attributes or dict entries looked through for modules, per object

# A child: (value, path, kind, label, back). ``back`` marks an edge a user would not type first (a
# private attribute, an ``<internal>`` referent, ``__self__``, an optimizer's ``param_groups``):
# what lies beyond is walked only once everything reachable through public edges is.
Child = tuple[Any, str, str, str | None, bool]


def may_hold_objects(items: list[Any], kinds: set[type] | None = None, depth: int = 3) -> bool:
    """False when ``items`` (and their plain-container contents, ``depth`` levels down) hold only
    plain values: then nothing below can be a tensor. Runs at C speed over the whole level;
    ``kinds`` is the set of the items' types when the caller has it already."""
    level = items
    for _ in range(depth):
        kinds = (kinds if kinds is not None else set(map(type, level))) - ATOMIC
        if not kinds:
            return False
        if any(not issubclass(kind, _PLAIN) for kind in kinds):
            return True
        level, kinds = gc.get_referents(*level), None
    return True


class Walker:
    """Shared state of one census: objects already visited, storages already counted.

    ``record(tensor, path, kind, label)`` is called once per tensor object reached first here;
    ``record_many(items, path, kind, label, visited)`` once per long sequence of tensors, returning
    the indices of those that need autograd attention (a gradient or a graph).
    """

    def __init__(
        self,
        is_tensor: Callable[[Any], bool],
        record: Callable[[Any, str, str, str | None], None],
        record_many: Callable[[Any, str, str, str | None, dict[int, Any]], list[int]],
        param_names: dict[int, str],
        visited: dict[int, Any],
    ) -> None:
        self.is_tensor = is_tensor
        self.record = record
        self.record_many = record_many
        self.param_names = param_names
        self.visited = visited
        self._saved_attrs: dict[type, list[str]] = {}

    def walk(self, root: Any, path: str, kind: str) -> None:
        if type(root) in ATOMIC:
            return
        public: deque[tuple[Any, str, str, str | None]] = deque([(root, path, kind, None)])
        behind: deque[tuple[Any, str, str, str | None]] = deque()
        visited, is_tensor = self.visited, self.is_tensor
        while public or behind:
            queue = public or behind  # what is reached from behind stays behind
            obj, path, kind, label = queue.popleft()
            if id(obj) in visited:
                continue
            visited[id(obj)] = obj
            if is_tensor(obj):  # the hot path: inline, no generator per tensor
                self._tensor(obj, path, kind, label, queue)
                continue
            if isinstance(obj, _NEVER):
                continue
            if type(obj) in (list, tuple) and len(obj) > _BULK_CHECK_ABOVE:
                kinds = set(map(type, obj))
                if len(kinds) == 1 and is_tensor(obj[0]):
                    self._tensors(obj, path, kind, label, queue)
                    continue
                if not may_hold_objects(obj, kinds):  # a million plain values: skip in bulk
                    continue
            for value, child_path, child_kind, child_label, back in self._children(
                obj, path, kind, label
            ):
                if type(value) not in ATOMIC:
                    (behind if back else queue).append((value, child_path, child_kind, child_label))

    def _tensor(self, tensor: Any, path: str, kind: str, label: str | None, queue: deque) -> None:
        """Record a tensor, then queue its gradient, or the autograd graph it keeps alive."""
        self.record(tensor, path, kind, label)
        if tensor.requires_grad:
            self._queue_autograd(tensor, path, kind, label, queue)

    @staticmethod
    def _queue_autograd(tensor: Any, path: str, kind: str, label: str | None, queue: deque) -> None:
        if tensor.is_leaf:
            if tensor.grad is not None:
                queue.append((tensor.grad, f"{path}.grad", kind, label))
        elif tensor.grad_fn is not None:
            queue.append((tensor.grad_fn, f"{path}.grad_fn", GRAPH, "autograd graph"))

    def _tensors(self, items: Any, path: str, kind: str, label: str | None, queue: deque) -> None:
        """A long list or tuple of tensors (a dataset, a cache): recorded in one batch."""
        for index in self.record_many(items, path, kind, label, self.visited):
            tensor = items[index]
            self._queue_autograd(tensor, f"{path}[{index}]", kind, label, queue)

    def _children(self, obj: Any, path: str, kind: str, label: str | None) -> Iterator[Child]:
        node = _torch_attr("autograd", "graph")
        if node is not None and isinstance(obj, node.Node):
            yield from self._graph_children(obj, path)
            return
        module = _torch_attr("nn", "Module")
        if module is not None and isinstance(obj, module):
            yield from self._module_children(obj, path, kind, label)
            return
        optimizer = _torch_attr("optim", "Optimizer")
        if optimizer is not None and isinstance(obj, optimizer):
            yield from self._optimizer_children(obj, path, kind, label)
            return
        if isinstance(obj, dict):
            if len(obj) > _BULK_CHECK_ABOVE and not may_hold_objects(list(obj.values())):
                return
            for key, value in obj.items():
                yield value, f"{path}[{self._key_text(key)}]", kind, label, False
            return
        if isinstance(obj, (list, tuple)):
            for index, value in enumerate(obj):
                yield value, f"{path}[{index}]", kind, label, False
            return
        if isinstance(obj, (set, frozenset)):
            for value in obj:
                yield value, f"{path}{{…}}", kind, label, False
            return
        yield from self._special_children(obj, path, kind, label)

    def _special_children(
        self, obj: Any, path: str, kind: str, label: str | None
    ) -> Iterator[Child]:
        hidden = HIDDEN if kind != GRAPH else kind
        if isinstance(obj, types.FunctionType):
            for name, cell in zip(obj.__code__.co_freevars, obj.__closure__ or (), strict=False):
                try:
                    yield cell.cell_contents, f"{path}.<closure {name}>", hidden, "closure", False
                except ValueError:  # an empty cell
                    continue
            for index, value in enumerate(obj.__defaults__ or ()):
                yield value, f"{path}.<default {index}>", hidden, "default argument", False
            for name, value in (obj.__kwdefaults__ or {}).items():
                yield value, f"{path}.<default {name}>", hidden, "default argument", False
            return
        if isinstance(obj, types.MethodType):
            yield obj.__self__, f"{path}.__self__", kind, label, True
            return
        if isinstance(obj, BaseException):
            yield obj.__traceback__, f"{path}.__traceback__", hidden, "traceback frames", False
            yield obj.__context__, f"{path}.__context__", kind, label, False
            yield obj.__cause__, f"{path}.__cause__", kind, label, False
            yield obj.args, f"{path}.args", kind, label, False
        elif isinstance(obj, types.TracebackType):
            yield obj.tb_frame, path, hidden, label or "traceback frames", False
            yield obj.tb_next, path, hidden, label or "traceback frames", False
            return
        elif isinstance(obj, types.FrameType):
            if obj.f_locals is obj.f_globals:
                return  # a cell's own frame: its "locals" are the namespace, walked as roots
            frame_path = f"{path} → {obj.f_code.co_name}() local"
            for name, value in obj.f_locals.items():
                yield value, f"{frame_path} {name}", kind, label, False
            return
        elif isinstance(obj, (types.GeneratorType, types.CoroutineType)):
            frame = getattr(obj, "gi_frame", None) or getattr(obj, "cr_frame", None)
            yield frame, f"{path}.<generator>", hidden, "suspended generator", False
            return
        elif isinstance(obj, types.CellType):
            try:
                yield obj.cell_contents, path, kind, label, False
            except ValueError:
                return
            return
        yield from self._attribute_children(obj, path, kind, label)

    def _attribute_children(
        self, obj: Any, path: str, kind: str, label: str | None
    ) -> Iterator[Child]:
        attributes = getattr(obj, "__dict__", None)
        if isinstance(attributes, dict):
            for name, value in attributes.items():
                yield value, f"{path}.{name}", kind, label, name.startswith("_")
        slots = [s for cls in type(obj).__mro__ for s in getattr(cls, "__slots__", ())]
        for name in slots:
            if isinstance(name, str) and name not in {"__dict__", "__weakref__"}:
                value = getattr(obj, name, None)
                yield value, f"{path}.{name}", kind, label, name.startswith("_")
        opaque = attributes is None and not slots and not dataclasses.is_dataclass(obj)
        if opaque and gc.is_tracked(obj):
            for value in gc.get_referents(obj):
                yield value, f"{path}.<internal>", kind, label, True

    def _graph_children(self, node: Any, path: str) -> Iterator[Child]:
        """An autograd node: the tensors it saved for backward, then the nodes it leads to.
        Paths name the operation, not the route: ``loss.grad_fn → AddmmBackward0._saved_mat1``
        (a graph is often hundreds of nodes deep)."""
        where = f"{path} → {type(node).__name__}"
        for name in self._saved_names(node):
            try:
                value = getattr(node, name)
            except Exception:  # freed by a backward pass, or not a tensor-like attribute
                continue
            yield value, f"{where}.{name}", GRAPH, "autograd graph", False
        variable = getattr(node, "variable", None)  # AccumulateGrad: the leaf it feeds
        if variable is not None:
            yield variable, f"{where}.variable", GRAPH, "autograd graph", False
        for child, _ in getattr(node, "next_functions", ()) or ():
            if child is not None:
                yield child, path, GRAPH, "autograd graph", False

    def _saved_names(self, node: Any) -> list[str]:
        names = self._saved_attrs.get(type(node))
        if names is None:
            names = [n for n in dir(node) if n.startswith("_saved_")]
            self._saved_attrs[type(node)] = names
        return names

    def _module_children(
        self, module: Any, path: str, kind: str, label: str | None
    ) -> Iterator[Child]:
        attributes = vars(module)
        for table in ("_parameters", "_buffers", "_modules"):
            for name, value in (attributes.get(table) or {}).items():
                yield value, f"{path}.{name}", kind, label, False
        for name, value in attributes.items():
            if name not in {"_parameters", "_buffers", "_modules"}:
                yield value, f"{path}.{name}", kind, label, name.startswith("_")

    def _optimizer_children(
        self, optimizer: Any, path: str, kind: str, label: str | None
    ) -> Iterator[Child]:
        for parameter, state in optimizer.state.items():
            name = self.param_names.get(id(parameter), "param")
            for key, value in (state or {}).items():
                yield value, f"{path}.state[{name}].{key}", kind, label, False
        for index, group in enumerate(optimizer.param_groups):  # the model's own parameters
            yield group, f"{path}.param_groups[{index}]", kind, label, True
        for name, value in vars(optimizer).items():
            if name not in {"state", "param_groups"}:
                yield value, f"{path}.{name}", kind, label, name.startswith("_")

    def _key_text(self, key: Any) -> str:
        if isinstance(key, str):
            return repr(key) if len(key) <= 40 else repr(key[:37] + "...")
        if isinstance(key, (int, float, bool)) or key is None:
            return repr(key)
        if self.is_tensor(key):
            return self.param_names.get(id(key), "tensor")
        return type(key).__name__


def modules_within(value: Any, module: type, depth: int = 2) -> list[Any]:
    """The ``module`` instances among the attributes (or small dict's values) of ``value``, and of
    those, ``depth`` levels down: ``trainer.model``, ``pipe.model``, ``checkpoint["model"]``.
    Their parameters name the optimizer state that the same holder reaches."""
    found: list[Any] = []
    level = [value]
    for _ in range(depth):
        below: list[Any] = []
        for obj in level:
            if isinstance(obj, _NEVER):
                continue
            values = obj if isinstance(obj, dict) else getattr(obj, "__dict__", None)
            if isinstance(values, dict) and len(values) <= _SCAN_AT_MOST:
                for child in values.values():
                    (found if isinstance(child, module) else below).append(child)
        level = below
    return found


def _torch_attr(module: str, name: str) -> Any:
    """``torch.<module>.<name>`` (a class or a module) if torch is already imported, else None;
    the walk never imports torch."""
    import sys

    torch = sys.modules.get("torch")
    holder = getattr(torch, module, None) if torch is not None else None
    return getattr(holder, name, None)
