"""Positioned reads of an open weight file, shared by the zip and legacy readers."""

from __future__ import annotations

import os

from ckpt_guard.read.checkpoint import UnreadableError

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import BinaryIO


class PositionedReader:
    """``read_at(offset, length)`` within a file of known ``size``: ``pread`` when the file has
    a descriptor (no shared seek position), else seek + read. An offset outside the file is an
    :class:`UnreadableError` starting with ``problem`` (what such a file is: "corrupt zip
    archive", "truncated file")."""

    problem = "corrupt file"

    def __init__(self, fh: BinaryIO, size: int) -> None:
        self.fh = fh
        self.size = size
        # A remote file read by range (read/remote.py): every scattered read is a request,
        # so readers skip reads a verdict does not need (e.g. storage records' local headers).
        self.remote = bool(getattr(fh, "remote", False))
        try:
            self.fd: int | None = fh.fileno()
        except (AttributeError, OSError, ValueError):
            self.fd = None

    def read_at(self, offset: int, length: int) -> bytes:
        if not 0 <= offset <= self.size or length < 0:
            raise UnreadableError(f"{self.problem}: offset {offset} outside the file")
        length = min(length, self.size - offset)
        if self.fd is not None and hasattr(os, "pread"):
            try:
                return os.pread(self.fd, length, offset)
            except OSError as e:
                raise UnreadableError(f"cannot read: {e.strerror or e}") from e
        self.fh.seek(offset)
        return self.fh.read(length)
