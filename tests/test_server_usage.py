"""How the server attributes GPU memory to kernels when NVML cannot: a container, where NVML
lists host PIDs, leaves only the kernel's own status file; a file left by a killed kernel must
not be taken for its successor's."""

from __future__ import annotations

import os
import time

from fake_nvml import fake_session, load_recording

from vram_magic.protocol.kernel_status import (
    KernelDevice,
    KernelStatus,
    read_status,
    status_path,
    write_status,
)
from vram_magic.readings.machine import read_machine
from vram_magic.server.processes import ProcessDirectory
from vram_magic.server.usage import KernelFacts, kernels_json

GIB = 2**30


def machine_without_this_process():  # type: ignore[no-untyped-def]
    recording = load_recording("two_gpus_other_processes")
    for device in recording["devices"]:
        device["compute_processes"] = [p for p in device["compute_processes"] if p["pid"] != "self"]
    return read_machine(fake_session(recording))


def kernel(status: KernelStatus | None, pid: int | None = None) -> KernelFacts:
    return KernelFacts("k1", "python3", "idle", pid, "a.ipynb", "a.ipynb", status)


def test_status_file_round_trip_is_private(tmp_path):
    path = status_path(tmp_path / "kernel-k1.json")
    status = KernelStatus(
        os.getpid(), time.time(), (KernelDevice("cuda:0", "GPU-1", GIB, 2 * GIB, None),), (), None
    )
    write_status(path, status)
    assert path.name == "vram_magic-kernel-k1.json"
    assert read_status(path) == status
    assert path.stat().st_mode & 0o777 == 0o600
    path.write_text("{not json")
    assert read_status(path) is None


def test_a_kernel_nvml_cannot_see_is_counted_from_its_own_file():
    machine = machine_without_this_process()
    uuid = machine.devices[1].uuid
    status = KernelStatus(
        os.getpid(),  # this process stands for the kernel: NVML lists no such PID on GPU 1
        time.time(),
        (KernelDevice("cuda:0", uuid, 3 * GIB, 4 * GIB, None),),
        (("model", 3 * GIB),),
        None,
    )
    row = kernels_json(machine, [kernel(status, os.getpid())], ProcessDirectory())["kernels"][0]
    assert row["devices"] == [{"uuid": uuid, "index": "1", "bytes": 4 * GIB, "source": "kernel"}]
    assert row["vram_magic"]["top"] == [{"name": "model", "bytes": 3 * GIB}]


def test_a_file_left_by_another_process_is_ignored():
    machine = machine_without_this_process()
    stale = KernelStatus(
        999_999_999, time.time(), (KernelDevice("cuda:0", "GPU-x", GIB, GIB, None),), (), None
    )
    row = kernels_json(machine, [kernel(stale, os.getpid())], ProcessDirectory())["kernels"][0]
    assert row["vram_magic"] is None
    assert row["bytes"] == 0
