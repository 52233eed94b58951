"""Byte sizes in policies and in messages."""

from __future__ import annotations

import pytest

from ckpt_guard.policy import SizeError, parse_size
from ckpt_guard.report.units import format_bytes, format_percent


@pytest.mark.parametrize(("text", "expected"), [
    (0, 0),
    (1234, 1234),
    ("1000", 1000),
    ("512B", 512),
    ("500 kB", 500_000),
    ("500kb", 500_000),
    ("50MB", 50_000_000),
    ("50 mb", 50_000_000),
    ("2G", 2_000_000_000),
    ("2 GB", 2_000_000_000),
    ("1T", 10**12),
    ("1KiB", 1024),
    ("100MiB", 100 * 2**20),
    ("1.5GiB", 1_610_612_736),
    ("1.5 gib", 1_610_612_736),
    ("0.5MB", 500_000),
    (".5k", 500),
    ("1.0000005 kB", 1000),  # rounds to the nearest byte
    ("  7 MB ", 7_000_000),
])
def test_parse_size(text: int | str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize(("value", "reason"), [
    ("50 parsecs", "expected a number with an optional unit"),
    ("MB", "expected a number with an optional unit"),
    ("", "expected a number with an optional unit"),
    ("-5MB", "expected a number with an optional unit"),
    ("1.5.2MB", "expected a number with an optional unit"),
    ("5 kibb", "expected a number with an optional unit"),
    (-1, "must not be negative"),
    (True, "expected bytes as an integer"),
    (1.5, "expected bytes as an integer"),
    (None, "expected bytes as an integer"),
])
def test_parse_size_rejects(value: object, reason: str) -> None:
    with pytest.raises(SizeError) as info:
        parse_size(value)  # type: ignore[arg-type]
    assert info.value.reason.startswith(reason)
    assert str(info.value).startswith(f"invalid size {value!r} (")


@pytest.mark.parametrize(("n", "text"), [
    (0, "0 B"),
    (999, "999 B"),
    (1000, "1.0 kB"),
    (1500, "1.5 kB"),
    (99_949, "99.9 kB"),
    (99_950, "100 kB"),
    (999_499, "999 kB"),
    (999_500, "1.0 MB"),  # never "1000 kB"
    (13_600_000, "13.6 MB"),
    (372_000_000, "372 MB"),
    (2_100_000_000, "2.1 GB"),
    (104_857_600, "105 MB"),
    (-13_600_000, "-13.6 MB"),
])
def test_format_bytes(n: int, text: str) -> None:
    assert format_bytes(n) == text


@pytest.mark.parametrize(("part", "whole", "text"), [
    (2, 3, "67%"), (0, 10, "0%"), (1, 1000, "<1%"), (5, 0, "0%"), (10, 10, "100%"),
])
def test_format_percent(part: int, whole: int, text: str) -> None:
    assert format_percent(part, whole) == text
