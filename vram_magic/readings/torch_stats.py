"""torch's view of memory, read only if the user already imported torch.

Nothing here imports torch or initialises CUDA: importing torch costs seconds, and initialising
CUDA creates a context (hundreds of MiB of VRAM) and makes later ``fork`` unsafe. Until the user
has done both, the truthful figures are "torch not imported" and "nothing allocated".
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import ModuleType

from vram_magic.readings.model import TorchReading


@dataclass(frozen=True)
class CudaDeviceFacts:
    """What torch knows of one CUDA device once it has initialised CUDA."""

    uuid: str
    name: str
    total: int


def imported_torch() -> ModuleType | None:
    """torch if the user has imported it (fully), else None."""
    torch = sys.modules.get("torch")
    if torch is None or not hasattr(torch, "cuda") or not hasattr(torch, "__version__"):
        return None
    return torch


def cuda_ready(torch: ModuleType | None) -> bool:
    """True once the user's code has initialised CUDA in this process."""
    if torch is None:
        return False
    try:
        return bool(torch.cuda.is_initialized())
    except Exception:
        return False


def read_torch(torch: ModuleType | None) -> TorchReading:
    if torch is None:
        return TorchReading(imported=False)
    return TorchReading(
        imported=True,
        version=str(torch.__version__),
        cuda_build=getattr(torch.version, "cuda", None),
        cuda_initialized=cuda_ready(torch),
        mps_allocated=_mps_allocated(torch),
    )


def _mps_allocated(torch: ModuleType) -> int | None:
    try:
        if torch.backends.mps.is_available():
            return int(torch.mps.current_allocated_memory())
    except Exception:
        return None
    return None


def cuda_devices(torch: ModuleType | None) -> list[CudaDeviceFacts] | None:
    """Facts for every CUDA device torch sees, or None while CUDA is not initialised."""
    if not cuda_ready(torch):
        return None
    assert torch is not None
    try:
        facts = []
        for index in range(torch.cuda.device_count()):
            properties = torch.cuda.get_device_properties(index)
            facts.append(
                CudaDeviceFacts(str(properties.uuid), properties.name, int(properties.total_memory))
            )
        return facts
    except Exception:
        return None


def allocator_bytes(torch: ModuleType | None, cuda_index: int) -> tuple[int | None, int | None]:
    """(allocated, reserved) by torch's caching allocator on ``cuda:<cuda_index>``.

    Until torch is imported and has initialised CUDA it holds nothing on any GPU: (0, 0).
    """
    if not cuda_ready(torch):
        return 0, 0
    assert torch is not None
    try:
        return (
            int(torch.cuda.memory_allocated(cuda_index)),
            int(torch.cuda.memory_reserved(cuda_index)),
        )
    except Exception:
        return None, None
