"""Tell a file's format from its first bytes (never from its name)."""

from __future__ import annotations

import re

from ckpt_guard.read.checkpoint import UnreadableError
from ckpt_guard.read.lfs import looks_like_lfs_pointer
from ckpt_guard.read.safetensors import looks_like_safetensors
from ckpt_guard.vocab import Format

HEAD_BYTES = 1024  # enough for a whole LFS pointer and a tar header

# torch.serialization._is_zipfile checks exactly these four bytes; anything else (an empty
# zip's PK\x05\x06 included) goes down torch's legacy path, never to its zip reader.
ZIP_MAGIC = b"PK\x03\x04"
# torch's legacy format starts with pickle.dumps(0x1950a86a20f9469cfc6c): LONG1, 10 bytes.
LEGACY_MAGIC_LONG = b"\x8a\x0a" + (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
# Compiled on first use by re's own cache (only content no other test recognised needs it).
_PROTO0_GLOBAL = rb"\(?[ci][A-Za-z_][\w.]*\n[A-Za-z_][\w.]*\n"


class NotAWeightFile(UnreadableError):
    """The content is not any format ckpt-guard reads."""


def sniff(head: bytes, size: int) -> str:
    """Classify the first bytes of a file of ``size`` bytes.

    Returns one of ``zip``, ``torch-legacy``, ``tar``, ``safetensors``, ``lfs-pointer``,
    ``pickle`` (a bare pickle — ``torch.load`` would run it, so it is read to report its
    globals) or ``unknown``. Only ``zip`` and ``lfs-pointer`` decide the reader: every other
    file goes the way torch.load takes it (``tarfile`` first, then the pickle stream with the
    magic number compared by value — see :func:`ckpt_guard.read._read_not_zip`); ``LEGACY_MAGIC_LONG``
    is just the usual spelling.
    """
    if looks_like_lfs_pointer(head):
        return Format.LFS_POINTER
    if head.startswith(ZIP_MAGIC):
        return "zip"
    # Before pickles: a header length's low byte may well be 0x80.
    if looks_like_safetensors(head, size):
        return Format.SAFETENSORS
    if len(head) >= 2 and head[0] == 0x80 and head[1] <= 5:
        # Proto 2 puts the magic right after PROTO; protocol 4+ may put a FRAME first.
        body = head[2:] if head[1] < 4 or head[2:3] != b"\x95" else head[11:]
        return Format.TORCH_LEGACY if body.startswith(LEGACY_MAGIC_LONG) else "pickle"
    if len(head) >= 262 and head[257:262] == b"ustar":
        return "tar"
    if re.match(_PROTO0_GLOBAL, head):
        return "pickle"
    return Format.UNKNOWN


def describe(head: bytes) -> str:
    """A short description of unrecognised content, for a one-line message."""
    if not head:
        return "empty"
    sample = head[:512]
    try:
        sample.decode("utf-8")
    except UnicodeDecodeError:
        return f"unrecognised binary content (starts with {head[:8].hex(' ')})"
    stripped = sample.lstrip()
    if stripped[:1] in (b"{", b"["):
        return "JSON/text content"
    return "text content"
