"""Streaming storage bytes out of an input file: copied as is, or cast chunk by chunk.

Buffers are bounded (``CHUNK`` bytes read at a time, cast in ``CAST_CHUNK``-element pieces
that stay in cache), so memory does not grow with storage or file size.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from ckpt_guard.rewrite import cast_pool
from ckpt_guard.rewrite.cast import CastStats, ScanStats

if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

CHUNK = 8 << 20  # bytes read from the input at a time (a multiple of every element size)
CAST_CHUNK = cast_pool.CAST_CHUNK  # FP32 elements cast at a time

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
    """Reusable work buffers per thread, from storage to storage: a fresh 8 MiB
    ``bytearray`` is zero-filled on every allocation (a memset of the whole read volume).
    A buffer still in use (a generator not yet finished) is never handed out twice."""

    def __init__(self) -> None:
        self._local = threading.local()

    def take(self, size: int) -> bytearray:
        free: list[bytearray] = getattr(self._local, "free", None) or []
        for i, buf in enumerate(free):
            if len(buf) == size:
                return free.pop(i)
        return bytearray(size)

    def give(self, *bufs: bytearray) -> None:
        free = getattr(self._local, "free", None)
        if free is None:
            free = self._local.free = []
        free.extend(bufs)
        del free[:-4]  # two inputs and two outputs at most are in use at a time


_spare = _Spare()


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

    Chunks are read in turn; each is cast on every core (:mod:`cast_pool`: part in the
    forked worker, or spans on a thread pool) straight into an output buffer, and the next
    chunk is read and cast while this one's output is written. Results come back in order,
    one view per chunk (valid until the next one is taken).
    """
    how = cast_pool.mode() if nbytes >= cast_pool.MIN_PARALLEL else "none"
    worker = None
    if how == "fork":
        try:
            fd = fh.fileno()
        except (AttributeError, OSError, ValueError):  # not a file: threads instead
            how = "thread"
        else:
            worker = cast_pool.take_worker(len(buf), fd)
    if worker is not None:
        try:
            yield from _casted_forked(worker, fh, offset, nbytes, target, stats, progress)
        except cast_pool.ShortRead as e:
            raise InputChanged(str(e)) from e
        finally:
            try:
                worker.drain()
            finally:
                cast_pool.give_worker()
        return
    spares = (_spare.take(len(buf)), _spare.take(len(buf) // 2), _spare.take(len(buf) // 2))
    try:
        ins = (memoryview(buf), memoryview(spares[0]))
        outs = (memoryview(spares[1]), memoryview(spares[2]))
        pool, workers = cast_pool.threads() if how != "none" else (None, 1)
        yield from _casted(pool, workers, fh, offset, nbytes, ins, outs, target, stats,
                           progress)
    finally:
        _spare.give(*spares)


def _casted_forked(worker: cast_pool.ForkWorker, fh: BinaryIO, offset: int, nbytes: int,
                   target: str, stats: CastStats, progress: Progress | None
                   ) -> Iterator[memoryview]:
    """Each chunk split in two: the worker reads and casts the tail (from the descriptor it
    inherited, into its shared buffers) while this process reads and casts the head, then
    writes the previous chunk out — so the worker's share is the larger."""
    size = worker.chunk
    left = nbytes
    pos = offset
    k = 0
    previous: tuple[int, CastStats, memoryview] | None = None
    while left or previous:
        current = None
        if left:
            slot = k % 2
            nb = min(size, left)
            n = nb // 4
            split = int(n * (1 - cast_pool.WORKER_SHARE)) // cast_pool.CAST_CHUNK \
                * cast_pool.CAST_CHUNK
            worker.submit(slot, target, pos, split, n)
            view = worker.ins[slot][:4 * split]
            fh.seek(pos)
            _read_exact(fh, view)
            out_view = worker.outs[slot][:2 * n]
            own = cast_pool.cast_span(np.frombuffer(view, "<f4"), target,
                                      np.frombuffer(out_view, "<u2")[:split])
            current = (slot, own, out_view)
            left -= nb
            pos += nb
            k += 1
            if progress is not None:
                progress(nb)
        # A slot's buffers are reused only after its output is taken here.
        if previous is not None:
            slot, own, out_view = previous
            stats.merge(own)
            stats.merge(worker.result(slot))
            yield out_view
        previous = current


def _casted(pool: ThreadPoolExecutor | None, workers: int, fh: BinaryIO, offset: int,
            nbytes: int, ins: tuple[memoryview, memoryview],
            outs: tuple[memoryview, memoryview], target: str, stats: CastStats,
            progress: Progress | None) -> Iterator[memoryview]:
    size = len(ins[0])
    fh.seek(offset)
    left = nbytes
    k = 0
    previous: tuple[list, memoryview] | None = None
    while left or previous:
        current = None
        if left:
            view = ins[k % 2][:min(size, left)]
            _read_exact(fh, view)
            left -= len(view)
            if progress is not None:
                progress(len(view))
            values = np.frombuffer(view, dtype="<f4")
            out_view = outs[k % 2][:len(view) // 2]
            out = np.frombuffer(out_view, dtype="<u2")
            k += 1
            # Spans of whole pieces, one per worker.
            step = -(-values.size // workers // CAST_CHUNK) * CAST_CHUNK or CAST_CHUNK
            spans = [(values[i:i + step], target, out[i:i + step])
                     for i in range(0, values.size, step)]
            if pool is None:
                futures = [_Done(cast_pool.cast_span(*a)) for a in spans]
            else:
                futures = [pool.submit(cast_pool.cast_span, *a) for a in spans]
            current = (futures, out_view)
        # The buffers of `previous` are reused only after its output is taken here.
        if previous is not None:
            futures, out_view = previous
            for future in futures:
                stats.merge(future.result())
            yield out_view
        previous = current


class _Done:
    """A finished result with a future's ``result()`` (no pool: one core)."""

    def __init__(self, value: CastStats) -> None:
        self.value = value

    def result(self) -> CastStats:
        return self.value


def scan(fh: BinaryIO, offset: int, nbytes: int, buf: bytearray,
         progress: Progress | None = None) -> ScanStats:
    stats = ScanStats()
    for chunk in read_chunks(fh, offset, nbytes, buf, progress):
        values = np.frombuffer(chunk, dtype="<f4")
        for i in range(0, values.size, CAST_CHUNK):
            stats.add(values[i:i + CAST_CHUNK])
    return stats
