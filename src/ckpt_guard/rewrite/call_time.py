"""A check of a written pickle that does not rely on our reader's modelling of calls.

What a pickle means depends on what each call does with its arguments only when the pickle
changes a container after passing it to a call (see :mod:`ckpt_guard.read.pickle_values`). A
pickle without such a change means the same under copy and alias semantics, so our reader's
reading of it (the tree verification compares) is what torch builds from it, whatever the
callees do. This module asks CPython's own unpickler whether the output is such a pickle:
every global resolves to an inert stand-in class of ours (nothing is imported, nothing of the
file runs), each call/``__new__``/``__setstate__`` records a shallow copy of every container
reachable from its arguments, and after loading each container must still hold what it held
then.
"""

from __future__ import annotations

import io
import pickle
import sys
from typing import Any


class CallTimeError(Exception):
    """The pickle changes an argument of a call after the call (one line for users)."""


class _Inert:
    """Stand-in for every class or function a pickle names. Records the arguments it gets."""

    _calls: list[tuple[Any, Any]]  # set per load on the generated subclasses' namespace

    def __new__(cls, *args: Any, **kwargs: Any) -> _Inert:
        obj = object.__new__(cls)
        _record(args, cls._calls)
        if kwargs:
            _record(kwargs, cls._calls)
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # __new__ recorded the call

    def __setstate__(self, state: Any) -> None:
        _record(state, type(self)._calls)

    def __setitem__(self, key: Any, value: Any) -> None:
        pass  # items set on the object itself are no call argument

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def add(self, value: Any) -> None:
        pass


def _record(x: Any, calls: list[tuple[Any, Any]]) -> None:
    """A shallow copy of every list/dict/set/bytearray reachable from ``x`` through plain
    containers (stand-in objects are references: not walked)."""
    todo = [x]
    seen: set[int] = set()
    while todo:
        y = todo.pop()
        t = type(y)
        if t is tuple or t is frozenset:
            todo.extend(y)
        elif t is list or t is dict or t is set or t is bytearray:
            if id(y) in seen:
                continue
            seen.add(id(y))
            if t is dict:
                calls.append((y, list(y.items())))
                todo.extend(y.values())
            elif t is bytearray:
                calls.append((y, bytes(y)))
            else:
                calls.append((y, list(y)))
                todo.extend(y)


def _changed(y: Any, snap: Any) -> bool:
    t = type(y)
    if t is bytearray:
        return bytes(y) != snap
    now = list(y.items()) if t is dict else list(y)
    if len(now) != len(snap):
        return True
    if t is dict:
        return any(a[0] is not b[0] and a[0] != b[0] or a[1] is not b[1]
                   for a, b in zip(now, snap, strict=True))
    if t is set:
        return set(now) != set(snap)
    return any(a is not b for a, b in zip(now, snap, strict=True))


class _Unpickler(pickle.Unpickler):
    def __init__(self, data: bytes, calls: list[tuple[Any, Any]]) -> None:
        super().__init__(io.BytesIO(data))
        self.calls = calls
        self.classes: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str) -> type:
        key = (module, name)
        cls = self.classes.get(key)
        if cls is None:
            cls = self.classes[key] = type("Inert", (_Inert,), {"_calls": self.calls})
        return cls

    def persistent_load(self, pid: Any) -> Any:
        return ("pid", pid)


def check_call_time(data: bytes) -> None:
    """Raise :class:`CallTimeError` when ``data`` (a pickle we wrote) changes a container
    after passing it to a call or ``__setstate__``."""
    calls: list[tuple[Any, Any]] = []
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20_000))
    try:
        _Unpickler(data, calls).load()
        for y, snap in calls:
            if _changed(y, snap):
                raise CallTimeError("the output changes an argument of a call after the "
                                    "call; its meaning would depend on the callee")
    except (pickle.UnpicklingError, RecursionError, TypeError, ValueError, AttributeError,
            EOFError) as e:
        raise CallTimeError(f"the output does not unpickle with inert globals: "
                            f"{type(e).__name__}: {str(e)[:120]}") from e
    finally:
        sys.setrecursionlimit(old)
