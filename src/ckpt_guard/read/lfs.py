"""Git LFS pointer files: the small text stub git stores in place of an LFS-tracked file.

Spec (git-lfs docs/spec.md): UTF-8 ``key value`` lines, each ending in ``\\n``, the first being
``version https://git-lfs.github.com/spec/v1``, the others sorted by key, among them
``oid sha256:<64 hex>`` and ``size <bytes>``; the whole pointer is under 1024 bytes.
"""

from __future__ import annotations

import re

from ckpt_guard.read.checkpoint import Checkpoint, UnreadableError
from ckpt_guard.vocab import Format

LFS_VERSION_LINE = b"version https://git-lfs.github.com/spec/v1"
# Older pointers (pre-1.0 clients) name the version "https://hawser.github.com/spec/v1".
_VERSIONS = ("https://git-lfs.github.com/spec/v1", "https://hawser.github.com/spec/v1")
MAX_POINTER_BYTES = 1024

# Compiled on first use by re's own cache (most files checked are not pointers).
_OID = r"sha256:([0-9a-f]{64})"
_KEY = r"[a-z0-9.-]+"


def looks_like_lfs_pointer(head: bytes) -> bool:
    """Whether ``head`` (the first bytes of a file) starts like an LFS pointer."""
    return head.startswith(LFS_VERSION_LINE) or head.startswith(b"version https://hawser.")


def read_lfs_pointer(path: str, head: bytes, size: int) -> Checkpoint:
    """Parse the pointer in ``head`` (the whole file, ``size`` bytes).

    ``metadata`` gets ``oid`` (``sha256:<hex>``) and ``size`` (bytes of the real file).
    """
    if size >= MAX_POINTER_BYTES or len(head) >= MAX_POINTER_BYTES:
        raise UnreadableError(f"Git LFS pointer too large ({size} bytes; a pointer is under "
                              f"{MAX_POINTER_BYTES})")
    if len(head) < size:
        raise UnreadableError("Git LFS pointer truncated while reading")
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        raise UnreadableError("malformed Git LFS pointer: not UTF-8") from e
    if not text.endswith("\n"):
        raise UnreadableError("malformed Git LFS pointer: last line does not end in a newline")
    fields: dict[str, str] = {}
    for n, line in enumerate(text[:-1].split("\n"), start=1):
        key, sep, value = line.partition(" ")
        if not sep or not re.fullmatch(_KEY, key) or not value:
            raise UnreadableError(f"malformed Git LFS pointer: line {n} is not 'key value'")
        if key in fields:
            raise UnreadableError(f"malformed Git LFS pointer: duplicate key {key!r}")
        fields[key] = value
    if fields.get("version") not in _VERSIONS:
        raise UnreadableError("malformed Git LFS pointer: unknown version line")
    oid = fields.get("oid")
    if oid is None or not re.fullmatch(_OID, oid):
        raise UnreadableError("malformed Git LFS pointer: missing or invalid 'oid sha256:<hex>'")
    size_text = fields.get("size")
    if size_text is None or not size_text.isdigit() or len(size_text) > 20:
        raise UnreadableError("malformed Git LFS pointer: missing or invalid 'size'")
    return Checkpoint(path=path, format=Format.LFS_POINTER, size_bytes=size,
                      metadata={"oid": oid, "size": int(size_text)},
                      notes=["Git LFS pointer: the weights are not checked out "
                             "(fetch them with `git lfs pull`, or `lfs: true` on actions/checkout)"])
