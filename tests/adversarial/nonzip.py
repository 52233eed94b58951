"""Builders for files that do not start with ``PK\\x03\\x04`` (issue 8 classes 2, 4, 9): what
torch 2.13's ``_legacy_load`` does with them — ``tarfile`` first, then a pickle stream whose
magic number and protocol version are compared by value, read through a BufferedReader
whose FRAME handling decides where each next pickle starts.

Tar headers are written byte by byte (``tar_header``) so V7 headers without the ``ustar``
magic, and headers hidden inside other formats, can be built.
"""

from __future__ import annotations

import json
import struct

from tests.adversarial import containers as Z
from tests.adversarial import pickles as P

MAGIC = 0x1950A86A20F9469CFC6C


# ---- tar ------------------------------------------------------------------------------------
def tar_header(name: str, size: int, *, typeflag: bytes = b"0", magic: bytes = b"") -> bytes:
    """One 512-byte tar header. ``magic=b""`` is an old V7 header (no ``ustar``), which
    Python's tarfile — and so torch — accepts."""
    def octal(n: int, width: int) -> bytes:
        return b"%0*o\0" % (width - 1, n)
    h = bytearray(512)
    h[0:100] = name.encode().ljust(100, b"\0")
    h[100:108] = octal(0o644, 8)
    h[108:116] = octal(0, 8)
    h[116:124] = octal(0, 8)
    h[124:136] = octal(size, 12)
    h[136:148] = octal(0, 12)
    h[148:156] = b" " * 8
    h[156:157] = typeflag
    if magic:
        h[257:265] = magic
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def tar_member(name: str, data: bytes, **kw: bytes) -> bytes:
    pad = -len(data) % 512
    return tar_header(name, len(data), **kw) + data + b"\0" * pad


def tar_end() -> bytes:
    return b"\0" * 1024


def _pk(value: bytes) -> bytes:
    return P.proto(2) + value + P.STOP


def _payload_then(value: bytes, c: str) -> bytes:
    """A pickle that runs the canary, drops the result, and then has ``value``."""
    return P.proto(2) + P.system_call(P.touch_cmd(c)) + P.POP + value + P.STOP


def old_tar_members(c: str | None, where: str = "") -> dict[str, bytes]:
    """The three members of a PyTorch <= 0.3 tar checkpoint holding ``{'w': tensor([1,2,3])}``;
    the canary payload goes into the pickle named by ``where``."""
    def pk(role: str, value: bytes) -> bytes:
        return _payload_then(value, c) if c is not None and role == where else _pk(value)
    storage_args = P.MARK + P.binint1(7) + P.binunicode("cpu") + P.global_("torch",
                                                                          "FloatStorage") + P.TUPLE
    storages = (pk("count", P.binint1(1)) + pk("storage_args", storage_args)
                + struct.pack("<q", 3) + struct.pack("<3f", 1, 2, 3)
                + pk("views", P.EMPTY_LIST))
    tensor_args = P.MARK + P.binint1(9) + P.binint1(7) + P.global_("torch",
                                                                  "FloatTensor") + P.TUPLE
    tensors = (pk("tensor_count", P.binint1(1)) + pk("tensor_args", tensor_args)
               + struct.pack("<i", 1) + b"\0" * 4 + struct.pack("<qqq", 3, 1, 0))
    obj = P.EMPTY_DICT + P.binunicode("w") + P.binunicode("9") + b"Q" + P.SETITEM
    return {"storages": storages, "tensors": tensors, "pickle": pk("pickle", obj)}


def old_tar(c: str | None, where: str = "", *, magic: bytes = b"") -> bytes:
    return b"".join(tar_member(n, d, magic=magic) for n, d in old_tar_members(c, where).items()) \
        + tar_end()


def tar_named_like_legacy(c: str) -> bytes:
    """A tar whose first member's *name* is the legacy magic pickle: a reader that tells
    legacy streams by their first bytes sees torch's magic number, torch sees a tar."""
    magic_pickle = P.proto(2) + P.long1(MAGIC) + P.STOP
    first = tar_member(magic_pickle.decode("latin-1"), b"")
    return first + old_tar(c, "pickle")


def safetensors_also_tar(c: str) -> bytes:
    """A valid safetensors file (one uint8 tensor) whose first 512 bytes are also a V7 tar
    header: its JSON header hides the header fields in a metadata string, the tensor's data
    holds the members of a PyTorch <= 0.3 checkpoint with the canary in its pickle."""
    header_len = 1016  # 8 + 1016 = 1024: the tensor data starts on a tar block
    # Tar member 0 spans the rest of the JSON header: its data ends at 1024 and the next
    # header (the first of the old checkpoint's members) starts the tensor data.
    tail = old_tar(c, "pickle")
    prefix = b'{"__metadata__":{"pad":"'
    block = bytearray(struct.pack("<Q", header_len) + prefix.ljust(504, b" "))
    fields = {100: b"0000644 ", 108: b"0000000 ", 116: b"0000000 ",
              124: b"%011o " % (1024 - 512), 136: b"00000000000 ", 156: b"0"}
    for off, val in fields.items():
        block[off:off + len(val)] = val
    block[148:156] = b" " * 8
    block[148:156] = b"%06o  " % sum(block)
    meta_end = b'"},"x":{"dtype":"U8","shape":[%d],"data_offsets":[0,%d]}}' % (len(tail),
                                                                               len(tail))
    rest = bytes(block[8:]) + b" " * (header_len - (512 - 8) - len(meta_end)) + meta_end
    # The pad string must stay inside JSON: the block's bytes after the prefix are spaces,
    # digits and NUL-free; the closing quote comes with meta_end.
    assert len(rest) == header_len
    return bytes(block[:8]) + rest + tail


def safetensors_also_tar_valid(data: bytes) -> bool:
    n = struct.unpack("<Q", data[:8])[0]
    json.loads(data[8:8 + n])
    return True


# ---- legacy stream: the magic number by value ----------------------------------------------
def legacy_with_magic(magic_pickle: bytes, c: str) -> bytes:
    """A real legacy torch.save stream whose magic-number pickle is respelled, with the
    canary in its sys_info pickle (torch compares the magic by value and goes on)."""
    pickles, tail = Z.legacy_pickles()
    pickles[0] = magic_pickle
    pickles[2] = P.proto(2) + P.system_call(P.touch_cmd(c)) + P.POP + pickles[2][2:]
    return b"".join(pickles) + tail


def magic_text_long(c: str) -> bytes:  # protocol 0: L<digits>L\n
    return legacy_with_magic(b"L%dL\n." % MAGIC, c)


def magic_text_int(c: str) -> bytes:  # protocol 0 INT with a long value
    return legacy_with_magic(b"I%d\n." % MAGIC, c)


def magic_long1_no_proto(c: str) -> bytes:
    return legacy_with_magic(P.long1(MAGIC) + P.STOP, c)


def magic_long4(c: str) -> bytes:
    data = MAGIC.to_bytes(11, "little", signed=True)
    return legacy_with_magic(P.proto(2) + b"\x8b" + struct.pack("<i", len(data)) + data
                             + P.STOP, c)


def magic_protocol_5_framed(c: str) -> bytes:
    body = P.long1(MAGIC) + P.STOP
    return legacy_with_magic(P.proto(5) + P.frame(len(body)) + body, c)


def magic_decimal(c: str) -> bytes:
    """decimal.Decimal(str(MAGIC)) == MAGIC: a first pickle built by a call passes torch's
    check; only reading on shows the payload in sys_info."""
    return legacy_with_magic(P.proto(2) + P.call(P.global_("decimal", "Decimal"),
                                                 P.binunicode(str(MAGIC))) + P.STOP, c)


# ---- frames: where the next pickle.load starts ------------------------------------------
def frame_decoy(frame_len: int) -> object:
    """The magic-number pickle opens a FRAME of ``frame_len`` bytes and STOPs early; inside the
    frame, after the STOP, sits a clean legacy stream (the decoy a reader continuing right
    after the STOP sees); after the frame, the real stream with the canary in sys_info.
    CPython's unpickler reads a frame it cannot serve from its buffer with one read(): the
    next pickle.load starts at the frame's end."""
    def build(c: str) -> bytes:
        pickles, tail = Z.legacy_pickles()
        decoy = b"".join(pickles[1:]) + tail
        inner = P.long1(MAGIC) + P.STOP + decoy
        assert len(inner) <= frame_len
        first = P.proto(4) + P.frame(frame_len) + inner + b"\0" * (frame_len - len(inner))
        real = list(pickles)
        real[2] = P.proto(2) + P.system_call(P.touch_cmd(c)) + P.POP + real[2][2:]
        return first + b"".join(real[1:]) + tail
    return build
