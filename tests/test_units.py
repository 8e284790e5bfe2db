"""Unit: bytes are formatted only at the edge, in labelled binary units."""

import pytest

from vram_magic.render.units import format_bytes, format_percent


@pytest.mark.parametrize(
    ("count", "text"),
    [
        (None, "n/a"),
        (0, "0 B"),
        (1023, "1023 B"),
        (1536, "1.5 KiB"),
        (5 * 2**20, "5.0 MiB"),
        (3 * 2**30, "3.00 GiB"),
        (int(79.6 * 2**30), "79.60 GiB"),
        (2 * 2**40, "2.00 TiB"),
        (-512 * 2**20, "-512.0 MiB"),
    ],
)
def test_format_bytes(count, text):
    assert format_bytes(count) == text


def test_format_percent():
    assert format_percent(1, 4) == "25%"
    assert format_percent(None, 4) == ""
    assert format_percent(1, 0) == ""
