"""Unit tier: the text vram_magic appends to /metrics parses as Prometheus' format (odd notebook
names included), and a kernel's recent peaks outlive one window of the server's reads."""

from __future__ import annotations

from prometheus_client.parser import text_string_to_metric_families

from vram_magic.ipython.status_publisher import RecentPeaks
from vram_magic.server.metrics import kernel_series
from vram_magic.server.sample import GpuSample, KernelSample, Sample, TorchFigures

GIB = 2**30


def test_the_series_parse_and_escape_their_labels():
    odd = 'runs/"final" \\ v2\nb.ipynb'
    kernels = (
        KernelSample(
            "k1",
            odd,
            "idle",
            12.5,
            True,
            held={"GPU-1": (5 * GIB, "nvml")},
            torch={"GPU-1": TorchFigures(3 * GIB, 4 * GIB)},
            peaks={"GPU-1": 6 * GIB},
            ooms=2,
        ),
        KernelSample("k2", "bare.ipynb", "idle", 1.0, False, held={"GPU-1": (GIB, "nvml")}),
    )
    gpus = (GpuSample("GPU-1", "0", "NVIDIA H200", 140 * GIB, 9 * GIB, 1, 2 * GIB),)
    text = kernel_series(Sample(0.0, 0.01, kernels, gpus), "alice", "node-1")

    found = {
        sample.name: (sample.labels, sample.value)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }
    labels, value = found["vram_magic_kernel_info"]
    assert labels == {"kernel_id": "k1", "notebook": odd, "user": "alice", "host": "node-1"}
    assert value == 1
    assert found["vram_magic_kernel_stranded_bytes"][1] == GIB
    assert found["vram_magic_kernel_oom_total"][1] == 2
    assert found["vram_magic_gpu_memory_total_bytes"][0]["UUID"] == "GPU-1"
    assert found["vram_magic_gpu_other_users_memory_bytes"][1] == 2 * GIB
    assert "k2" not in text, "no series for a kernel without vram_magic"


def test_a_peak_stays_between_one_and_two_windows(monkeypatch):
    now = [100.0]
    monkeypatch.setattr("vram_magic.ipython.status_publisher.time.monotonic", lambda: now[0])
    peaks = RecentPeaks(window=10)
    peaks.add("cuda:0", 8 * GIB)
    now[0] += 9
    peaks.add("cuda:0", GIB)
    assert peaks.peaks() == {"cuda:0": 8 * GIB}
    now[0] += 2  # a new window: the spike is still in the previous one
    assert peaks.peaks() == {"cuda:0": 8 * GIB}
    peaks.add("cuda:0", 2 * GIB)
    now[0] += 10  # two windows on: only what came since
    assert peaks.peaks() == {"cuda:0": 2 * GIB}
