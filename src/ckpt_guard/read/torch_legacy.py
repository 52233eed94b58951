"""torch.save's legacy format (``_use_new_zipfile_serialization=False``, all files before 1.6).

Five pickles back to back (torch/serialization.py ``_legacy_save``): the magic number
``0x1950a86a20f9469cfc6c``, the protocol version ``1001``, ``sys_info``, the object (storage
persistent ids have six fields, the last being ``view_metadata``), the list of storage keys.
Then, for each key in that list's order, a little-endian int64 element count and the raw
bytes. Only the pickles and the 8-byte counts are read: each storage's offset is found by
seeking over the data.

torch reaches this stream only after ``tarfile`` refused the file (:mod:`torch_tar`), and
compares the first two pickles with the magic number and 1001 by *value*, whatever their
spelling: so do we. A first pickle that is not the magic number makes the file a bare pickle
(torch raises after unpickling it).
"""

from __future__ import annotations

import re
import struct
from typing import Any, BinaryIO

from ckpt_guard.read import pickle_vm, rebuild
from ckpt_guard.read.checkpoint import Checkpoint, LimitExceeded, UnreadableError
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.positioned import PositionedReader
from ckpt_guard.read.torch_tar import fail_closed, opaque
from ckpt_guard.read.tree import Storage
from ckpt_guard.vocab import Format

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
_HEADER_MEMBERS = ("magic number", "protocol version", "sys_info")
_IDENT = re.compile(r"[A-Za-z_][\w.]*")


class NotLegacy(UnreadableError):
    """The first pickle is not torch's magic number (or does not read): torch.load raises
    after unpickling it, so the file is that one (bare) pickle."""


def read_torch_legacy(path: str, fh: BinaryIO, size: int, limits: Limits) -> Checkpoint:
    """Read a legacy torch checkpoint (format ``torch-legacy``) as torch's ``_legacy_load``
    does after its tar attempt failed: unpickle, compare by *value*, go on. Raises
    :class:`NotLegacy` when the first pickle is not the magic number, :class:`UnreadableError`
    with a one-line message when the stream is damaged. A stream torch could read at other
    offsets than we do (a frame running past a STOP) fails closed."""
    src = _Source(fh, size, limits)
    ckpt = Checkpoint(path=path, format=Format.TORCH_LEGACY, size_bytes=size)
    try:
        first = src.pickle(0, None, "magic number")
    except UnreadableError as e:
        raise NotLegacy(str(e)) from e
    # A value built by a call we do not run (its globals are judged) may compare equal to
    # anything: then read on as torch might, judging whatever parses, without requiring it to.
    speculative = opaque(first.root)
    if (not speculative and first.root != MAGIC_NUMBER) or (speculative and first.end >= size):
        raise NotLegacy("not a torch checkpoint (bad magic number)")
    ckpt.globals.extend(first.globals)
    ckpt.pickles.append(first.judged)
    try:
        return _read_rest(ckpt, src, first, size, limits, speculative)
    except _Ambiguous as e:
        ckpt.format = Format.UNKNOWN
        fail_closed(ckpt, "legacy-stream", "", str(e))
        return ckpt
    except UnreadableError as e:
        partial = list(getattr(e, "partial_globals", None) or [])
        if speculative and not isinstance(e, LimitExceeded):
            ckpt.format = Format.UNKNOWN
            # Bytes after a bare pickle that merely parse as GLOBAL lines import nothing.
            ckpt.globals.extend(g for g in partial
                                if _IDENT.fullmatch(g.module) and _IDENT.fullmatch(g.name))
            ckpt.notes.append("a pickle whose value torch compares with its magic number by "
                              "running code; what follows it does not read as a legacy "
                              f"checkpoint ({e}); every global up to there was judged")
            return ckpt
        e.partial_globals = ckpt.globals + partial  # type: ignore[attr-defined]
        raise


def _read_rest(ckpt: Checkpoint, src: _Source, first: pickle_vm.PickleResult, size: int,
               limits: Limits, speculative: bool) -> Checkpoint:
    _frames_end_at_stop(first, "magic number")
    pos = first.end
    values: list[Any] = [first.root]
    for member in _HEADER_MEMBERS[1:]:
        res = src.pickle(pos, None, member)
        ckpt.globals.extend(res.globals)
        ckpt.pickles.append(res.judged)
        values.append(res.root)
        if member == "protocol version":
            speculative = speculative or opaque(res.root)
            if not speculative and res.root != PROTOCOL_VERSION:
                # torch raises here, after unpickling the two pickles (partial_globals)
                raise UnreadableError(f"unsupported torch legacy protocol version {res.root!r}")
        _frames_end_at_stop(res, member)
        pos = res.end

    sys_info = values[2]
    if isinstance(sys_info, dict):
        ckpt.metadata["sys_info"] = sys_info
        if sys_info.get("little_endian") is False:
            ckpt.byteorder = "big"

    storages: dict[str, Storage] = {}
    views: dict[str, tuple[Storage, Storage, int]] = {}

    def persistent_load(pid: Any) -> Any:
        return rebuild.storage_from_pid(pid, storages, limits, legacy=True, views=views)

    res = src.pickle(pos, persistent_load, "data")
    ckpt.globals.extend(res.globals)
    ckpt.pickles.append(res.judged)
    _frames_end_at_stop(res, "data")
    keys_res = src.pickle(res.end, None, "storage keys")
    ckpt.globals.extend(keys_res.globals)
    ckpt.pickles.append(keys_res.judged)
    # The storages' data starts where torch's reader stopped: only known without a frame
    # running past the STOP.
    _frames_end_at_stop(keys_res, "storage keys")
    ckpt.root = res.root
    ckpt.pickle_protocol = res.protocol
    keys = keys_res.root
    if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
        raise UnreadableError("malformed torch legacy file: storage key list is not a list of str")

    offset = keys_res.end
    for key in keys:
        st = storages.get(key)
        if st is None:
            raise UnreadableError(f"malformed torch legacy file: storage {key} is listed but "
                                  "never used")
        raw = src.read_at(offset, 8)
        if len(raw) < 8:
            raise UnreadableError(f"truncated file: storage {key} is missing")
        (numel,) = struct.unpack("<q", raw)
        if numel != st.numel:
            raise UnreadableError(f"storage {key} holds {numel} elements but the pickle says "
                                  f"{st.numel}")
        st.offset = offset + 8
        offset = st.offset + st.nbytes
        if offset > size:
            raise UnreadableError(f"truncated file: storage {key} ends past the end of file")
    missing = [k for k in storages if k not in set(keys)]
    if missing:
        ckpt.notes.append(f"{len(missing)} storage(s) referenced but not stored in the file")
    if offset < size:
        ckpt.notes.append(f"{size - offset} unexpected bytes after the last storage")
    for view, root, elem_offset in views.values():
        if root.offset is not None:
            view.offset = root.offset + elem_offset * (root.nbytes // max(root.numel, 1))
    ckpt.storages = storages
    return ckpt


class _Ambiguous(Exception):
    """Internal: torch could read this stream differently from us."""


def _frames_end_at_stop(res: pickle_vm.PickleResult, member: str) -> None:
    # CPython's C unpickler reads a FRAME it has not buffered with one read() of the whole
    # frame (always for >= 128 KiB, for smaller ones when the BufferedReader's peek() returns
    # less), and a STOP inside the frame leaves the file there: the next pickle.load starts
    # at the frame's end or right after the STOP depending on buffering. torch.save never
    # writes that (pickle's framer ends each frame with the STOP), so refuse it.
    if res.frames_end > res.end:
        raise _Ambiguous(f"a FRAME in pickle {member} runs {res.frames_end - res.end} bytes "
                         "past its STOP: where torch's next pickle starts depends on read "
                         "buffering")


class _Source(PositionedReader):
    """Reads pickles from the head of a file, fetching more bytes only as a pickle needs."""

    problem = "truncated file"

    def __init__(self, fh: BinaryIO, size: int, limits: Limits) -> None:
        super().__init__(fh, size)
        self.limits = limits
        self.buf = b""

    def pickle(self, start: int, persistent_load: Any, member: str) -> pickle_vm.PickleResult:
        want = max(len(self.buf), 64 * 1024)
        while True:
            if len(self.buf) < min(want, self.size):
                self.buf = self.read_at(0, min(want, self.size))
            try:
                return pickle_vm.run(self.buf, start, persistent_load=persistent_load,
                                     limits=self.limits, member=member)
            except pickle_vm.PickleTruncated as e:
                if len(self.buf) >= self.size:
                    raise UnreadableError(f"truncated file: {e}") from e
                if len(self.buf) - start >= self.limits.max_pickle_bytes:
                    raise LimitExceeded(f"pickle {member} is larger than "
                                        f"{self.limits.max_pickle_bytes} bytes") from e
                want = len(self.buf) * 4
