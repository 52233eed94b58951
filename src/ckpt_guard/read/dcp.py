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
import stat
from dataclasses import replace
from typing import Any

from ckpt_guard.read import dcp_layout
from ckpt_guard.read.checkpoint import (
    Checkpoint,
    GlobalUse,
    JudgedPickle,
    LimitExceeded,
    UnreadableError,
    collect_globals,
)
from ckpt_guard.read.limits import Limits
from ckpt_guard.vocab import Format

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


def read_metadata(path: str, limits: Limits, *, root: str | None = None) -> Checkpoint:
    """``.metadata`` as ``FileSystemReader.read_metadata`` reads it: ``pickle.load`` of the
    file from offset 0 (one pickle, to its STOP; no ``persistent_load``, no format sniffing —
    a zip, tar or legacy file there is just the pickle its first bytes are)."""
    from ckpt_guard.read import _check_within, _os_message
    from ckpt_guard.read.pickle_vm import run

    if root is not None:
        _check_within(path, root)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0)
                     | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0))
    except OSError as e:
        raise UnreadableError(f"{METADATA}: {_os_message(e)}") from e
    with os.fdopen(fd, "rb") as fh:
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode):
            raise UnreadableError(f"{METADATA} is not a regular file")
        if st.st_size > limits.max_pickle_bytes:
            raise LimitExceeded(f"{METADATA} of {st.st_size} bytes exceeds the pickle limit")
        data = fh.read(limits.max_pickle_bytes + 1)
    try:
        with collect_globals():  # a failure carries what it read before
            res = run(data, 0, persistent_load=None, limits=limits, member=METADATA)
    except UnreadableError:
        raise
    except (RecursionError, MemoryError) as e:
        raise LimitExceeded(f"{METADATA}: resource limit while reading") from e
    return Checkpoint(path=path, format="pickle", size_bytes=len(data), root=res.root,
                      globals=list(res.globals), pickles=[res.judged] if res.judged else [],
                      pickle_protocol=res.protocol)


def read_dcp_directory(path: str, limits: Limits, *, root: str | None = None) -> Checkpoint:
    """A DCP checkpoint directory (format ``dcp-dir``). ``root`` is the state dict torch's
    consolidation builds (tensors described from ``.metadata``, bytes items as read);
    ``children`` are ``.metadata`` and every item's slice (a ``Checkpoint`` or the
    ``UnreadableError`` reading it raised), whose globals all count for the directory;
    ``metadata["dcp_entries"]`` is the layout a consolidation reads."""
    from ckpt_guard.read.torch_zip import read_torch_zip

    children: list[tuple[str, Checkpoint | UnreadableError, str]] = []
    entries: list[dcp_layout.Entry] = []
    items: dict[tuple, dcp_layout.Item] = {}
    meta: Checkpoint | None = None
    try:
        meta = read_metadata(os.path.join(path, METADATA), limits, root=root)
    except UnreadableError as e:
        children.append((METADATA, e, ""))
    if meta is not None:
        children.append((METADATA, meta, ""))
        try:
            entries, items = dcp_layout.parse(meta.root)
        except UnreadableError as e:
            e.partial_globals = list(meta.globals)  # judged all the same
            children[-1] = (METADATA, e, "")
        if len(items) > MAX_ITEMS:
            children.append((METADATA, UnreadableError(
                f"DCP .metadata names {len(items)} storage items (limit {MAX_ITEMS})"), ""))
            items, entries = {}, []
    read: dict[tuple, Checkpoint] = {}
    sizes: dict[str, int] = {}
    for key, it in sorted(items.items(), key=lambda kv: (kv[1].rel, kv[1].offset)):
        fqn, rel, off, ln = str(key[0]), it.rel, it.offset, it.length
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
                if it.transforms:  # e.g. zstd: read what torch's reader decodes
                    from ckpt_guard.read.dcp_transform import decode

                    src, n = decode(_Slice(fh, off, ln), it.transforms,
                                    f"storage item {fqn!r}")
                    with src:
                        child = read_torch_zip(f"{full}@{off}", src, n, limits)
                    child.metadata["dcp_transforms"] = list(it.transforms)
                else:
                    child = read_torch_zip(f"{full}@{off}", _Slice(fh, off, ln), ln, limits)
            child.metadata["dcp_fqn"] = fqn
            read[key] = child
            children.append((name, child, ""))
        except UnreadableError as e:
            children.append((name, e, ""))
        except OSError as e:
            children.append((name, UnreadableError(f"cannot read {rel}: "
                                                   f"{e.strerror or e}"), ""))
    values: dict[str, Any] = {}
    for e in entries:
        if e.kind == "bytes":
            got = read.get((e.fqn, None))
            values[e.fqn] = got.root if got is not None else None
            if e.item is None:
                children.append((METADATA, UnreadableError(
                    f"DCP .metadata: no storage item for {e.fqn!r}"), ""))
            continue
        for c in e.chunks:
            got = read.get((e.fqn, c.offsets))
            if got is None:
                if c.item is None:
                    children.append((METADATA, UnreadableError(
                        f"DCP .metadata: no storage item for a chunk of {e.fqn!r}"), ""))
                continue
            try:
                dcp_layout.check_chunk(e, c, got.root, c.item.rel,
                                       None if c.item.transforms else c.item.offset)
            except UnreadableError as err:
                children.append((f"{c.item.rel}@{c.item.offset}", err, ""))
    tree = None
    if entries:
        try:
            tree = dcp_layout.build_tree(entries, values)
        except UnreadableError as e:
            children.append((METADATA, e, ""))
    total = 0
    for f in os.listdir(path):
        try:
            total += os.path.getsize(os.path.join(path, f))
        except OSError:
            continue
    uses: list[GlobalUse] = []
    pickles: list[JudgedPickle] = []
    for rel, child, _h in children:
        got = child.globals if isinstance(child, Checkpoint) else \
            (getattr(child, "partial_globals", None) or [])
        uses.extend(replace(g, member=f"{rel}:{g.member}" if g.member not in ("", rel)
                            else rel, uses=g.uses) for g in got)
        if isinstance(child, Checkpoint):
            pickles.extend(replace(p, member=f"{rel}:{p.member}") for p in child.pickles)
    storages = {e.fqn: ref.storage for e in entries if e.kind == "tensor"
                for ref in [_find_ref(tree, e)] if ref is not None and ref.storage}
    return Checkpoint(path=path, format=Format.DCP_DIR, size_bytes=total, children=children,
                      root=tree if tree is not None else {}, storages=storages, globals=uses,
                      pickles=pickles,
                      notes=["torch.distributed.checkpoint directory: dcp.load unpickles "
                             ".metadata with plain pickle.load, tensor items with torch.load("
                             "weights_only=True), non-tensor items with torch.load(weights_only="
                             "False)"],
                      metadata={"items": len(items), "dcp_entries": entries})


def _find_ref(tree: Any, e: dcp_layout.Entry) -> Any:
    node = tree
    for k in e.path:
        try:
            node = node[k]
        except (KeyError, IndexError, TypeError):
            return None
    return node
