"""torch's ``_rebuild_*`` calls and storage persistent ids, described as :class:`TensorRef` and
:class:`Storage` — from the names in the pickle only, nothing is imported or called.

The rules follow torch/_utils.py, torch/_tensor.py and torch/serialization.py (torch 2.13):
which arguments each rebuild function takes, and how a storage type or dtype global names an
element type. A call of a rebuild function with arguments torch itself would reject (a
tensor viewing past the end of its storage, a non-storage where a storage goes) is
:class:`UnreadableError`: torch.load fails on such a file too.
"""

from __future__ import annotations

from collections.abc import Callable

from ckpt_guard.read.checkpoint import LimitExceeded, UnreadableError
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.tree import DTYPE_SIZES, GlobalRef, Opaque, Storage, TensorRef

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

# Legacy typed storage classes (torch.storage._dtype_to_storage_type_map) → dtype. torch's
# unpickler maps ANY global whose name contains "Storage" by its name alone, whatever the
# module (torch.cuda.FloatStorage, …): we do the same, the module is judged by the safety layer.
STORAGE_DTYPES: dict[str, str] = {
    "DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
    "LongStorage": "int64", "IntStorage": "int32", "ShortStorage": "int16",
    "CharStorage": "int8", "ByteStorage": "uint8", "BoolStorage": "bool",
    "BFloat16Storage": "bfloat16", "ComplexDoubleStorage": "complex128",
    "ComplexFloatStorage": "complex64", "QInt8Storage": "qint8", "QInt32Storage": "qint32",
    "QUInt8Storage": "quint8", "QUInt4x2Storage": "quint4x2", "QUInt2x4Storage": "quint2x4",
    "UntypedStorage": "uint8", "TypedStorage": "uint8",
}

# dtype → the typed storage class torch.save names for it (the inverse of STORAGE_DTYPES;
# public for writers: rewrite.pickle_writer can import it instead of keeping a copy).
DTYPE_STORAGE_TYPES: dict[str, str] = {
    dtype: name for name, dtype in STORAGE_DTYPES.items()
    if name not in ("UntypedStorage", "TypedStorage")}

# torch.<name> dtype globals; aliases map to the canonical name torch prints.
DTYPE_ALIASES: dict[str, str] = {
    "float": "float32", "double": "float64", "half": "float16", "long": "int64",
    "int": "int32", "short": "int16", "cfloat": "complex64", "cdouble": "complex128",
    "chalf": "complex32",
}
_EXTRA_DTYPES = frozenset({"float4_e2m1fn_x2", "bits8", "bits16", "bits1x8", "bits2x4",
                           "bits4x2", "int1", "int2", "int3", "int4", "int5", "int6", "int7",
                           "uint1", "uint2", "uint3", "uint4", "uint5", "uint6", "uint7"})


def dtype_name(value: Any) -> str:
    """``torch.float16`` (a GlobalRef) → ``"float16"``."""
    if type(value) is GlobalRef and value.module == "torch":
        name = DTYPE_ALIASES.get(value.name, value.name)
        if name in DTYPE_SIZES or name in _EXTRA_DTYPES:
            return name
    raise UnreadableError(f"malformed tensor: dtype is {_short(value)}, not a torch dtype")


def storage_from_pid(pid: Any, storages: dict[str, Storage], limits: Limits, *,
                     legacy: bool = False,
                     views: dict[str, tuple[Storage, Storage, int]] | None = None) -> Any:
    """The object a torch persistent id stands for.

    zip format: ``('storage', <StorageType>, key, location, numel)``; legacy format adds
    ``view_metadata`` and has ``('module', cls, source_file, source)`` for saved module classes
    (the class reference is returned, as torch does). The first reference to a key creates the
    :class:`Storage` in ``storages``; later ones return it (torch ignores their numel too).
    Legacy views (``view_metadata`` not None, pre-2018 files) are returned as separate
    :class:`Storage` objects recorded in ``views`` as ``(view, root, element offset)``.
    """
    if type(pid) is tuple and len(pid) == 5 and not legacy and pid[0] == "storage":
        # Hot path: a key seen before (torch ignores the rest of a repeated reference).
        st = storages.get(pid[2]) if type(pid[2]) is str else None
        stype = pid[1]
        if st is not None and type(stype) is GlobalRef and stype.name in STORAGE_DTYPES:
            return st
    if not isinstance(pid, tuple) or not pid:
        raise UnreadableError(f"malformed persistent id {_short(pid)}")
    typename = pid[0].decode("ascii", "replace") if isinstance(pid[0], bytes) else pid[0]
    if legacy and typename == "module" and len(pid) == 4:
        return pid[1]
    expected = 6 if legacy else 5
    if typename != "storage" or len(pid) != expected:
        raise UnreadableError(f"malformed persistent id: {_short(typename)} with {len(pid)} fields")
    stype, key, location, numel = pid[1], pid[2], pid[3], pid[4]
    if type(stype) is not GlobalRef or stype.name not in STORAGE_DTYPES:
        raise UnreadableError(f"malformed persistent id: storage type {_short(stype)}")
    if isinstance(location, bytes):
        location = location.decode("ascii", "replace")
    if type(key) is int:
        key = str(key)
    if type(key) is not str or type(location) is not str or type(numel) is not int:
        raise UnreadableError("malformed persistent id: key/location/numel of wrong type")
    if numel < 0:
        raise UnreadableError(f"storage {key} claims a negative size")
    if numel > limits.max_storage_numel:
        raise LimitExceeded(f"storage {key} claims {numel} elements")
    st = storages.get(key)
    if st is None:
        st = Storage(key, STORAGE_DTYPES[stype.name], numel, location,
                     storage_type=stype.qualname)
        storages[key] = st
    if legacy and pid[5] is not None:
        vm = pid[5]
        if (not isinstance(vm, tuple) or len(vm) != 3 or not isinstance(vm[0], str)
                or type(vm[1]) is not int or type(vm[2]) is not int or vm[1] < 0 or vm[2] < 0
                or vm[1] + vm[2] > st.numel):
            raise UnreadableError(f"malformed storage view of {key}")
        if views is None:
            raise UnreadableError("storage views are not supported here")
        if vm[0] not in views:
            view = Storage(vm[0], st.dtype, vm[2], st.location, storage_type=st.storage_type)
            views[vm[0]] = (view, st, vm[1])
        return views[vm[0]][0]
    return st


# ---------------------------------------------------------------------------- rebuild calls

def _short(value: Any) -> str:
    if type(value) in (GlobalRef, Opaque):
        return value.qualname
    if type(value) is TensorRef:
        return "a tensor"
    if type(value) is Storage:
        return f"storage {value.key}"
    text = repr(value) if type(value) in (str, int, float, bool, type(None)) else type(value).__name__
    return text[:60]


def _ints(value: Any, what: str) -> tuple[int, ...]:
    """A shape/stride: tuple or list of non-negative ints, or a ``torch.Size(...)`` call."""
    if type(value) is Opaque and value.qualname == "torch.Size" and len(value.args) == 1:
        value = value.args[0]
    if type(value) not in (tuple, list):
        raise UnreadableError(f"malformed tensor: {what} is {_short(value)}")
    for v in value:
        if type(v) is not int or v < 0:
            raise UnreadableError(f"malformed tensor: {what} holds {_short(v)}")
    return tuple(value)


def _int(value: Any, what: str) -> int:
    if type(value) is not int or value < 0:
        raise UnreadableError(f"malformed tensor: {what} is {_short(value)}")
    return value


def _bool(value: Any) -> bool:
    return bool(value) if type(value) in (bool, int) else False


def _strided(func: GlobalRef, args: tuple, storage: Any, offset: Any, size: Any, stride: Any,
             dtype: str | None, requires_grad: Any, kind: str = "tensor") -> TensorRef:
    # Hot: once per tensor of a checkpoint. Validation and the extent check in one pass.
    if type(storage) is not Storage:
        raise UnreadableError(f"malformed tensor: {func.name} on {_short(storage)}")
    shape = size if type(size) is tuple else _ints(size, "size")
    strides = stride if type(stride) is tuple else _ints(stride, "stride")
    if type(offset) is not int or offset < 0:
        raise UnreadableError(f"malformed tensor: storage offset is {_short(offset)}")
    if len(shape) != len(strides):
        raise UnreadableError("malformed tensor: size and stride differ in length")
    last = offset
    empty = False
    for d, st in zip(shape, strides, strict=True):
        if type(d) is not int or type(st) is not int or d < 0 or st < 0:
            raise UnreadableError(f"malformed tensor: size {_short(shape)} stride "
                                  f"{_short(strides)}")
        if d == 0:
            empty = True
        last += (d - 1) * st
    dt = dtype or storage.dtype
    if not empty:
        itemsize = DTYPE_SIZES.get(dt, 1)
        if (last + 1) * itemsize > storage.numel * DTYPE_SIZES.get(storage.dtype, 1):
            raise UnreadableError(f"tensor views {last + 1} elements of storage {storage.key}, "
                                  f"which holds {storage.nbytes // itemsize}")
    if shape is not size or strides is not stride:
        # A list (or torch.Size of a list) is read now: keep the call-time value, so a later
        # change of the list by the pickle reaches neither the analysis nor a rewrite.
        args = (*args[:2], shape, strides, *args[4:])
    return TensorRef(storage, dt, shape, strides, offset,
                     requires_grad is True or requires_grad == 1, kind, func, args)


def _call_time(args: tuple, i: int) -> tuple:
    """``args`` with ``args[i]`` (metadata or ``_set_obj_state`` state, which torch reads at
    call time: a dict, or a ``(dict, slots)`` tuple) replaced by a shallow copy."""
    if len(args) <= i:
        return args
    v = args[i]
    if type(v) is dict:
        v = dict(v)
    elif type(v) is tuple and any(type(p) is dict for p in v):
        v = tuple(dict(p) if type(p) is dict else p for p in v)
    else:
        return args
    return (*args[:i], v, *args[i + 1:])


def _tensor(func: GlobalRef, args: tuple) -> TensorRef:
    _arity(func, args, 4, 4)
    return _strided(func, args, args[0], args[1], args[2], args[3], None, False)


def _tensor_v2(func: GlobalRef, args: tuple) -> TensorRef:
    _arity(func, args, 6, 7)
    args = _call_time(args, 6)  # metadata
    return _strided(func, args, args[0], args[1], args[2], args[3], None, args[4])


def _tensor_v3(func: GlobalRef, args: tuple) -> TensorRef:
    _arity(func, args, 7, 8)
    args = _call_time(args, 7)  # metadata
    return _strided(func, args, args[0], args[1], args[2], args[3], dtype_name(args[6]), args[4])


def _qtensor(func: GlobalRef, args: tuple) -> TensorRef:
    _arity(func, args, 7, 7)
    return _strided(func, args, args[0], args[1], args[2], args[3], None, args[5], "quantized")


def _parameter(func: GlobalRef, args: tuple) -> TensorRef:
    _arity(func, args, 3, 4)
    data = args[0]
    if type(data) is not TensorRef:
        raise UnreadableError(f"malformed parameter: data is {_short(data)}")
    # Parameter(data) aliases data's storage; the state is set (copied) at call time.
    args = _call_time(args, 3)
    return TensorRef(data.storage, data.dtype, data.shape, data.stride, data.storage_offset,
                     _bool(args[1]), "parameter", func, args,
                     args[3] if len(args) == 4 else None, data.components)


def _tensor_list(value: Any) -> tuple[TensorRef, ...]:
    if type(value) not in (tuple, list):
        return ()
    return tuple(v for v in value if type(v) is TensorRef)


def _layout(value: Any) -> str:
    """``torch.serialization._get_layout('torch.sparse_coo')`` or ``torch.sparse_coo``."""
    if type(value) is Opaque and value.args and type(value.args[0]) is str:
        return value.args[0].removeprefix("torch.")
    if type(value) is GlobalRef:
        return value.name
    return ""


def _sparse(func: GlobalRef, args: tuple) -> TensorRef:
    _arity(func, args, 2, 2)
    layout, data = _layout(args[0]), args[1]
    if type(data) not in (tuple, list) or len(data) < 3:
        raise UnreadableError("malformed sparse tensor data")
    if layout == "sparse_coo" or len(data) in (3, 4) and layout == "":
        comps, size = _tensor_list(data[:2]), data[2]
    else:
        comps, size = _tensor_list(data[:3]), data[3] if len(data) > 3 else ()
    if not comps:
        raise UnreadableError("malformed sparse tensor: no index/value tensors")
    values = comps[-1]
    return TensorRef(None, values.dtype, _ints(size, "size"), (), 0, False, "sparse", func,
                     args, None, comps)


def _meta(func: GlobalRef, args: tuple) -> TensorRef:
    _arity(func, args, 4, 4)
    size, stride = _ints(args[1], "size"), _ints(args[2], "stride")
    return TensorRef(None, dtype_name(args[0]), size, stride, 0, _bool(args[3]), "meta", func,
                     (args[0], size, stride, args[3]))


def _wrapper_subclass(func: GlobalRef, args: tuple) -> TensorRef:
    _arity(func, args, 8, 8)
    size, stride = _ints(args[2], "size"), _ints(args[3], "stride")
    return TensorRef(None, dtype_name(args[1]), size, stride, _int(args[4], "storage offset"),
                     _bool(args[7]), "other", func, (*args[:2], size, stride, *args[4:]))


def _device_from_cpu(func: GlobalRef, args: tuple) -> TensorRef:
    _arity(func, args, 4, 4)
    data = args[0]
    if type(data) is not TensorRef:
        raise UnreadableError(f"malformed device tensor: data is {_short(data)}")
    return TensorRef(data.storage, dtype_name(args[1]), data.shape, data.stride,
                     data.storage_offset, _bool(args[3]), data.kind, func, args, None,
                     data.components)


def _device_from_numpy(func: GlobalRef, args: tuple) -> TensorRef:
    _arity(func, args, 4, 4)
    shape: tuple[int, ...] = ()
    arr = args[0]
    # numpy.core.multiarray._reconstruct + BUILD (version, shape, dtype, fortran, rawdata)
    if type(arr) is Opaque and isinstance(arr.state, tuple) and len(arr.state) >= 2:
        try:
            shape = _ints(arr.state[1], "size")
        except UnreadableError:
            shape = ()
    return TensorRef(None, dtype_name(args[1]), shape, (), 0, _bool(args[3]), "other", func,
                     args)


def _nested(func: GlobalRef, args: tuple) -> TensorRef:
    _arity(func, args, 4, 4)
    buf = args[0]
    if type(buf) is not TensorRef:
        raise UnreadableError(f"malformed nested tensor: buffer is {_short(buf)}")
    comps = (buf, *(a for a in args[1:] if type(a) is TensorRef))
    return TensorRef(buf.storage, buf.dtype, buf.shape, buf.stride, buf.storage_offset,
                     buf.requires_grad, "nested", func, args, None, comps)


def _from_type(func: GlobalRef, args: tuple) -> TensorRef | None:
    """``_rebuild_from_type_v2(func, new_type, args, state)``: a tensor subclass or a tensor
    with Python attributes; the tensor is what ``func(*args)`` rebuilds."""
    _arity(func, args, 4, 4)
    inner_func, inner_args = args[0], args[2]
    if type(inner_func) is not GlobalRef or type(inner_args) is not tuple:
        return None
    inner = reduce(inner_func, inner_args)
    if type(inner) is not TensorRef:
        return None
    # the inner call's arguments and the state, as read at call time
    args = _call_time((args[0], args[1], inner.args, *args[3:]), 3)
    return TensorRef(inner.storage, inner.dtype, inner.shape, inner.stride,
                     inner.storage_offset, inner.requires_grad, inner.kind, func, args,
                     args[3], inner.components)


def _arity(func: GlobalRef, args: tuple, lo: int, hi: int) -> None:
    if not lo <= len(args) <= hi:
        raise UnreadableError(f"malformed tensor: {func.name} with {len(args)} arguments")


def _jit_value(func: GlobalRef, args: tuple) -> Any:
    """TorchScript's pickler wraps plain values to carry their static type
    (torch/jit/_pickle.py: ``restore_type_tag(value, type_str)``, ``build_intlist(list)``, …);
    the value is what the call returns."""
    if func.name == "restore_type_tag" and len(args) == 2 and type(args[1]) is str:
        return args[0]
    if func.name != "restore_type_tag" and len(args) == 1 and type(args[0]) is list:
        return args[0]
    return None


_U = "torch._utils."
_J = "torch.jit._pickle."
# qualname -> handler(func, args) returning what the call stands for, or None (Opaque).
REBUILDERS: dict[str, Callable[[GlobalRef, tuple], Any]] = {
    _U + "_rebuild_tensor": _tensor,
    _U + "_rebuild_tensor_v2": _tensor_v2,
    _U + "_rebuild_tensor_v3": _tensor_v3,
    _U + "_rebuild_parameter": _parameter,
    _U + "_rebuild_parameter_with_state": _parameter,
    _U + "_rebuild_qtensor": _qtensor,
    _U + "_rebuild_sparse_tensor": _sparse,
    _U + "_rebuild_sparse_csr_tensor": _sparse,
    _U + "_rebuild_meta_tensor_no_storage": _meta,
    _U + "_rebuild_wrapper_subclass": _wrapper_subclass,
    _U + "_rebuild_device_tensor_from_cpu_tensor": _device_from_cpu,
    _U + "_rebuild_device_tensor_from_numpy": _device_from_numpy,
    _U + "_rebuild_xla_tensor": _device_from_numpy,
    _U + "_rebuild_nested_tensor": _nested,
    "torch._tensor._rebuild_from_type_v2": _from_type,
    "torch._tensor._rebuild_from_type": _from_type,
    # torch.load maps the pre-1.8 module name torch.tensor to torch._tensor
    "torch.tensor._rebuild_from_type_v2": _from_type,
    "torch.tensor._rebuild_from_type": _from_type,
    _J + "restore_type_tag": _jit_value,
    _J + "build_intlist": _jit_value,
    _J + "build_tensorlist": _jit_value,
    _J + "build_doublelist": _jit_value,
    _J + "build_boollist": _jit_value,
}


def handler(func: GlobalRef) -> Callable[[GlobalRef, tuple], Any] | None:
    """The handler for ``func`` (called with ``(func, args)``), or ``None``."""
    if not func.module.startswith("torch"):
        return None
    return REBUILDERS.get(f"{func.module}.{func.name}")


def reduce(func: GlobalRef, args: tuple) -> Any:
    """What ``func(*args)`` stands for — a :class:`TensorRef` for torch's rebuild functions,
    the wrapped value for TorchScript's type tags — or ``None`` for any other call (the caller
    then makes an :class:`Opaque`)."""
    if not func.module.startswith("torch"):
        return None
    handler = REBUILDERS.get(f"{func.module}.{func.name}")
    return handler(func, args) if handler is not None else None
