"""DCP storage items stored transformed: ``_StorageInfo.transform_descriptors``.

torch/distributed/checkpoint/filesystem.py and _extension.py (torch 2.13): a writer given
``_extensions=[...]`` stores each item through them and records their descriptors
(``"name/version"``); ``FileSystemReader`` rebuilds them with ``ExtensionRegistry
.from_descriptor_list`` — which knows only ``stream.zstd`` (``ZStandard``, major version 1;
anything else raises unless the loader registered its own extension class) — and reads the
item through each ``transform_from`` in the order listed, then ``torch.load``s the result.

Here zstd is decoded with the ``zstandard`` package (a decompressor: nothing of the file
runs) into a bounded spooled temporary file, and the result is read as the torch zip it
must be. Everything else fails closed with a finding that says why: an unknown or custom
transform (its code is the loader's, not ours to guess), a zstd stream with bytes after its
first frame (``ZStandard.transform_from`` is zstandard's ``stream_reader`` or pyzstd's
``EndlessZstdDecompressor``, whichever is installed: whether later frames are loaded depends on
the library and its version — zstandard 0.25's ``read(-1)`` reads on across frames), a missing
``zstandard``.
"""

from __future__ import annotations

import tempfile
from typing import IO, Any

from ckpt_guard.read.checkpoint import LimitExceeded, UnreadableError

ZSTD = "stream.zstd"
MAX_DECODED = 4 << 30  # bytes one decoded item may reach (disk-spooled beyond SPOOL)
SPOOL = 64 << 20  # decoded bytes kept in memory before spilling to a temporary file
_BLOCK = 1 << 20


def decode(src: IO[bytes], descriptors: tuple[str, ...], what: str) -> tuple[IO[bytes], int]:
    """The bytes torch's reader gets from ``src`` through ``descriptors``, as a seekable file
    and its size. Raises :class:`UnreadableError` for what is not read."""
    for desc in descriptors:
        name, _, version = desc.partition("/")
        if name != ZSTD:
            raise UnreadableError(
                f"{what} is stored through transform {desc!r}, which torch registers only "
                "when the loader brings its own extension class (code ckpt-guard cannot "
                "judge): its bytes are not read (fails closed)")
        if version.partition(".")[0] != "1":
            raise UnreadableError(f"{what}: transform {desc!r} has a version torch's "
                                  "ZStandard refuses")
    out: IO[bytes] = src
    size = -1
    for _desc in descriptors:
        out, size = _unzstd(out, what)
    if size < 0:  # no descriptor at all: the caller reads the slice as it is
        raise UnreadableError(f"{what}: empty transform list")
    return out, size


def _unzstd(src: IO[bytes], what: str) -> tuple[IO[bytes], int]:
    try:
        import zstandard
    except ImportError as e:
        raise UnreadableError(
            f"{what} is stored zstd-compressed (stream.zstd): reading it needs the "
            "'zstandard' package (pip install 'ckpt-guard[zstd]'); not read (fails closed)"
        ) from e
    dobj = zstandard.ZstdDecompressor().decompressobj()
    out: Any = tempfile.SpooledTemporaryFile(max_size=SPOOL)  # noqa: SIM115 - returned open
    size = 0
    try:
        while True:
            block = src.read(_BLOCK)
            if not block:
                break
            if dobj.eof:
                raise UnreadableError(f"{what}: bytes after the end of its first zstd frame "
                                      "(whether torch loads them depends on the zstd "
                                      "library installed and its version): fails closed")
            data = dobj.decompress(block)
            size += len(data)
            if size > MAX_DECODED:
                raise LimitExceeded(f"{what} decompresses to more than {MAX_DECODED} bytes")
            out.write(data)
            if dobj.eof and dobj.unused_data:
                raise UnreadableError(f"{what}: bytes after the end of its first zstd frame "
                                      "(whether torch loads them depends on the zstd "
                                      "library installed and its version): fails closed")
        if not dobj.eof:
            raise UnreadableError(f"{what}: its zstd stream is truncated")
    except zstandard.ZstdError as e:
        out.close()
        raise UnreadableError(f"{what}: not a valid zstd stream ({e})") from e
    except BaseException:
        out.close()
        raise
    out.seek(0)
    return out, size
