"""torch.save's legacy format (``_use_new_zipfile_serialization=False``, all files before 1.6).

Five pickles back to back (torch/serialization.py ``_legacy_save``): the magic number
``0x1950a86a20f9469cfc6c``, the protocol version ``1001``, ``sys_info``, the object (storage
persistent ids have six fields, the last being ``view_metadata``), the list of storage keys.
Then, for each key in that list's order, a little-endian int64 element count and the raw
bytes. Only the pickles and the 8-byte counts are read: each storage's offset is found by
seeking over the data. The older tar variant (PyTorch ≤ 0.3) is recognised and refused.
"""

from __future__ import annotations

import struct
from typing import Any, BinaryIO

from ckpt_guard.read import pickle_vm, rebuild
from ckpt_guard.read.checkpoint import Checkpoint, LimitExceeded, UnreadableError
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.positioned import PositionedReader
from ckpt_guard.read.tree import Storage

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C
PROTOCOL_VERSION = 1001
_HEADER_MEMBERS = ("magic number", "protocol version", "sys_info")


def read_torch_legacy(path: str, fh: BinaryIO, size: int, limits: Limits) -> Checkpoint:
    """Read a legacy torch checkpoint (format ``torch-legacy``); :class:`UnreadableError`
    with a one-line message when it is not one or is damaged."""
    src = _Source(fh, size, limits)
    head = src.read_at(0, 512)
    if len(head) >= 262 and head[257:262] == b"ustar":
        raise UnreadableError("old torch tar checkpoint format (PyTorch <= 0.3) is not supported")
    ckpt = Checkpoint(path=path, format="torch-legacy", size_bytes=size)

    pos = 0
    values: list[Any] = []
    for member in _HEADER_MEMBERS:
        res = src.pickle(pos, None, member)
        ckpt.globals.extend(res.globals)
        ckpt.pickles.append(res.judged)
        values.append(res.root)
        pos = res.end
        if member == "magic number" and res.root != MAGIC_NUMBER:
            raise UnreadableError("not a torch checkpoint (bad magic number)")
        if member == "protocol version" and res.root != PROTOCOL_VERSION:
            raise UnreadableError(f"unsupported torch legacy protocol version {res.root!r}")
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
    ckpt.root = res.root
    ckpt.pickle_protocol = res.protocol
    ckpt.globals.extend(res.globals)
    ckpt.pickles.append(res.judged)
    keys_res = src.pickle(res.end, None, "storage keys")
    ckpt.globals.extend(keys_res.globals)
    ckpt.pickles.append(keys_res.judged)
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
