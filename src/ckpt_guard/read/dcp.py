"""torch.distributed.checkpoint (DCP) directories: ``.metadata`` + ``__<rank>_<n>.distcp``.

What torch runs when it loads one (torch/distributed/checkpoint/filesystem.py,
default_planner.py, torch 2.13):

* ``FileSystemReader.read_metadata``: ``pickle.load`` of ``.metadata`` — a plain, unrestricted
  unpickle (the dataclasses of ``checkpoint/metadata.py`` and ``filesystem._StorageInfo``).
* ``read_data``: each item is the byte range ``(offset, length)`` of a ``.distcp`` file named by
  ``storage_data[MetadataIndex] = _StorageInfo(relative_path, offset, length)``; tensors are
  ``torch.load(weights_only=True)``-ed from it, other values (``BytesStorageMetadata``:
  ints, strings, any object) with ``DefaultLoadPlanner.load_bytes``:
  ``torch.load(value, weights_only=False)`` — code runs if the slice says so.

So ``.metadata`` is read with our own pickle reader (nothing imported), and every slice it
names is read as the torch file it is (a ``torch.save`` zip), each a child of the directory
named ``<file>@<offset>``. Nothing else in a ``.distcp`` is ever loaded.
"""

from __future__ import annotations

import io
import os
from typing import Any

from ckpt_guard.read.checkpoint import Checkpoint, UnreadableError
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.tree import Opaque, as_mapping, attributes

METADATA = ".metadata"
MAX_ITEMS = 100_000  # storage items judged in one directory


def is_dcp(files: list[str]) -> bool:
    return METADATA in files and any(f.endswith(".distcp") for f in files)


class _Slice(io.RawIOBase):
    """A read-only window ``[start, start + length)`` of an open file, as a file."""

    def __init__(self, fh: Any, start: int, length: int) -> None:
        self.fh, self.start, self.length, self.pos = fh, start, length, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self.pos, 2: self.length}[whence]
        self.pos = max(0, base + pos)
        return self.pos

    def read(self, n: int = -1) -> bytes:
        left = max(0, self.length - self.pos)
        n = left if n is None or n < 0 else min(n, left)
        self.fh.seek(self.start + self.pos)
        data = self.fh.read(n)
        self.pos += len(data)
        return data

    def readinto(self, b: Any) -> int:
        data = self.read(len(b))
        b[:len(data)] = data
        return len(data)


def _items(meta_root: Any) -> list[tuple[str, str, int, int]]:
    """``(fqn, relative_path, offset, length)`` of every storage item ``.metadata`` names."""
    attrs = attributes(meta_root) if isinstance(meta_root, Opaque) else None
    storage = as_mapping((attrs or {}).get("storage_data"))
    if storage is None:
        raise UnreadableError("DCP .metadata has no storage_data mapping")
    out = []
    for index, info in storage.items():
        ia = (attributes(index) if isinstance(index, Opaque) else None) or {}
        sa = (attributes(info) if isinstance(info, Opaque) else None) or {}
        rel, off, ln = sa.get("relative_path"), sa.get("offset"), sa.get("length")
        if not (isinstance(rel, str) and type(off) is int and type(ln) is int):
            raise UnreadableError("DCP .metadata: a storage item without relative_path, offset "
                                  "and length")
        out.append((str(ia.get("fqn", "?")), rel, off, ln))
    return out


def read_dcp_directory(path: str, limits: Limits, *, root: str | None = None) -> Checkpoint:
    """A DCP checkpoint directory (format ``dcp-dir``): ``.metadata`` and every slice it names
    are children (``Checkpoint`` or the ``UnreadableError`` that reading them raised)."""
    from ckpt_guard.read import read_path
    from ckpt_guard.read.torch_zip import read_torch_zip

    children: list[tuple[str, Checkpoint | UnreadableError, str]] = []
    meta: Checkpoint | None = None
    try:
        meta = read_path(os.path.join(path, METADATA), limits, root=root)
    except UnreadableError as e:
        children.append((METADATA, e, ""))
    sizes: dict[str, int] = {}
    if meta is not None:
        children.append((METADATA, meta, ""))
        try:
            items = _items(meta.root)
        except UnreadableError as e:
            e.partial_globals = list(meta.globals)  # judged all the same
            children[-1] = (METADATA, e, "")
            items = []
        if len(items) > MAX_ITEMS:
            children.append((METADATA, UnreadableError(
                f"DCP .metadata names {len(items)} storage items (limit {MAX_ITEMS})"), ""))
            items = []
        for fqn, rel, off, ln in sorted(items, key=lambda i: (i[1], i[2])):
            name = f"{rel}@{off}"
            full = os.path.normpath(os.path.join(path, rel))
            try:
                if os.path.dirname(full) != os.path.normpath(path):
                    raise UnreadableError(f"storage item {fqn!r} points outside the directory "
                                          f"({rel!r})")
                size = sizes.setdefault(rel, os.path.getsize(full))
                if off < 0 or ln < 0 or off + ln > size:
                    raise UnreadableError(f"storage item {fqn!r}: bytes {off}+{ln} are not in "
                                          f"{rel} ({size} bytes)")
                with open(full, "rb") as fh:
                    child = read_torch_zip(f"{full}@{off}", _Slice(fh, off, ln), ln, limits)
                child.metadata["dcp_fqn"] = fqn
                children.append((name, child, ""))
            except UnreadableError as e:
                children.append((name, e, ""))
            except OSError as e:
                children.append((name, UnreadableError(f"cannot read {rel}: "
                                                       f"{e.strerror or e}"), ""))
    total = 0
    for f in os.listdir(path):
        try:
            total += os.path.getsize(os.path.join(path, f))
        except OSError:
            continue
    return Checkpoint(path=path, format="dcp-dir", size_bytes=total, children=children,
                      notes=["torch.distributed.checkpoint directory: .metadata is unpickled "
                             "by pickle.load, non-tensor items by torch.load(weights_only="
                             "False)"],
                      metadata={"items": len(children) - 1})
