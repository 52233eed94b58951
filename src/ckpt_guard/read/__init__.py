"""Read a weight file or checkpoint directory into a :class:`Checkpoint`, from metadata only.

:func:`read_path` tells the format by content (never by extension) and dispatches:

=================  ===============================================================
content            reader
=================  ===============================================================
``PK\\x03\\x04``      :func:`ckpt_guard.read.torch_zip.read_torch_zip` (zip or TorchScript)
pickle + magic     :func:`ckpt_guard.read.torch_legacy.read_torch_legacy`
u64 N + ``{``      :func:`ckpt_guard.read.safetensors.read_safetensors`
LFS pointer text   :func:`ckpt_guard.read.lfs.read_lfs_pointer`
a directory        :func:`ckpt_guard.read.directories.read_directory`
=================  ===============================================================

Every failure is an :class:`UnreadableError` with a one-line message, carrying in
``partial_globals`` the globals of every pickle read before it failed (never lost: the
policy still judges them).
"""

from __future__ import annotations

import errno
import os
import re
import stat
from typing import BinaryIO

from ckpt_guard.read.checkpoint import (
    Checkpoint,
    LimitExceeded,
    UnreadableError,
    collect_globals,
)
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.sniff import HEAD_BYTES, NotAWeightFile, describe, sniff

__all__ = ["read_path", "Checkpoint", "UnreadableError", "LimitExceeded", "NotAWeightFile",
           "Limits"]

_DEFAULT_LIMITS = Limits()
_DEBUG_ENV = "CKPT_GUARD_DEBUG"  # set to re-raise reader bugs instead of reporting them


def _os_message(e: OSError) -> str:
    if e.errno in (errno.EACCES, errno.EPERM):
        return "permission denied"
    if e.errno == errno.ENOENT:
        return "no such file or directory"
    if e.errno == errno.ELOOP:
        return "symlink loop"
    return f"cannot read: {e.strerror or e}"


def read_path(path: str, limits: Limits = _DEFAULT_LIMITS, *, root: str | None = None) -> Checkpoint:
    """Read ``path`` (a file or a checkpoint directory). Raises :class:`UnreadableError`.

    Symlinks are followed; with ``root`` (e.g. the repository), a path whose real location is
    outside ``root`` is refused — a link must not make a check read arbitrary files.
    """
    if root is not None:
        _check_within(path, root)
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ENOENT and os.path.islink(path):
            raise UnreadableError("broken symlink") from e
        raise UnreadableError(_os_message(e)) from e
    if stat.S_ISDIR(st.st_mode):
        from ckpt_guard.read.directories import read_directory

        return read_directory(path, limits, root=root)
    if not stat.S_ISREG(st.st_mode):
        raise UnreadableError("not a regular file (a FIFO, socket or device)")
    try:
        # O_NONBLOCK: a file swapped for a FIFO after the stat must not block the open.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise UnreadableError(_os_message(e)) from e
    try:
        fst = os.fstat(fd)
        if not stat.S_ISREG(fst.st_mode):
            os.close(fd)
            raise UnreadableError("not a regular file (a FIFO, socket or device)")
        fh = os.fdopen(fd, "rb")
    except OSError as e:
        os.close(fd)
        raise UnreadableError(_os_message(e)) from e
    with fh:
        try:
            with collect_globals():
                return _read_open_file(path, fh, fst.st_size, limits)
        except NotAWeightFile as e:
            e.partial_globals = []  # not a pickle: what a partial parse "named" means nothing
            raise


def _check_within(path: str, root: str) -> None:
    real, base = os.path.realpath(path), os.path.realpath(root)
    if real != base and not real.startswith(base.rstrip(os.sep) + os.sep):
        what = "symlink" if os.path.islink(path) or real != os.path.abspath(path) else "path"
        raise UnreadableError(f"{what} points outside the repository ({real})")


def _read_open_file(path: str, fh: BinaryIO, size: int, limits: Limits) -> Checkpoint:
    try:
        if size == 0:
            raise NotAWeightFile("not a weight file: empty file")
        head = fh.read(HEAD_BYTES)
        kind = sniff(head, size)
        fh.seek(0)
        if kind == "zip":
            from ckpt_guard.read.torch_zip import read_torch_zip

            return read_torch_zip(path, fh, size, limits)
        if kind in ("torch-legacy", "tar"):
            from ckpt_guard.read.torch_legacy import read_torch_legacy

            return read_torch_legacy(path, fh, size, limits)
        if kind == "safetensors":
            from ckpt_guard.read.safetensors import read_safetensors

            return read_safetensors(path, fh, size, limits)
        if kind == "lfs-pointer":
            from ckpt_guard.read.lfs import read_lfs_pointer

            return read_lfs_pointer(path, head, size)
        if kind in ("pickle", "unknown"):
            return _read_bare_pickle(path, fh, size, limits, head)
        raise NotAWeightFile(f"not a weight file: {describe(head)}")
    except UnreadableError:
        raise
    except OSError as e:
        raise UnreadableError(_os_message(e)) from e
    except (RecursionError, MemoryError) as e:
        raise LimitExceeded(f"resource limit while reading: {type(e).__name__}") from e
    except Exception as e:  # a reader bug must not become a traceback for users
        if os.environ.get(_DEBUG_ENV):
            raise
        raise UnreadableError(f"cannot read file ({one_line(e)})") from e


def one_line(e: BaseException) -> str:
    """``Type: first line of the message`` (at most 120 characters of it), never raising —
    even for messages that cannot be built (e.g. ``str`` of a huge int)."""
    try:
        text = str(e)
    except Exception:  # noqa: BLE001 - the message itself is hostile; the type still says
        text = ""
    first = text.splitlines()[0][:120] if text.strip() else ""
    return f"{type(e).__name__}: {first}" if first else type(e).__name__


_PICKLE_PROBE_BYTES = 64 * 1024
_IDENT = re.compile(r"[A-Za-z_][\w.]*")


def _read_bare_pickle(path: str, fh: BinaryIO, size: int, limits: Limits,
                      head: bytes) -> Checkpoint:
    """Content that is no container format but may be a bare pickle. ``torch.load`` falls
    back to unpickling such a file — executing it unless ``weights_only`` — so when it reads
    as a pickle its globals are reported for the safety check (format ``unknown``)."""
    from ckpt_guard.read.pickle_vm import PickleTruncated, run

    fh.seek(0)
    data = fh.read(min(size, _PICKLE_PROBE_BYTES))
    member = os.path.basename(path)
    try:
        try:
            res = run(data, persistent_load=_keep_pid, limits=limits, member=member)
        except PickleTruncated:
            if len(data) >= size:
                raise
            if size > limits.max_pickle_bytes:
                raise LimitExceeded(f"pickle of {size} bytes exceeds the limit") from None
            data += fh.read(size - len(data))
            res = run(data, persistent_load=_keep_pid, limits=limits, member=member)
    except LimitExceeded:
        raise
    except UnreadableError as e:
        partial = list(getattr(e, "partial_globals", None) or [])
        if partial and all(_IDENT.fullmatch(g.module) and _IDENT.fullmatch(g.name)
                           for g in partial):
            # torch.load would unpickle (run) it up to the failure, then raise: its globals
            # are judged (they ride on the error), and the file fails.
            raise UnreadableError(f"a bare pickle that does not parse to the end ({e}); "
                                  "torch.load would run it up to there") from e
        if head[:1] == b"\x80" and len(head) > 1 and head[1] <= 5:  # starts as a pickle
            raise UnreadableError(f"broken pickle: {e}") from e
        raise NotAWeightFile(f"not a weight file: {describe(head)}") from e
    return Checkpoint(path=path, format="unknown", size_bytes=size, root=res.root,
                      globals=list(res.globals), pickles=[res.judged],
                      notes=["a bare pickle, not a torch checkpoint (torch.load would "
                             "unpickle it)"])


def _keep_pid(pid: object) -> object:
    return pid
