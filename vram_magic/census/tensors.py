"""What a census needs to know of one tensor, cheaply: is it one, and which storage it uses."""

from __future__ import annotations

from typing import Any


class TensorTypes:
    """Decides ``is this a tensor`` by exact type, cached per type: no ``isinstance`` on arbitrary
    objects (that touches ``__class__`` and can fire torch deprecation warnings)."""

    def __init__(self, torch: Any) -> None:
        self._base = torch.Tensor
        self._known: dict[type, bool] = {}

    def __call__(self, obj: Any) -> bool:
        return self.is_tensor_type(type(obj))

    def all_tensor_types(self) -> set[type]:
        """torch.Tensor and every subclass defined so far (Parameter, Buffer, user subclasses)."""
        found, pending = set(), [self._base]
        while pending:
            kind = pending.pop()
            if kind not in found:
                found.add(kind)
                pending.extend(kind.__subclasses__())
        return found

    def is_tensor_type(self, kind: type) -> bool:
        known = self._known.get(kind)
        if known is None:
            known = self._known[kind] = issubclass(kind, self._base)
        return known


StorageKey = tuple[int, int]  # (device index, -1 for CPU; storage address)


def storage_key(tensor: Any) -> tuple[StorageKey, int]:
    """((device index, storage address), storage bytes); views and tied weights share the key."""
    try:
        device = tensor.get_device()
        if not tensor._is_view() and tensor.storage_offset() == 0:
            # A tensor that owns its storage from the start: its own address and size are the
            # storage's, at a tenth of the cost of materialising the storage object.
            return (device, tensor.data_ptr() or id(tensor)), tensor.nbytes
        storage = tensor.untyped_storage()
        return (device, storage.data_ptr() or id(tensor)), storage.nbytes()
    except Exception:  # sparse, nested or meta tensors have no plain storage
        return (-2, id(tensor)), 0
