"""Containers for adversarial pickles: a zip writer of our own (so malformed archives —
bad CRCs, local/central name mismatches, flag bits — can be written), real torch.save zips
with members replaced or added, the legacy five-pickle layout, and TorchScript archives.

torch is imported lazily: only the cases wrapping a real torch-made file need it.
"""

from __future__ import annotations

import io
import struct
import zipfile
import zlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Member:
    name: str
    data: bytes
    deflate: bool = False
    crc_override: int | None = None  # write this CRC instead of the real one
    local_name: str | None = None  # name in the local header when it differs from central
    flag_bits: int = 0
    local_flag_bits: int | None = None  # flags in the local header when they differ
    align: int = 64  # pad so the data starts on this boundary (torch writes 64)


def _records(members: list[Member], base: int = 0) -> tuple[bytearray, list[bytes]]:
    """Local records (starting at file offset ``base``) and their central entries."""
    out = bytearray()
    central: list[bytes] = []
    for m in members:
        payload = zlib.compress(m.data)[2:-4] if m.deflate else m.data
        method = 8 if m.deflate else 0
        crc = zlib.crc32(m.data) if m.crc_override is None else m.crc_override
        lname = (m.local_name if m.local_name is not None else m.name).encode()
        cname = m.name.encode()
        offset = base + len(out)
        header_len = 30 + len(lname)
        pad = (-(offset + header_len + 4)) % m.align if m.align > 1 else 0
        extra = (struct.pack("<HH", 0x4246, pad) + b"Z" * pad) if m.align > 1 else b""
        lflags = m.flag_bits if m.local_flag_bits is None else m.local_flag_bits
        out += struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, lflags, method, 0, 0x21, crc,
                           len(payload), len(m.data), len(lname), len(extra))
        out += lname + extra + payload
        central.append(struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, m.flag_bits,
                                   method, 0, 0x21, crc, len(payload), len(m.data), len(cname),
                                   0, 0, 0, 0, 0, offset) + cname)
    return out, central


def zip_bytes(members: list[Member]) -> bytes:
    """Write a zip archive byte by byte (no ZIP64: the corpus is small)."""
    out, central = _records(members)
    cd_offset, cd = len(out), b"".join(central)
    out += cd
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(members), len(members), len(cd),
                       cd_offset, 0)
    return bytes(out)


def zip_two_directories(shown: list[Member], hidden: list[Member]) -> bytes:
    """One file, two central directories. The end record describes ``shown``; a ZIP64
    locator right before it points at a ZIP64 record describing ``hidden``, which torch's
    miniz follows (mz_zip_reader_read_central_dir). CPython's zipfile looks for the ZIP64
    record only right before the locator (_EndRecData64), finds none and reads ``shown``.
    The locator is the last shown entry's comment, so zipfile sees no gap either."""
    out, shown_cd = _records(shown)
    more, hidden_cd = _records(hidden, base=len(out))
    out += more
    h_ofs, h_cd = len(out), b"".join(hidden_cd)
    out += h_cd
    z64 = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 0x31E, 45, 0, 0, len(hidden),
                       len(hidden), len(h_cd), h_ofs)
    last = bytearray(shown_cd[-1])
    struct.pack_into("<H", last, 32, 20)  # comment length
    shown_cd[-1] = bytes(last) + struct.pack("<IIQI", 0x07064B50, 0, z64, 1)
    s_ofs, s_cd = len(out), b"".join(shown_cd)
    out += s_cd
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(shown), len(shown), len(s_cd),
                       s_ofs, 0)
    return bytes(out)


def read_members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i)) for i in z.infolist()]


def torch_zip(obj: object | None = None) -> bytes:
    """A real ``torch.save`` of a small state dict (or ``obj``)."""
    import torch

    buf = io.BytesIO()
    torch.save(obj if obj is not None else {"w": torch.arange(6.0).reshape(2, 3),
                                            "b": torch.zeros(3)}, buf)
    return buf.getvalue()


def torch_zip_with(*, replace: dict[str, bytes] | None = None,
                   add: list[Member] | None = None, base: bytes | None = None,
                   **member_kw: object) -> bytes:
    """A real torch zip re-emitted with members replaced (by basename suffix, e.g.
    ``"data.pkl"``) and members added; ``member_kw`` applies to replaced members."""
    replace = replace or {}
    members = []
    for name, data in read_members(base if base is not None else torch_zip()):
        for suffix, new in replace.items():
            if name.endswith("/" + suffix):
                members.append(Member(name, new, **member_kw))  # type: ignore[arg-type]
                break
        else:
            members.append(Member(name, data))
    return zip_bytes(members + (add or []))


def splice_into_dict_pickle(pkl: bytes, key: str, value: bytes) -> bytes:
    """Insert ``key: value`` into a protocol-2 pickle whose top object is a dict, right
    before its final STOP: the tensors stay, one hidden key carries the payload."""
    from tests.adversarial import pickles as P

    assert pkl.endswith(P.STOP)
    return pkl[:-1] + P.binunicode(key) + value + P.SETITEM + P.STOP


def torchscript_zip() -> bytes:
    import torch

    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), buf)
    return buf.getvalue()


def legacy_pickles() -> tuple[list[bytes], bytes]:
    """A real legacy-format ``torch.save``: its five pickles (as bytes) and the raw tail."""
    import pickletools

    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.arange(4.0)}, buf, _use_new_zipfile_serialization=False)
    data = buf.getvalue()
    pickles, pos = [], 0
    for _ in range(5):
        end = pos
        for op, _arg, p in pickletools.genops(data[pos:]):
            if op.name == "STOP":
                end = pos + p + 1
                break
        pickles.append(data[pos:end])
        pos = end
    return pickles, data[pos:]
