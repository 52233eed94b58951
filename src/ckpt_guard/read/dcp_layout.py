"""The layout a DCP ``.metadata`` describes, read from our own pickle reader's tree (the
classes are never imported): per FQN its dtype, size and chunks, where each chunk's item
lives in a ``.distcp``, the key path ``dcp_to_torch_save`` nests it under, and the tree that
consolidation builds (tensors described, never loaded).

torch/distributed/checkpoint/metadata.py (torch 2.13): ``Metadata(state_dict_metadata,
planner_data, storage_data, …)``; ``state_dict_metadata[fqn]`` is a
``TensorStorageMetadata(properties, size, chunks=[ChunkStorageMetadata(offsets, sizes)])``
or ``BytesStorageMetadata()``; ``storage_data[MetadataIndex(fqn, offset, index)] =
_StorageInfo(relative_path, offset, length[, transform_descriptors])``; ``planner_data[fqn]``
is the key path (FQNs contain dots). ``TensorProperties``' state is the 5-tuple its
``__getstate__`` writes, dtype first; ``torch.Size`` is ``Size(tuple)``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ckpt_guard.read.checkpoint import UnreadableError
from ckpt_guard.read.tree import (
    DTYPE_SIZES,
    GlobalRef,
    Opaque,
    Storage,
    TensorRef,
    as_mapping,
    attributes,
    contiguous_stride,
)

_MD = "torch.distributed.checkpoint.metadata."
MAX_CHUNKS = 65_536  # chunks of one tensor
MAX_LIST_INDEX = 1_000_000  # an int key in a planner path becomes a list index


@dataclass
class Item:
    """One storage item: bytes ``[offset, offset + length)`` of ``rel`` (a ``.distcp``)."""

    rel: str
    offset: int
    length: int
    transforms: tuple[str, ...] = ()  # transform_descriptors (e.g. "stream.zstd/1")


@dataclass
class ChunkData:
    """Where a chunk's elements are, once its item was read: the storage's absolute offset
    in ``rel``, its element count, and the saved tensor's view of it."""

    rel: str
    offset: int | None
    numel: int
    storage_offset: int
    stride: tuple[int, ...]


@dataclass
class Chunk:
    offsets: tuple[int, ...]
    sizes: tuple[int, ...]
    item: Item | None
    data: ChunkData | None = None

    @property
    def numel(self) -> int:
        n = 1
        for s in self.sizes:
            n *= s
        return n


@dataclass
class Entry:
    """One FQN: a tensor (``dtype``, ``shape``, ``chunks``) or a bytes item (``item``)."""

    fqn: str
    path: tuple
    kind: str  # "tensor" | "bytes"
    dtype: str = ""
    shape: tuple[int, ...] = ()
    chunks: list[Chunk] = field(default_factory=list)
    item: Item | None = None
    requires_grad: bool = False

    @property
    def numel(self) -> int:
        n = 1
        for s in self.shape:
            n *= s
        return n


def _attrs(node: Any) -> dict:
    return (attributes(node) if isinstance(node, Opaque) else None) or {}


def _size(node: Any, what: str) -> tuple[int, ...]:
    """``torch.Size((…))`` (an opaque call) or a plain tuple/list of non-negative ints."""
    if isinstance(node, Opaque) and node.qualname == "torch.Size" and len(node.args) == 1:
        node = node.args[0]
    if isinstance(node, (tuple, list)) and all(type(d) is int and d >= 0 for d in node):
        return tuple(node)
    raise UnreadableError(f"DCP .metadata: {what} is not a size")


def _dtype(props: Any, fqn: str) -> tuple[str, bool]:
    state = props.state if isinstance(props, Opaque) and props.has_state else None
    if isinstance(state, tuple) and state:
        dt, grad = state[0], (state[2] if len(state) > 2 else False)
    else:
        a = _attrs(props)
        dt, grad = a.get("dtype"), a.get("requires_grad", False)
    if isinstance(dt, GlobalRef) and dt.module == "torch" and dt.name in DTYPE_SIZES:
        return dt.name, grad is True
    raise UnreadableError(f"DCP .metadata: {fqn!r} has no known dtype")


def _items(meta: dict) -> dict[tuple, Item]:
    """``(fqn, offsets or None) → Item`` from ``storage_data``."""
    storage = as_mapping(meta.get("storage_data"))
    if storage is None:
        raise UnreadableError("DCP .metadata has no storage_data mapping")
    out: dict[tuple, Item] = {}
    for index, info in storage.items():
        ia, sa = _attrs(index), _attrs(info)
        rel, off, ln = sa.get("relative_path"), sa.get("offset"), sa.get("length")
        if not (isinstance(rel, str) and type(off) is int and type(ln) is int):
            raise UnreadableError("DCP .metadata: a storage item without relative_path, "
                                  "offset and length")
        fqn = ia.get("fqn")
        offsets = ia.get("offset")
        key = (fqn, None if offsets is None else _size(offsets, f"offset of {fqn!r}"))
        td = sa.get("transform_descriptors")
        if td is not None and not (isinstance(td, (list, tuple))
                                   and all(isinstance(d, str) for d in td)):
            raise UnreadableError(f"DCP .metadata: transform_descriptors of {fqn!r} are not "
                                  "a list of strings")
        out[key] = Item(rel, off, ln, transforms=tuple(td or ()))
    return out


def parse(meta_root: Any) -> tuple[list[Entry], dict[tuple, Item]]:
    """Every FQN of the ``.metadata`` tree, and every storage item (``(fqn, offsets)`` →
    :class:`Item`). Raises :class:`UnreadableError` for what torch could not load either."""
    meta = _attrs(meta_root)
    if not isinstance(meta_root, Opaque) or meta_root.qualname != _MD + "Metadata":
        raise UnreadableError("DCP .metadata is not a Metadata object")
    sdm = as_mapping(meta.get("state_dict_metadata"))
    if sdm is None:
        raise UnreadableError("DCP .metadata has no state_dict_metadata mapping")
    items = _items(meta)
    planner = as_mapping(meta.get("planner_data")) or {}
    entries = []
    for fqn, md in sdm.items():
        if not isinstance(fqn, str) or not isinstance(md, Opaque):
            raise UnreadableError("DCP .metadata: an entry that is not FQN → metadata")
        path = planner.get(fqn)
        if not (isinstance(path, tuple) and path
                and all(isinstance(k, str) or (type(k) is int and 0 <= k <= MAX_LIST_INDEX)
                        for k in path)):
            path = (fqn,)
        if md.qualname == _MD + "BytesStorageMetadata":
            entries.append(Entry(fqn, path, "bytes", item=items.get((fqn, None))))
            continue
        if md.qualname != _MD + "TensorStorageMetadata":
            raise UnreadableError(f"DCP .metadata: {fqn!r} is a {md.qualname}")
        a = _attrs(md)
        dtype, grad = _dtype(a.get("properties"), fqn)
        shape = _size(a.get("size"), f"size of {fqn!r}")
        raw = a.get("chunks")
        if not isinstance(raw, list) or len(raw) > MAX_CHUNKS:
            raise UnreadableError(f"DCP .metadata: chunks of {fqn!r} are not a list (or more "
                                  f"than {MAX_CHUNKS})")
        chunks = []
        for c in raw:
            ca = _attrs(c)
            offs = _size(ca.get("offsets"), f"a chunk offset of {fqn!r}")
            sizes = _size(ca.get("sizes"), f"a chunk size of {fqn!r}")
            chunks.append(Chunk(offs, sizes, items.get((fqn, offs))))
        e = Entry(fqn, path, "tensor", dtype=dtype, shape=shape, chunks=chunks,
                  requires_grad=grad)
        check_tiling(e)
        entries.append(e)
    return entries, items


def check_tiling(e: Entry) -> None:
    """The chunks lie inside the tensor, do not overlap and cover it (volumes add up)."""
    nd = len(e.shape)
    total = 0
    for c in e.chunks:
        if len(c.offsets) != nd or len(c.sizes) != nd or any(
                o + s > d for o, s, d in zip(c.offsets, c.sizes, e.shape, strict=True)):
            raise UnreadableError(f"DCP .metadata: a chunk of {e.fqn!r} lies outside its "
                                  f"size {list(e.shape)}")
        total += c.numel
    if total != e.numel:
        raise UnreadableError(f"DCP .metadata: the chunks of {e.fqn!r} hold {total} elements, "
                              f"its size {list(e.shape)} {e.numel}")
    if nd == 0 or len(e.chunks) < 2:
        return
    # Sweep along dim 0: only chunks whose dim-0 ranges meet can overlap.
    order = sorted((c for c in e.chunks if c.numel), key=lambda c: c.offsets[0])
    active: list[Chunk] = []
    for c in order:
        active = [a for a in active if a.offsets[0] + a.sizes[0] > c.offsets[0]]
        for a in active:
            if all(ao < co + cs and co < ao + as_ for ao, as_, co, cs in
                   zip(a.offsets, a.sizes, c.offsets, c.sizes, strict=True)):
                raise UnreadableError(f"DCP .metadata: chunks of {e.fqn!r} overlap")
        active.append(c)


def tensor_ref(e: Entry) -> TensorRef:
    """The consolidated tensor as the analysis sees it: one storage per FQN."""
    st = Storage(key=e.fqn, dtype=e.dtype, numel=e.numel, storage_type="dcp")
    return TensorRef(st, e.dtype, e.shape, contiguous_stride(e.shape),
                     requires_grad=e.requires_grad)


def build_tree(entries: list[Entry], values: dict[str, Any]) -> dict:
    """The nested state dict ``dcp_to_torch_save`` builds (its ``set_element``: a string key
    makes a dict, an int key a list padded with ``None``); tensors as :class:`TensorRef`,
    bytes items as the value read from their item (``values``; ``None`` when unread)."""
    root: dict = {}
    for e in entries:
        leaf = tensor_ref(e) if e.kind == "tensor" else values.get(e.fqn)
        cur: Any = root
        for i, key in enumerate(e.path):
            last = i == len(e.path) - 1
            nxt = None if last else ({} if isinstance(e.path[i + 1], str) else [])
            if isinstance(cur, dict) and isinstance(key, str):
                if last:
                    cur[key] = leaf
                else:
                    cur = cur.setdefault(key, nxt)
            elif isinstance(cur, list) and type(key) is int:
                cur.extend([None] * (key + 1 - len(cur)))
                if last:
                    cur[key] = leaf
                else:
                    if cur[key] is None:
                        cur[key] = nxt
                    cur = cur[key]
            else:
                raise UnreadableError(f"DCP .metadata: key path of {e.fqn!r} does not fit "
                                      "the others")
            if not last and not isinstance(cur, (dict, list)):
                raise UnreadableError(f"DCP .metadata: key path of {e.fqn!r} does not fit "
                                      "the others")
    return root


def check_chunk(e: Entry, c: Chunk, saved: Any, rel: str, slice_offset: int | None) -> None:
    """The tensor a chunk's item holds must be the chunk torch expects (same dtype and
    size, inside its storage); records where its elements are (``slice_offset`` ``None``:
    the item was decoded from a transform, its elements are nowhere in ``rel`` as such)."""
    if not isinstance(saved, TensorRef) or saved.kind not in ("tensor", "parameter"):
        raise UnreadableError(f"item of {e.fqn!r} does not hold a tensor")
    if saved.dtype != e.dtype or tuple(saved.shape) != c.sizes:
        raise UnreadableError(f"item of {e.fqn!r} holds a {saved.dtype} "
                              f"{list(saved.shape)} tensor, its metadata says {e.dtype} "
                              f"{list(c.sizes)}")
    st = saved.storage
    if st is None or st.dtype not in (e.dtype, "uint8"):
        raise UnreadableError(f"item of {e.fqn!r}: tensor without a matching storage")
    numel = st.numel if st.dtype == e.dtype else st.numel // max(DTYPE_SIZES[e.dtype], 1)
    stride = tuple(saved.stride) or contiguous_stride(c.sizes)
    if len(stride) != len(c.sizes) or any(type(s) is not int or s < 0 for s in stride) \
            or type(saved.storage_offset) is not int or saved.storage_offset < 0:
        raise UnreadableError(f"item of {e.fqn!r}: odd strides")
    if c.numel:
        last = saved.storage_offset + sum((n - 1) * s for n, s in zip(c.sizes, stride,
                                                                         strict=True))
        if last >= numel:
            raise UnreadableError(f"item of {e.fqn!r}: the tensor reaches past its storage")
    c.data = ChunkData(rel, None if st.offset is None or slice_offset is None
                       else slice_offset + st.offset, numel,
                       saved.storage_offset, stride)
