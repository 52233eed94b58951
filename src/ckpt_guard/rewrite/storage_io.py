"""Streaming storage bytes out of an input file: copied as is, or cast chunk by chunk.

Buffers are bounded (``CHUNK`` bytes read at a time, cast in ``CAST_CHUNK``-element pieces
that stay in cache), so memory does not grow with storage or file size.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import BinaryIO

import numpy as np

from ckpt_guard.rewrite.cast import CastStats, ScanStats, cast_chunk

CHUNK = 8 << 20  # bytes read from the input at a time (a multiple of every element size)
CAST_CHUNK = 1 << 17  # FP32 elements cast at a time (512 KiB in: stays in L2 cache)

Progress = Callable[[int], None]


class InputChanged(Exception):
    """The input ended before a storage's bytes did (it changed under us, or lied)."""


def read_chunks(fh: BinaryIO, offset: int, nbytes: int, buf: bytearray,
                progress: Progress | None = None) -> Iterator[memoryview]:
    """Yield ``nbytes`` from ``offset`` in views of ``buf`` (valid until the next one)."""
    view = memoryview(buf)
    fh.seek(offset)
    left = nbytes
    while left:
        n = fh.readinto(view[:min(len(buf), left)])
        if not n:
            raise InputChanged(f"input ends inside a storage at offset {offset}")
        left -= n
        if progress is not None:
            progress(n)
        yield view[:n]


def copied(fh: BinaryIO, offset: int, nbytes: int, buf: bytearray,
           progress: Progress | None = None) -> Iterator[memoryview]:
    yield from read_chunks(fh, offset, nbytes, buf, progress)


class _Spare:
    """One second read buffer per thread, reused from storage to storage: a fresh 8 MiB
    ``bytearray`` is zero-filled on every allocation (a memset of the whole read volume).
    A buffer still in use (a generator not yet finished) is never handed out twice."""

    def __init__(self) -> None:
        self._local = threading.local()

    def take(self, size: int) -> bytearray:
        free = getattr(self._local, "free", None)
        if free is not None and len(free) == size:
            self._local.free = None
            return free
        return bytearray(size)

    def give(self, buf: bytearray) -> None:
        self._local.free = buf


_spare = _Spare()
_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor | None:
    """numpy's casts release the GIL: pieces of a chunk are cast on every core."""
    global _pool
    workers = min(8, os.cpu_count() or 1)
    if workers < 2:
        return None
    with _pool_lock:
        if _pool is None:
            _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="ckpt-guard-cast")
    return _pool


def _read_exact(fh: BinaryIO, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = fh.readinto(view[got:])
        if not n:
            raise InputChanged("input ends inside a storage")
        got += n


def casted(fh: BinaryIO, offset: int, nbytes: int, buf: bytearray, target: str,
           stats: CastStats, progress: Progress | None = None) -> Iterator[bytes | memoryview]:
    """FP32 little-endian bytes at ``offset`` cast to ``target``; errors merged into ``stats``.

    Each chunk read is cast in ``CAST_CHUNK`` pieces on a thread pool when there are cores to
    spare (numpy's casts release the GIL); the next chunk is read into a second buffer and
    cast while this one's results are written. Results come back in order.
    """
    pool = _executor()
    if pool is None:
        for chunk in read_chunks(fh, offset, nbytes, buf, progress):
            values = np.frombuffer(chunk, dtype="<f4")
            for i in range(0, values.size, CAST_CHUNK):
                out, s = cast_chunk(values[i:i + CAST_CHUNK], target)
                stats.merge(s)
                yield memoryview(out).cast("B")
        return
    spare = _spare.take(len(buf))
    try:
        yield from _casted_pool(pool, fh, offset, nbytes, (memoryview(buf), memoryview(spare)),
                                target, stats, progress)
    finally:
        _spare.give(spare)


def _casted_pool(pool: ThreadPoolExecutor, fh: BinaryIO, offset: int, nbytes: int,
                 views: tuple[memoryview, memoryview], target: str, stats: CastStats,
                 progress: Progress | None) -> Iterator[memoryview]:
    buf = views[0]
    fh.seek(offset)
    left = nbytes
    k = 0
    previous: list = []
    while left or previous:
        current: list = []
        if left:
            view = views[k % 2][:min(len(buf), left)]
            _read_exact(fh, view)
            left -= len(view)
            k += 1
            if progress is not None:
                progress(len(view))
            values = np.frombuffer(view, dtype="<f4")
            current = [pool.submit(cast_chunk, values[i:i + CAST_CHUNK], target)
                       for i in range(0, values.size, CAST_CHUNK)]
        # The buffer of `previous` is reused only after all its results are taken here.
        for future in previous:
            out, s = future.result()
            stats.merge(s)
            yield memoryview(out).cast("B")
        previous = current


def scan(fh: BinaryIO, offset: int, nbytes: int, buf: bytearray,
         progress: Progress | None = None) -> ScanStats:
    stats = ScanStats()
    for chunk in read_chunks(fh, offset, nbytes, buf, progress):
        values = np.frombuffer(chunk, dtype="<f4")
        for i in range(0, values.size, CAST_CHUNK):
            stats.add(values[i:i + CAST_CHUNK])
    return stats
