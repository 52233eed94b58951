"""Read a weight file or checkpoint directory into a :class:`Checkpoint`, from metadata only.

:func:`read_path` tells the format by content (never by extension) and dispatches:

=================  ===============================================================
content            reader
=================  ===============================================================
``PK\\x03\\x04``      :func:`ckpt_guard.read.torch_zip.read_torch_zip` (zip or TorchScript)
tar (tarfile)      :func:`ckpt_guard.read.torch_tar.read_torch_tar` (torch tries it first)
pickle == magic    :func:`ckpt_guard.read.torch_legacy.read_torch_legacy` (by value)
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

from ckpt_guard.read.checkpoint import (
    Checkpoint,
    GlobalUse,
    JudgedPickle,
    LimitExceeded,
    UnreadableError,
    collect_globals,
)
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.sniff import HEAD_BYTES, NotAWeightFile, describe, sniff
from ckpt_guard.vocab import Format

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from collections.abc import Mapping
    from typing import BinaryIO

__all__ = ["read_path", "read_remote", "Checkpoint", "UnreadableError", "LimitExceeded", "NotAWeightFile",
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


def read_path(path: str, limits: Limits = _DEFAULT_LIMITS, *, root: str | None = None,
              sources: Mapping[str, tuple[str, tuple[tuple[str, str], ...]]] | None = None
              ) -> Checkpoint:
    """Read ``path`` (a file or a checkpoint directory). Raises :class:`UnreadableError`.
    ``sources``: for a sharded set's index, shard path → (URL, headers) to read by range
    instead of the local file (a shard that is a Git LFS pointer, its object by range).

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
    from ckpt_guard.read.sharded import is_index_name

    if is_index_name(path):  # a sharded set: the index and every shard it names
        from ckpt_guard.read.sharded import read_sharded

        return read_sharded(path, limits, root=root, sources=sources)
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


def read_remote(url: str, limits: Limits = _DEFAULT_LIMITS, *,
                headers: dict[str, str] | None = None, name: str | None = None) -> Checkpoint:
    """Read a remote weight file (``https://``, ``hf://``, object stores) by byte range, as
    :func:`read_path` reads a local one; ``headers`` for the request (e.g. an LFS download
    action's), ``name`` the path to show; an index URL (``….index.json``) is read with its
    shards as one set (read/remote_sharded.py). Raises :class:`UnreadableError`."""
    from ckpt_guard.read.remote import open_remote
    from ckpt_guard.read.sharded import is_index_name

    if is_index_name(url.split("?", 1)[0]):
        from ckpt_guard.read.remote_sharded import read_remote_set

        return read_remote_set(url, limits, headers=headers, name=name)

    fh = open_remote(url, **({"headers": headers} if headers else {}),
                     **({"name": name} if name else {}))
    size = getattr(fh, "size", None)
    if not isinstance(size, int):
        raise UnreadableError(f"{url}: the size of the remote file is unknown")
    with fh, collect_globals():  # a failure carries the globals read before it
        ckpt = _read_open_file(name or url, fh, size, limits)  # type: ignore[arg-type]
    stats = getattr(fh, "stats", None)
    if stats is not None:  # what the read cost, for the report
        ckpt.metadata["remote_requests"] = stats.requests
        ckpt.metadata["remote_bytes"] = stats.bytes
    return ckpt


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
        if kind == Format.LFS_POINTER:
            from ckpt_guard.read.lfs import read_lfs_pointer

            return read_lfs_pointer(path, head, size)
        return _read_not_zip(path, fh, size, limits, head, kind)
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


def _read_not_zip(path: str, fh: BinaryIO, size: int, limits: Limits, head: bytes,
                  kind: str) -> Checkpoint:
    """What torch.load(path) does with a file that does not start with ``PK\\x03\\x04``
    (torch routes by content, not by name, except for ``.safetensors``): try ``tarfile``
    first (:mod:`ckpt_guard.read.torch_tar`), else unpickle from offset 0 and compare the
    first pickle with the legacy magic number by value (:mod:`ckpt_guard.read.torch_legacy`),
    else it was a bare pickle."""
    from ckpt_guard.read import torch_tar

    tar = torch_tar.open_like_torch(fh)
    if tar is not None:
        tar_ckpt = torch_tar.read_torch_tar(path, fh, size, limits, tar)
        if kind == Format.SAFETENSORS:
            # Named .safetensors it loads as safetensors; under any other name torch.load
            # takes the tar path: both readings are judged.
            from ckpt_guard.read.safetensors import read_safetensors

            ckpt = read_safetensors(path, fh, size, limits)
            ckpt.globals.extend(tar_ckpt.globals)
            ckpt.pickles.extend(tar_ckpt.pickles)
            ckpt.notes.extend(["also a tar archive: torch.load under a name other than "
                               "*.safetensors reads it as a PyTorch <= 0.3 checkpoint"]
                              + tar_ckpt.notes)
            return ckpt
        _also_as_stream(tar_ckpt, path, fh, size, limits)
        return tar_ckpt
    if torch_tar.header_checksum_ok(head[:512]):
        # Our tarfile refused a block that is a tar header by its checksum: another Python's
        # tarfile could take it, so torch's path through it is not certain.
        ckpt = Checkpoint(path=path, format=Format.UNKNOWN, size_bytes=size)
        torch_tar.fail_closed(ckpt, "tar", "", "the file starts with a valid tar header "
                              "checksum that this Python's tarfile refuses")
        return ckpt
    if kind == Format.SAFETENSORS:
        from ckpt_guard.read.safetensors import read_safetensors

        ckpt = read_safetensors(path, fh, size, limits)
        first, judged = _first_pickle(fh, size, limits, os.path.basename(path))
        if first:  # torch.load under another name unpickles from offset 0
            ckpt.globals.extend(first)
            ckpt.pickles.extend(judged)
            ckpt.notes.append("its first bytes also read as a pickle that torch.load (under "
                              "a name other than *.safetensors) would unpickle")
        return ckpt
    from ckpt_guard.read.torch_legacy import NotLegacy, read_torch_legacy

    try:
        return read_torch_legacy(path, fh, size, limits)
    except NotLegacy:
        pass
    if kind in ("pickle", Format.UNKNOWN, Format.TORCH_LEGACY, "tar"):
        return _read_bare_pickle(path, fh, size, limits, head)
    raise NotAWeightFile(f"not a weight file: {describe(head)}")


def _also_as_stream(ckpt: Checkpoint, path: str, fh: BinaryIO, size: int,
                    limits: Limits) -> None:
    """A tar is also judged as the pickle stream it may be: ``torch.load`` of a file object
    without a descriptor (``io.BytesIO``, a download, a pipe) skips the tar step and unpickles
    from offset 0 — a tar whose first header is also a pickle (its name field) would run that
    pickle there while the tar reads clean."""
    from ckpt_guard.read.torch_legacy import NotLegacy, read_torch_legacy

    try:
        stream = read_torch_legacy(path, fh, size, limits)
        globals_, judged = list(stream.globals), list(stream.pickles)
    except NotLegacy:
        globals_, judged = _first_pickle(fh, size, limits, os.path.basename(path))
    except UnreadableError as e:
        globals_, judged = list(getattr(e, "partial_globals", None) or []), []
    if globals_ or judged:
        ckpt.globals.extend(globals_)
        ckpt.pickles.extend(judged)
        ckpt.notes.append("its first bytes also read as a pickle stream, which torch.load of "
                          "a file object without a descriptor (e.g. io.BytesIO) unpickles "
                          "instead of the tar: both are judged")


def _first_pickle(fh: BinaryIO, size: int, limits: Limits, member: str
                  ) -> tuple[list[GlobalUse], list[JudgedPickle]]:
    """The globals a pickle read from offset 0 references before it stops or fails (and the
    pickle, when it reads to its STOP). Only names an import could resolve count, as for bare
    pickles: bytes of another format that merely parse as GLOBAL lines import nothing."""
    from ckpt_guard.read.pickle_vm import run

    fh.seek(0)
    data = fh.read(min(size, _PICKLE_PROBE_BYTES))
    try:
        res = run(data, persistent_load=_keep_pid, limits=limits, member=member)
    except UnreadableError as e:
        globals_, judged = list(getattr(e, "partial_globals", None) or []), []
    else:
        globals_, judged = list(res.globals), [res.judged] if res.judged else []
    importable = [g for g in globals_ if _IDENT.fullmatch(g.module) and _IDENT.fullmatch(g.name)]
    return importable, judged if importable else []


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
    return Checkpoint(path=path, format=Format.UNKNOWN, size_bytes=size, root=res.root,
                      globals=list(res.globals), pickles=[res.judged],
                      notes=["a bare pickle, not a torch checkpoint (torch.load would "
                             "unpickle it)"])


def _keep_pid(pid: object) -> object:
    return pid
