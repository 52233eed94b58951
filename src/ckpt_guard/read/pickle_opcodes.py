"""Pickle opcode bytes, named as in ``Lib/pickletools.py`` (protocols 0–5)."""

from __future__ import annotations

INT = 0x49  # 'I', protocol 0
BININT = 0x4A  # 'J', protocol 1
BININT1 = 0x4B  # 'K', protocol 1
BININT2 = 0x4D  # 'M', protocol 1
LONG = 0x4C  # 'L', protocol 0
LONG1 = 0x8A  # '\x8a', protocol 2
LONG4 = 0x8B  # '\x8b', protocol 2
STRING = 0x53  # 'S', protocol 0
BINSTRING = 0x54  # 'T', protocol 1
SHORT_BINSTRING = 0x55  # 'U', protocol 1
BINBYTES = 0x42  # 'B', protocol 3
SHORT_BINBYTES = 0x43  # 'C', protocol 3
BINBYTES8 = 0x8E  # '\x8e', protocol 4
BYTEARRAY8 = 0x96  # '\x96', protocol 5
NEXT_BUFFER = 0x97  # '\x97', protocol 5
READONLY_BUFFER = 0x98  # '\x98', protocol 5
NONE = 0x4E  # 'N', protocol 0
NEWTRUE = 0x88  # '\x88', protocol 2
NEWFALSE = 0x89  # '\x89', protocol 2
UNICODE = 0x56  # 'V', protocol 0
SHORT_BINUNICODE = 0x8C  # '\x8c', protocol 4
BINUNICODE = 0x58  # 'X', protocol 1
BINUNICODE8 = 0x8D  # '\x8d', protocol 4
FLOAT = 0x46  # 'F', protocol 0
BINFLOAT = 0x47  # 'G', protocol 1
EMPTY_LIST = 0x5D  # ']', protocol 1
APPEND = 0x61  # 'a', protocol 0
APPENDS = 0x65  # 'e', protocol 1
LIST = 0x6C  # 'l', protocol 0
EMPTY_TUPLE = 0x29  # ')', protocol 1
TUPLE = 0x74  # 't', protocol 0
TUPLE1 = 0x85  # '\x85', protocol 2
TUPLE2 = 0x86  # '\x86', protocol 2
TUPLE3 = 0x87  # '\x87', protocol 2
EMPTY_DICT = 0x7D  # '}', protocol 1
DICT = 0x64  # 'd', protocol 0
SETITEM = 0x73  # 's', protocol 0
SETITEMS = 0x75  # 'u', protocol 1
EMPTY_SET = 0x8F  # '\x8f', protocol 4
ADDITEMS = 0x90  # '\x90', protocol 4
FROZENSET = 0x91  # '\x91', protocol 4
POP = 0x30  # '0', protocol 0
DUP = 0x32  # '2', protocol 0
MARK = 0x28  # '(', protocol 0
POP_MARK = 0x31  # '1', protocol 1
GET = 0x67  # 'g', protocol 0
BINGET = 0x68  # 'h', protocol 1
LONG_BINGET = 0x6A  # 'j', protocol 1
PUT = 0x70  # 'p', protocol 0
BINPUT = 0x71  # 'q', protocol 1
LONG_BINPUT = 0x72  # 'r', protocol 1
MEMOIZE = 0x94  # '\x94', protocol 4
EXT1 = 0x82  # '\x82', protocol 2
EXT2 = 0x83  # '\x83', protocol 2
EXT4 = 0x84  # '\x84', protocol 2
GLOBAL = 0x63  # 'c', protocol 0
STACK_GLOBAL = 0x93  # '\x93', protocol 4
REDUCE = 0x52  # 'R', protocol 0
BUILD = 0x62  # 'b', protocol 0
INST = 0x69  # 'i', protocol 0
OBJ = 0x6F  # 'o', protocol 1
NEWOBJ = 0x81  # '\x81', protocol 2
NEWOBJ_EX = 0x92  # '\x92', protocol 4
PROTO = 0x80  # '\x80', protocol 2
STOP = 0x2E  # '.', protocol 0
FRAME = 0x95  # '\x95', protocol 4
PERSID = 0x50  # 'P', protocol 0
BINPERSID = 0x51  # 'Q', protocol 1

OPCODE_NAMES: dict[int, str] = {
    INT: "INT",
    BININT: "BININT",
    BININT1: "BININT1",
    BININT2: "BININT2",
    LONG: "LONG",
    LONG1: "LONG1",
    LONG4: "LONG4",
    STRING: "STRING",
    BINSTRING: "BINSTRING",
    SHORT_BINSTRING: "SHORT_BINSTRING",
    BINBYTES: "BINBYTES",
    SHORT_BINBYTES: "SHORT_BINBYTES",
    BINBYTES8: "BINBYTES8",
    BYTEARRAY8: "BYTEARRAY8",
    NEXT_BUFFER: "NEXT_BUFFER",
    READONLY_BUFFER: "READONLY_BUFFER",
    NONE: "NONE",
    NEWTRUE: "NEWTRUE",
    NEWFALSE: "NEWFALSE",
    UNICODE: "UNICODE",
    SHORT_BINUNICODE: "SHORT_BINUNICODE",
    BINUNICODE: "BINUNICODE",
    BINUNICODE8: "BINUNICODE8",
    FLOAT: "FLOAT",
    BINFLOAT: "BINFLOAT",
    EMPTY_LIST: "EMPTY_LIST",
    APPEND: "APPEND",
    APPENDS: "APPENDS",
    LIST: "LIST",
    EMPTY_TUPLE: "EMPTY_TUPLE",
    TUPLE: "TUPLE",
    TUPLE1: "TUPLE1",
    TUPLE2: "TUPLE2",
    TUPLE3: "TUPLE3",
    EMPTY_DICT: "EMPTY_DICT",
    DICT: "DICT",
    SETITEM: "SETITEM",
    SETITEMS: "SETITEMS",
    EMPTY_SET: "EMPTY_SET",
    ADDITEMS: "ADDITEMS",
    FROZENSET: "FROZENSET",
    POP: "POP",
    DUP: "DUP",
    MARK: "MARK",
    POP_MARK: "POP_MARK",
    GET: "GET",
    BINGET: "BINGET",
    LONG_BINGET: "LONG_BINGET",
    PUT: "PUT",
    BINPUT: "BINPUT",
    LONG_BINPUT: "LONG_BINPUT",
    MEMOIZE: "MEMOIZE",
    EXT1: "EXT1",
    EXT2: "EXT2",
    EXT4: "EXT4",
    GLOBAL: "GLOBAL",
    STACK_GLOBAL: "STACK_GLOBAL",
    REDUCE: "REDUCE",
    BUILD: "BUILD",
    INST: "INST",
    OBJ: "OBJ",
    NEWOBJ: "NEWOBJ",
    NEWOBJ_EX: "NEWOBJ_EX",
    PROTO: "PROTO",
    STOP: "STOP",
    FRAME: "FRAME",
    PERSID: "PERSID",
    BINPERSID: "BINPERSID",
}
