"""Guards the pickle interpreter applies to what it builds: dict keys whose hashing an
attacker controls, and nesting depth (checked after building, without recursion)."""

from __future__ import annotations

from ckpt_guard.read.checkpoint import LimitExceeded, UnreadableError
from ckpt_guard.read.tree import NO_STATE, GlobalRef, Opaque, Storage, TensorRef

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

IDENTITY_HASHED = frozenset({GlobalRef, Opaque, TensorRef, Storage})
_UNHASHABLE = frozenset({list, dict, set, bytearray})


class UnhashableKey(UnreadableError):
    """A dict key or set item a real unpickler could not hash."""


def key_cost(key: Any, max_depth: int) -> int:
    """The work of checking ``key`` (a dict key or set item), 0 when its hash cannot be
    chosen by the pickle.

    str/bytes hashes are randomised, small ints hash to themselves and our objects hash by
    identity; but ints beyond ±2**60, floats and tuples have hashes a pickle can make
    collide (turning dict building quadratic): the interpreter counts their collisions.
    Unhashable keys (lists, dicts, …) and tuples nested deeper than ``max_depth`` (``hash()``
    would recurse through them) are refused.
    """
    t = type(key)
    if t is int or t is bool:
        return 0 if -(1 << 60) < key < (1 << 60) else 1
    if t is float:
        return 1
    if key is None or t in IDENTITY_HASHED or t is str or t is bytes:
        return 0
    if t is tuple or t is frozenset:
        cost = 0
        todo = [(key, 1)]
        while todo:
            obj, d = todo.pop()
            if d > max_depth:
                raise LimitExceeded(f"dict key nested deeper than {max_depth}")
            cost += 1 + len(obj)
            for x in obj:
                tx = type(x)
                if tx is tuple or tx is frozenset:
                    todo.append((x, d + 1))
                elif tx in _UNHASHABLE:
                    raise UnhashableKey("malformed pickle: unhashable dict key or set item")
        return cost
    if t in _UNHASHABLE:
        raise UnhashableKey("malformed pickle: unhashable dict key or set item")
    return 1


_NODE_TYPES = (list, tuple, dict, set, frozenset, Opaque, TensorRef)


def _empty_opaque(o: Opaque) -> bool:
    return (not o.args and o.state is NO_STATE and o.dictitems is None
            and o.listitems is None and o.kwargs is None)


def _flat_tensor(t: TensorRef) -> bool:
    """A tensor whose arguments hold only leaves, int tuples (its checked shape and stride)
    and an empty hooks OrderedDict: height 0, no need to walk it."""
    if t.state is not None or t.components:
        return False
    shape, stride = t.shape, t.stride
    for a in t.args:
        ta = type(a)
        if ta not in _NODE_TYPES or a is shape or a is stride or not a:
            continue
        if ta is Opaque and _empty_opaque(a):
            continue
        return False
    return True


def _children(obj: Any) -> Any:
    t = type(obj)
    if t is dict:
        return [*obj.keys(), *obj.values()]
    if t is Opaque:
        kids: list[Any] = [obj.args]
        if obj.kwargs is not None:
            kids.append(obj.kwargs)
        if obj.state is not NO_STATE:
            kids.append(obj.state)
        if obj.dictitems is not None:
            kids.append(obj.dictitems)
        if obj.listitems is not None:
            kids.append(obj.listitems)
        return kids
    if t is TensorRef:
        # shape and stride were checked to hold ints only: leaves, no need to walk them
        shape, stride = obj.shape, obj.stride
        return [*(a for a in obj.args if a is not shape and a is not stride), obj.state,
                obj.components]
    return obj  # list, tuple, set, frozenset


def check_depth(root: Any, limit: int, where: str) -> None:
    """Longest nesting path (post-order heights, memoised per object, cycles cut) ≤ limit."""
    if type(root) not in _NODE_TYPES:
        return
    heights: dict[int, int] = {}
    onpath = {id(root)}
    path: list[list[Any]] = [[root, iter(_children(root)), 0]]
    node_types = _NODE_TYPES
    while path:
        frame = path[-1]
        descended = False
        for child in frame[1]:
            tc = type(child)
            if tc not in node_types or not child:
                continue  # leaves and empty containers
            cid = id(child)
            h = heights.get(cid)  # first: one object met a million times is checked once
            if h is None and ((tc is Opaque and _empty_opaque(child))  # e.g. empty hooks
                              or (tc is TensorRef and _flat_tensor(child))):  # the usual
                heights[cid] = -1  # a leaf for nesting: adds nothing to its parents
                continue
            if h is not None:
                if h < 0:
                    continue
                if h + 1 > frame[2]:
                    frame[2] = h + 1
                if len(path) + h > limit:
                    raise LimitExceeded(f"{where}: objects nested deeper than {limit}")
                continue
            if cid in onpath:
                continue  # a cycle: walkers must cut it too
            if len(path) >= limit:
                raise LimitExceeded(f"{where}: objects nested deeper than {limit}")
            onpath.add(cid)
            path.append([child, iter(_children(child)), 0])
            descended = True
            break
        if descended:
            continue
        path.pop()
        node = frame[0]
        h = frame[2]
        heights[id(node)] = h
        onpath.discard(id(node))
        if path and h + 1 > path[-1][2]:
            path[-1][2] = h + 1

