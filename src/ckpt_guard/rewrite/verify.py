"""Verify a written file by reading it back with OUR reader (never torch, never executing it):
the tree must be the one we meant to write, and every storage must hold exactly the bytes we
wrote (CRC-32 streamed over the record, compared with the CRC computed while writing — for
untouched storages that CRC was computed over the input's bytes)."""

from __future__ import annotations

import math
import mmap
import os
import sys
from collections.abc import Callable, Iterator, Mapping
from typing import Any, BinaryIO

from ckpt_guard.read.checkpoint import Checkpoint
from ckpt_guard.read.tree import NO_STATE, GlobalRef, Opaque, Storage, TensorRef
from ckpt_guard.rewrite.crc import crc32
from ckpt_guard.rewrite.pickle_writer import OutStorage, subst_dtype

CHUNK = 8 << 20


class VerifyError(Exception):
    """The written file is not what was meant to be written. One line for users."""


def _bytes_of(o: Any) -> bytes | None:
    """bytes spelled as ``_codecs.encode(s, 'latin1')`` or ``bytes(...)``, as a reader may
    leave them."""
    if isinstance(o, (bytes, bytearray)):
        return bytes(o)
    if isinstance(o, Opaque) and o.qualname in ("_codecs.encode", "codecs.encode") \
            and len(o.args) == 2 and isinstance(o.args[0], str):
        return o.args[0].encode("latin1")
    if isinstance(o, Opaque) and o.name == "bytes" and not o.args:
        return b""
    return None


class _Comparer:
    def __init__(self, storage_out: Callable[[Storage], OutStorage]):
        self.storage_out = storage_out
        self.pairs: dict[int, int] = {}  # id(expected) → id(actual): sharing must match
        self.keep: list[Any] = []

    def fail(self, path: str, msg: str) -> None:
        raise VerifyError(f"verification failed at {path or '<root>'}: {msg}")

    def same(self, a: Any, b: Any, path: str) -> None:
        if isinstance(a, (dict, list, tuple, set, frozenset, Opaque, TensorRef)) and a:
            prev = self.pairs.get(id(a))
            if prev is not None:
                if prev != id(b):
                    self.fail(path, "a shared object is no longer shared")
                return
            self.pairs[id(a)] = id(b)
            self.keep.extend((a, b))
        ba, bb = _bytes_of(a), _bytes_of(b)
        if ba is not None or bb is not None:
            if ba != bb:
                self.fail(path, "bytes differ")
            return
        if isinstance(a, TensorRef):
            self._tensor(a, b, path)
        elif isinstance(a, Opaque):
            self._opaque(a, b, path)
        elif isinstance(a, Storage):
            if not isinstance(b, Storage):
                self.fail(path, f"expected a storage, found {type(b).__name__}")
            out = self.storage_out(a)
            if (b.key, b.dtype, b.numel) != (out.key, out.dtype, out.numel):
                self.fail(path, f"storage {b.key}/{b.dtype}/{b.numel} instead of "
                                f"{out.key}/{out.dtype}/{out.numel}")
        elif isinstance(a, GlobalRef):
            if not isinstance(b, GlobalRef) or a.qualname != b.qualname:
                self.fail(path, f"global {a.qualname} became {b!r}")
        elif isinstance(a, Mapping):
            if not isinstance(b, Mapping) or list(a.keys()) != list(b.keys()):
                self.fail(path, "keys differ")
            for k in a:
                self.same(a[k], b[k], f"{path}.{k}" if path else str(k))
        elif isinstance(a, (list, tuple)):
            if type(a) is not type(b) or len(a) != len(b):
                self.fail(path, f"{type(a).__name__} of {len(a)} became {type(b).__name__}")
            for i, (x, y) in enumerate(zip(a, b, strict=True)):
                self.same(x, y, f"{path}[{i}]")
        elif isinstance(a, (set, frozenset)):
            if type(a) is not type(b) or len(a) != len(b):
                self.fail(path, "set differs")
        elif isinstance(a, float):
            if not isinstance(b, float) or not (a == b or (math.isnan(a) and math.isnan(b))):
                self.fail(path, f"{a!r} became {b!r}")
        elif type(a) is not type(b) or a != b:
            self.fail(path, f"{a!r} became {b!r}")

    def _tensor(self, a: TensorRef, b: Any, path: str) -> None:
        if not isinstance(b, TensorRef):
            self.fail(path, f"tensor became {type(b).__name__}")
        dtype = a.dtype
        if a.storage is not None:
            out = self.storage_out(a.storage)
            if out.dtype != a.storage.dtype and a.dtype == a.storage.dtype:
                dtype = out.dtype
        for attr in ("shape", "stride", "storage_offset", "requires_grad", "kind"):
            if tuple_or(getattr(a, attr)) != tuple_or(getattr(b, attr)):
                self.fail(path, f"tensor {attr} {getattr(a, attr)!r} became "
                                f"{getattr(b, attr)!r}")
        if dtype != b.dtype:
            self.fail(path, f"tensor dtype {dtype} became {b.dtype}")
        if (a.storage is None) != (b.storage is None):
            self.fail(path, "tensor storage missing")
        if a.storage is not None:
            self.same(a.storage, b.storage, path)
        if a.func is not None and b.func is not None and a.func.qualname != b.func.qualname:
            self.fail(path, f"rebuilt by {b.func.qualname} instead of {a.func.qualname}")
        args = tuple(a.args)
        if a.storage is not None and dtype != a.dtype:
            args = subst_dtype(args, a.storage.dtype, dtype)  # dtype arguments the cast changed
        if a.func is not None and b.func is not None:
            self.same(args, tuple(b.args), f"{path}<args>")

    def _opaque(self, a: Opaque, b: Any, path: str) -> None:
        if not isinstance(b, Opaque) or a.qualname != b.qualname or a.how != b.how:
            self.fail(path, f"object {a.qualname} became {b!r}")
        self.same(tuple(a.args), tuple(b.args), f"{path}<args>")
        self.same(dict(a.kwargs or {}), dict(b.kwargs or {}), f"{path}<kwargs>")
        self.same(dict(a.dictitems or {}), dict(b.dictitems or {}), path)
        self.same(list(a.listitems or []), list(b.listitems or []), path)
        if a.has_state != b.has_state:
            self.fail(path, "object state missing")
        if a.state is not NO_STATE:
            self.same(a.state, b.state, f"{path}<state>")


def read_back(tmp: str, fmt: str) -> Checkpoint:
    """The written file as OUR reader sees it; it must read, as format ``fmt``."""
    from ckpt_guard.read import UnreadableError, read_path

    try:
        back = read_path(tmp)
    except UnreadableError as e:
        raise VerifyError(f"verification failed: the output does not read back: {e}") from e
    if back.format != fmt:
        raise VerifyError(f"verification failed: the output reads as {back.format}")
    unsafe = unsafe_globals(back)
    if unsafe:
        raise VerifyError(f"verification failed: the output would run code when loaded "
                          f"({unsafe[0]})")
    return back


def unsafe_globals(ckpt: Checkpoint) -> list[str]:
    """The globals of ``ckpt`` that check's verdict calls ``unsafe`` (``name: reason``):
    a fix never writes a file that still executes code, whatever the input looked like."""
    from ckpt_guard.analyze.safety import UNSAFE, classify

    uses: dict[tuple[str, str], set[str]] = {}
    for g in ckpt.globals:
        uses.setdefault((g.module, g.name), set()).update(g.uses)
    out = []
    for (module, name), how in uses.items():
        safety, reason = classify(module, name, how)
        if safety == UNSAFE:
            out.append(f"{module}.{name}: {reason}")
    return out


def tuple_or(v: Any) -> Any:
    return tuple(v) if isinstance(v, list) else v


def verify_tree(expected: Any, ckpt: Checkpoint,
                storage_out: Callable[[Storage], OutStorage]) -> None:
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20_000))
    try:
        _Comparer(storage_out).same(expected, ckpt.root, "")
    except RecursionError as e:
        raise VerifyError("verification failed: tree nested too deeply") from e
    finally:
        sys.setrecursionlimit(old)


def verify_storages(fh: BinaryIO, ckpt: Checkpoint, expected: Mapping[str, tuple[int, int]],
                    progress: Callable[[int], None] | None = None) -> None:
    """Every storage ``key`` of ``ckpt`` holds ``expected[key] = (nbytes, crc32)``.

    The bytes are those of the file as written (``fh``), read back once, in file order. Where
    the platform allows, the CRC runs over a memory map of the file (the page cache itself,
    no copy into a buffer; each window is released after use, so memory stays bounded)."""
    if set(ckpt.storages) != set(expected):
        missing = sorted(set(expected) - set(ckpt.storages))[:3]
        extra = sorted(set(ckpt.storages) - set(expected))[:3]
        raise VerifyError(f"verification failed: storages differ (missing {missing}, "
                          f"unexpected {extra})")
    size = os.fstat(fh.fileno()).st_size
    spans = []
    for key, st in ckpt.storages.items():
        nbytes, crc = expected[key]
        if st.nbytes != nbytes or st.offset is None:
            raise VerifyError(f"verification failed: storage {key} has {st.nbytes} bytes, "
                              f"expected {nbytes}")
        if st.offset + nbytes > size:
            raise VerifyError(f"verification failed: storage {key} is truncated")
        spans.append((st.offset, nbytes, crc, key))
    spans.sort()
    mapped = _mapped(fh, size) if spans and size else None
    if mapped is None:
        for offset, nbytes, crc, key in spans:
            got = 0
            for chunk in _read_chunks(fh, offset, nbytes, key):
                got = crc32(chunk, got)
                if progress is not None:
                    progress(len(chunk))
            _same_crc(got, crc, key)
        return
    view = memoryview(mapped)
    try:
        for offset, nbytes, crc, key in spans:
            got = 0
            pos, end = offset, offset + nbytes
            released = offset - offset % mmap.PAGESIZE
            while pos < end:
                stop = min(end, pos + CHUNK)
                got = crc32(view[pos:stop], got)
                if progress is not None:
                    progress(stop - pos)
                pos = stop
                # Mapped pages count as this process's memory until released (the page
                # cache keeps them): release the whole pages read so far.
                done = stop - stop % mmap.PAGESIZE
                if done > released:
                    mapped.madvise(mmap.MADV_DONTNEED, released, done - released)
                    released = done
            _same_crc(got, crc, key)
    finally:
        view.release()
        mapped.close()


def _same_crc(got: int, crc: int, key: str) -> None:
    if got != crc:
        raise VerifyError(f"verification failed: storage {key} bytes differ from what was"
                          " written")


def _mapped(fh: BinaryIO, size: int) -> mmap.mmap | None:
    """A read-only map of the whole file, or None where windows cannot be released
    (no ``madvise``) or mapping fails: then it is read into a buffer instead."""
    if not hasattr(mmap, "MADV_DONTNEED"):
        return None
    try:
        return mmap.mmap(fh.fileno(), size, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None


def _read_chunks(fh: BinaryIO, offset: int, nbytes: int, key: str) -> Iterator[memoryview]:
    buf = bytearray(min(CHUNK, nbytes))
    view = memoryview(buf)
    fh.seek(offset)
    left = nbytes
    while left:
        n = fh.readinto(view[:min(CHUNK, left)])
        if not n:
            raise VerifyError(f"verification failed: storage {key} is truncated")
        left -= n
        yield view[:n]
