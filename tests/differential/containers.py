"""Container-level mutations for the differential oracle: the bytes around the pickles.

tests/fuzz mutates pickles; here the zip central directory, local headers, ZIP64 records and
locators, duplicate names, tar headers (V7/ustar/GNU/PAX) and the legacy stream (magic number
spellings, frames) are mutated, where a reader and torch can disagree about WHICH bytes are a
pickle (issue 8 classes 2, 3, 4, 9). Every mutator is ``(rng, canary) -> bytes``, deterministic
in ``rng``, so a finding is reproduced from (mutator, seed). An ``evil`` pickle calls
``posix.system`` to touch ``canary`` — the oracle's shim never runs it, and the tests check
the canary is never created.
"""

from __future__ import annotations

import io
import random
import struct
import tarfile
import zlib
from collections.abc import Callable
from functools import cache

from tests.adversarial import pickles as P
from tests.adversarial.containers import Member, legacy_pickles, read_members, zip_bytes

_EOCD = struct.Struct("<IHHHHIIH")  # end of central directory, 22 bytes
_CEN = struct.Struct("<IHHHHHHIIIHHHHHII")  # central directory header, 46 bytes
_LOC = struct.Struct("<IHHHHHIIIHH")  # local header, 30 bytes
MAGIC = 0x1950A86A20F9469CFC6C


def evil(canary: str, protocol: int = 2) -> bytes:
    return P.wrap_dict(P.system_call(P.touch_cmd(canary)), protocol=protocol)


@cache
def base_zip() -> bytes:
    """A real ``torch.save`` of a small state dict, archive folder ``archive``."""
    import torch

    buf = io.BytesIO()
    torch.save({"w": torch.arange(6.0).reshape(2, 3), "b": torch.zeros(3)}, buf)
    return buf.getvalue()


def _members() -> list[tuple[str, bytes]]:
    return read_members(base_zip())


def _rename(name: str, rng: random.Random) -> str:
    """Spellings of a member name that a case-folding lookup may or may not match."""
    return rng.choice([name, name.upper(), name.replace("data", "DATA"),
                       name.replace("k", "\u212a"),  # KELVIN SIGN: str.lower() gives "k"
                       name.replace("a", "\u0430", 1),  # Cyrillic a: matches nothing
                       name + "\x00", "./" + name, name.replace("/", "\\")])


# ---- zip: names ------------------------------------------------------------------------------

def zip_duplicates(rng: random.Random, canary: str) -> bytes:
    """data.pkl twice (or three times), the evil copy anywhere, some names case-varied."""
    members = [Member(n, d) for n, d in _members()]
    idx = next(i for i, m in enumerate(members) if m.name.endswith("/data.pkl"))
    for _ in range(rng.randint(1, 2)):
        name = _rename(members[idx].name, rng)
        members.insert(rng.randint(0, len(members)), Member(name, evil(canary)))
    if rng.random() < 0.3:
        rng.shuffle(members)
    return zip_bytes(members)


# ---- zip: central directory and end records ----------------------------------------------------

def _eocd_at(data: bytes) -> int:
    return data.rindex(b"PK\x05\x06")


def zip_eocd_fields(rng: random.Random, canary: str) -> bytes:
    """Entry counts, directory size/offset, comment length of the end record."""
    members = [Member(n, d) for n, d in _members()] + [Member("archive/x.pkl", evil(canary))]
    data = bytearray(zip_bytes(members))
    at = _eocd_at(data)
    f = list(_EOCD.unpack_from(data, at))
    n = len(members)
    field = rng.choice(["count", "total", "both", "size", "offset", "comment"])
    if field in ("count", "both"):
        f[3] = rng.choice([0, 1, n - 1, n + 1, 0xFFFF])
    if field in ("total", "both"):
        f[4] = rng.choice([0, 1, n - 1, n + 1, 0xFFFF])
    if field == "size":
        f[5] = max(0, f[5] + rng.choice([-46, -1, 1, 46, 1000]))
    if field == "offset":
        f[6] = max(0, f[6] + rng.choice([-1, 1, -30, 64]))
    if field == "comment":
        comment = rng.choice([b"", b"x" * 10, bytes(_EOCD.pack(*f)) + b"junk"])
        f[7] = len(comment)
        data = data[:at] + _EOCD.pack(*f) + comment
        return bytes(data)
    _EOCD.pack_into(data, at, *f)
    return bytes(data)


def zip_second_directory(rng: random.Random, canary: str) -> bytes:
    """Two central directories in one file: an evil archive's entries appended after the
    first end record (or the first archive appended after an evil one)."""
    good = zip_bytes([Member(n, d) for n, d in _members()])
    bad_members = [Member(n, evil(canary) if n.endswith("/data.pkl") else d)
                   for n, d in _members()]
    bad = zip_bytes(bad_members)
    how = rng.choice(["good+bad", "bad+good", "good+bad-shifted", "bad-cd-in-comment"])
    if how == "good+bad":
        return good + bad
    if how == "bad+good":
        return bad + good
    if how == "good+bad-shifted":
        # the second archive's offsets rewritten to be absolute: a valid second directory
        return good + _shift(bad, len(good))
    # the evil directory + end record hidden in the first end record's comment
    at = _eocd_at(good)
    tail = _shift(bad, at + 22)
    return good[:at] + _EOCD.pack(*(_EOCD.unpack_from(good, at)[:7] + (len(tail),))) + tail


def _shift(archive: bytes, by: int) -> bytes:
    """``archive`` with every local header offset and the directory offset moved by ``by``
    (for placing it after other bytes)."""
    data = bytearray(archive)
    at = _eocd_at(data)
    f = list(_EOCD.unpack_from(data, at))
    pos = f[6]
    for _ in range(f[4]):
        c = list(_CEN.unpack_from(data, pos))
        c[16] += by
        _CEN.pack_into(data, pos, *c)
        pos += 46 + c[10] + c[11] + c[12]
    f[6] += by
    _EOCD.pack_into(data, at, *f)
    return bytes(data)


def zip64_locator(rng: random.Random, canary: str) -> bytes:
    """A ZIP64 end record + locator before the classic end record, pointing at a second,
    evil central directory (miniz follows the locator; zipfile looks only right before it)."""
    good = zip_bytes([Member(n, d) for n, d in _members()])
    at = _eocd_at(good)
    eocd = list(_EOCD.unpack_from(good, at))
    bad = zip_bytes([Member(n, evil(canary) if n.endswith("/data.pkl") else d)
                     for n, d in _members()])
    # Place the evil archive's entries + directory after the good directory.
    body = good[:at]
    shifted = _shift(bad, len(body))
    bat = _eocd_at(shifted)
    beocd = _EOCD.unpack_from(shifted, bat)
    body += shifted[:bat]
    where = rng.choice(["evil", "good"])
    cd_off, cd_size, n = ((beocd[6], beocd[5], beocd[4]) if where == "evil"
                          else (eocd[6], eocd[5], eocd[4]))
    def z64(n: int, cd_size: int, cd_off: int) -> bytes:
        return struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, n, n, cd_size, cd_off)

    decoy_at = None
    if rng.random() < 0.5:
        # Two ZIP64 end records: the locator points at the first (evil), the good one sits
        # right before the locator, where CPython's zipfile looks instead.
        decoy_at = len(body)
        body += z64(beocd[4], beocd[5], beocd[6])
        cd_off, cd_size, n = eocd[6], eocd[5], eocd[4]
    z64_at = len(body) + rng.choice([0, 0, 7])
    body += b"\0" * (z64_at - len(body))
    body += z64(n, cd_size, cd_off)
    loc_target = decoy_at if decoy_at is not None else rng.choice([z64_at, z64_at,
                                                                  z64_at + 1, 0])
    body += struct.pack("<IIQI", 0x07064B50, 0, loc_target, 1)
    mode = rng.choice(["ffff", "keep", "zero"])
    if mode == "ffff":
        eocd[3] = eocd[4] = 0xFFFF
        eocd[5] = eocd[6] = 0xFFFFFFFF
    elif mode == "zero":
        eocd[3] = eocd[4] = 0
    return body + _EOCD.pack(*eocd)


# ---- zip: local headers and directory entries ------------------------------------------------

def zip_local_headers(rng: random.Random, canary: str) -> bytes:
    """Local header fields of data.pkl: name/extra lengths (where its bytes start), method,
    sizes, flags; or its directory entry pointing at a ghost local entry."""
    members = [Member(n, d) for n, d in _members()]
    ghost = evil(canary)
    data = bytearray(zip_bytes(members))
    at = _eocd_at(data)
    f = _EOCD.unpack_from(data, at)
    pos = f[6]
    target = None
    for _ in range(f[4]):
        c = list(_CEN.unpack_from(data, pos))
        name = bytes(data[pos + 46:pos + 46 + c[10]])
        if name.endswith(b"/data.pkl"):
            target = (pos, c)
        pos += 46 + c[10] + c[11] + c[12]
    assert target is not None
    cpos, c = target
    lpos = c[16]
    loc = list(_LOC.unpack_from(data, lpos))
    what = rng.choice(["extra-holds-evil", "ghost-entry", "method", "sizes", "flags",
                       "local-name-len"])
    if what == "extra-holds-evil":
        # the local extra field grows to hold the evil pickle right where data now starts
        old_extra = loc[10]
        start = lpos + 30 + loc[9]
        new_extra = bytes(data[start:start + old_extra]) + ghost
        loc[10] = len(new_extra)
        out = bytes(data[:lpos]) + _LOC.pack(*loc) + bytes(data[lpos + 30:lpos + 30 + loc[9]]) \
            + new_extra + bytes(data[start + old_extra:])
        return _shift_after(out, lpos, len(ghost))
    if what == "ghost-entry":
        # a local entry only reachable through a rewritten directory offset
        ghost_local = _LOC.pack(0x04034B50, 20, 0, 0, 0, 0x21, zlib.crc32(ghost), len(ghost),
                                len(ghost), len(b"archive/data.pkl"), 0) + b"archive/data.pkl"
        body = bytes(data[:at])
        cd_off = f[6]
        new = body[:cd_off] + ghost_local + ghost + body[cd_off:]
        gpos = cd_off
        data2 = bytearray(new + _EOCD.pack(*f))
        at2 = _eocd_at(data2)
        f2 = list(_EOCD.unpack_from(data2, at2))
        f2[6] += len(ghost_local) + len(ghost)
        _EOCD.pack_into(data2, at2, *f2)
        c[16] = gpos
        c[8] = c[9] = len(ghost)
        c[7] = zlib.crc32(ghost)
        _CEN.pack_into(data2, cpos + len(ghost_local) + len(ghost), *c)
        return bytes(data2)
    if what == "method":
        m = rng.choice([0, 8, 1, 12, 99])
        if rng.random() < 0.5:
            loc[4] = m
        else:
            c[4] = m
    elif what == "sizes":
        delta = rng.choice([-1, 1, -len(ghost), 1000])
        which = rng.choice(["lc", "lu", "cc", "cu"])
        if which == "lc":
            loc[7] = max(0, loc[7] + delta)
        elif which == "lu":
            loc[8] = max(0, loc[8] + delta)
        elif which == "cc":
            c[8] = max(0, c[8] + delta)
        else:
            c[9] = max(0, c[9] + delta)
    elif what == "flags":
        bit = rng.choice([1, 8, 0x800, 0x40])
        if rng.random() < 0.5:
            loc[2] |= bit
        else:
            c[3] |= bit
    else:
        loc[9] = max(0, loc[9] + rng.choice([-1, 1, 8]))
    _LOC.pack_into(data, lpos, *loc)
    _CEN.pack_into(data, cpos, *c)
    return bytes(data)


def _shift_after(data: bytes, after: int, by: int) -> bytes:
    """Offsets (directory entries' local header offsets, end record's directory offset) that
    point past ``after`` moved by ``by`` (bytes were inserted there)."""
    buf = bytearray(data)
    at = _eocd_at(buf)
    f = list(_EOCD.unpack_from(buf, at))
    f[6] += by
    _EOCD.pack_into(buf, at, *f)
    pos = f[6]
    for _ in range(f[4]):
        c = list(_CEN.unpack_from(buf, pos))
        if c[16] > after:
            c[16] += by
        _CEN.pack_into(buf, pos, *c)
        pos += 46 + c[10] + c[11] + c[12]
    return bytes(buf)


def zip_prefix(rng: random.Random, canary: str) -> bytes:
    """Bytes before the archive, or an end-record-first file (torch needs PK\\x03\\x04 first)."""
    good = zip_bytes([Member(n, d) for n, d in _members()])
    how = rng.choice(["garbage", "evil-pickle", "ghost-local", "eocd-first"])
    if how == "garbage":
        return b"\0" * rng.randint(1, 64) + good
    if how == "evil-pickle":
        return evil(canary) + good
    if how == "ghost-local":
        g = evil(canary)
        return _LOC.pack(0x04034B50, 20, 0, 0, 0, 0, zlib.crc32(g), len(g), len(g), 16, 0) \
            + b"archive/data.pkl" + g + good
    at = _eocd_at(good)
    return good[at:at + 22] + good


def zip_directory_bytes(rng: random.Random, canary: str) -> bytes:
    """Random byte edits confined to the central directory and end record."""
    members = [Member(n, d) for n, d in _members()] + [Member("archive/y.pkl", evil(canary))]
    data = bytearray(zip_bytes(members))
    cd = _EOCD.unpack_from(data, _eocd_at(data))[6]
    for _ in range(rng.randint(1, 4)):
        i = rng.randrange(cd, len(data))
        data[i] = rng.choice([0, 0xFF, data[i] ^ (1 << rng.randrange(8)), rng.randrange(256)])
    return bytes(data)


# ---- tar (torch <= 0.3; torch's _legacy_load tries tarfile first) ----------------------------

def _tar_members(canary: str, rng: random.Random) -> dict[str, bytes]:
    benign = [P.proto(2) + b"K\x00." , P.proto(2) + b"]q\x00."]  # 0, []
    pickle_member = evil(canary) if rng.random() < 0.7 else P.proto(2) + b"}q\x00."
    storages = benign[0] + benign[1]  # no storages, no views
    tensors = benign[0]
    out = {"storages": storages, "tensors": tensors, "pickle": pickle_member}
    if rng.random() < 0.3:
        out["sys_info"] = P.proto(2) + b"}q\x00."
    return out


def tar_checkpoint(rng: random.Random, canary: str) -> bytes:
    """A torch <= 0.3 tar checkpoint in any tar dialect; headers then mutated: magic erased
    (V7), checksum forms, sizes in base-256, type flags, names."""
    members = _tar_members(canary, rng)
    fmt = rng.choice([tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt, encoding="latin-1") as tf:
        names = list(members)
        rng.shuffle(names)
        if rng.random() < 0.4:
            # A first member whose NAME is a harmless pickle: the file starts like one.
            decoy = rng.choice([P.proto(2) + b"}q\x00.", b"N.", b"(dp0\n.", b"\x80\x04N."])
            info = tarfile.TarInfo(decoy.decode("latin-1"))
            info.size = 0
            tf.addfile(info, io.BytesIO(b""))
        for name in names:
            info = tarfile.TarInfo(rng.choice([name, name, "./" + name]))
            info.size = len(members[name])
            tf.addfile(info, io.BytesIO(members[name]))
    data = bytearray(buf.getvalue())
    for _ in range(rng.randint(0, 2)):
        _mutate_tar_header(data, rng)
    if rng.random() < 0.2:  # a tar in front of a legacy stream or after junk
        data = bytearray(bytes(data) + legacy_stream(rng, canary))
    return bytes(data)


def _headers(data: bytearray) -> list[int]:
    out, pos = [], 0
    while pos + 512 <= len(data) and any(data[pos:pos + 512]):
        out.append(pos)
        field = bytes(data[pos + 124:pos + 136])
        try:
            size = (int.from_bytes(field[1:], "big") if field[:1] == b"\x80"
                    else int(field.strip(b"\0 ") or b"0", 8))
        except ValueError:
            break
        pos += 512 + (size + 511) // 512 * 512
    return out


def _fix_checksum(data: bytearray, pos: int, signed: bool = False) -> None:
    data[pos + 148:pos + 156] = b" " * 8
    block = data[pos:pos + 512]
    s = sum(struct.unpack("512b", block)) if signed else sum(block)
    data[pos + 148:pos + 156] = b"%06o\0 " % (s & 0o777777)


def _mutate_tar_header(data: bytearray, rng: random.Random) -> None:
    heads = _headers(data)
    if not heads:
        return
    pos = rng.choice(heads)
    what = rng.choice(["v7", "typeflag", "size256", "name", "checksum", "version"])
    if what == "v7":
        data[pos + 257:pos + 265] = b"\0" * 8  # no ustar magic: an old V7 header
    elif what == "typeflag":
        data[pos + 156] = rng.choice(b"0\x0017LK5gx")
    elif what == "size256":
        field = bytes(data[pos + 124:pos + 136])
        if field[:1] != b"\x80":
            size = int(field.strip(b"\0 ") or b"0", 8)
            data[pos + 124:pos + 136] = b"\x80" + size.to_bytes(11, "big")
    elif what == "name":
        name = bytes(data[pos:pos + 100]).rstrip(b"\0")
        new = rng.choice([name.upper(), name + b"/", b"x/" + name, name + b"\0junk"])[:100]
        data[pos:pos + 100] = new.ljust(100, b"\0")
    elif what == "version":
        data[pos + 263:pos + 265] = rng.choice([b"00", b"  ", b"\0\0", b" \0"])
    _fix_checksum(data, pos, signed=what == "checksum")


# ---- legacy stream: magic spellings, frames --------------------------------------------------

def _int_pickle(value: int, rng: random.Random) -> bytes:
    """``value`` as a whole pickle, spelled one of the ways CPython accepts."""
    how = rng.choice(["long1", "long1-proto", "long4", "text-L", "text-I", "long1-frame",
                      "memo"])
    raw = value.to_bytes((value.bit_length() + 8) // 8 or 1, "little", signed=True)
    if how == "long1":
        return b"\x8a" + bytes([len(raw)]) + raw + b"."
    if how == "long1-proto":
        return P.proto(rng.choice([2, 3, 4, 5])) + b"\x8a" + bytes([len(raw)]) + raw + b"."
    if how == "long4":
        return P.proto(2) + b"\x8b" + struct.pack("<i", len(raw)) + raw + b"."
    if how == "text-L":
        return b"L%dL\n." % value
    if how == "text-I":
        return b"I%d\n." % value
    if how == "memo":
        return P.proto(2) + b"\x8a" + bytes([len(raw)]) + raw + b"q\x000h\x00."
    body = b"\x8a" + bytes([len(raw)]) + raw + b"."
    return P.proto(4) + P.frame(len(body)) + body


def legacy_stream(rng: random.Random, canary: str) -> bytes:
    """torch's five-pickle legacy stream with the magic number and protocol version spelled
    differently, pickles framed (proto 4 FRAMEs, some reaching past their STOP with a decoy),
    and the payload in one of the pickles."""
    pickles, tail = legacy_pickles()
    pickles = list(pickles)
    if rng.random() < 0.8:
        pickles[0] = _int_pickle(MAGIC, rng)
    if rng.random() < 0.5:
        pickles[1] = _int_pickle(1001, rng)
    where = rng.randrange(5)
    if rng.random() < 0.7:
        body = pickles[where]
        proto_len = 2 if body[:1] == b"\x80" else 0
        pickles[where] = body[:proto_len] + P.system_call(P.touch_cmd(canary)) + P.POP \
            + body[proto_len:]
    if rng.random() < 0.5:
        i = rng.randrange(5)
        pickles[i] = _framed(pickles[i], rng, canary)
    return b"".join(pickles) + tail


def _framed(pkl: bytes, rng: random.Random, canary: str) -> bytes:
    """``pkl`` re-emitted in protocol 4 frames; ``decoy``: a frame that holds a harmless
    pickle and reaches past its STOP over the real one (CPython reads whole frames)."""
    body = pkl[2:] if pkl[:1] == b"\x80" else pkl
    how = rng.choice(["one", "split", "decoy"])
    if how == "one":
        return P.proto(4) + P.frame(len(body)) + body
    if how == "split":
        k = rng.randint(1, max(1, len(body) - 1))
        return P.proto(4) + P.frame(k) + body[:k] + P.frame(len(body) - k) + body[k:]
    decoy = b"N."  # None: what a reader that stops at STOP sees
    hidden = evil(canary)
    return P.proto(4) + P.frame(len(decoy) + len(hidden)) + decoy + hidden + pkl


MUTATORS: dict[str, Callable[[random.Random, str], bytes]] = {
    "zip-duplicates": zip_duplicates,
    "zip-eocd-fields": zip_eocd_fields,
    "zip-second-directory": zip_second_directory,
    "zip64-locator": zip64_locator,
    "zip-local-headers": zip_local_headers,
    "zip-prefix": zip_prefix,
    "zip-directory-bytes": zip_directory_bytes,
    "tar": tar_checkpoint,
    "legacy-stream": legacy_stream,
}
# Issue 8 class each mutator probes (for reports and xfail reasons).
CLASS_OF = {"zip-duplicates": 3, "zip-eocd-fields": 3, "zip-second-directory": 3,
            "zip64-locator": 3, "zip-local-headers": 3, "zip-prefix": 3,
            "zip-directory-bytes": 3, "tar": 2, "legacy-stream": 4}
EXTENSIONS = (".pt", ".pt", ".bin", ".pth", ".ckpt", ".safetensors")


def make(mutator: str, seed: int, canary: str) -> tuple[bytes, str]:
    """(file bytes, file name suffix) of one mutation."""
    rng = random.Random(f"{mutator}:{seed}")
    data = MUTATORS[mutator](rng, canary)
    return data, rng.choice(EXTENSIONS)


def safetensors_tar(tar_body: bytes) -> bytes:
    """A valid safetensors file that is also a V7 tar (issue 8 class 2): its header block
    (length prefix + the first 504 bytes of the JSON header) parses as a tar header whose one
    member spans the rest of the JSON; the tar's own members (``tar_body``, whole 512-byte
    blocks) are the data of a uint8 tensor. torch does not route by content to safetensors:
    named ``.bin``/``.pt`` it goes to ``_legacy_load``, which opens it with tarfile."""
    n = 1024 - 8  # the JSON header ends on a block boundary
    head = bytearray(b"a" * 512)
    head[0:8] = struct.pack("<Q", n)
    lead = b'{"__metadata__":{"pad":"'
    head[8:8 + len(lead)] = lead

    def put(off: int, text: bytes) -> None:
        head[off:off + len(text)] = text

    put(100, b"0000644 ")  # mode
    put(108, b"0000000 ")  # uid
    put(116, b"0000000 ")  # gid
    put(124, b"00000001000 ")  # size: 512, the rest of the JSON header
    put(136, b"00000000000 ")  # mtime
    put(156, b"0")  # regular file
    put(257, b"notustar")  # magic: anything else is an old V7 header
    put(329, b"0000000 ")  # devmajor
    put(337, b"0000000 ")  # devminor
    put(148, b" " * 8)
    put(148, b"%06o  " % sum(head))
    length = len(tar_body)
    rest = (b'"},"x":{"dtype":"U8","shape":[%d],"data_offsets":[0,%d]}}' % (length, length))
    header = bytes(head[8:]) + rest
    assert len(header) <= n
    return bytes(head[:8]) + header.ljust(n, b" ") + tar_body


def tar_blocks(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def tar_polyglot(rng: random.Random, canary: str) -> bytes:
    """A safetensors file that is also a tar checkpoint (see :func:`safetensors_tar`)."""
    return safetensors_tar(tar_blocks(_tar_members(canary, rng)))


MUTATORS["tar-safetensors-polyglot"] = tar_polyglot
CLASS_OF["tar-safetensors-polyglot"] = 2


def legacy_tar(tar_body: bytes, data: bytes = b"\x80\x02}.", keys: bytes = b"\x80\x02].") -> bytes:
    """A legacy stream that is also a V7 tar (issue 8 class 2): magic number and protocol
    version pickles as torch writes them, then a ``sys_info`` pickle (torch never looks at
    its value) holding bytes that complete the first 512 bytes into a V7 tar header of an
    empty member and carry the tar's members (``tar_body``, whole blocks) — then a harmless
    object pickle and storage key list. A reader of the legacy stream sees a clean file;
    torch's ``_legacy_load`` tries tarfile first and unpickles the tar's members."""
    magic = b"\x80\x02\x8a\x0a" + MAGIC.to_bytes(10, "little") + b"."
    proto = b"\x80\x02M\xe9\x03."
    lead = magic + proto + b"\x80\x02B"  # BINBYTES: 4-byte length, then the bytes
    payload_start = len(lead) + 4
    head = bytearray(b"a" * 512)
    head[:len(lead)] = lead
    payload = (512 - payload_start) + len(tar_body)
    head[len(lead):payload_start] = struct.pack("<I", payload)

    def put(off: int, text: bytes) -> None:
        head[off:off + len(text)] = text

    for off, text in ((100, b"0000644\0"), (108, b"0000000\0"), (116, b"0000000\0"),
                      (124, b"00000000000\0"), (136, b"00000000000\0"), (156, b"0"),
                      (157, b"\0" * 100), (257, b"\0" * 8), (265, b"\0" * 247)):
        put(off, text)
    put(148, b" " * 8)
    put(148, b"%06o\0 " % sum(head))
    return bytes(head) + tar_body + b"." + data + keys


def legacy_tar_polyglot(rng: random.Random, canary: str) -> bytes:
    return legacy_tar(tar_blocks(_tar_members(canary, rng)))


MUTATORS["legacy-tar-polyglot"] = legacy_tar_polyglot
CLASS_OF["legacy-tar-polyglot"] = 2
