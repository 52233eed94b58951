"""Call arguments are values at call time.

CPython hands a call its arguments as they are at that moment, and a pickle can fetch an
argument back from the memo and change it afterwards (``SETITEM(S)``, ``APPEND(S)``,
``ADDITEMS``, ``BUILD``). What the result holds then depends on the callee, so the reader
builds each call's result as CPython and the real callee would:

* the copying builtins (``dict``, ``collections.OrderedDict``/``Counter``/``defaultdict``,
  ``list``, ``set``, ``frozenset``, ``tuple``, ``bytearray``, ``torch.Size``) are evaluated here
  (:func:`call_value`): the result holds the argument's items at call time — a shallow copy,
  nested objects stay shared — so a later change of the argument does not reach it. Their
  ``__new__`` (``NEWOBJ``) ignores the arguments (except tuple, frozenset, Size), as CPython's;
* torch's rebuild functions read size, stride, metadata and state at call time:
  :mod:`rebuild` snapshots those; the backward hooks and a parameter's data tensor are aliased,
  which plain references already model;
* every other call (a class we never run) gets its arguments recorded as they were at call
  time: :class:`CallValues` snapshots a top-level container argument copy-on-write, only when
  the pickle changes it later (nothing is copied for the pickles ``torch.save`` writes). Whether
  such an object kept a reference to the container (and so saw the change) is unknown without
  running its class, so the object is marked :attr:`Opaque.unmodelled` and the writer refuses
  to re-emit it.
"""

from __future__ import annotations

from ckpt_guard.read.checkpoint import LimitExceeded
from ckpt_guard.read.tree import MAPPING_GLOBALS, GlobalRef, Opaque

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

    from ckpt_guard.read.pickle_objects import ObjectBuilder

UNMODELLED = object()  # call_value: not a call we evaluate (or one CPython would reject)

# Containers a callee receives as a value it may copy: snapshotted when changed after the call.
WATCHED = frozenset({dict, list, set, bytearray})

_COUNTER = "collections.Counter"
_DEFAULTDICT = "collections.defaultdict"
_ORDERED = "collections.OrderedDict"
# __new__ of these ignores its arguments (the filling happens in __init__).
_NEW_IGNORES_ARGS = frozenset({"builtins.dict", "builtins.list", "builtins.set",
                               "builtins.bytearray", _ORDERED, _COUNTER, _DEFAULTDICT})


class CallValues:
    """Copy-on-write record of the container arguments of calls we do not evaluate."""

    __slots__ = ("watched", "copied", "max_copied", "where")

    def __init__(self, where: str, max_copied: int) -> None:
        # id(container) → (container, [(holder, slot)]); the tuple keeps the id unique
        self.watched: dict[int, tuple[Any, list[tuple[Opaque, Any]]]] = {}
        self.copied = 0
        self.max_copied = max_copied
        self.where = where

    def charge(self, n: int) -> None:
        """Items copied by calls and snapshots, bounded per pickle (a loop of copies of one
        large container must not make reading quadratic)."""
        self.copied += n
        if self.copied > self.max_copied:
            raise LimitExceeded(f"{self.where}: calls copy more than {self.max_copied} items")

    def watch_call(self, o: Opaque) -> None:
        for i, a in enumerate(o.args):
            if type(a) in WATCHED:
                self._watch(a, o, i)
            elif type(a) is tuple and a:
                self._watch_in_tuple(a, o)
        if o.kwargs:
            self._watch(o.kwargs, o, "kwargs")  # **kwargs is unpacked (copied) at call time

    def _watch_in_tuple(self, t: tuple, o: Opaque) -> None:
        """Containers inside a tuple argument are passed as directly as the tuple: a later
        change marks the object (the tuple itself cannot be swapped for a snapshot)."""
        todo = [t]
        while todo:
            for a in todo.pop():
                if type(a) in WATCHED:
                    self._watch(a, o, "nested")
                elif type(a) is tuple:
                    todo.append(a)

    def watch_state(self, o: Opaque, state: Any) -> None:
        """``BUILD``: ``__setstate__(state)`` (by default ``__dict__.update``) reads the state
        now; a ``(dict, slots)`` tuple's parts likewise."""
        if type(state) in WATCHED:
            self._watch(state, o, "state")
        elif type(state) is tuple:
            for j, part in enumerate(state):
                if type(part) in WATCHED:
                    self._watch(part, o, ("state", j))

    def _watch(self, obj: Any, holder: Opaque, slot: Any) -> None:
        entry = self.watched.get(id(obj))
        if entry is None:
            self.watched[id(obj)] = (obj, [(holder, slot)])
        else:
            entry[1].append((holder, slot))

    def before_change(self, target: Any) -> None:
        """``target`` (a watched container) is about to change: give every call that received
        it the value it had then, and mark those objects as not faithfully modelled."""
        obj, holders = self.watched.pop(id(target))
        self.charge(len(obj))
        snap = type(obj)(obj)
        for holder, slot in holders:
            if type(slot) is int:
                holder.args = (*holder.args[:slot], snap, *holder.args[slot + 1:])
            elif slot == "kwargs":
                holder.kwargs = snap
            elif slot == "state":
                holder.state = snap
            elif slot == "nested":
                pass  # only marked
            else:
                st = holder.state
                holder.state = (*st[:slot[1]], snap, *st[slot[1] + 1:])
            if not holder.unmodelled:
                holder.unmodelled = (f"the pickle changes a {type(obj).__name__} after passing "
                                     f"it to {holder.qualname}; whether the object kept it is "
                                     "unknown without running that class")


# ------------------------------------------------------------------- the copying builtins

def _mapping_items(x: Any) -> list[tuple[Any, Any]] | None:
    """``(key, value)`` pairs of a mapping argument at call time, or ``None``."""
    t = type(x)
    if t is dict:
        return list(x.items())
    if t is Opaque and x.listitems is None and x.kwargs is None and (
            x.qualname in MAPPING_GLOBALS or x.qualname == _COUNTER) and (
            not x.args or x.qualname == _DEFAULTDICT and len(x.args) == 1):
        return list((x.dictitems or {}).items())
    return None


def _iter_items(x: Any) -> list[Any] | None:
    """What ``iter(x)`` yields at call time, or ``None`` when we cannot tell."""
    t = type(x)
    if t in (list, tuple, set, frozenset, str, bytes, bytearray):
        return list(x)
    if t is dict:
        return list(x)
    pairs = _mapping_items(x)
    return None if pairs is None else [k for k, _ in pairs]


def _dict_items(x: Any) -> list[tuple[Any, Any]] | None:
    """``dict(x)``'s pairs: a mapping's items, else an iterable of 2-item sequences."""
    pairs = _mapping_items(x)
    if pairs is not None:
        return pairs
    items = _iter_items(x)
    if items is None:
        return None
    out = []
    for it in items:
        if type(it) not in (tuple, list, str, bytes) or len(it) != 2:
            return None  # CPython raises: torch.load fails on this file
        out.append((it[0], it[1]))
    return out


def call_value(func: GlobalRef, how: str, args: tuple, kwargs: dict | None,
               b: ObjectBuilder) -> Any:
    """What calling (``reduce``/``inst``/``obj``) or ``__new__``-ing (``newobj``/``newobj_ex``)
    one of the copying builtins returns, or :data:`UNMODELLED`."""
    q = f"{func.module}.{func.name}"
    if kwargs:
        return UNMODELLED
    if how in ("newobj", "newobj_ex") and q in _NEW_IGNORES_ARGS:
        args = ()
    model = _MODELS.get(q)
    if model is None or len(args) > (2 if q == _DEFAULTDICT else 1):
        return UNMODELLED
    return model(func, how, args, b)


def _fill(b: ObjectBuilder, pairs: list[tuple[Any, Any]], opname: str) -> dict:
    b.values.charge(len(pairs))
    d: dict = {}
    if pairs:
        b.set_items(d, [kv for pair in pairs for kv in pair], opname)
    return d


def _dict(func: GlobalRef, how: str, args: tuple, b: ObjectBuilder) -> Any:
    pairs = _dict_items(args[0]) if args else []
    return UNMODELLED if pairs is None else _fill(b, pairs, func.name)


def _ordered(func: GlobalRef, how: str, args: tuple, b: ObjectBuilder) -> Any:
    pairs = _dict_items(args[0]) if args else []
    if pairs is None:
        return UNMODELLED
    return Opaque(func, how, (), dictitems=_fill(b, pairs, func.name) or None)


def _defaultdict(func: GlobalRef, how: str, args: tuple, b: ObjectBuilder) -> Any:
    if args and not (args[0] is None or type(args[0]) in (GlobalRef, Opaque)):
        return UNMODELLED  # "first argument must be callable or None"
    pairs = _dict_items(args[1]) if len(args) == 2 else []
    if pairs is None:
        return UNMODELLED
    return Opaque(func, how, args[:1], dictitems=_fill(b, pairs, func.name) or None)


def _counter(func: GlobalRef, how: str, args: tuple, b: ObjectBuilder) -> Any:
    pairs = _mapping_items(args[0]) if args else []
    if pairs is None:  # an iterable: its elements are counted
        items = _iter_items(args[0])
        if items is None:
            return UNMODELLED
        b.values.charge(len(items))
        counts: dict = {}
        for it in items:
            b.check_key(it)  # unhashable: CPython raises, the file is unreadable
            counts[it] = counts.get(it, 0) + 1
        pairs = list(counts.items())
    return Opaque(func, how, (), dictitems=_fill(b, pairs, func.name) or None)


def _sequence(func: GlobalRef, how: str, args: tuple, b: ObjectBuilder) -> Any:
    items = _iter_items(args[0]) if args else []
    if items is None:
        return UNMODELLED
    b.values.charge(len(items))
    if len(items) > b.max_container:
        raise LimitExceeded(f"{b.where}: {func.name} of more than {b.max_container} items")
    name = func.name
    if name == "list":
        return items
    if name == "tuple":
        return tuple(items)
    for it in items:
        b.check_key(it)  # unhashable: CPython raises, the file is unreadable
    return set(items) if name == "set" else frozenset(items)


def _bytearray(func: GlobalRef, how: str, args: tuple, b: ObjectBuilder) -> Any:
    if not args:
        return bytearray()
    x = args[0]
    if type(x) in (bytes, bytearray):
        b.values.charge(len(x))
        return bytearray(x)
    if type(x) in (list, tuple) and all(type(i) is int and 0 <= i < 256 for i in x):
        b.values.charge(len(x))
        return bytearray(x)
    return UNMODELLED


def _size(func: GlobalRef, how: str, args: tuple, b: ObjectBuilder) -> Any:
    items = _iter_items(args[0]) if args else []
    if items is None or not all(type(i) is int for i in items):
        return UNMODELLED
    b.values.charge(len(items))
    return Opaque(func, how, (tuple(items),))


_MODELS = {
    "builtins.dict": _dict, _ORDERED: _ordered, _DEFAULTDICT: _defaultdict, _COUNTER: _counter,
    "builtins.list": _sequence, "builtins.tuple": _sequence, "builtins.set": _sequence,
    "builtins.frozenset": _sequence, "builtins.bytearray": _bytearray, "torch.Size": _size,
}


def is_modelled(func: GlobalRef) -> bool:
    return f"{func.module}.{func.name}" in _MODELS
