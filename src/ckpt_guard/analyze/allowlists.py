"""The allowlist tables the global classifier (:mod:`ckpt_guard.analyze.safety`) reads: what
torch's ``weights_only=True`` loader accepts (``safe``), value types that run no attacker code
(``needs-code``), and the torch/numpy names a full-module pickle may store as values.

Data only: how a name is judged against these is :mod:`ckpt_guard.analyze.judgement`.
"""

from __future__ import annotations

import re

# ---- safe: torch 2.13's default weights_only allowlist (verified against torch in tests) ----
_TORCH_TYPES = ("BFloat16", "Bool", "Byte", "Char", "Double", "Float", "Half", "Int", "Long",
                "Short")
_STORAGE_ONLY = ("ComplexDouble", "ComplexFloat", "QInt32", "QInt8", "QUInt2x4", "QUInt4x2",
                 "QUInt8")
_DTYPES = ("bfloat16", "bits16", "bits1x8", "bits2x4", "bits4x2", "bits8", "bool", "complex128",
           "complex32", "complex64", "float16", "float32", "float64", "float4_e2m1fn_x2",
           "float8_e4m3fn", "float8_e4m3fnuz", "float8_e5m2", "float8_e5m2fnuz",
           "float8_e8m0fnu", "int16", "int32", "int64", "int8", "qint32", "qint8", "quint2x4",
           "quint4x2", "quint8", "uint16", "uint32", "uint64", "uint8",
           *(f"int{i}" for i in range(1, 8)), *(f"uint{i}" for i in range(1, 8)))
_REBUILD = ("_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
            "_rebuild_parameter_with_state", "_rebuild_qtensor", "_rebuild_sparse_tensor",
            "_rebuild_meta_tensor_no_storage", "_rebuild_wrapper_subclass",
            "_rebuild_device_tensor_from_cpu_tensor", "_rebuild_device_tensor_from_numpy",
            "_rebuild_nested_tensor")
_QSCHEMES = ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine",
             "per_channel_symmetric", "per_channel_affine_float_qparams")

SAFE_GLOBALS: frozenset[str] = frozenset({
    "collections.OrderedDict", "collections.Counter", "torch.nn.parameter.Parameter",
    "torch.serialization._get_layout", "torch.Size", "torch.Tensor", "torch.device",
    "_codecs.encode", "builtins.bytearray", "builtins.set", "builtins.complex",
    "torch._tensor._rebuild_from_type_v2", "torch.storage.TypedStorage",
    "torch.storage.UntypedStorage",
    *(f"torch.{d}" for d in _DTYPES), *(f"torch.{q}" for q in _QSCHEMES),
    *(f"torch._utils.{f}" for f in _REBUILD),
    *(f"torch.{t}Storage" for t in _TORCH_TYPES + _STORAGE_ONLY),
    *(f"torch.{t}Tensor" for t in _TORCH_TYPES),
    *(f"torch.cuda.{t}Storage" for t in _TORCH_TYPES + _STORAGE_ONLY[:2]),
    *(f"torch.cuda.{t}Tensor" for t in _TORCH_TYPES),
    *(f"torch.sparse.{t}Tensor" for t in _TORCH_TYPES if t != "Bool"),
    *(f"torch.cuda.sparse.{t}Tensor" for t in _TORCH_TYPES if t != "Bool"),
})

# ---- needs-code: value types that run no attacker code but fail weights_only=True ----------
STDLIB_VALUES: dict[str, str] = {
    **{f"builtins.{n}": "builtin value type" for n in (
        "frozenset", "slice", "range", "object", "int", "float", "str", "bytes", "bool",
        "tuple", "list", "dict", "Ellipsis", "NotImplemented")},
    **{f"collections.{n}": "collections container" for n in (
        "defaultdict", "deque", "UserDict", "UserList", "UserString")}, "argparse.Namespace": "argparse.Namespace (e.g. RF-DETR args)",
    "types.SimpleNamespace": "plain namespace", "copyreg._reconstructor":
    "protocol 0/1 object reconstruction", "_codecs.decode": "codec on bytes",
    **{f"datetime.{n}": "datetime value" for n in ("datetime", "date", "time", "timedelta",
                                                   "timezone")},
    **{f"pathlib.{n}": "path value (constructing it touches no file)" for n in (
        "Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath")},
    "decimal.Decimal": "number value", "fractions.Fraction": "number value",
    "uuid.UUID": "UUID value", "uuid.SafeUUID": "UUID value",
    "array.array": "array value", "array._array_reconstructor": "array value",
    "re._compile": "compiled regular expression",
    # omegaconf/Lightning hparams pickle type annotations (``ContainerMetadata.ref_type``).
    **{f"typing.{n}": "typing annotation" for n in ("Any", "Union", "Optional", "Dict", "List",
                                                    "Tuple", "Set", "Callable")},
    # typing.Dict[str, int] pickles as operator.getitem(typing.Dict, (str, int)). getitem
    # only indexes an object the pickle already built from other (judged) globals; it
    # reaches no callable by itself, and calling its result is traced as ``<call>``.
    **{f"{m}.getitem": "typing subscription (typing.Dict[str, int])"
       for m in ("operator", "_operator")},
}
_NUMPY_MODS = ("numpy.core.multiarray", "numpy._core.multiarray")
NUMPY_VALUES: dict[str, str] = {
    **{f"{m}.{n}": "numpy array/scalar reconstruction" for m in _NUMPY_MODS
       for n in ("_reconstruct", "scalar")},
    **{f"{m}._frombuffer": "numpy array reconstruction" for m in ("numpy.core.numeric",
                                                                  "numpy._core.numeric")},
    "numpy.ndarray": "numpy array type", "numpy.dtype": "numpy dtype",
    **{f"numpy.random._pickle.{n}": "numpy random generator state" for n in (
        "__randomstate_ctor", "__bit_generator_ctor", "__generator_ctor")},
}
# TorchScript archives: helpers torch.jit.load's C++ unpickler implements natively (the
# Python ones are identity functions), and classes compiled from the archive's own code/.
TORCHSCRIPT_HELPERS = frozenset(f"torch.jit._pickle.{n}" for n in (
    "build_intlist", "build_tensorlist", "build_doublelist", "build_boollist",
    "build_tensor_from_id", "restore_type_tag"))
NUMPY_DTYPE_CLASS = re.compile(r"numpy\.dtypes\.[A-Z][A-Za-z0-9]*DType\Z")
CLASS_NAME = re.compile(r"[A-Z][A-Za-z0-9_]*\Z")
IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Activation functions stored as attributes of full-module pickles (``self.act = F.silu``).
TORCH_FUNCS = frozenset({
    *(f"torch.nn.functional.{n}" for n in (
        "relu", "relu6", "gelu", "silu", "mish", "elu", "selu", "celu", "leaky_relu",
        "hardswish", "hardsigmoid", "hardtanh", "sigmoid", "tanh", "softmax", "log_softmax",
        "softplus", "softsign", "glu", "logsigmoid", "tanhshrink", "interpolate", "normalize",
        "dropout", "layer_norm", "group_norm")),
    *(f"torch.{n}" for n in ("relu", "sigmoid", "tanh", "exp", "abs", "erf", "softmax")),
})
# torch modules whose functions a full-module pickle may store as values (``F.gelu`` pickles
# as ``torch._C._nn.gelu``): only referenced, they run nothing.
TORCH_VALUE_MODULES = frozenset({
    "torch", "torch.nn.functional", "torch.functional", "torch.nn.init", "torch.special",
    "torch.linalg", "torch.fft", "torch._C._nn", "torch._C._special", "torch._C._linalg",
    "torch._C._fft", "torch._C._VariableFunctions"})
# Submodules of torch/numpy: a GLOBAL naming one yields a module object (an attribute-walk
# stepping stone), never a value a checkpoint stores (stdlib names are excluded separately).
SUBMODULES = frozenset({
    "accelerator", "amp", "ao", "autograd", "backends", "classes", "compiler", "cpp", "cpu",
    "cuda", "distributed", "distributions", "export", "fft", "func", "functional", "futures",
    "fx", "hub", "jit", "library", "linalg", "masked", "monitor", "mps", "mtia",
    "multiprocessing", "nested", "nn", "ops", "optim", "overrides", "package", "profiler",
    "quantization", "quasirandom", "return_types", "serialization", "sparse", "special",
    "storage", "testing", "torch", "torch_version", "utils", "version", "windows", "xpu",
    "char", "core", "ctypeslib", "dtypes", "emath", "exceptions", "f2py", "lib", "ma",
    "polynomial", "rec", "strings", "typing", "matlib", "distutils", "compat"})
TORCH_CLASS_PACKAGES = ("torch.nn.modules", "torch.optim", "torch.amp.grad_scaler",
                        "torch.cuda.amp.grad_scaler", "torch.ao.nn", "torch.nn.intrinsic",
                        "torch.nn.quantized", "torch.nn.qat", "torch.nn.utils.parametrize",
                        "torch.distributions")


# The classes of a DCP ``.metadata`` are judged in that context (analyze.dcp); elsewhere they
# are known classes (known_classes.KNOWN_CLASSES) that weights_only=True refuses.

# torch.save writes these two lookups (``_reduce_ex`` of a torch op kept as a value, and
# ``type(None)``); what each is, for the reason users see.
LOOKUPS: dict[str, str] = {
    "builtins.getattr": "getattr(torch._C._VariableFunctionsClass, name): how pickle stores a "
                        "torch op such as torch.relu kept as a value",
    "torch._C._VariableFunctionsClass": "owner of torch ops such as torch.relu, looked up by "
                                        "name when one is stored as a value",
    "builtins.type": "type(None): how pickle stores NoneType (Optional[...] annotations)",
}
