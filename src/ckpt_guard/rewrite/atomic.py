"""Atomic replacement: write a temporary file next to the target, fsync, rename over it.

A process killed at any moment leaves either the original file or the complete new one —
never a mix. The temporary file's name starts with ``.`` and carries ``.ckpt-guard-`` so a
leftover from a killed run is recognisable (:func:`stale_temporaries`); an in-place fix
removes the leftovers of the file it rewrites.

In place, the file replaced is the REAL file (:func:`in_place_source`): a symlink stays a
symlink to the fixed file, its owner, group and mode are kept, a read-only file is refused,
and nothing is replaced when the file changed since it was read (:func:`commit`).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

TEMP_MARK = ".ckpt-guard-"


class TargetError(Exception):
    """The file must not (or can no longer) be replaced. One line for users."""


@dataclass(frozen=True)
class Source:
    """The file an in-place fix reads and replaces, as it was when it was read."""

    real: str  # symlinks resolved: what is replaced, so a link keeps pointing at it
    stat: os.stat_result
    notes: tuple[str, ...] = ()
    # Called as keep(real, stat, replacement) right before the replacement is renamed over
    # ``real`` in place (rewrite/stash.py keeps the original); raising aborts the replace.
    keep: Callable[[str, os.stat_result, str], None] | None = None


def source_for(path: str, before: os.stat_result | None = None, *, in_place: bool,
               keep: Callable[[str, os.stat_result, str], None] | None = None) -> Source:
    """The file a fix reads (and, ``in_place``, replaces); ``before`` is its stat when it was
    read for the analysis, else now. Raises :class:`TargetError` for files that must be left
    alone. ``keep`` (in place only) is called before the original is replaced."""
    real = os.path.realpath(path)
    st = os.stat(real)
    if before is not None:
        ensure_unchanged(real, before, st)
    if not in_place:
        return Source(real, st)
    if not stat.S_ISREG(st.st_mode):
        raise TargetError("not a regular file")
    # Mode bits, not only os.access: root may write anything, but a file nobody may write
    # is a file its owner wants left alone.
    if not st.st_mode & 0o222 or not os.access(real, os.W_OK):
        raise TargetError("the file is read-only; make it writable or use --out DIR")
    notes = []
    if real != os.path.abspath(path):
        notes.append(f"{path} is a symlink: its target {real} was fixed, the link kept")
    if st.st_nlink > 1:
        notes.append(f"the file had {st.st_nlink} hard links: only this name now holds the "
                     f"fixed file, the other {st.st_nlink - 1} still hold the original")
    return Source(real, st, tuple(notes), keep)


def ensure_unchanged(path: str, before: os.stat_result,
                     now: os.stat_result | None = None) -> None:
    """Raise :class:`TargetError` when ``path`` is no longer the file ``before`` described."""
    now = now or os.stat(path)
    if (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) != (
            before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns):
        raise TargetError("the file changed while being fixed; run fix again")


def remove_stale(target: str | os.PathLike[str]) -> int:
    """Remove the temporaries a killed run left for ``target``; returns how many."""
    target = Path(target)
    n = 0
    for p in stale_temporaries(target.parent):
        if p.name.startswith(f".{target.name}{TEMP_MARK}"):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()
                n += 1
    return n


@contextlib.contextmanager
def temporary_beside(target: str | os.PathLike[str]) -> Iterator[tuple[BinaryIO, str]]:
    """Open a new temporary file in ``target``'s directory; yields ``(fh, temp_path)``.

    The file is removed when the block raises, or when the caller did not :func:`commit` it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}{TEMP_MARK}", suffix=".tmp",
                               dir=target.parent)
    fh = os.fdopen(fd, "w+b")
    try:
        yield fh, tmp
    finally:
        # Closing flushes, which fails again on a full disk: the temporary must go anyway.
        # (A committed file was closed by the writer before the rename, so nothing is hidden.)
        with contextlib.suppress(OSError):
            fh.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def sync_file(fh: BinaryIO) -> None:
    fh.flush()
    os.fsync(fh.fileno())


@contextlib.contextmanager
def syncing(fh: BinaryIO) -> Iterator[None]:
    """:func:`sync_file` in the background while the block runs (verification reads the
    written file back meanwhile: the same bytes, from the page cache); on leaving, waits for
    it and raises its error. Either way the file is durable before anything is renamed."""
    fh.flush()
    errors: list[OSError] = []

    def run() -> None:
        try:
            os.fsync(fh.fileno())
        except OSError as e:
            errors.append(e)

    worker = threading.Thread(target=run, name="ckpt-guard-fsync", daemon=True)
    worker.start()
    try:
        yield
    finally:
        worker.join()
    if errors:
        raise errors[0]


def commit(tmp: str, target: str | os.PathLike[str], *, mode_from: str | None = None,
           source: Source | None = None) -> None:
    """Rename ``tmp`` over ``target`` and fsync the directory.

    Nothing is replaced when ``source`` (the input) changed since it was read. In place
    (``target`` is the source's real path) the file keeps its owner, group and mode;
    otherwise ``tmp`` gets the mode of ``mode_from`` (default: the target when it exists,
    else 0666 under the umask).
    """
    if source is not None:
        ensure_unchanged(source.real, source.stat)
    if source is not None and os.path.abspath(target) == source.real:
        ours = os.stat(tmp)
        if (ours.st_uid, ours.st_gid) != (source.stat.st_uid, source.stat.st_gid):
            try:  # before chmod: chown may clear set-id bits
                os.chown(tmp, source.stat.st_uid, source.stat.st_gid)
            except PermissionError as e:
                raise TargetError(f"cannot keep the file's owner and group (uid "
                                  f"{source.stat.st_uid}, gid {source.stat.st_gid})") from e
        mode = stat.S_IMODE(source.stat.st_mode)
    else:
        try:
            mode = stat.S_IMODE(os.stat(mode_from or target).st_mode)
        except FileNotFoundError:
            umask = os.umask(0)
            os.umask(umask)
            mode = 0o666 & ~umask
    os.chmod(tmp, mode)
    if source is not None and source.keep is not None \
            and os.path.abspath(target) == source.real:
        ensure_unchanged(source.real, source.stat)
        source.keep(source.real, source.stat, tmp)  # the original is kept before it goes
    os.replace(tmp, target)
    _sync_dir(Path(target).parent)


def sync_dir(directory: str | os.PathLike[str]) -> None:
    """fsync a directory (its renames and links are durable once this returns)."""
    _sync_dir(Path(directory))


def _sync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return  # not supported (e.g. some platforms); the rename itself is atomic
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


def stale_temporaries(directory: str | os.PathLike[str]) -> list[Path]:
    """Temporary files a killed ckpt-guard run left in ``directory``."""
    return sorted(p for p in Path(directory).iterdir()
                  if p.name.startswith(".") and TEMP_MARK in p.name and p.suffix == ".tmp")
