"""CRC-32 (zip's, zlib's) of the bytes a fix writes and verifies.

ISA-L's implementation (the ``isal`` package, python-isal: a dependency on the machines its
wheels cover) is some 20-40x faster than the zlib CPython links here (~0.6 GB/s on this VM),
which made CRC-32 a quarter of a fix's time. Same polynomial, same results (tests compare both); zlib when isal is absent.
"""

from __future__ import annotations

from collections.abc import Callable

Crc32 = Callable[..., int]


def _pick() -> tuple[Crc32, str]:
    try:
        from isal.isal_zlib import crc32 as isal_crc32
    except ImportError:
        from zlib import crc32 as zlib_crc32

        return zlib_crc32, "zlib"
    return isal_crc32, "isal"


crc32, IMPLEMENTATION = _pick()
