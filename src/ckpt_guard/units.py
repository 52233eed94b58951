"""Human byte sizes, one convention everywhere: decimal SI units like ``du --si``.

``1 kB = 1000 B``, ``1 MB = 10**6 B``, ``1 GB = 10**9 B`` — the units disk vendors, GitHub's
UI and Hugging Face use. Three significant figures at most: ``512 B``, ``1.5 kB``, ``13.6 MB``,
``372 MB``, ``2.1 GB``. (Policy files may still *write* binary sizes such as ``100MiB``; see
:func:`ckpt_guard.policy.parse_size`.)
"""

from __future__ import annotations

_UNITS = ("kB", "MB", "GB", "TB", "PB", "EB")


def format_bytes(n: int) -> str:
    """``n`` bytes for humans (``-`` sign kept for deltas): ``format_bytes(2_100_000_000)``
    → ``'2.1 GB'``."""
    if n < 0:
        return "-" + format_bytes(-n)
    if n < 1000:
        return f"{n} B"
    value = float(n)
    for unit in _UNITS:
        value /= 1000.0
        # Round the way we print, so 999_950 B becomes "1.0 MB", not "1000 kB".
        shown = round(value, 1) if value < 99.95 else round(value)
        if shown < 1000 or unit == _UNITS[-1]:
            return f"{shown:.1f} {unit}" if value < 99.95 else f"{shown:.0f} {unit}"
    raise AssertionError("unreachable")


def format_limit(n: int) -> str:
    """A size a user configured (``max-bytes``), as they most likely wrote it: binary units
    when ``n`` is a whole number of MiB/GiB/TiB that is not also a round decimal size
    (``100MiB`` → ``'100 MiB'``, not ``'105 MB'``; ``1.5GiB`` → ``'1.5 GiB'``), else :func:`format_bytes`."""
    for unit, scale in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= scale and (n * 10) % scale == 0 and n % 10**6 != 0:
            return f"{n / scale:g} {unit}"
    return format_bytes(n)


def format_percent(part: int, whole: int) -> str:
    """``part`` as a share of ``whole``: ``'67%'``; ``'<1%'`` for a non-zero sliver."""
    if whole <= 0:
        return "0%"
    pct = 100.0 * part / whole
    if 0 < pct < 1:
        return "<1%"
    return f"{pct:.0f}%"

__all__ = ["format_bytes", "format_limit", "format_percent"]
