"""Which NVML devices this process sees, in torch's order (``cuda:0``, ``cuda:1``, ...).

NVML numbers every GPU on the machine; CUDA numbers only those ``CUDA_VISIBLE_DEVICES`` lets
through, in the order given there. The rules below follow CUDA's own parsing (and nvitop's reading
of it):

* unset: every GPU, in NVML (PCI bus) order;
* a list of indices (``"2,0"``) or of UUIDs, full or abbreviated (``"GPU-8f2a,GPU-1b"``);
  ``"MIG-<uuid>"`` names a MIG slice;
* parsing stops at the first entry that names no device or switches between indices and UUIDs;
  a repeated entry hides every device; an entry like ``"1abc"`` counts as ``"1"``;
* MIG: CUDA shows at most one MIG slice. A listed MIG slice wins over everything; otherwise the
  first listed GPU in MIG mode shows its first slice and hides every other device.

Once torch has initialised CUDA, the exact answer is known: torch reports each device's UUID, and
devices are matched by UUID (``match_torch_uuids``), which also covers ``CUDA_DEVICE_ORDER``.
"""

from __future__ import annotations

from collections.abc import Sequence

from vram_magic.readings.nvml import NvmlDevice


def _normalise(entry: str) -> str:
    """CUDA reads ``"1abc"`` as ``"1"``: keep a leading (signed) number, drop what follows."""
    entry = entry.strip()
    digits_from = 1 if entry[:1] in {"+", "-"} and entry[1:2].isdigit() else 0
    if entry[digits_from : digits_from + 1].isdigit():
        end = digits_from
        while end < len(entry) and entry[end].isdigit():
            end += 1
        return entry[:end]
    return entry


def _by_uuid_prefix(candidates: Sequence[NvmlDevice], prefix: str) -> NvmlDevice | None:
    matches = [device for device in candidates if device.uuid.startswith(prefix)]
    return matches[0] if len(matches) == 1 else None


def _lookup(inventory: Sequence[NvmlDevice], entry: str) -> NvmlDevice | None:
    if entry.lstrip("+-").isdigit():
        index = int(entry)
        return inventory[index] if 0 <= index < len(inventory) else None
    if entry.startswith("GPU-"):
        return _by_uuid_prefix(inventory, entry)
    if entry.startswith("MIG-"):
        return _by_uuid_prefix([s for gpu in inventory for s in gpu.mig_slices], entry)
    return None


def _listed(inventory: Sequence[NvmlDevice], cuda_visible_devices: str) -> list[NvmlDevice]:
    """The devices named before parsing stops, or [] when an entry repeats."""
    listed: list[NvmlDevice] = []
    seen: set[str] = set()
    uses_indices: bool | None = None
    for entry in map(_normalise, cuda_visible_devices.split(",")):
        if entry in seen:
            return []
        is_index = entry.lstrip("+-").isdigit()
        if uses_indices is None:
            uses_indices = is_index
        device = _lookup(inventory, entry) if is_index == uses_indices else None
        if device is None:
            break
        listed.append(device)
        seen.add(entry)
    return listed


def _apply_mig_rule(listed: list[NvmlDevice]) -> list[NvmlDevice]:
    slices = [device for device in listed if device.is_mig]
    if slices:
        return slices[:1]
    for device in listed:
        if device.mig_enabled and device.mig_slices:
            return [device.mig_slices[0]]
    return [device for device in listed if not device.mig_enabled]


def select_visible(
    inventory: Sequence[NvmlDevice], cuda_visible_devices: str | None
) -> list[NvmlDevice]:
    """The devices CUDA will show for this ``CUDA_VISIBLE_DEVICES``, as ``cuda:0``, ``cuda:1``..."""
    if cuda_visible_devices is None:
        return _apply_mig_rule(list(inventory))
    return _apply_mig_rule(_listed(inventory, cuda_visible_devices))


def _uuid_body(uuid: str) -> str:
    return uuid.removeprefix("MIG-").removeprefix("GPU-").lower()


def match_torch_uuids(
    inventory: Sequence[NvmlDevice], torch_uuids: Sequence[str]
) -> list[NvmlDevice | None]:
    """NVML device for each torch device UUID (GPU or MIG), None where NVML has no such device."""
    known = {_uuid_body(d.uuid): d for gpu in inventory for d in (gpu, *gpu.mig_slices)}
    return [known.get(_uuid_body(uuid)) for uuid in torch_uuids]


def order_note(visible: Sequence[NvmlDevice], cuda_device_order: str | None) -> str | None:
    """Warn when CUDA's default fastest-first order may differ from the PCI order assumed here."""
    if cuda_device_order == "PCI_BUS_ID" or len({d.name for d in visible}) < 2:
        return None
    return (
        "GPUs of different models: CUDA numbers them fastest first unless "
        "CUDA_DEVICE_ORDER=PCI_BUS_ID; cuda:N is matched to nvidia-smi exactly once torch "
        "has initialised CUDA"
    )
