"""Minimal reproducers of the disagreements the differential oracle found, built byte by byte.

Each names the issue-8 class it belongs to; ``xfail`` says why it still disagrees today (the
lane that closes it), empty once it holds. torch's behaviour cited: torch/serialization.py
``_legacy_load`` (``magic_number = pickle_module.load(f)``; ``if magic_number !=
MAGIC_NUMBER``: a comparison by value) and CPython's ``_pickle.c`` ``load_frame`` (a FRAME is
read with one ``read()``; the next ``pickle.load`` starts at the frame's end).
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass

from tests.adversarial import pickles as P
from tests.adversarial.containers import legacy_pickles

MAGIC = 0x1950A86A20F9469CFC6C


@dataclass(frozen=True)
class Case:
    id: str
    technique: str
    make: Callable[[str], bytes]  # canary path -> file bytes
    xfail: str = ""
    filename: str = "model.pt"


def _long1(value: int) -> bytes:
    raw = value.to_bytes((value.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8a" + bytes([len(raw)]) + raw


def _payload(canary: str) -> bytes:
    return P.system_call(P.touch_cmd(canary)) + P.POP


def _legacy_with_magic(magic: bytes) -> Callable[[str], bytes]:
    def make(canary: str) -> bytes:
        pickles, tail = legacy_pickles()
        data = pickles[3]
        return (magic + b"".join(pickles[1:3]) + data[:2] + _payload(canary) + data[2:]
                + pickles[4] + tail)
    return make


def _frame_hides_storage_keys(canary: str) -> bytes:
    """The object pickle in a FRAME that also holds a harmless ``[]`` after its STOP: a reader
    that restarts after STOP takes that ``[]`` for the storage keys; torch restarts at the
    frame's end and unpickles the next pickle, which runs the payload and returns ``[]``."""
    pickles, _tail = legacy_pickles()
    body = b"}."  # the object: an empty dict (no storages)
    decoy_keys = b"]."
    framed = P.proto(4) + P.frame(len(body) + len(decoy_keys)) + body + decoy_keys
    real_keys = P.proto(2) + _payload(canary) + b"]."
    return b"".join(pickles[:3]) + framed + real_keys


CASES: list[Case] = [
    Case("legacy_magic_long1_no_proto",
         "legacy stream whose magic number is LONG1 without PROTO (torch compares the value)",
         _legacy_with_magic(_long1(MAGIC) + b"."),
         xfail="class 4 (h2): read as a bare pickle, the object pickle is never judged"),
    Case("legacy_magic_protocol0_text",
         "legacy stream whose magic number is protocol-0 text 'I<decimal>'",
         _legacy_with_magic(b"I%d\n." % MAGIC),
         xfail="class 4 (h2): read as a bare pickle, the object pickle is never judged"),
    Case("legacy_magic_long4",
         "legacy stream whose magic number is PROTO 2 + LONG4",
         _legacy_with_magic(P.proto(2) + b"\x8b" + struct.pack("<i", 10)
                            + MAGIC.to_bytes(10, "little", signed=True) + b"."),
         xfail="class 4 (h2): read as a bare pickle, the object pickle is never judged"),
    Case("legacy_frame_hides_storage_keys",
         "oversized FRAME: torch's next pickle.load starts at the frame's end, not after STOP",
         _frame_hides_storage_keys,
         xfail="class 9 (h2): the pickle torch unpickles after the frame is never judged"),
]
