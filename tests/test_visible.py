"""Unit: CUDA_VISIBLE_DEVICES -> NVML devices, by index, UUID and MIG, as CUDA parses it."""

import pytest
from fake_nvml import fake_session

from vram_magic.readings.visible import match_torch_uuids, order_note, select_visible


@pytest.fixture(scope="module")
def eight():
    return fake_session("eight_gpus").inventory()


@pytest.fixture(scope="module")
def mig():
    return fake_session("mig").inventory()


def indices(devices):
    return [d.nvml_index for d in devices]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, [str(i) for i in range(8)]),
        ("2,0", ["2", "0"]),
        (" 3 , 5 ", ["3", "5"]),
        ("1abc,3", ["1", "3"]),  # CUDA keeps the leading number
        ("1,9,2", ["1"]),  # parsing stops at the first device that does not exist
        ("0,0", []),  # a repeated entry hides every device
        ("", []),
        ("-1", []),
        ("4,GPU-nothing", ["4"]),  # indices and UUIDs are not mixed
        ("nonsense,1", []),
    ],
)
def test_indices(eight, value, expected):
    assert indices(select_visible(eight, value)) == expected


def test_full_and_abbreviated_uuids(eight):
    full = eight[6].uuid
    short = eight[2].uuid[:12]
    assert indices(select_visible(eight, f"{full},{short}")) == ["6", "2"]


def test_ambiguous_or_unknown_uuid_stops(eight):
    assert select_visible(eight, "GPU-") == []
    assert indices(select_visible(eight, f"{eight[1].uuid},GPU-ffffffff")) == ["1"]


def test_mig_gpu_shows_only_its_first_slice(mig):
    assert [d.nvml_index for d in mig] == ["0", "1"]
    assert [s.nvml_index for s in mig[0].mig_slices] == ["0:0", "0:2"]  # slot 1 is empty
    assert indices(select_visible(mig, None)) == ["0:0"]
    assert indices(select_visible(mig, "1,0")) == ["0:0"]
    assert indices(select_visible(mig, "1")) == ["1"]


def test_mig_slice_by_uuid_wins(mig):
    second = mig[0].mig_slices[1]
    assert indices(select_visible(mig, second.uuid)) == ["0:2"]
    first = mig[0].mig_slices[0]
    assert indices(select_visible(mig, f"{second.uuid},{first.uuid}")) == ["0:2"]


def test_match_torch_uuids_covers_gpus_and_mig_slices(mig):
    gpu_body = mig[1].uuid.removeprefix("GPU-")
    slice_body = mig[0].mig_slices[1].uuid.removeprefix("MIG-")
    matched = match_torch_uuids(mig, [slice_body, gpu_body.upper(), "00000000-dead"])
    assert [d.nvml_index if d else None for d in matched] == ["0:2", "1", None]


def test_order_note_only_for_mixed_models(eight, mig):
    assert order_note(eight, None) is None
    mixed = [mig[0].mig_slices[0], mig[1]]
    assert "CUDA_DEVICE_ORDER=PCI_BUS_ID" in order_note(mixed, None)
    assert order_note(mixed, "PCI_BUS_ID") is None
