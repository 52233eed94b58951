"""Sizes for humans."""

from __future__ import annotations

import pytest

from ckpt_guard.policy import parse_size
from ckpt_guard.report.units import format_bytes, format_limit, format_percent


@pytest.mark.parametrize(("written", "shown"), [
    ("100MiB", "100 MiB"), ("1.5GiB", "1.5 GiB"), ("2TiB", "2 TiB"), ("10MB", "10.0 MB"),
    ("50MB", "50.0 MB"), ("1000", "1.0 kB"), (0, "0 B"), ("1.3MiB", "1.4 MB"),
])
def test_limits_are_shown_as_written(written: str | int, shown: str) -> None:
    assert format_limit(parse_size(written)) == shown


def test_format_bytes_and_percent() -> None:
    assert [format_bytes(n) for n in (0, 999, 999_950, 2_100_000_000, -1500)] == [
        "0 B", "999 B", "1.0 MB", "2.1 GB", "-1.5 kB"]
    assert [format_percent(p, 100) for p in (0, 0.5, 66.6)] == ["0%", "<1%", "67%"]
