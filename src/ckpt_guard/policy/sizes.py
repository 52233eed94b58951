"""Byte sizes as written in a policy file.

Accepted: a non-negative integer (bytes), or a string ``<number>[ ]<unit>``:

* decimal (SI) units, case-insensitive: ``B``, ``k``/``kB``, ``M``/``MB``, ``G``/``GB``,
  ``T``/``TB`` — powers of 1000 (``50MB`` = 50,000,000 bytes, ``2G`` = 2,000,000,000);
* binary (IEC) units, case-insensitive: ``KiB``, ``MiB``, ``GiB``, ``TiB`` — powers of 1024
  (``1.5GiB`` = 1,610,612,736 bytes);
* a bare number string (``"1000"``) is bytes.

Fractions are allowed (``1.5GiB``, ``0.5 MB``); the result is rounded to the nearest byte.
Reports print sizes in decimal units (:func:`ckpt_guard.report.units.format_bytes`).
"""

from __future__ import annotations

import re

UNITS: dict[str, int] = {
    "": 1, "b": 1,
    "k": 10**3, "kb": 10**3, "m": 10**6, "mb": 10**6, "g": 10**9, "gb": 10**9,
    "t": 10**12, "tb": 10**12,
    "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40,
}

_SIZE_RE = re.compile(r"^\s*([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*([A-Za-z]*)\s*$")

# The same grammar for the JSON Schema (editors validate with it; we re-parse for messages).
SCHEMA_PATTERN = r"^\s*([0-9]+(\.[0-9]+)?|\.[0-9]+)\s*([bB]|[kKmMgGtT]([bB]|[iI][bB])?)?\s*$"

UNIT_HELP = "B, kB, MB, GB, TB (powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024)"


class SizeError(ValueError):
    """A size that cannot be parsed; ``value`` as written and ``reason`` (why, and what is
    expected) let callers say where it was written."""

    def __init__(self, value: object, reason: str) -> None:
        self.value = value
        self.reason = reason
        super().__init__(f"invalid size {value!r} ({reason})")


def parse_size(value: int | str) -> int:
    """Bytes for ``value`` (see the module docstring). Raises :class:`SizeError` (a
    :class:`ValueError`) with a one-line message naming the accepted units."""
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise SizeError(value, "expected bytes as an integer or a string like '50MB' or "
                               "'1.5GiB'")
    if isinstance(value, int):
        if value < 0:
            raise SizeError(value, "must not be negative")
        return value
    m = _SIZE_RE.match(value)
    if m is None or m.group(2).lower() not in UNITS:
        raise SizeError(value, f"expected a number with an optional unit: {UNIT_HELP}; "
                               f"e.g. '50MB', '1.5GiB'")
    # Exact decimal arithmetic in integers (the `decimal` module costs ~8 ms of every cold
    # start): digits × unit / 10**decimals, rounded half up.
    whole, _, frac = m.group(1).partition(".")
    numerator = int((whole or "0") + frac) * UNITS[m.group(2).lower()]
    quotient, rest = divmod(numerator, 10 ** len(frac))
    return quotient + (2 * rest >= 10 ** len(frac))
