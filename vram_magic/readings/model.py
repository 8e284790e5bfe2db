"""Plain dataclasses for one reading of GPU and host memory.

Bytes are integers everywhere; ``None`` means "not known" (the source failed or does not say),
never zero. The reason a field is unknown is kept in ``problems`` so the report can say why.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class ProcessUsage:
    """One process on a GPU as NVML sees it; ``used`` is None where NVML withholds the figure."""

    pid: int
    used: int | None


@dataclass(frozen=True)
class DeviceReading:
    """Memory of one GPU (or MIG slice) visible to this process, with this kernel's share split out.

    ``cuda_index`` is the index torch uses (``cuda:N``); ``nvml_index`` names the physical device
    (``"3"``) or MIG slice (``"3:1"``) as nvidia-smi counts them.
    """

    cuda_index: int
    nvml_index: str
    name: str | None
    uuid: str | None
    total: int | None
    used: int | None
    free: int | None
    this_process: int | None
    torch_allocated: int | None
    torch_reserved: int | None
    other_processes: tuple[ProcessUsage, ...] | None
    utilization_percent: int | None = None
    is_mig: bool = False
    problems: tuple[str, ...] = ()

    @property
    def torch_cache(self) -> int | None:
        """Reserved by torch's caching allocator but not holding any tensor."""
        if self.torch_reserved is None or self.torch_allocated is None:
            return None
        return max(self.torch_reserved - self.torch_allocated, 0)

    @property
    def process_other(self) -> int | None:
        """This process's memory outside torch's allocator: CUDA context, cuBLAS/cuDNN, others."""
        if self.this_process is None or self.torch_reserved is None:
            return None
        return max(self.this_process - self.torch_reserved, 0)

    @property
    def other_processes_total(self) -> int | None:
        """Sum over other processes, or None when NVML withholds any of their figures."""
        if self.other_processes is None:
            return None
        if any(p.used is None for p in self.other_processes):
            return None
        return sum(p.used for p in self.other_processes if p.used is not None)


@dataclass(frozen=True)
class HostReading:
    """Host RAM: this process's resident set beside the machine's total and available memory."""

    process_rss: int | None
    total: int | None
    available: int | None


@dataclass(frozen=True)
class TorchReading:
    """What torch says without being imported or initialised by us."""

    imported: bool
    version: str | None = None
    cuda_build: str | None = None
    cuda_initialized: bool = False
    mps_allocated: int | None = None


@dataclass(frozen=True)
class Report:
    """One full reading: every visible GPU, host RAM and torch's state, taken at ``taken_at``."""

    devices: tuple[DeviceReading, ...]
    host: HostReading
    torch: TorchReading
    taken_at: float
    gpu_problem: str | None = None
    driver_version: str | None = None
    cuda_visible_devices: str | None = None
    notes: tuple[str, ...] = field(default=())
