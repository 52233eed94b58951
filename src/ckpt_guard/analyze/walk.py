"""Walk a reader tree: what a node's children are, and an iterative depth-first traversal.

Paths read like ``state_dict()`` keys: ``nn.Module`` internals (``_modules``, ``_parameters``,
``_buffers`` in an opaque object's ``BUILD`` state) are collapsed, so a pickled
``DetectionModel`` under ``ema`` yields ``ema.model.0.conv.weight``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from ckpt_guard.read.tree import GlobalRef, Opaque, Storage, TensorRef, as_mapping, attributes

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

MODULE_INTERNALS = ("_parameters", "_buffers", "_modules")

# visit(path, node, inherited) returns what the node's children inherit, or SKIP.
SKIP = object()
Visit = Callable[["Path | None", "Any", "Any"], "Any"]


def is_container(node: Any) -> bool:
    return isinstance(node, (dict, list, tuple, set, frozenset, Opaque))


def module_attributes(node: Any) -> dict | None:
    """The ``BUILD`` attributes of an opaque ``nn.Module``-like object, else ``None``."""
    if not isinstance(node, Opaque):
        return None
    attrs = attributes(node)
    if attrs and any(k in attrs for k in MODULE_INTERNALS):
        return attrs
    return None


def children(node: Any) -> list[tuple[Any, Any]]:
    """``(key, child)`` pairs of a container node (``[]`` for leaves).

    Opaque objects: mapping items, module parameters/buffers/submodules under their own names,
    then other attributes by name, positional arguments by index, list items by index.
    """
    if isinstance(node, dict):
        return list(node.items())
    if isinstance(node, (list, tuple)):
        return list(enumerate(node))
    if isinstance(node, (set, frozenset)):
        return list(enumerate(node))
    if not isinstance(node, Opaque):
        return []
    out: list[tuple[Any, Any]] = []
    mapping = as_mapping(node)
    if mapping:
        out.extend(mapping.items())
    attrs = module_attributes(node)
    if attrs is not None:
        for internal in MODULE_INTERNALS:
            sub = as_mapping(attrs.get(internal))
            if sub:
                out.extend((k, v) for k, v in sub.items() if v is not None)
        out.extend((k, v) for k, v in attrs.items() if k not in MODULE_INTERNALS)
    elif node.has_state:
        attrs = attributes(node)
        if attrs is not None:
            out.extend(attrs.items())
        elif node.state is not None:
            out.append(("state", node.state))
    out.extend(enumerate(node.args))
    if node.kwargs:
        out.extend(node.kwargs.items())
    if node.listitems:
        out.extend(enumerate(node.listitems))
    return out


MAX_KEY_TEXT = 256  # a path component; longer keys are shortened (their length is shown)


def _long_key(key: str) -> str:
    return f"{key[:MAX_KEY_TEXT // 2]}…<{len(key)} characters>"


def key_text(key: Any) -> str:
    """A path component for ``key``."""
    if isinstance(key, str):
        return key if len(key) <= MAX_KEY_TEXT else _long_key(key)
    if isinstance(key, int) and not isinstance(key, bool) and key.bit_length() > 64:
        return f"<int of {key.bit_length()} bits>"  # str() refuses ints over 4,300 digits
    if isinstance(key, (int, float, bool)) or key is None:
        return str(key)
    if isinstance(key, bytes):
        return key[:MAX_KEY_TEXT].decode("utf-8", "replace")
    if isinstance(key, GlobalRef):
        return key.qualname
    if isinstance(key, tuple):
        return "(" + ",".join(key_text(k) for k in key) + ")"
    return type(key).__name__


def path_text(path: tuple) -> str:
    return ".".join([k if isinstance(k, str) and len(k) <= MAX_KEY_TEXT else key_text(k)
                     for k in path])


# A node's path as a parent link ``(parent, key, depth)``: cheap to extend, and deep trees do
# not copy tuples at every level. ``None`` is the root.
Path = tuple


def keys_of(path: Path | None) -> tuple:
    """The keys from the root down to ``path``."""
    out: list[Any] = []
    while path is not None:
        out.append(path[1])
        path = path[0]
    out.reverse()
    return tuple(out)


MAX_PATHS_PER_LEAF = 64  # a tied parameter has a few names, not millions
_COUNTED = frozenset({TensorRef, Storage, dict, list, tuple, set, frozenset, Opaque})


def _child_iter(node: Any) -> Iterator[tuple[Any, Any]]:
    """``(key, child)`` pairs, lazily for plain containers (a list of millions of memo
    references must not be copied into millions of pairs)."""
    t = type(node)
    if t is dict:
        return iter(node.items())
    if t is list or t is tuple or t is set or t is frozenset:
        return enumerate(node)
    return iter(children(node))


_PLAIN = frozenset({dict, list, tuple, set, frozenset})
_SCALARS = frozenset({str, int, float, bool, bytes, bytearray, complex, type(None)})


def walk(root: Any, visit: Visit, inherited: Any = None) -> None:
    """Depth-first, pre-order, iterative: ``visit(path, node, inherited)`` for every node
    but plain scalars and empty plain containers below the root (str, int, ``{}``, … : no
    visitor needs them), ``path`` being a :data:`Path` link (``None`` for the root).

    A container is expanded once, at the first path it is met (a pickle's memo can share one
    object between places, and build cycles); other objects are visited at every path they
    occur, so a tied parameter shows under each of its names. Any object is visited at up
    to :data:`MAX_PATHS_PER_LEAF` paths (one memoised object referenced millions of times
    must not cost millions of visits; a fix re-checks its output, so a role missed at the
    65th path of one object still shows there). Memory is one iterator per level.
    """
    result = visit(None, root, inherited)
    if result is SKIP or not is_container(root):
        return
    expanded: set[int] = {id(root)}
    paths_seen: dict[int, int] = {}
    stack: list[tuple[Path | None, Iterator[tuple[Any, Any]], Any, int]] = [
        (None, _child_iter(root), result, 1)]
    scalars, counted, limit = _SCALARS, _COUNTED, MAX_PATHS_PER_LEAF
    while stack:
        parent, kids, inh, depth = stack[-1]
        for key, node in kids:
            t = type(node)
            if t in scalars:
                continue
            if t in counted:
                n = paths_seen.get(id(node), 0)
                if n >= limit:
                    continue
                paths_seen[id(node)] = n + 1
            if t in _PLAIN and not node:
                continue  # an empty container holds nothing any visitor looks for
            path = (parent, key, depth)
            res = visit(path, node, inh)
            if res is SKIP or not is_container(node) or id(node) in expanded:
                continue
            expanded.add(id(node))
            stack.append((path, _child_iter(node), res, depth + 1))
            break
        else:
            stack.pop()
