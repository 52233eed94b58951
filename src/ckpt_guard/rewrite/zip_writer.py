"""A zip writer producing archives laid out the way torch's ``PyTorchStreamWriter`` does.

Entries are stored (no compression); each record's data starts on a 64-byte boundary, the
padding carried in an ``FB`` extra field as torch/miniz do, so ``torch.load(mmap=True)`` can
slice storages straight out of the file. ZIP64 extras are written for records or offsets
beyond 4 GiB, and the ZIP64 end records are always written (as torch does). Records are
streamed: the CRC-32 is computed while writing and patched into the local header afterwards.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from ckpt_guard.rewrite.crc import crc32

ALIGNMENT = 64
_U32 = 0xFFFFFFFF
_LOCAL = struct.Struct("<IHHHHHIIIHH")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")
_ZIP64_EOCD = struct.Struct("<IQHHIIQQQQ")
_ZIP64_LOCATOR = struct.Struct("<IIQI")
_EOCD = struct.Struct("<IHHHHIIH")


@dataclass
class _Entry:
    name: bytes
    offset: int  # local header
    size: int
    crc: int
    zip64: bool


class ZipWriteError(Exception):
    """The archive could not be written as promised (e.g. a record's size was wrong)."""


class TorchZipWriter:
    """Writes a torch-style zip into ``fh`` (positioned at 0, seekable)."""

    def __init__(self, fh: BinaryIO, prefix: str = "archive", *, force_zip64: bool = False):
        self.fh = fh
        self.prefix = prefix
        self.force_zip64 = force_zip64
        self.entries: list[_Entry] = []
        self.pos = fh.tell()

    def _header(self, name: bytes, offset: int, size: int, crc: int) -> tuple[bytes, bool]:
        zip64 = self.force_zip64 or size >= _U32 or offset >= _U32
        extra = b""
        if zip64:
            extra = struct.pack("<HHQQ", 0x0001, 16, size, size)
        base = offset + _LOCAL.size + len(name) + len(extra)
        pad = (-(base + 4)) % ALIGNMENT
        extra += struct.pack("<HH", 0x4246, pad) + b"Z" * pad  # "FB" padding, as miniz/torch
        version = 45 if zip64 else 20
        s32 = _U32 if zip64 else size
        header = _LOCAL.pack(0x04034B50, version, 0, 0, 0, 0, crc, s32, s32, len(name),
                             len(extra))
        return header + name + extra, zip64

    def write_record(self, name: str, chunks: Iterable[bytes | memoryview], size: int) -> int:
        """Write one record of exactly ``size`` bytes from ``chunks``; returns its CRC-32.
        The data's absolute offset is 64-byte aligned."""
        full = f"{self.prefix}/{name}".encode()
        offset = self.pos
        header, zip64 = self._header(full, offset, size, 0)
        self.fh.write(header)
        crc = 0
        written = 0
        for chunk in chunks:
            crc = crc32(chunk, crc)
            written += len(chunk)
            self.fh.write(chunk)
        if written != size:
            raise ZipWriteError(f"record {name}: wrote {written} bytes, expected {size}")
        self.pos = offset + len(header) + size
        # Patch the CRC-32 (offset 14 of the local header) now that it is known.
        self.fh.seek(offset + 14)
        self.fh.write(struct.pack("<I", crc))
        self.fh.seek(self.pos)
        self.entries.append(_Entry(full, offset, size, crc, zip64))
        return crc

    def reserve_record(self, name: str, size: int) -> None:
        """Account for a record of ``size`` bytes without writing its data (projected sizes:
        use with a sink that only counts)."""
        full = f"{self.prefix}/{name}".encode()
        offset = self.pos
        header, zip64 = self._header(full, offset, size, 0)
        self.fh.write(header)
        self.pos = offset + len(header) + size
        self.fh.seek(self.pos)
        self.entries.append(_Entry(full, offset, size, 0, zip64))

    def write_bytes(self, name: str, data: bytes) -> int:
        return self.write_record(name, [data] if data else [], len(data))

    def data_offset(self, name: str) -> int:
        """Absolute offset of a written record's data (for tests and verification)."""
        full = f"{self.prefix}/{name}".encode()
        for e in self.entries:
            if e.name == full:
                header, _ = self._header(e.name, e.offset, e.size, e.crc)
                return e.offset + len(header)
        raise KeyError(name)

    def close(self) -> int:
        """Write the central directory and end records; returns the archive's size."""
        cd_start = self.pos
        parts = []
        for e in self.entries:
            z64 = []
            if self.force_zip64 or e.size >= _U32:
                z64 += [e.size, e.size]
            if self.force_zip64 or e.offset >= _U32:
                z64.append(e.offset)
            extra = struct.pack("<HH", 0x0001, 8 * len(z64)) + struct.pack(
                f"<{len(z64)}Q", *z64) if z64 else b""
            size32 = _U32 if (self.force_zip64 or e.size >= _U32) else e.size
            off32 = _U32 if (self.force_zip64 or e.offset >= _U32) else e.offset
            version = 45 if z64 else 20
            parts.append(_CENTRAL.pack(0x02014B50, version, version, 0, 0, 0, 0, e.crc, size32,
                                       size32, len(e.name), len(extra), 0, 0, 0, 0, off32))
            parts.append(e.name)
            parts.append(extra)
        cd = b"".join(parts)
        self.fh.write(cd)
        cd_size = len(cd)
        z64_start = cd_start + cd_size
        n = len(self.entries)
        self.fh.write(_ZIP64_EOCD.pack(0x06064B50, 44, 45, 45, 0, 0, n, n, cd_size, cd_start))
        self.fh.write(_ZIP64_LOCATOR.pack(0x07064B50, 0, z64_start, 1))
        self.fh.write(_EOCD.pack(0x06054B50, 0, 0, min(n, 0xFFFF), min(n, 0xFFFF),
                                 min(cd_size, _U32), min(cd_start, _U32), 0))
        self.pos = self.fh.tell()
        return self.pos
