"""Unit: readings from recorded NVML structures; every figure is checked against the recording."""

import os

import pytest
from fake_nvml import fake_session, load_recording

from vram_magic.readings.nvml import NvmlSession
from vram_magic.readings.report import read_report

GiB = 2**30
MiB = 2**20


def test_one_gpu_splits_this_kernel_from_others():
    recording = load_recording("one_gpu")
    report = read_report(fake_session(recording), environ={})
    assert report.gpu_problem is None
    assert report.driver_version == "550.54.14"
    (gpu,) = report.devices
    memory = recording["devices"][0]["memory"]
    assert (gpu.total, gpu.used, gpu.free) == (memory["total"], memory["used"], memory["free"])
    assert gpu.name == "NVIDIA GeForce RTX 4090"
    assert gpu.cuda_index == 0 and gpu.nvml_index == "0"
    assert gpu.this_process == int(5.25 * GiB)
    # graphics processes count as other processes too
    assert [(p.pid, p.used) for p in gpu.other_processes] == [(1873, 310 * MiB)]
    assert gpu.utilization_percent == 37
    assert gpu.problems == ()


def test_two_gpus_with_other_processes():
    report = read_report(fake_session("two_gpus_other_processes"), environ={})
    first, second = report.devices
    assert first.this_process == 3 * GiB + 300 * MiB
    assert [p.pid for p in first.other_processes] == [41234, 41377]  # largest first
    assert first.other_processes_total == 20 * GiB
    # this kernel has no context on the second GPU; NVML hides one process's size there
    assert second.this_process == 0
    assert [(p.pid, p.used) for p in second.other_processes] == [(41234, 20 * GiB), (52001, None)]
    assert second.other_processes_total is None


def test_eight_gpus_and_a_mask():
    session = fake_session("eight_gpus")
    report = read_report(session, environ={})
    assert [d.cuda_index for d in report.devices] == list(range(8))
    assert [d.other_processes[0].used for d in report.devices] == [
        (i + 1) * 4 * GiB for i in range(8)
    ]
    masked = read_report(session, environ={"CUDA_VISIBLE_DEVICES": "7,6"})
    assert [(d.cuda_index, d.nvml_index) for d in masked.devices] == [(0, "7"), (1, "6")]
    assert masked.cuda_visible_devices == "7,6"


def test_mig_slice_is_read_as_the_device():
    report = read_report(fake_session("mig"), environ={})
    (device,) = report.devices
    assert device.is_mig and device.nvml_index == "0:0"
    assert device.name == "NVIDIA A100-SXM4-80GB MIG 3g.40gb"
    assert device.this_process == 6 * GiB
    assert device.utilization_percent is None  # NVML does not report it per MIG slice
    assert device.problems == ()


def test_failing_process_list_degrades_only_that_device():
    report = read_report(fake_session("processes_raise"), environ={})
    good, bad = report.devices
    assert good.problems == () and good.other_processes_total == 4 * GiB
    assert bad.other_processes is None and bad.this_process is None
    assert bad.problems == ("process list: Unknown Error",)
    assert bad.total == 23034 * MiB  # memory still read


def test_lost_gpu_degrades_memory_fields_only():
    recording = load_recording("two_gpus_other_processes")
    recording["devices"][1]["errors"] = {
        "nvmlDeviceGetMemoryInfo": ["NVMLError_GpuIsLost", "GPU is lost"]
    }
    first, second = read_report(fake_session(recording), environ={}).devices
    assert (second.total, second.used, second.free) == (None, None, None)
    assert second.problems == ("memory: GPU is lost",)
    assert second.other_processes_total is None and second.other_processes[0].pid == 41234
    assert first.total == 40960 * MiB


def test_nvml_started_once_and_devices_listed_once():
    session = fake_session("eight_gpus")
    for _ in range(3):
        read_report(session, environ={})
    assert session.fake.calls["nvmlInit"] == 1
    assert session.fake.calls["nvmlDeviceGetCount"] == 1
    assert session.fake.calls["nvmlDeviceGetMemoryInfo"] == 3 * 8  # memory is read every time


def test_live_values_follow_the_device():
    session = fake_session("one_gpu")
    before = read_report(session, environ={}).devices[0]
    session.fake.recording["devices"][0]["compute_processes"][0]["usedGpuMemory"] += GiB
    after = read_report(session, environ={}).devices[0]
    assert after.this_process - before.this_process == GiB


@pytest.mark.parametrize(
    ("error", "reason"),
    [
        ("NVMLError_LibraryNotFound", "no NVIDIA GPU visible: NVML library not found"),
        ("NVMLError_DriverNotLoaded", "no NVIDIA GPU visible: NVIDIA driver not loaded"),
        ("NVMLError_Unknown", "no NVIDIA GPU visible: NVML failed to start (Unknown Error)"),
    ],
)
def test_nvml_that_cannot_start_is_a_reason_not_a_crash(error, reason):
    report = read_report(fake_session({"init_error": error, "devices": []}), environ={})
    assert report.devices == () and report.gpu_problem == reason
    assert report.host.total and report.host.process_rss  # host RAM is still read


def test_missing_nvidia_ml_py():
    def missing():
        raise ImportError("No module named 'pynvml'")

    report = read_report(NvmlSession(load_module=missing), environ={})
    assert report.gpu_problem == "no NVIDIA GPU visible: nvidia-ml-py (pynvml) is not installed"


def test_mask_hiding_every_gpu_says_so():
    report = read_report(fake_session("one_gpu"), environ={"CUDA_VISIBLE_DEVICES": ""})
    assert report.gpu_problem == "no NVIDIA GPU visible: CUDA_VISIBLE_DEVICES='' hides every GPU"


def test_real_nvml_on_this_machine():
    """The real nvidia-ml-py, unfaked: on a machine without a driver it is a reason, not a crash."""
    report = read_report(NvmlSession(), environ=os.environ)
    if report.devices:
        pytest.skip("this machine has a working NVIDIA driver")
    assert report.gpu_problem == "no NVIDIA GPU visible: NVML library not found"


def test_recording_from_a_real_h200():
    """Replays what nvidia-ml-py answered on an H200 while this process held 1 GiB + context."""
    (gpu,) = read_report(fake_session("h200_recorded"), environ={}).devices
    assert gpu.name == "NVIDIA H200" and gpu.uuid.startswith("GPU-ae31c7fb")
    assert gpu.total == 150754820096 and gpu.used == 2271084544
    assert gpu.this_process == 1616904192
    assert gpu.other_processes == () and gpu.utilization_percent == 0
