"""Hand-built analyses (the dataclasses of analyze/model.py) for unit tests of evaluate."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from ckpt_guard.analyze.model import Analysis, GlobalVerdict, RoleSubtree, TensorEntry
from ckpt_guard.read.checkpoint import Checkpoint, GlobalUse
from ckpt_guard.read.tree import Storage, TensorRef


def tensor(path: str, role: str, dtype: str = "float32", shape: tuple[int, ...] = (10,),
           storage: Storage | None = None) -> TensorEntry:
    st = storage or Storage(key=path, dtype=dtype, numel=math.prod(shape))
    return TensorEntry(path=path, role=role, ref=TensorRef(st, dtype, shape))


def verdict(qualname: str, safety: str, reason: str = "", member: str = "archive/data.pkl"
            ) -> GlobalVerdict:
    module, name = qualname.rsplit(".", 1)
    return GlobalVerdict(GlobalUse(module, name, "STACK_GLOBAL", member), safety, reason)


def tree_of(tensors: Iterable[TensorEntry]) -> dict | None:
    """The nested dicts the tensors' dotted paths describe (``None``: no tensors), so that a
    rule's plan finds in the tree what the analysis says is there."""
    root: dict = {}
    for t in tensors:
        *parents, leaf = t.path.split(".")
        node = root
        for key in parents:
            nxt = node.setdefault(key, {})
            if not isinstance(nxt, dict):
                break
            node = nxt
        else:
            node.setdefault(leaf, t.ref)
    return root or None


def analysis(tensors: Iterable[TensorEntry] = (), *, subtrees: Iterable[RoleSubtree] = (),
             globals_: Iterable[GlobalVerdict] = (), root: Any = None, fmt: str = "torch-zip",
             size: int | None = None, children: Iterable = (), metadata: dict | None = None,
             path: str = "/tmp/x.pt", bytes_by_role: dict[str, int] | None = None) -> Analysis:
    tensors = list(tensors)
    if root is None:
        root = tree_of(tensors)
    by_role: dict[str, int] = {}
    seen: set[str] = set()
    for t in tensors:
        st = t.ref.storage
        if st is not None and st.key not in seen:
            seen.add(st.key)
            by_role[t.role] = by_role.get(t.role, 0) + st.nbytes
    if bytes_by_role is not None:
        by_role = bytes_by_role
    total = sum(by_role.values())
    ckpt = Checkpoint(path=path, format=fmt, size_bytes=size if size is not None else total + 500,
                      root=root, metadata=metadata or {})
    return Analysis(checkpoint=ckpt, tensors=tensors, subtrees=list(subtrees),
                    bytes_by_role=by_role, tensor_bytes_total=total, globals=list(globals_),
                    children=list(children))
