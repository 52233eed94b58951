"""A tiny pickle assembler: every adversarial case is written opcode by opcode.

Nothing here calls :mod:`pickle` to produce bytes — the point is to emit exactly the opcode
sequences scanners have been fooled by (memo games, non-unicode strings, extension codes …).
Each helper returns ``bytes``; concatenate them.
"""

from __future__ import annotations

import struct


def proto(n: int) -> bytes:
    return b"\x80" + bytes([n])


def frame(length: int) -> bytes:
    return b"\x95" + struct.pack("<Q", length)


# ---- strings ------------------------------------------------------------------------------
def unicode_text(s: str) -> bytes:  # UNICODE (protocol 0, raw-unicode-escape, newline ended)
    return b"V" + s.encode("raw_unicode_escape") + b"\n"


def string_text(s: str) -> bytes:  # STRING (protocol 0, quoted repr)
    return b"S" + repr(s).encode("ascii") + b"\n"


def binstring(s: str) -> bytes:  # BINSTRING: decoded as str by Python 3's unpickler
    data = s.encode("latin1")
    return b"T" + struct.pack("<i", len(data)) + data


def short_binstring(s: str) -> bytes:  # SHORT_BINSTRING
    data = s.encode("latin1")
    return b"U" + bytes([len(data)]) + data


def short_binunicode(s: str) -> bytes:
    data = s.encode("utf-8")
    return b"\x8c" + bytes([len(data)]) + data


def binunicode(s: str) -> bytes:
    data = s.encode("utf-8")
    return b"X" + struct.pack("<I", len(data)) + data


def binunicode8(s: str) -> bytes:
    data = s.encode("utf-8")
    return b"\x8d" + struct.pack("<Q", len(data)) + data


def binbytes(b: bytes) -> bytes:
    return b"B" + struct.pack("<I", len(b)) + b


def short_binbytes(b: bytes) -> bytes:
    return b"C" + bytes([len(b)]) + b


def bytearray8(b: bytes) -> bytes:
    return b"\x96" + struct.pack("<Q", len(b)) + b


# ---- globals and calls --------------------------------------------------------------------
def global_(module: str, name: str) -> bytes:  # GLOBAL (text lines)
    return b"c" + module.encode("utf-8") + b"\n" + name.encode("utf-8") + b"\n"


def inst(module: str, name: str) -> bytes:  # INST: MARK args INST → module.name(*args)
    return b"i" + module.encode("utf-8") + b"\n" + name.encode("utf-8") + b"\n"


STACK_GLOBAL = b"\x93"
REDUCE = b"R"
BUILD = b"b"
NEWOBJ = b"\x81"
NEWOBJ_EX = b"\x92"
OBJ = b"o"
MARK = b"("
TUPLE = b"t"
TUPLE1 = b"\x85"
TUPLE2 = b"\x86"
TUPLE3 = b"\x87"
EMPTY_TUPLE = b")"
EMPTY_DICT = b"}"
EMPTY_LIST = b"]"
DICT = b"d"
SETITEM = b"s"
SETITEMS = b"u"
APPEND = b"a"
POP = b"0"
DUP = b"2"
NONE = b"N"
STOP = b"."
MEMOIZE = b"\x94"
BINPERSID = b"Q"
NEWTRUE = b"\x88"


def binint1(n: int) -> bytes:
    return b"K" + bytes([n])


def binint(n: int) -> bytes:
    return b"J" + struct.pack("<i", n)


# ---- memo ---------------------------------------------------------------------------------
def put(i: int) -> bytes:
    return b"p" + str(i).encode() + b"\n"


def binput(i: int) -> bytes:
    return b"q" + bytes([i])


def long_binput(i: int) -> bytes:
    return b"r" + struct.pack("<I", i)


def get(i: int) -> bytes:
    return b"g" + str(i).encode() + b"\n"


def binget(i: int) -> bytes:
    return b"h" + bytes([i])


def long_binget(i: int) -> bytes:
    return b"j" + struct.pack("<I", i)


# ---- extension registry -------------------------------------------------------------------
def ext1(code: int) -> bytes:
    return b"\x82" + bytes([code])


def ext2(code: int) -> bytes:
    return b"\x83" + struct.pack("<H", code)


def ext4(code: int) -> bytes:
    return b"\x84" + struct.pack("<i", code)


# ---- building blocks ----------------------------------------------------------------------
def call(func: bytes, *args: bytes) -> bytes:
    """``func(*args)`` with MARK/TUPLE/REDUCE (works in every protocol)."""
    return func + MARK + b"".join(args) + TUPLE + REDUCE


def system_call(cmd: str, *, module: str = "posix") -> bytes:
    """``posix.system(cmd)`` — what ``pickle.dumps`` writes for ``os.system`` on Linux."""
    return call(global_(module, "system"), binunicode(cmd))


def wrap_dict(value: bytes, key: str = "model", protocol: int = 2) -> bytes:
    """A whole pickle: ``{key: value}`` (looks like a checkpoint dict)."""
    return proto(protocol) + EMPTY_DICT + binunicode(key) + value + SETITEM + STOP


def touch_cmd(canary: str) -> str:
    return f"touch {canary}"


def open_code(canary: str) -> str:
    """Python source whose execution creates the canary file."""
    return f"open({canary!r}, 'w').close()"


def long1(n: int) -> bytes:
    """LONG1: a little-endian two's-complement integer of up to 255 bytes."""
    data = n.to_bytes((n.bit_length() + 8) // 8 or 1, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


def persid_storage(storage_type: str, key: str, numel: int, location: str = "cpu") -> bytes:
    """torch's storage persistent id ``('storage', <type>, key, location, numel)`` + BINPERSID."""
    return (MARK + binunicode("storage") + global_("torch", storage_type) + binunicode(key)
            + binunicode(location) + long1(numel) + TUPLE + BINPERSID)


def rebuild_tensor(storage: bytes, shape: tuple[int, ...], stride: tuple[int, ...],
                   offset: int = 0) -> bytes:
    """``torch._utils._rebuild_tensor_v2(storage, offset, shape, stride, False, OrderedDict())``"""
    def tup(xs: tuple[int, ...]) -> bytes:
        return MARK + b"".join(long1(x) for x in xs) + TUPLE
    return call(global_("torch._utils", "_rebuild_tensor_v2"), storage, long1(offset),
                tup(shape), tup(stride), b"\x89",
                call(global_("collections", "OrderedDict")))
