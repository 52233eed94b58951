"""Minimal reproducers of the disagreements the differential oracle found, built byte by byte.

Each names the issue-8 class it belongs to; ``xfail`` says why it still disagrees today (the
lane that closes it), empty once it holds. torch's behaviour cited: torch/serialization.py
``_legacy_load`` (``magic_number = pickle_module.load(f)``; ``if magic_number !=
MAGIC_NUMBER``: a comparison by value) and CPython's ``_pickle.c`` ``load_frame`` (a FRAME is
read with one ``read()``; the next ``pickle.load`` starts at the frame's end).
"""

from __future__ import annotations

import io
import struct
import tarfile
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


def _tar_named_like_a_pickle(v7: bool) -> Callable[[str], bytes]:
    """A torch <= 0.3 tar checkpoint (members storages/tensors/pickle; torch's
    ``_legacy_load`` opens any non-zip file with tarfile first) whose first member's NAME is
    the pickle ``N.``: the file starts like a harmless bare pickle. ``v7``: the ustar magic
    erased (tarfile still reads old V7 headers)."""
    def make(canary: str) -> bytes:
        members = [("N.", b""), ("storages", P.proto(2) + b"K\x00." + P.proto(2) + b"]."),
                   ("tensors", P.proto(2) + b"K\x00."),
                   ("pickle", P.wrap_dict(P.system_call(P.touch_cmd(canary))))]
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
        out = bytearray(buf.getvalue())
        if v7:
            pos = 0
            while any(out[pos:pos + 512]):
                size = int(out[pos + 124:pos + 136].strip(b"\0 ") or b"0", 8)
                out[pos + 257:pos + 265] = b"\0" * 8
                out[pos + 148:pos + 156] = b" " * 8
                out[pos + 148:pos + 156] = b"%06o\0 " % sum(out[pos:pos + 512])
                pos += 512 + (size + 511) // 512 * 512
        return bytes(out)
    return make


def _safetensors_tar(canary: str) -> bytes:
    from tests.differential.containers import safetensors_tar, tar_blocks

    return safetensors_tar(tar_blocks({
        "storages": P.proto(2) + b"K\x00." + P.proto(2) + b"].",
        "tensors": P.proto(2) + b"K\x00.",
        "pickle": P.wrap_dict(P.system_call(P.touch_cmd(canary)))}))


def _legacy_tar(canary: str) -> bytes:
    from tests.differential.containers import legacy_tar, tar_blocks

    return legacy_tar(tar_blocks({
        "storages": P.proto(2) + b"K\x00." + P.proto(2) + b"].",
        "tensors": P.proto(2) + b"K\x00.",
        "pickle": P.wrap_dict(P.system_call(P.touch_cmd(canary)))}))


CASES: list[Case] = [
    Case("legacy_stream_that_is_a_v7_tar",
         "a clean legacy stream whose sys_info pickle carries bytes that make the file a V7 "
         "tar checkpoint: torch.load opens it with tarfile first and unpickles the members",
         _legacy_tar),
    Case("safetensors_tar_polyglot",
         "a valid safetensors file (one uint8 tensor) that is also a V7 tar checkpoint, named "
         ".bin: torch.load opens it with tarfile and unpickles its members",
         _safetensors_tar, filename="pytorch_model.bin"),
    Case("tar_named_like_a_pickle_ustar",
         "ustar tar checkpoint whose first member name is the pickle 'N.'",
         _tar_named_like_a_pickle(False)),  # holds today: the ustar magic is refused
    Case("tar_named_like_a_pickle_v7",
         "V7 tar (no ustar magic) checkpoint whose first member name is the pickle 'N.'",
         _tar_named_like_a_pickle(True)),
    Case("legacy_magic_long1_no_proto",
         "legacy stream whose magic number is LONG1 without PROTO (torch compares the value)",
         _legacy_with_magic(_long1(MAGIC) + b".")),
    Case("legacy_magic_protocol0_text",
         "legacy stream whose magic number is protocol-0 text 'I<decimal>'",
         _legacy_with_magic(b"I%d\n." % MAGIC)),
    Case("legacy_magic_long4",
         "legacy stream whose magic number is PROTO 2 + LONG4",
         _legacy_with_magic(P.proto(2) + b"\x8b" + struct.pack("<i", 10)
                            + MAGIC.to_bytes(10, "little", signed=True) + b".")),
    Case("legacy_frame_hides_storage_keys",
         "oversized FRAME: torch's next pickle.load starts at the frame's end, not after STOP",
         _frame_hides_storage_keys),
]
