"""Where the chunks of a cast run: on this thread, on a thread pool, or — on Linux — half of
each chunk in one forked worker process.

numpy releases the GIL inside each operation, but a cast is ~20 operations per piece: two
threads hand the GIL back and forth ~40 times a piece, and on a 2-core VM those wake-ups cost
as much as the arithmetic (measured: 2 threads 0.42 s for 92 M values against 0.48 s on one;
two processes 0.24 s). So where ``fork`` is safe (Linux), one worker process is forked the
first time a large cast runs; it shares two input and two output buffers with this process
(anonymous shared memory, allocated before the fork), receives "cast elements a..b of buffer
k" over a pipe and answers with the error statistics. The worker only ever runs
:func:`~ckpt_guard.rewrite.cast.cast_chunk` on those buffers; it never sees a file, and
nothing it reads is executed.

Nothing is lost if the worker fails: a span it does not answer for (it died, or raised) is
cast here instead and the worker is not used again. ``CKPT_GUARD_CAST_WORKER=thread`` (or
``none``) selects the thread pool (or this thread only).
"""

from __future__ import annotations

import atexit
import contextlib
import mmap
import os
import signal
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import astuple

import numpy as np

from ckpt_guard.rewrite.cast import CastStats, cast_chunk

CAST_CHUNK = 1 << 17  # FP32 elements cast at a time (512 KiB in: stays in L2 cache)
# Below this many bytes a storage is cast on this thread: starting a worker costs more.
MIN_PARALLEL = 16 << 20
# The worker's share of each chunk. This process also reads the chunks, computes the CRC and
# writes the output (~0.13 s of the 1.1 GB benchmark's 0.58 s of work besides imports):
# about two thirds of the cast to the worker leaves both busy for the same time.
WORKER_SHARE = 0.65

_TARGETS = ("float16", "bfloat16")
_CMD = struct.Struct("<BBxxxxxxqq")  # buffer slot, target, first and end element
_RESULT = struct.Struct("<B7x3d5qd")  # ok, CastStats fields in declaration order


def cast_span(values: np.ndarray, target: str, out: np.ndarray) -> CastStats:
    """Cast ``values`` into ``out`` piece by piece (each piece stays in cache)."""
    stats = CastStats()
    for i in range(0, values.size, CAST_CHUNK):
        stats.merge(cast_chunk(values[i:i + CAST_CHUNK], target, out[i:i + CAST_CHUNK])[1])
    return stats


def cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def mode() -> str:
    """``fork``, ``thread`` or ``none``: how large casts are spread over the cores."""
    wanted = os.environ.get("CKPT_GUARD_CAST_WORKER", "").strip().lower()
    if cores() < 2 or wanted == "none":
        return "none"
    if wanted == "thread" or not sys.platform.startswith("linux"):
        return "thread"
    return "fork"


class ForkWorker:
    """One forked process casting spans of two shared input and two shared output buffers.

    ``ins[k]`` holds ``chunk`` bytes of FP32 input, ``outs[k]`` half as many of 16-bit
    output. Use :meth:`submit` then :meth:`result` for slot ``k``, one span per slot at a
    time."""

    def __init__(self, chunk: int) -> None:
        self.chunk = chunk
        self._shared = mmap.mmap(-1, 3 * chunk)  # MAP_SHARED | MAP_ANONYMOUS
        view = memoryview(self._shared)
        half = chunk // 2
        self.ins = (view[:chunk], view[chunk:2 * chunk])
        self.outs = (view[2 * chunk:2 * chunk + half], view[2 * chunk + half:])
        cmd_r, self._cmd = os.pipe()
        self._res, res_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the worker: never returns
            os.close(self._cmd)  # else it would never read end-of-file
            os.close(self._res)
            _serve(cmd_r, res_w, self.ins, self.outs)
        os.close(cmd_r)
        os.close(res_w)
        self.alive = True
        self._pending: dict[int, tuple[str, int, int]] = {}

    def submit(self, slot: int, target: str, start: int, end: int) -> None:
        self._pending[slot] = (target, start, end)
        if self.alive:
            try:
                os.write(self._cmd, _CMD.pack(slot, _TARGETS.index(target), start, end))
            except OSError:
                self.alive = False

    def result(self, slot: int) -> CastStats:
        """The span's statistics; cast here if the worker could not (it is then retired)."""
        target, start, end = self._pending.pop(slot)
        if self.alive:
            got = _read_exact(self._res, _RESULT.size)
            if got is not None:
                ok, *fields = _RESULT.unpack(got)
                if ok:
                    return CastStats(*fields)
            self.close()
        values = np.frombuffer(self.ins[slot], "<f4")[start:end]
        out = np.frombuffer(self.outs[slot], "<u2")[start:end]
        return cast_span(values, target, out)

    def drain(self) -> None:
        """Wait for spans still out (a cast abandoned half-way): the next cast starts clean."""
        for slot in list(self._pending):
            self.result(slot)

    def close(self) -> None:
        if not self.alive:
            return
        self.alive = False
        with contextlib.suppress(OSError):
            os.close(self._cmd)  # the worker reads end-of-file and exits
        with contextlib.suppress(OSError):
            os.close(self._res)
        with contextlib.suppress(OSError, ChildProcessError):
            os.waitpid(self.pid, 0)


def _read_exact(fd: int, n: int) -> bytes | None:
    got = b""
    while len(got) < n:
        try:
            part = os.read(fd, n - len(got))
        except OSError:
            return None
        if not part:
            return None
        got += part
    return got


def _serve(cmd: int, res: int, ins: tuple[memoryview, ...], outs: tuple[memoryview, ...]
           ) -> None:
    """The worker's loop: cast what it is asked, answer, exit at end-of-file. It leaves
    through ``os._exit`` whatever happens (no atexit handlers, no flush of the parent's
    buffered output, no traceback)."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
        while True:
            got = _read_exact(cmd, _CMD.size)
            if got is None:
                break
            slot, target, start, end = _CMD.unpack(got)
            try:
                values = np.frombuffer(ins[slot], "<f4")[start:end]
                out = np.frombuffer(outs[slot], "<u2")[start:end]
                reply = _RESULT.pack(1, *astuple(cast_span(values, _TARGETS[target], out)))
            except Exception:  # noqa: BLE001 - the parent redoes the span itself
                reply = _RESULT.pack(0, *astuple(CastStats()))
            os.write(res, reply)
    except BaseException:  # noqa: BLE001 - never unwind into the parent's code
        code = 1
    finally:
        os._exit(code)


_lock = threading.Lock()  # held by the one cast using the worker
_threads_lock = threading.Lock()
_worker: ForkWorker | None = None
_threads: ThreadPoolExecutor | None = None


def take_worker(chunk: int) -> ForkWorker | None:
    """The forked worker (started on first use), or ``None`` when it is busy or unusable.
    Give it back with :func:`give_worker`."""
    global _worker
    if not _lock.acquire(blocking=False):
        return None  # another cast holds it: that one runs as before
    try:
        if _worker is not None and (not _worker.alive or _worker.chunk != chunk):
            _worker.close()
            _worker = None
        if _worker is None and threading.active_count() == 1:
            # Forked only from a single-threaded process: a lock another thread holds
            # would stay held in the child.
            _warm_up()
            _worker = ForkWorker(chunk)
    except OSError:
        _worker = None
    if _worker is None:
        _lock.release()
    return _worker


def _warm_up() -> None:
    """Run every path of the casts once here, so that nothing the worker runs has a first
    use (a lazy import, a cache) still to come after the fork."""
    x = np.array([0.0, 1e-9, 1e-6, 0.5, -3.0, 7e4, np.inf, np.nan], "<f4")
    for target in _TARGETS:
        cast_span(x, target, np.empty(x.size, "<u2"))
        cast_span(x[:4], target, np.empty(4, "<u2"))


def give_worker() -> None:
    _lock.release()


def threads() -> ThreadPoolExecutor:
    global _threads
    with _threads_lock:
        if _threads is None:
            _threads = ThreadPoolExecutor(max_workers=min(8, cores()),
                                          thread_name_prefix="ckpt-guard-cast")
        return _threads


@atexit.register
def _shutdown() -> None:
    if _worker is not None:
        _worker.close()
