"""Pickle argument readers: the bytes that follow an opcode → an int, float, str or bytes.

Each reader takes the pickle ``data`` and the position just past the opcode and returns
``(value, position past the argument)``. Running past the end raises :class:`PickleTruncated`
(a reader holding only a prefix of the file may fetch more and retry), a length over
``Limits.max_string`` raises :class:`LimitExceeded` before anything is copied, a malformed
argument raises :class:`Malformed` (the interpreter adds the opcode and position).

The interpreter inlines the readers of the hot opcodes (``BININT*``, ``BINUNICODE``, …) and
calls these for the rest: protocol 0/1 text forms, bytes, long integers.
"""

from __future__ import annotations

import codecs
import struct
from collections.abc import Callable

from ckpt_guard.read.checkpoint import LimitExceeded, UnreadableError
from ckpt_guard.read.pickle_opcodes import (
    BINBYTES,
    BINBYTES8,
    BINSTRING,
    BINUNICODE8,
    BYTEARRAY8,
    FLOAT,
    INT,
    LONG,
    LONG1,
    LONG4,
    OPCODE_NAMES,
    SHORT_BINBYTES,
    SHORT_BINSTRING,
    STRING,
    UNICODE,
)

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

MAX_LONG_BYTES = 1 << 16  # LONG1/LONG4 payload; a 512-kbit integer is no checkpoint's need


class PickleTruncated(UnreadableError):
    """The pickle ran past the end of the data (a reader may fetch more bytes and retry)."""


class Malformed(Exception):
    """Internal: a malformed-pickle condition, turned into UnreadableError with position."""


def read_line(data: bytes, pos: int, max_string: int, where: str) -> tuple[bytes, int]:
    """A protocol 0 text argument: the bytes up to the next newline (not included)."""
    end = data.find(b"\n", pos, pos + max_string + 1)
    if end < 0:
        if len(data) - pos > max_string:
            raise LimitExceeded(f"{where}: text argument longer than {max_string} bytes")
        raise PickleTruncated(f"{where}: truncated (no end of line at byte {pos})")
    return data[pos:end], end + 1


def read_bytes(data: bytes, pos: int, length: int, max_string: int,
               where: str) -> tuple[bytes, int]:
    """``length`` bytes at ``pos``, refused before copying when over the limit."""
    if length < 0:
        raise Malformed("negative length")
    if length > max_string:
        raise LimitExceeded(f"{where}: value of {length} bytes exceeds the limit of "
                            f"{max_string} bytes")
    end = pos + length
    if end > len(data):
        raise PickleTruncated(f"{where}: truncated (value of {length} bytes at byte {pos}, "
                              f"{len(data) - pos} left)")
    return data[pos:end], end


def decode_string(raw: bytes) -> str:
    """Non-unicode STRING/BINSTRING values, decoded as torch.load does (``encoding="utf-8"``)."""
    return raw.decode("utf-8")


def parse_int(line: bytes) -> int:
    text = line.strip()
    try:
        return int(text, 0)
    except ValueError:
        return int(text)  # "007": base 0 refuses leading zeros, C's strtol does not


def _utf8(raw: bytes) -> str:
    return str(raw, "utf-8", "surrogatepass")


def _long(raw: bytes) -> int:
    return int.from_bytes(raw, "little", signed=True)


# opcode -> (width of the length prefix, its unpacker, what the payload becomes)
_COUNTED: dict[int, tuple[int, Callable[[bytes, int], tuple[int]], Callable[[bytes], Any]]] = {
    SHORT_BINBYTES: (1, struct.Struct("<B").unpack_from, bytes),
    BINBYTES: (4, struct.Struct("<I").unpack_from, bytes),
    BINBYTES8: (8, struct.Struct("<Q").unpack_from, bytes),
    BYTEARRAY8: (8, struct.Struct("<Q").unpack_from, bytearray),
    BINUNICODE8: (8, struct.Struct("<Q").unpack_from, _utf8),
    SHORT_BINSTRING: (1, struct.Struct("<B").unpack_from, decode_string),
    BINSTRING: (4, struct.Struct("<i").unpack_from, decode_string),
    LONG1: (1, struct.Struct("<B").unpack_from, _long),
    LONG4: (4, struct.Struct("<i").unpack_from, _long),
}
COUNTED_OPCODES = frozenset(_COUNTED)


def read_counted(op: int, data: bytes, pos: int, max_string: int,
                 where: str) -> tuple[Any, int]:
    """The value of a length-prefixed opcode (one of :data:`COUNTED_OPCODES`)."""
    width, unpack, convert = _COUNTED[op]
    if pos + width > len(data):
        raise PickleTruncated(f"{where}: truncated at byte {pos}")
    length = unpack(data, pos)[0]
    pos += width
    if op == LONG4:
        if length < 0:
            raise Malformed("LONG4 with a negative byte count")
        if length > MAX_LONG_BYTES:
            raise LimitExceeded(f"{where}: integer of {length} bytes exceeds the limit of "
                                f"{MAX_LONG_BYTES} bytes")
    raw, pos = read_bytes(data, pos, length, max_string, where)
    return convert(raw), pos


def _string(line: bytes) -> str:
    line = line.rstrip(b"\r")
    if len(line) < 2 or line[0] != line[-1] or line[0] not in b"\"'":
        raise Malformed("the STRING opcode argument must be quoted")
    return decode_string(codecs.escape_decode(line[1:-1])[0])


def _int_or_bool(line: bytes) -> int:
    if line == b"00":
        return False
    if line == b"01":
        return True
    return parse_int(line)


def _long_text(line: bytes) -> int:
    return parse_int(line[:-1] if line.endswith(b"L") else line)


# opcode -> how its newline-terminated argument becomes a value
_TEXT: dict[int, Callable[[bytes], Any]] = {
    STRING: _string,
    UNICODE: lambda line: str(line, "raw-unicode-escape"),
    INT: _int_or_bool,
    LONG: _long_text,
    FLOAT: float,
}
TEXT_OPCODES = frozenset(_TEXT)


def read_text(op: int, data: bytes, pos: int, max_string: int,
              where: str) -> tuple[Any, int]:
    """The value of a protocol 0 text opcode (one of :data:`TEXT_OPCODES`)."""
    line, pos = read_line(data, pos, max_string, where)
    return _TEXT[op](line), pos


def opname(op: int) -> str:
    return OPCODE_NAMES.get(op, f"opcode 0x{op:02x}") if op >= 0 else "start"
