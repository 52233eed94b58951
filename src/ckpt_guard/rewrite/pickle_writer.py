"""Emit a reader tree (:mod:`ckpt_guard.read.tree`) as a pickle the way ``torch.save`` does.

Protocol 2 opcodes only where possible — the subset torch's ``weights_only`` unpickler
understands — so a file that loaded with ``weights_only=True`` still does:

* storages: ``('storage', GLOBAL torch.<X>Storage, key, location, numel)`` + ``BINPERSID``;
* tensors: their rebuild call as read (``GLOBAL func`` + args + ``REDUCE``), with storage and
  dtype substituted when the rewrite cast them;
* opaque objects exactly as read: ``GLOBAL`` + args + ``REDUCE``/``NEWOBJ``/``NEWOBJ_EX``/
  ``INST``/``OBJ``, then ``APPENDS``/``SETITEMS`` and ``BUILD``;
* shared objects are memoized (``BINPUT``/``BINGET``) so shared references stay shared.

Nothing here imports or calls anything the tree names.
"""

from __future__ import annotations

import io
import pickle
import struct
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ckpt_guard.read.rebuild import STORAGE_DTYPES
from ckpt_guard.read.tree import NO_STATE, GlobalRef, Opaque, Storage, TensorRef

# dtype → torch's legacy typed storage class, the inverse of the reader's table.
STORAGE_TYPES: dict[str, str] = {dtype: name for name, dtype in STORAGE_DTYPES.items()
                                 if name not in ("UntypedStorage", "TypedStorage")}

_BATCH = 1000  # items per APPENDS/SETITEMS, as pickle does


class PickleWriteError(Exception):
    """The tree holds something that cannot be written back."""


@dataclass(frozen=True)
class OutStorage:
    """A storage as it appears in the output: record key, dtype, numel, and the global that
    names its type (``torch.HalfStorage``)."""

    key: str
    dtype: str
    numel: int
    location: str = "cpu"
    storage_type: str = ""

    @property
    def type_global(self) -> tuple[str, str]:
        name = self.storage_type or f"torch.{STORAGE_TYPES.get(self.dtype, 'UntypedStorage')}"
        module, _, attr = name.rpartition(".")
        return module or "torch", attr


def subst_dtype(args: tuple, old: str, new: str) -> tuple:
    """``args`` with the dtype global ``torch.<old>`` replaced by ``torch.<new>``, also in
    nested tuples (``_rebuild_from_type_v2`` carries the inner rebuild call's arguments)."""
    out = []
    for a in args:
        if isinstance(a, GlobalRef) and a.module == "torch" and a.name == old:
            a = GlobalRef("torch", new)
        elif type(a) is tuple:
            a = subst_dtype(a, old, new)
        out.append(a)
    return tuple(out)


def storage_type_for(dtype: str) -> str:
    return f"torch.{STORAGE_TYPES.get(dtype, 'UntypedStorage')}"


class _Writer:
    def __init__(self, out: io.BytesIO, storage_out: Callable[[Storage], OutStorage],
                 protocol: int):
        self.out = out
        self.write = out.write
        self.storage_out = storage_out
        self.protocol = protocol
        self.memo: dict[Any, int] = {}
        self.keepalive: list[Any] = []  # objects memoized by id must outlive the write
        self.storages: list[tuple[Storage, OutStorage]] = []
        self._seen_storages: set[int] = set()

    # -- memo -------------------------------------------------------------------------
    def _put(self, key: Any, obj: Any = None) -> None:
        idx = len(self.memo)
        self.memo[key] = idx
        if obj is not None:
            self.keepalive.append(obj)
        self.write(pickle.BINPUT + bytes([idx]) if idx < 256
                   else pickle.LONG_BINPUT + struct.pack("<I", idx))

    def _get(self, key: Any) -> bool:
        idx = self.memo.get(key)
        if idx is None:
            return False
        self.write(pickle.BINGET + bytes([idx]) if idx < 256
                   else pickle.LONG_BINGET + struct.pack("<I", idx))
        return True

    # -- dispatch ---------------------------------------------------------------------
    def save(self, obj: Any) -> None:
        if obj is None:
            self.write(pickle.NONE)
        elif obj is True:
            self.write(pickle.NEWTRUE)
        elif obj is False:
            self.write(pickle.NEWFALSE)
        elif type(obj) is int:
            self._int(obj)
        elif type(obj) is float:
            self.write(pickle.BINFLOAT + struct.pack(">d", obj))
        elif type(obj) is str:
            self._str(obj)
        elif isinstance(obj, TensorRef):
            self._tensor(obj)
        elif isinstance(obj, Opaque):
            self._opaque(obj)
        elif isinstance(obj, GlobalRef):
            self._global(obj.module, obj.name)
        elif isinstance(obj, Storage):
            self._storage(obj)
        elif isinstance(obj, dict):
            self._dict(obj)
        elif isinstance(obj, list):
            self._list(obj)
        elif isinstance(obj, tuple):
            self._tuple(obj)
        elif isinstance(obj, (bytes, bytearray)):
            self._bytes(obj)
        elif isinstance(obj, (set, frozenset)):
            self._set(obj)
        elif isinstance(obj, int):  # int subclasses (bool handled above)
            self._int(int(obj))
        else:
            raise PickleWriteError(f"cannot write a {type(obj).__name__} value")

    # -- scalars ----------------------------------------------------------------------
    def _int(self, v: int) -> None:
        if 0 <= v < 256:
            self.write(pickle.BININT1 + bytes([v]))
        elif 0 <= v < 65536:
            self.write(pickle.BININT2 + struct.pack("<H", v))
        elif -(2 ** 31) <= v < 2 ** 31:
            self.write(pickle.BININT + struct.pack("<i", v))
        else:
            data = pickle.encode_long(v)
            if len(data) < 256:
                self.write(pickle.LONG1 + bytes([len(data)]) + data)
            else:
                self.write(pickle.LONG4 + struct.pack("<i", len(data)) + data)

    def _str(self, s: str) -> None:
        if self._get(("s", s)):
            return
        data = s.encode("utf-8", "surrogatepass")
        self.write(pickle.BINUNICODE + struct.pack("<I", len(data)) + data)
        self._put(("s", s))

    def _bytes(self, b: bytes | bytearray) -> None:
        key = ("b", type(b).__name__, bytes(b))
        if self._get(key):
            return
        if isinstance(b, bytearray):
            self._global("builtins", "bytearray")
            self._bytes(bytes(b))
            self.write(pickle.TUPLE1 + pickle.REDUCE)
        else:
            # Protocol 2 spelling of bytes, allowed by torch's weights_only unpickler.
            self._global("_codecs", "encode")
            self._str(b.decode("latin1"))
            self._str("latin1")
            self.write(pickle.TUPLE2 + pickle.REDUCE)
        self._put(key)

    def _global(self, module: str, name: str) -> None:
        key = ("g", module, name)
        if self._get(key):
            return
        if module.startswith("<"):
            # The reader's stand-in for a callable computed at load time (the result of
            # another call): the original expression is not kept, so it cannot be re-emitted.
            raise PickleWriteError(f"the pickle calls a computed callable ({name}); such a "
                                   "file cannot be rewritten faithfully")
        if "\n" in module or "\n" in name:
            raise PickleWriteError(f"global name with a newline: {module!r} {name!r}")
        self.write(pickle.GLOBAL + module.encode("utf-8") + b"\n" + name.encode("utf-8")
                   + b"\n")
        self._put(key)

    # -- containers -------------------------------------------------------------------
    def _dict(self, d: dict) -> None:
        if self._get(id(d)):
            return
        self.write(pickle.EMPTY_DICT)
        self._put(id(d), d)
        self._setitems(d)

    def _setitems(self, d: dict) -> None:
        self._batched([kv for item in d.items() for kv in item], 2, pickle.SETITEM,
                      pickle.SETITEMS)

    def _batched(self, values: list, width: int, one: bytes, many: bytes) -> None:
        """Save ``values`` in groups of ``width`` (2: key, value) as pickle does: ``_BATCH``
        groups under a MARK with ``many``, a lone group with ``one``."""
        step = _BATCH * width
        for i in range(0, len(values), step):
            batch = values[i:i + step]
            if len(batch) > width:
                self.write(pickle.MARK)
            for v in batch:
                self.save(v)
            self.write(many if len(batch) > width else one)

    def _list(self, seq: list) -> None:
        if self._get(id(seq)):
            return
        self.write(pickle.EMPTY_LIST)
        self._put(id(seq), seq)
        self._appends(seq)

    def _appends(self, seq: list) -> None:
        self._batched(list(seq), 1, pickle.APPEND, pickle.APPENDS)

    def _tuple(self, t: tuple) -> None:
        if not t:
            self.write(pickle.EMPTY_TUPLE)
            return
        if self._get(id(t)):
            return
        n = len(t)
        if n <= 3:
            for v in t:
                self.save(v)
            if id(t) in self.memo:  # reached itself through a mutable member
                self.write(pickle.POP * n)
                self._get(id(t))
                return
            self.write((pickle.TUPLE1, pickle.TUPLE2, pickle.TUPLE3)[n - 1])
        else:
            self.write(pickle.MARK)
            for v in t:
                self.save(v)
            if id(t) in self.memo:
                self.write(pickle.POP_MARK)
                self._get(id(t))
                return
            self.write(pickle.TUPLE)
        self._put(id(t), t)

    def _set(self, s: set | frozenset) -> None:
        if self._get(id(s)):
            return
        self._global("builtins", "frozenset" if isinstance(s, frozenset) else "set")
        self.save(list(s))
        self.write(pickle.TUPLE1 + pickle.REDUCE)
        self._put(id(s), s)

    # -- torch ------------------------------------------------------------------------
    def _storage(self, st: Storage) -> None:
        out = self.storage_out(st)
        if id(st) not in self._seen_storages:
            self._seen_storages.add(id(st))
            self.storages.append((st, out))
        self.write(pickle.MARK)
        self._str("storage")
        self._global(*out.type_global)
        self._str(out.key)
        self._str(out.location)
        self._int(out.numel)
        self.write(pickle.TUPLE + pickle.BINPERSID)

    def _tensor(self, t: TensorRef) -> None:
        if self._get(id(t)):
            return
        if t.unmodelled:
            raise PickleWriteError(f"{t.unmodelled}; re-emitting it could load different "
                                   "values")
        func = t.func
        args = t.args
        if func is None:
            if t.storage is None:
                raise PickleWriteError("tensor without storage or rebuild function")
            func = GlobalRef("torch._utils", "_rebuild_tensor_v2")
            args = (t.storage, t.storage_offset, tuple(t.shape), tuple(t.stride),
                    t.requires_grad, Opaque(GlobalRef("collections", "OrderedDict"), "reduce"))
        if t.storage is not None:
            out = self.storage_out(t.storage)
            if out.dtype != t.storage.dtype:
                # _rebuild_tensor_v3 and friends name the dtype in their arguments.
                args = subst_dtype(tuple(args), t.storage.dtype, out.dtype)
        self.save(func)
        self._tuple(tuple(args))
        self.write(pickle.REDUCE)
        self._put(id(t), t)
        # State that came with BUILD (not state passed as an argument, as for
        # _rebuild_parameter_with_state and _rebuild_from_type_v2).
        if t.state is not None and t.state is not NO_STATE \
                and not any(t.state is a for a in t.args):
            self.save(t.state)
            self.write(pickle.BUILD)

    def _opaque(self, o: Opaque) -> None:
        if self._get(id(o)):
            return
        if o.unmodelled:
            # The reader could not tell what the real class built (read.pickle_values).
            raise PickleWriteError(f"{o.unmodelled}; re-emitting it could load different "
                                   "values")
        how = o.how
        if how in ("reduce", "newobj", "newobj_ex"):
            self.save(o.func)
            if how == "newobj_ex":
                self._tuple(tuple(o.args))
                self._dict(dict(o.kwargs or {}))
                self.write(pickle.NEWOBJ_EX)
            else:
                self._tuple(tuple(o.args))
                self.write(pickle.REDUCE if how == "reduce" else pickle.NEWOBJ)
        elif how == "inst":
            self.write(pickle.MARK)
            for a in o.args:
                self.save(a)
            self.write(pickle.INST + o.func.module.encode("utf-8") + b"\n"
                       + o.func.name.encode("utf-8") + b"\n")
        elif how == "obj":
            self.write(pickle.MARK)
            self.save(o.func)
            for a in o.args:
                self.save(a)
            self.write(pickle.OBJ)
        else:
            raise PickleWriteError(f"opaque object {o.qualname} built by unknown {how!r}")
        self._put(id(o), o)
        if o.listitems:
            self._appends(o.listitems)
        if o.dictitems:
            self._setitems(o.dictitems)
        if o.has_state:
            self.save(o.state)
            self.write(pickle.BUILD)


def dumps(root: Any, storage_out: Callable[[Storage], OutStorage], *,
          protocol: int = 2) -> tuple[bytes, list[tuple[Storage, OutStorage]]]:
    """Serialize ``root``; returns the pickle and the storages it references, in order of
    first reference, each with its output description from ``storage_out``."""
    buf = io.BytesIO()
    w = _Writer(buf, storage_out, protocol)
    buf.write(pickle.PROTO + bytes([protocol]))
    old = sys.getrecursionlimit()
    sys.setrecursionlimit(max(old, 20_000))
    try:
        w.save(root)
    except RecursionError as e:
        raise PickleWriteError("object tree nested too deeply to write") from e
    finally:
        sys.setrecursionlimit(old)
    buf.write(pickle.STOP)
    return buf.getvalue(), w.storages
