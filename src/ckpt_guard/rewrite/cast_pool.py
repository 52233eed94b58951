"""Where the chunks of a cast run: on this thread, on a thread pool, or — on Linux — part of
each chunk in one forked worker process.

numpy releases the GIL inside each operation, but a cast is ~20 operations per piece: two
threads hand the GIL back and forth ~40 times a piece, and on a 2-core VM those wake-ups cost
as much as the arithmetic (measured: 2 threads 0.42 s for 92 M values against 0.48 s on one;
two processes 0.24 s). So where ``fork`` is safe (Linux), one worker process is forked the
first time a large cast runs; it shares two input and two output buffers with this process
(anonymous shared memory, allocated before the fork), receives "read and cast elements a..b
of the chunk at offset o into buffer k" over a pipe, reads them with ``pread`` from the input
file's descriptor it inherited (so it is forked again for another input file), and answers
with the error statistics. It closes every other descriptor it inherited, and only ever runs
:func:`~ckpt_guard.rewrite.cast.cast_chunk` on those bytes: nothing it reads is executed.

Nothing is lost if the worker fails: a span it does not answer for (it died, or raised) is
read and cast here instead and the worker is not used again. ``CKPT_GUARD_CAST_WORKER=thread`` (or
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
from dataclasses import astuple

import numpy as np

from ckpt_guard.rewrite.cast import CastStats, cast_chunk

TYPE_CHECKING = False
if TYPE_CHECKING:
    from concurrent.futures import ThreadPoolExecutor

CAST_CHUNK = 1 << 17  # FP32 elements cast at a time (512 KiB in: stays in L2 cache)
# Below this many bytes a storage is cast on this thread: starting a worker costs more.
MIN_PARALLEL = 16 << 20
# The worker's share of each chunk. Each side reads and casts its share and this process
# also computes the CRC and writes the output, yet on the 1.1 GB benchmark an even split kept
# both busiest (0.41 s; 0.55 → 0.44 s, 0.65 → 0.47 s: the worker then made this one wait).
WORKER_SHARE = 0.5

_TARGETS = ("float16", "bfloat16")
_CMD = struct.Struct("<BBxxxxxxqqq")  # slot, target, chunk offset, first/end element
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
    """One forked process reading and casting spans of the input file ``fd`` into two shared
    input and two shared output buffers.

    ``ins[k]`` holds ``chunk`` bytes of FP32 input, ``outs[k]`` half as many of 16-bit
    output. :meth:`submit` asks for elements ``start..end`` of the chunk at file offset
    ``offset`` in slot ``k`` — the worker reads them itself (``pread`` on the descriptor it
    inherited) — then :meth:`result` gives their statistics; one span per slot at a time."""

    def __init__(self, chunk: int, fd: int) -> None:
        self.chunk = chunk
        self.fd = fd
        self.ident = _ident(fd)
        self._shared = mmap.mmap(-1, 3 * chunk)  # MAP_SHARED | MAP_ANONYMOUS
        view = memoryview(self._shared)
        half = chunk // 2
        self.ins = (view[:chunk], view[chunk:2 * chunk])
        self.outs = (view[2 * chunk:2 * chunk + half], view[2 * chunk + half:])
        cmd_r, self._cmd = os.pipe()
        self._res, res_w = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the worker: never returns
            _serve(cmd_r, res_w, fd, self.ins, self.outs)
        os.close(cmd_r)
        os.close(res_w)
        self.alive = True
        self._pending: dict[int, tuple[str, int, int, int]] = {}

    def submit(self, slot: int, target: str, offset: int, start: int, end: int) -> None:
        self._pending[slot] = (target, offset, start, end)
        if self.alive:
            try:
                os.write(self._cmd, _CMD.pack(slot, _TARGETS.index(target), offset, start,
                                              end))
            except OSError:  # the worker is gone (a broken pipe): retire it
                self.close()

    def result(self, slot: int) -> CastStats:
        """The span's statistics; read and cast here if the worker could not (it is then
        retired). Raises :class:`ShortRead` when the file ends inside the span."""
        target, offset, start, end = self._pending.pop(slot)
        if self.alive:
            got = _read_exact(self._res, _RESULT.size)
            if got is not None:
                ok, *fields = _RESULT.unpack(got)
                if ok:
                    return CastStats(*fields)
            self.close()
        return _read_and_cast(self.fd, offset, start, end, self.ins[slot], self.outs[slot],
                              target)

    def drain(self) -> None:
        """Wait for spans still out (a cast abandoned half-way): the next cast starts clean.
        A span the file ended inside was reported already, or nobody wants it any more."""
        for slot in list(self._pending):
            with contextlib.suppress(ShortRead):
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


class ShortRead(Exception):
    """The input file ended inside a span (it changed under us)."""


def _ident(fd: int) -> tuple[int, int, int]:
    st = os.fstat(fd)
    return fd, st.st_dev, st.st_ino


def _read_and_cast(fd: int, offset: int, start: int, end: int, ins: memoryview,
                   outs: memoryview, target: str) -> CastStats:
    """Elements ``start..end`` of the chunk at ``offset`` of ``fd``: read, then cast."""
    view = ins[4 * start:4 * end]
    pos = offset + 4 * start
    got = 0
    while got < len(view):
        n = os.preadv(fd, [view[got:]], pos + got)
        if not n:
            raise ShortRead(f"input ends inside a storage at offset {pos + got}")
        got += n
    values = np.frombuffer(ins, "<f4")[start:end]
    out = np.frombuffer(outs, "<u2")[start:end]
    return cast_span(values, target, out)


def _serve(cmd: int, res: int, fd: int, ins: tuple[memoryview, ...],
           outs: tuple[memoryview, ...]) -> None:
    """The worker's loop: read and cast what it is asked, answer, exit at end-of-file. It
    keeps only its pipes and the input file open (a descriptor the parent closes — a pipe
    to another process, a connection — must not stay open here), and leaves through
    ``os._exit`` whatever happens (no atexit handlers, no flush of the parent's buffered
    output, no traceback)."""
    code = 0
    try:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
        null = os.open(os.devnull, os.O_RDWR)
        for std in (0, 1, 2):
            os.dup2(null, std)
        keep = {0, 1, 2, cmd, res, fd}
        for name in os.listdir("/proc/self/fd"):
            if int(name) not in keep:
                with contextlib.suppress(OSError):
                    os.close(int(name))
        while True:
            got = _read_exact(cmd, _CMD.size)
            if got is None:
                break
            slot, target, offset, start, end = _CMD.unpack(got)
            try:
                stats = _read_and_cast(fd, offset, start, end, ins[slot], outs[slot],
                                       _TARGETS[target])
                reply = _RESULT.pack(1, *astuple(stats))
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


def take_worker(chunk: int, fd: int) -> ForkWorker | None:
    """The forked worker for the input file ``fd`` (forked again for another file: it reads
    the descriptor it inherited), or ``None`` when it is busy or cannot be had. Give it back
    with :func:`give_worker`."""
    global _worker
    if not _lock.acquire(blocking=False):
        return None  # another cast holds it: that one runs as before
    try:
        if _worker is not None and (not _worker.alive or _worker.chunk != chunk
                                    or _worker.ident != _ident(fd)):
            _worker.close()
            _worker = None
        if _worker is None and threading.active_count() == 1:
            # Forked only from a single-threaded process: a lock another thread holds
            # would stay held in the child.
            _warm_up()
            _worker = ForkWorker(chunk, fd)
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


def threads() -> tuple[ThreadPoolExecutor, int]:
    """The cast thread pool (started on first use) and how many threads it runs."""
    global _threads
    from concurrent.futures import ThreadPoolExecutor  # logging and more: only when used

    workers = min(8, cores())
    with _threads_lock:
        if _threads is None:
            _threads = ThreadPoolExecutor(max_workers=workers,
                                          thread_name_prefix="ckpt-guard-cast")
        return _threads, workers


@atexit.register
def _shutdown() -> None:
    if _worker is not None:
        _worker.close()
