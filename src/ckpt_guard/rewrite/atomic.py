"""Atomic replacement: write a temporary file next to the target, fsync, rename over it.

A process killed at any moment leaves either the original file or the complete new one —
never a mix. The temporary file's name starts with ``.`` and carries ``.ckpt-guard-`` so a
leftover from a killed run is recognisable (:func:`stale_temporaries`).
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

TEMP_MARK = ".ckpt-guard-"


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
        if not fh.closed:
            fh.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def sync_file(fh: BinaryIO) -> None:
    fh.flush()
    os.fsync(fh.fileno())


def commit(tmp: str, target: str | os.PathLike[str], *, mode_from: str | None = None) -> None:
    """Give ``tmp`` the mode of ``mode_from`` (default: the target when it exists, else a
    0644-style mode under the umask), rename it over ``target`` and fsync the directory."""
    src = mode_from if mode_from is not None else str(target)
    try:
        mode = stat.S_IMODE(os.stat(src).st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        mode = 0o666 & ~umask
    os.chmod(tmp, mode)
    os.replace(tmp, target)
    _sync_dir(Path(target).parent)


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
