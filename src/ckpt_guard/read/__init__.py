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

Every failure is an :class:`UnreadableError` with a one-line message.
"""

from __future__ import annotations

import errno
import os
import stat
from typing import BinaryIO

from ckpt_guard.read.checkpoint import Checkpoint, LimitExceeded, UnreadableError
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


def read_path(path: str, limits: Limits = _DEFAULT_LIMITS) -> Checkpoint:
    """Read ``path`` (a file or a checkpoint directory). Symlinks are followed; whether a link
    may leave the repository is the caller's decision. Raises :class:`UnreadableError`."""
    try:
        st = os.stat(path)
    except OSError as e:
        if e.errno == errno.ENOENT and os.path.islink(path):
            raise UnreadableError("broken symlink") from e
        raise UnreadableError(_os_message(e)) from e
    if stat.S_ISDIR(st.st_mode):
        from ckpt_guard.read.directories import read_directory

        return read_directory(path, limits)
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
        return _read_open_file(path, fh, fst.st_size, limits)


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
        if kind == "pickle":
            return _read_bare_pickle(path, fh, size, limits)
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
        first = str(e).splitlines()[0][:120] if str(e) else ""
        raise UnreadableError(f"cannot read file ({type(e).__name__}: {first})") from e


def _read_bare_pickle(path: str, fh: BinaryIO, size: int, limits: Limits) -> Checkpoint:
    """A bare pickle (no torch container). ``torch.load`` would unpickle it — executing it
    unless ``weights_only`` — so its globals are reported for the safety check."""
    from ckpt_guard.read.pickle_vm import load

    if size > limits.max_pickle_bytes:
        raise LimitExceeded(f"pickle of {size} bytes exceeds the limit")
    data = fh.read(size)
    try:
        root, globals_ = load(data, persistent_load=None, limits=limits,
                              member=os.path.basename(path))
    except UnreadableError as e:
        if isinstance(e, LimitExceeded) or getattr(e, "partial_globals", None):
            raise  # globals already named: keep them (``partial_globals``) for the caller
        raise NotAWeightFile(f"not a weight file: {describe(data[:HEAD_BYTES])}") from e
    return Checkpoint(path=path, format="unknown", size_bytes=size, root=root,
                      globals=list(globals_),
                      notes=["a bare pickle, not a torch checkpoint (torch.load would "
                             "unpickle it)"])

