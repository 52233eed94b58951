"""Operations on reader trees the fix plans and the rewrite need: walking with paths named
as analysis names them, copying (sharing and cycles preserved), replacing a child in place."""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable

from ckpt_guard.analyze.walk import children, key_text
from ckpt_guard.read.tree import (
    NO_STATE,
    GlobalRef,
    Opaque,
    Storage,
    TensorRef,
    as_mapping,
    attributes,
)

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any


def path_text(path: tuple) -> str:
    """A dotted path as analysis names tensors (``ema.model.0.conv.weight``)."""
    return ".".join(key_text(k) for k in path)


def walk(root: Any, visit: Callable[[tuple, Any, Any], Any]) -> None:
    """Depth-first over the tree; each container expanded once (shared objects, cycles),
    leaves visited at every path they occur (tied tensors under each name)."""
    expanded: set[int] = set()
    stack: list[tuple[tuple, Any]] = [((), root)]
    while stack:
        path, node = stack.pop()
        visit(path, node, None)
        if isinstance(node, (TensorRef, Storage, GlobalRef)) or id(node) in expanded:
            continue
        kids = children(node)
        if not kids:
            continue
        expanded.add(id(node))
        for key, child in reversed(kids):
            stack.append(((*path, key), child))


def tensor_storages(ref: TensorRef) -> list[Storage]:
    """Storages a tensor's bytes live in (sparse tensors: their components')."""
    from ckpt_guard.analyze.accounting import views

    return [storage for storage, _dtype in views(ref)]


_ATOMS = (str, bytes, int, float, bool, complex, type(None), TensorRef, Storage, GlobalRef)


def copy_tree(root: Any) -> Any:
    """Copy containers and opaque objects (sharing and cycles preserved); tensors, storages
    and globals stay the same objects.

    Dicts and lists (most of a training checkpoint: optimizer state) are copied here
    directly; anything else (opaque objects, tuples, sets) by ``copy.deepcopy`` with the
    tensors, storages and globals below it kept as they are."""
    memo: dict[int, Any] = {id(NO_STATE): NO_STATE}

    def seed(path: tuple, node: Any, inh: Any) -> Any:
        if isinstance(node, TensorRef):
            memo[id(node)] = node
            for st in tensor_storages(node):
                memo[id(st)] = st
        elif isinstance(node, (Storage, GlobalRef)):
            memo[id(node)] = node
        return None

    def cp(x: Any) -> Any:
        if isinstance(x, _ATOMS):
            return x
        hit = memo.get(id(x), memo)
        if hit is not memo:
            return hit
        t = type(x)
        if t is dict:
            new: Any = {}
            memo[id(x)] = new
            for k, v in x.items():
                new[k if isinstance(k, _ATOMS) else cp(k)] = v if isinstance(v, _ATOMS) else cp(v)
            return new
        if t is list:
            new = []
            memo[id(x)] = new
            new.extend(v if isinstance(v, _ATOMS) else cp(v) for v in x)
            return new
        walk(x, seed)
        return copy.deepcopy(x, memo)

    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20_000))
    try:
        return cp(root)
    finally:
        sys.setrecursionlimit(old)


def holders(node: Any) -> list[Any]:
    """Mutable mappings/lists inside ``node`` whose items are ``children(node)``."""
    if isinstance(node, (dict, list)):
        return [node]
    if not isinstance(node, Opaque):
        return []
    out: list[Any] = []
    m = as_mapping(node)
    if m:
        out.append(m)
    attrs = attributes(node)
    if attrs:
        out.append(attrs)
        for internal in ("_parameters", "_buffers", "_modules"):
            sub = as_mapping(attrs.get(internal))
            if sub:
                out.append(sub)
        if isinstance(node.state, tuple):
            out.extend(p for p in (as_mapping(x) for x in node.state) if p)
    if node.listitems:
        out.append(node.listitems)
    return out


def assign(parent: Any, key: Any, child: Any, value: Any) -> bool:
    """Replace ``child`` (reached from ``parent`` under ``key``) with ``value`` in place."""
    for holder in holders(parent):
        try:
            if holder[key] is child:
                holder[key] = value
                return True
        except (KeyError, IndexError, TypeError):
            continue
    return False


def storages_of(root: Any) -> dict[int, Storage]:
    found: dict[int, Storage] = {}

    def visit(path: tuple, node: Any, inh: Any) -> Any:
        if isinstance(node, TensorRef):
            for st in tensor_storages(node):
                found[id(st)] = st
        return None

    walk(root, visit)
    return found


_MISSING = object()


def child(node: Any, key: Any) -> Any:
    """``node``'s child under ``key`` (as :func:`~ckpt_guard.analyze.walk.children` names
    it), or ``MISSING``."""
    if isinstance(node, dict):
        return node.get(key, _MISSING)
    for k, c in children(node):
        if k == key and type(k) is type(key):
            return c
    return _MISSING


MISSING = _MISSING


def resolve(root: Any, keys: tuple) -> Any:
    """The node at ``keys`` below ``root``, or ``MISSING``."""
    node = root
    for key in keys:
        node = child(node, key)
        if node is _MISSING:
            return _MISSING
    return node


def remove(parent: Any, key: Any, value: Any) -> bool:
    """Delete ``key`` (holding ``value``) from the mapping of ``parent`` that holds it."""
    for holder in holders(parent):
        if isinstance(holder, dict) and key in holder and holder[key] is value:
            del holder[key]
            return True
    return False


def put(parent: Any, key: Any, value: Any) -> bool:
    """Set ``key`` to ``value`` in the mapping of ``parent`` that holds ``key`` (its first
    mapping when none does: a key added, as a framework's strip adds ``model``)."""
    maps = [h for h in holders(parent) if isinstance(h, dict)]
    for holder in maps:
        if key in holder:
            holder[key] = value
            return True
    if maps:
        maps[0][key] = value
        return True
    return False
