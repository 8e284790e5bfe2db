"""Record what the real NVML answers on this machine, in the format ``fake_nvml`` replays.

Run on a GPU machine: ``python tests/record_nvml.py out.json``. This process's own pid is written
as ``"self"`` so the recording replays with the test process as "this kernel".
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import pynvml


def _ask(errors: dict[str, list[str]], function: str, *args: Any) -> Any:
    try:
        return getattr(pynvml, function)(*args)
    except pynvml.NVMLError as error:
        errors[function] = [type(error).__name__, str(error)]
        return None


def _processes(entries: list[Any] | None) -> list[dict[str, Any]] | None:
    if entries is None:
        return None
    pid = os.getpid()
    return [
        {"pid": "self" if e.pid == pid else e.pid, "usedGpuMemory": e.usedGpuMemory}
        for e in entries
    ]


def _device(handle: Any) -> dict[str, Any]:
    errors: dict[str, list[str]] = {}
    memory = _ask(errors, "nvmlDeviceGetMemoryInfo", handle)
    utilization = _ask(errors, "nvmlDeviceGetUtilizationRates", handle)
    record: dict[str, Any] = {
        "name": _ask(errors, "nvmlDeviceGetName", handle),
        "uuid": _ask(errors, "nvmlDeviceGetUUID", handle),
        "memory": memory and {"total": memory.total, "used": memory.used, "free": memory.free},
        "utilization": utilization and {"gpu": utilization.gpu, "memory": utilization.memory},
        "compute_processes": _processes(
            _ask(errors, "nvmlDeviceGetComputeRunningProcesses", handle)
        ),
        "graphics_processes": _processes(
            _ask(errors, "nvmlDeviceGetGraphicsRunningProcesses", handle)
        ),
        "mig_mode": _ask(errors, "nvmlDeviceGetMigMode", handle),
    }
    if record["mig_mode"] and record["mig_mode"][0]:
        slots = _ask(errors, "nvmlDeviceGetMaxMigDeviceCount", handle) or 0
        record["max_mig_devices"] = slots
        record["mig_devices"] = {}
        for slot in range(slots):
            try:
                child = pynvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except pynvml.NVMLError:
                continue
            record["mig_devices"][str(slot)] = _device(child)
    # NotSupported answers replay as missing values; keep only the other failures.
    record["errors"] = {k: v for k, v in errors.items() if v[0] != "NVMLError_NotSupported"}
    return record


def record() -> dict[str, Any]:
    pynvml.nvmlInit()
    count = pynvml.nvmlDeviceGetCount()
    return {
        "driver_version": pynvml.nvmlSystemGetDriverVersion(),
        "devices": [_device(pynvml.nvmlDeviceGetHandleByIndex(i)) for i in range(count)],
    }


if __name__ == "__main__":
    if "--allocate-gib" in sys.argv:
        import torch

        held = torch.empty(2**30, dtype=torch.uint8, device="cuda")
    out = json.dumps(record(), indent=1)
    if len(sys.argv) > 1 and not sys.argv[1].startswith("--"):
        with open(sys.argv[1], "w") as handle:
            handle.write(out)
    else:
        print(out)
