"""A check of a written pickle that does not rely on our reader's modelling of calls.

What a pickle means depends on what each call does with its arguments only when the pickle
changes a container after passing it to a call (see :mod:`ckpt_guard.read.pickle_values`). A
pickle without such a change means the same under copy and alias semantics, so our reader's
reading of it (the tree verification compares) is what torch builds from it, whatever the
callees do. This module asks CPython's own unpickler whether the output is such a pickle:
every global resolves to an inert stand-in class of ours (nothing is imported, nothing of the
file runs), each call/``__new__``/``__setstate__`` records a frozen copy of its arguments, and
after loading the frozen copies must still match the arguments.
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
        cls._calls.append(((args, kwargs), _freeze((args, kwargs))))
        return obj

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass  # __new__ recorded the call

    def __setstate__(self, state: Any) -> None:
        type(self)._calls.append((state, _freeze(state)))

    def __setitem__(self, key: Any, value: Any) -> None:
        pass  # items set on the object itself are no call argument

    def append(self, value: Any) -> None:
        pass

    def extend(self, values: Any) -> None:
        pass

    def add(self, value: Any) -> None:
        pass


def _freeze(x: Any, onpath: set[int] | None = None) -> Any:
    """A value-copy of the containers in ``x``; other objects by identity."""
    t = type(x)
    if t in (list, tuple, set, frozenset, dict, bytearray):
        onpath = onpath if onpath is not None else set()
        if id(x) in onpath:
            return ("cycle", id(x))
        onpath.add(id(x))
        if t is dict:
            out: Any = (t, tuple((_freeze(k, onpath), _freeze(v, onpath)) for k, v in x.items()))
        elif t in (set, frozenset):
            out = (t, frozenset(_freeze(v, onpath) for v in x))
        elif t is bytearray:
            out = (t, bytes(x))
        else:
            out = (t, tuple(_freeze(v, onpath) for v in x))
        onpath.discard(id(x))
        return out
    if t in (str, bytes, int, float, bool, complex) or x is None:
        return (t, x) if x == x else (t, "nan")
    return ("id", id(x))


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
        for args, frozen in calls:
            if _freeze(args) != frozen:
                raise CallTimeError("the output changes an argument of a call after the "
                                    "call; its meaning would depend on the callee")
    except (pickle.UnpicklingError, RecursionError, TypeError, ValueError, AttributeError,
            EOFError) as e:
        raise CallTimeError(f"the output does not unpickle with inert globals: "
                            f"{type(e).__name__}: {str(e)[:120]}") from e
    finally:
        sys.setrecursionlimit(old)
