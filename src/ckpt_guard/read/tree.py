"""The reader's output: a tree of plain values, tensor references and opaque objects.

A pickle is read by our own interpreter (``pickle_vm``) which never imports or calls anything
named in the file. What it builds:

* plain Python containers and scalars (dict, list, tuple, set, frozenset, str, bytes, int,
  float, bool, None) exactly as the pickle describes them;
* :class:`TensorRef` for every call of one of torch's ``_rebuild_*`` functions: where the bytes
  live (a :class:`Storage`), dtype, shape, stride, offset — never the bytes themselves;
* :class:`GlobalRef` for a bare reference to a global (``torch.float16``, a class object, …);
* :class:`Opaque` for every other call or object construction, recording the global, how it
  was built, its arguments, its ``BUILD`` state and any items appended/set on it — enough for
  the rewriter to emit it again byte-for-byte equivalent without having the class.

``collections.OrderedDict`` is an :class:`Opaque` whose ``dictitems`` hold the entries; use
:func:`as_mapping` to look through it (and through other dict-like opaque objects).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

# Element sizes in bytes, by torch dtype name (without "torch.").
DTYPE_SIZES: dict[str, int] = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2,
    "complex128": 16, "complex64": 8, "complex32": 4,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint8": 1,
    "uint16": 2, "uint32": 4, "uint64": 8, "bool": 1,
    "qint8": 1, "quint8": 1, "qint32": 4, "quint4x2": 1, "quint2x4": 1,
    "float8_e5m2": 1, "float8_e4m3fn": 1, "float8_e5m2fnuz": 1, "float8_e4m3fnuz": 1,
    "float8_e8m0fnu": 1,
}

FLOAT_DTYPES = frozenset({"float64", "float32", "float16", "bfloat16", "float8_e5m2",
                          "float8_e4m3fn", "float8_e5m2fnuz", "float8_e4m3fnuz",
                          "float8_e8m0fnu"})


@dataclass(eq=False)
class Storage:
    """One storage record: a run of bytes in the file that one or more tensors view.

    ``key`` is the record name (zip: ``data/<key>``; legacy: the storage key; safetensors: the
    tensor name). ``offset`` is the absolute file offset of the first byte when known (zip
    records and legacy storages are located at read time from metadata only), else ``None``.
    """

    key: str
    dtype: str  # element dtype; "uint8" for an UntypedStorage
    numel: int  # elements of ``dtype`` (bytes for untyped)
    location: str = "cpu"
    offset: int | None = None
    storage_type: str = ""  # the global that named it, e.g. "torch.FloatStorage"
    # What the record really holds when that is less than claimed (a TorchScript archive's
    # traced inputs, whose records torch writes empty; read leniently): byte accounting never
    # counts bytes the file does not hold (issue 9, defect 8).
    held: int | None = None

    @property
    def claimed_nbytes(self) -> int:
        """Bytes the pickle says the storage has (``numel`` × element size)."""
        return self.numel * DTYPE_SIZES.get(self.dtype, 1)

    @property
    def nbytes(self) -> int:
        """Bytes of the storage the file holds: claimed, capped by its record."""
        claimed = self.numel * DTYPE_SIZES.get(self.dtype, 1)
        return claimed if self.held is None else min(claimed, self.held)


@dataclass(eq=False)
class GlobalRef:
    """A bare reference to a global named by the pickle (never resolved, never imported)."""

    module: str
    name: str

    @cached_property
    def qualname(self) -> str:  # cached: analysis asks for it at every object
        return f"{self.module}.{self.name}"

    def __repr__(self) -> str:
        return f"GlobalRef({self.qualname})"


@dataclass(eq=False)
class TensorRef:
    """A tensor rebuilt by one of torch's ``_rebuild_*`` functions, described, not loaded.

    ``kind``: ``tensor`` | ``parameter`` | ``sparse`` | ``quantized`` | ``meta`` | ``nested`` |
    ``other``. ``storage`` is ``None`` for meta tensors. For sparse tensors ``components``
    holds the indices/values TensorRefs. ``func`` and ``args`` are the rebuild call as read
    (``args`` with the storage persistent id already resolved to the :class:`Storage`), so a
    writer can emit the same call again.
    """

    storage: Storage | None
    dtype: str
    shape: tuple[int, ...]
    stride: tuple[int, ...] = ()
    storage_offset: int = 0
    requires_grad: bool = False
    kind: str = "tensor"
    func: GlobalRef | None = None
    args: tuple = ()
    state: Any = None  # _rebuild_parameter_with_state state, BUILD state on the tensor
    components: tuple[TensorRef, ...] = ()
    # Why this tensor may not be what torch builds (a writer must not re-emit it), or "".
    unmodelled: str = ""

    @property
    def numel(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n

    @property
    def nbytes(self) -> int:
        """Bytes this tensor's elements take (not its storage: views may share one)."""
        return self.numel * DTYPE_SIZES.get(self.dtype, 1)


_NO_STATE = object()


@dataclass(eq=False)
class Opaque:
    """An object the pickle constructs from a global we do not execute.

    ``how`` says which opcode built it: ``reduce`` (``func(*args)``), ``newobj``
    (``cls.__new__(cls, *args)``), ``newobj_ex`` (with ``kwargs``), ``inst``/``obj`` (old-style
    instantiation). ``state`` is the argument of ``BUILD`` (``NO_STATE`` when none came);
    ``dictitems``/``listitems`` collect ``SETITEM(S)``/``APPEND(S)`` applied to the object.
    ``args``/``state`` hold the values as they were at call time (see
    :mod:`ckpt_guard.read.pickle_values`).
    """

    func: GlobalRef
    how: str
    args: tuple = ()
    kwargs: dict | None = None
    state: Any = _NO_STATE
    dictitems: dict | None = None
    listitems: list | None = None
    # Why this object may not be what the real class builds (see read.pickle_values): the
    # pickle changed its arguments after the call, or BUILT it twice. A writer must not
    # re-emit it. "" when faithful.
    unmodelled: str = ""

    @property
    def module(self) -> str:
        return self.func.module

    @property
    def name(self) -> str:
        return self.func.name

    @property
    def qualname(self) -> str:
        return self.func.qualname

    @property
    def has_state(self) -> bool:
        return self.state is not _NO_STATE

    def __repr__(self) -> str:
        return f"Opaque({self.qualname}, how={self.how})"


NO_STATE = _NO_STATE

# Opaque classes that are plain mappings for every purpose of analysis.
MAPPING_GLOBALS = frozenset({
    "collections.OrderedDict", "collections.defaultdict", "builtins.dict",
    "__builtin__.dict",
})


def contiguous_stride(shape: tuple[int, ...]) -> tuple[int, ...]:
    """The row-major (C-contiguous) stride of ``shape``, in elements, as torch computes it."""
    stride, acc = [], 1
    for d in reversed(shape):
        stride.append(acc)
        acc *= max(d, 1)
    return tuple(reversed(stride))


def as_mapping(value: Any) -> dict | None:
    """The mapping ``value`` stands for: a dict itself, an OrderedDict-like :class:`Opaque`'s
    items, or ``None`` when it is not a mapping.

    For an opaque object with items set on it (a dict subclass from a package that is not
    installed) the items are returned too.
    """
    if isinstance(value, dict):
        return value
    if isinstance(value, Opaque):
        if value.dictitems is not None:
            return value.dictitems
        if value.qualname in MAPPING_GLOBALS:
            return {}
    return None


def attributes(value: Opaque) -> dict | None:
    """The instance attributes an opaque object receives through ``BUILD``, if a dict.

    Handles the ``(state, slotstate)`` tuple form of ``__getstate__``.
    """
    state = value.state
    if isinstance(state, tuple) and len(state) == 2:
        merged: dict = {}
        for part in state:
            m = as_mapping(part)
            if m:
                merged.update(m)
        return merged or None
    return as_mapping(state)
