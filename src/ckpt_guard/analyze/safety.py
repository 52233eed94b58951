"""Classify the globals a pickle references: ``safe``, ``needs-code`` or ``unsafe``.

An ALLOWLIST decides what is safe; nothing unknown is ever silently safe. A global is judged
by its name AND by how unpickling uses it (:data:`ckpt_guard.read.checkpoint.USES`, recorded
by the reader): unpickling runs what it calls (REDUCE/INST/OBJ), constructs (NEWOBJ) or builds
(BUILD → ``__setstate__``, SETITEM → ``__setitem__``), and what it hands to such a call; a
function only stored as a value (``self.act = F.silu`` on a module pickled whole) runs nothing.
So, outside the known-dangerous lists below:

* a CapWords name (or a listed lowercase class) is plausibly a class: ``needs-code``, whatever
  is done with it (its own code runs: the residual risk of ``needs-code``);
* a lowercase name that is called or handed to a call is a function running at load time:
  ``unsafe`` unless allowlisted (``typing_extensions.evaluate_forward_ref`` and
  ``get_type_hints`` evaluate Python source; nobody can list every such function, so none is
  trusted);
* a lowercase name only referenced (or constructed with NEWOBJ, which CPython allows for types
  only) runs nothing at load: ``needs-code``.

* ``safe`` — exactly what torch's default ``weights_only=True`` unpickler accepts (torch 2.13's
  ``_weights_only_unpickler._get_allowed_globals``: tensor rebuild functions, storage and tensor
  types, dtypes, ``torch.Size``/``torch.device``/``Parameter``, ``OrderedDict``/``Counter``,
  ``_codecs.encode``, ``builtins.set/bytearray/complex``) under the names Python's unpickler
  resolves (Python 2 names such as ``__builtin__.set`` are mapped as ``fix_imports`` does).
  Loading such a global cannot run code.
* ``needs-code`` — the file will not load with ``weights_only=True``, but the global is not a
  known way to run attacker code: custom classes (``ultralytics.nn.tasks.DetectionModel``,
  ``models.yolo.Model``, ``__main__.Net``), ``torch.nn`` module classes of full-module pickles
  (they ship with torch; constructing them runs no attacker code, but the file needs
  ``weights_only=False``), and a short list of stdlib/numpy value types (``argparse.Namespace``
  of RF-DETR, ``datetime``, ``pathlib`` paths, numpy arrays and scalars) that
  ``torch.serialization.add_safe_globals`` can allow. The reason says which.
* ``unsafe`` — everything that executes code, touches files/network/processes, imports,
  resolves attributes (``getattr``/``operator``/``functools``/dotted names), or unpickles a
  nested payload; every stdlib module not on the short value list (the peers' bypass history
  is a list of stdlib functions nobody thought to deny); non-allowlisted parts of ``torch`` and
  ``numpy`` (``torch.load``, ``torch.jit``, ``torch._C``, ``numpy.load``, …); names that are not
  plain ASCII identifiers (whitespace, newlines, confusables); the reader's markers
  ``<computed>``/``<extension>``/``<call>``. Names on these lists are unsafe however they
  are used: a checkpoint never needs them, and a class whose code does run (``needs-code``)
  could call a stored one.
"""

from __future__ import annotations

import functools
import re
import sys
from _compat_pickle import IMPORT_MAPPING, NAME_MAPPING
from collections.abc import Iterable

from ckpt_guard.analyze.deny_lists import DENY_MODULES, DENY_NAMES, FRAMEWORKS, NOT_MODULES
from ckpt_guard.analyze.known_classes import LOWERCASE_CLASSES, known_class
from ckpt_guard.read.checkpoint import CALLED, CONSTRUCTED, LOOKUP, PASSED, STATE

SAFE, NEEDS_CODE, UNSAFE = "safe", "needs-code", "unsafe"

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
_NUMPY_DTYPE_CLASS = re.compile(r"numpy\.dtypes\.[A-Z][A-Za-z0-9]*DType\Z")
_CLASS_NAME = re.compile(r"[A-Z][A-Za-z0-9_]*\Z")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
# Activation functions stored as attributes of full-module pickles (``self.act = F.silu``).
_TORCH_FUNCS = frozenset({
    *(f"torch.nn.functional.{n}" for n in (
        "relu", "relu6", "gelu", "silu", "mish", "elu", "selu", "celu", "leaky_relu",
        "hardswish", "hardsigmoid", "hardtanh", "sigmoid", "tanh", "softmax", "log_softmax",
        "softplus", "softsign", "glu", "logsigmoid", "tanhshrink", "interpolate", "normalize",
        "dropout", "layer_norm", "group_norm")),
    *(f"torch.{n}" for n in ("relu", "sigmoid", "tanh", "exp", "abs", "erf", "softmax")),
})
# torch modules whose functions a full-module pickle may store as values (``F.gelu`` pickles
# as ``torch._C._nn.gelu``): only referenced, they run nothing.
_TORCH_VALUE_MODULES = frozenset({
    "torch", "torch.nn.functional", "torch.functional", "torch.nn.init", "torch.special",
    "torch.linalg", "torch.fft", "torch._C._nn", "torch._C._special", "torch._C._linalg",
    "torch._C._fft", "torch._C._VariableFunctions"})
# Submodules of torch/numpy: a GLOBAL naming one yields a module object (an attribute-walk
# stepping stone), never a value a checkpoint stores (stdlib names are excluded separately).
_SUBMODULES = frozenset({
    "accelerator", "amp", "ao", "autograd", "backends", "classes", "compiler", "cpp", "cpu",
    "cuda", "distributed", "distributions", "export", "fft", "func", "functional", "futures",
    "fx", "hub", "jit", "library", "linalg", "masked", "monitor", "mps", "mtia",
    "multiprocessing", "nested", "nn", "ops", "optim", "overrides", "package", "profiler",
    "quantization", "quasirandom", "return_types", "serialization", "sparse", "special",
    "storage", "testing", "torch", "torch_version", "utils", "version", "windows", "xpu",
    "char", "core", "ctypeslib", "dtypes", "emath", "exceptions", "f2py", "lib", "ma",
    "polynomial", "rec", "strings", "typing", "matlib", "distutils", "compat"})
_TORCH_CLASS_PACKAGES = ("torch.nn.modules", "torch.optim", "torch.amp.grad_scaler",
                         "torch.cuda.amp.grad_scaler", "torch.ao.nn", "torch.nn.intrinsic",
                         "torch.nn.quantized", "torch.nn.qat", "torch.nn.utils.parametrize",
                         "torch.distributions")

_DENY_LOWER = {k.lower(): v for k, v in DENY_MODULES.items()}
_DENY_NAMES_LOWER = {k.lower(): v for k, v in DENY_NAMES.items()}
_NOT_MODULES_LOWER = frozenset(NOT_MODULES) | frozenset(_DENY_LOWER)


def _is_stdlib(top: str) -> bool:
    return top in sys.stdlib_module_names or top in IMPORT_MAPPING or top == "__builtin__"


def _deny_module(module: str) -> str | None:
    """Reason if ``module`` or one of its parents (whole dotted components, compared
    case-insensitively so ``OS``/``Subprocess`` spellings are caught) is denied."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i]).lower()
        if prefix in _DENY_LOWER:
            return f"{_DENY_LOWER[prefix]} ({'.'.join(parts[:i])})"
    return None


def _stored_value(name: str) -> bool:
    """Could ``name``, only referenced in torch/numpy, be a value a model stores (a function,
    a scalar type)? Not a private name, a submodule or a stdlib module re-export."""
    return not (name.startswith("_") or name in _SUBMODULES or name in sys.stdlib_module_names
                or _CLASS_NAME.match(name))


def untrusted_pattern(pattern: str) -> str | None:
    """Why a ``trusted-globals`` glob is refused, or ``None``. Trust is for a team's own
    classes: the pattern must start with a literal package name that is neither the standard
    library nor a module ckpt-guard knows runs code (trusting ``os.*`` or ``builtins.eval``
    would mean nothing anyway: trust never makes an ``unsafe`` global pass)."""
    top = pattern.split(".", 1)[0]
    if not _IDENT.match(top):
        return ("must start with a package name (e.g. 'mycompany.models.*'), not a "
                "wildcard")
    denied = _deny_module(pattern.split("*", 1)[0].split("?", 1)[0].split("[", 1)[0]
                          .rstrip(".")) or _deny_module(top)
    if _is_stdlib(top) or denied:
        what = denied or "the standard library"
        return (f"names {what}, which is never trusted (unsafe globals always fail; trust "
                "is for your own classes)")
    return None


def _well_formed(module: str, name: str) -> str | None:
    """Why ``module``/``name`` is not a plain ASCII dotted identifier, or ``None``."""
    if not module or not name:
        return "empty module or name"
    if not (module.isascii() and name.isascii()):
        return "non-ASCII characters in a global's name (confusable spelling)"
    if not all(_IDENT.match(p) for p in module.split(".")):
        return f"malformed module name {module!r} (whitespace or punctuation)"
    if not all(_IDENT.match(p) for p in name.split(".")):
        return f"malformed global name {name!r} (whitespace or punctuation)"
    return None


# How a global is used, worst first: called (or handed to a call), constructed, referenced;
# ``lookup``: only in the two lookups torch.save writes (``_LOOKUPS``).
CALL, NEW, REF, LOOK = "call", "new", "ref", "lookup"
_LOOKUPS = {
    "builtins.getattr": "getattr(torch._C._VariableFunctionsClass, name): how pickle stores a "
                        "torch op such as torch.relu kept as a value",
    "torch._C._VariableFunctionsClass": "owner of torch ops such as torch.relu, looked up by "
                                        "name when one is stored as a value",
    "builtins.type": "type(None): how pickle stores NoneType (Optional[...] annotations)",
}


def use_level(uses: Iterable[str] | None) -> str:
    """The worst of ``uses`` (:data:`~ckpt_guard.read.checkpoint.USES`): ``call`` when called
    or passed to a call, ``new`` when constructed or built, ``ref`` when only referenced.
    ``None`` (nothing known) is the worst case, ``call``."""
    if uses is None:
        return CALL
    uses = set(uses)
    if uses == {LOOKUP}:
        return LOOK
    if CALLED in uses or PASSED in uses:
        return CALL
    if CONSTRUCTED in uses or STATE in uses:
        return NEW
    return REF


def _classify_one(module: str, name: str, level: str) -> tuple[str, str]:
    qual = f"{module}.{name}"
    if qual in SAFE_GLOBALS:
        return SAFE, "allowed by torch's weights_only loader"
    if qual in DCP_METADATA_CLASSES:
        return SAFE, ("torch.distributed.checkpoint metadata dataclass (what torch writes in "
                      "a DCP .metadata; building it runs no code beyond setting fields)")
    if level == LOOK:
        if qual in _LOOKUPS:
            return NEEDS_CODE, (f"{_LOOKUPS[qual]}; the result is only stored (calling it "
                                "would be unsafe), but weights_only=True rejects it")
        level = CALL  # nothing else is looked up this way: judge it as called
    if "." in name:
        return UNSAFE, (f"attribute chain {name!r}: resolving it walks attributes "
                        "(getattr-style access), which checkpoints never need")
    if name.startswith("__") and name.endswith("__"):
        return UNSAFE, f"dunder attribute {name!r} reaches interpreter internals"
    if qual in STDLIB_VALUES:
        return NEEDS_CODE, (f"{STDLIB_VALUES[qual]}: runs no third-party code, but "
                            "weights_only=True rejects it (torch.serialization.add_safe_globals)")
    if qual in NUMPY_VALUES or _NUMPY_DTYPE_CLASS.match(qual):
        return NEEDS_CODE, (f"{NUMPY_VALUES.get(qual, 'numpy dtype class')}: needs numpy and "
                            "weights_only=False or torch.serialization.add_safe_globals")
    if qual in TORCHSCRIPT_HELPERS:
        return NEEDS_CODE, ("TorchScript container helper (handled natively by torch.jit.load; "
                            "the archive needs torch.jit.load, not torch.load)")
    lname = name.lower()
    if lname in _DENY_NAMES_LOWER:
        return UNSAFE, f"{name}: {_DENY_NAMES_LOWER[lname]}"
    if lname in _NOT_MODULES_LOWER:
        return UNSAFE, f"{name!r} re-exports a dangerous module object"
    known = known_class(qual)
    if known is not None:
        return NEEDS_CODE, (f"known framework class: {known}; loading runs its code "
                            "(weights_only=True rejects it)")
    if level == REF and module in _TORCH_VALUE_MODULES and _stored_value(name):
        return NEEDS_CODE, ("torch function stored as a value (e.g. a module's activation): "
                            "only referenced, loading runs nothing, but weights_only=True "
                            "rejects it")
    denied = _deny_module(module)
    if denied:
        return UNSAFE, denied
    if module == "__torch__.torch.classes" or module.startswith("__torch__.torch.classes."):
        # A custom C++ class: torch.jit.load's unpickler runs its native __setstate__.
        from ckpt_guard.analyze.torchscript import custom_class_reason

        unknown = custom_class_reason(f"{module[len('__torch__.torch.classes.'):]}.{name}"
                                      if module != "__torch__.torch.classes" else name)
        if unknown:
            return UNSAFE, unknown
    if module == "__torch__" or module.startswith("__torch__."):
        return NEEDS_CODE, ("TorchScript class compiled from the archive's code/ (runs as "
                            "TorchScript when the module is used)")
    top = module.split(".")[0]
    if _is_stdlib(top):
        return UNSAFE, (f"standard-library global {qual} is not one a checkpoint needs "
                        "(allowlist only)")
    if top == "torch":
        if qual in _TORCH_FUNCS and level == REF:
            return NEEDS_CODE, "torch function stored by a full-module pickle"
        if _CLASS_NAME.match(name) and any(module == p or module.startswith(p + ".")
                                           for p in _TORCH_CLASS_PACKAGES):
            return NEEDS_CODE, ("torch class of a full-module pickle: ships with torch, but "
                                "the file needs weights_only=False")
        what = "called" if level == CALL else "constructed"
        return UNSAFE, f"torch internal {qual} {what} at load time: not needed by checkpoints"
    if top == "numpy":
        if level == REF and _stored_value(name):
            return NEEDS_CODE, (f"numpy object {qual} stored as a value: only referenced, "
                                "loading runs nothing, but weights_only=True rejects it")
        return UNSAFE, f"numpy internal {qual} is not needed by checkpoints"
    is_class = bool(_CLASS_NAME.match(name)) or qual in LOWERCASE_CLASSES
    if is_class:
        return NEEDS_CODE, (f"custom class from package {top!r}: loading runs that package's "
                            "code (weights_only=True rejects it)")
    if level == CALL:
        framework = (f" of framework {top!r} (checkpoints store its classes, not its "
                     "functions)" if top in FRAMEWORKS else "")
        return UNSAFE, (f"function {qual}{framework} is called at load time: unpickling runs "
                        "it (only allowlisted functions are; a function of any package can "
                        "evaluate code, e.g. typing_extensions.evaluate_forward_ref)")
    if level == NEW:
        return NEEDS_CODE, (f"class {qual} from package {top!r} (constructed with NEWOBJ, "
                            "which only takes a class): loading runs that package's code")
    return NEEDS_CODE, (f"function {qual} stored as a value: only referenced, loading runs "
                        f"nothing, but needs package {top!r} importable (weights_only=True "
                        "rejects it)")


# torch/distributed/checkpoint/metadata.py and filesystem.py (torch 2.13): the classes a DCP
# ``.metadata`` pickle holds. Plain dataclasses and one Enum; TensorProperties.__setstate__
# only unpacks a tuple. The rest of torch.distributed stays denied.
DCP_METADATA_CLASSES = frozenset(
    f"torch.distributed.checkpoint.metadata.{n}" for n in (
        "Metadata", "MetadataIndex", "TensorStorageMetadata", "BytesStorageMetadata",
        "ChunkStorageMetadata", "TensorProperties", "StorageMeta", "_MEM_FORMAT_ENCODING")
) | {"torch.distributed.checkpoint.filesystem._StorageInfo"}


def classify(module: str, name: str, uses: Iterable[str] | None = None) -> tuple[str, str]:
    """Return ``(safety, reason)`` with ``safety`` in ``("safe", "needs-code", "unsafe")``.

    ``module``/``name`` are exactly as the pickle spelled them (no stripping: a stray space
    or newline is itself a sign of tampering). Python 2 spellings are judged both as written
    and as ``fix_imports`` maps them (the worse verdict wins when both spellings import).
    ``uses`` is what unpickling does with the global (:attr:`GlobalUse.uses
    <ckpt_guard.read.checkpoint.GlobalUse.uses>`; empty: only referenced); ``None`` judges
    the worst case, a call.
    """
    if not isinstance(module, str) or not isinstance(name, str):
        return UNSAFE, "global name is not a string (computed at load time)"
    return _classify(module, name, use_level(uses))


@functools.lru_cache(maxsize=8192)
def _classify(module: str, name: str, level: str) -> tuple[str, str]:
    if module.startswith("<"):
        what = {"<computed>": "STACK_GLOBAL with names computed at load time",
                "<extension>": "extension-registry reference (EXT1/EXT2/EXT4)",
                "<call>": "call of a non-global object (REDUCE on a computed callable)",
                "<mutate>": "BUILD/SETITEM/APPEND on a global object itself (monkeypatching "
                            "a class, function or module)",
                "<ambiguous-archive>": "ambiguous zip archive: torch may unpickle other "
                                       "bytes than those checked",
                "<container>": "torch.load could unpickle bytes ckpt-guard cannot pin down "
                               "(fails closed)"}
        return UNSAFE, what.get(module, f"unresolvable global {module}")
    bad = _well_formed(module, name)
    if bad:
        return UNSAFE, bad
    mapped = NAME_MAPPING.get((module, name))
    if mapped is None and module in IMPORT_MAPPING:
        mapped = (IMPORT_MAPPING[module], name)
    if mapped is None:
        return _classify_one(module, name, level)
    verdict = _classify_one(*mapped, level)
    if module.split(".")[0] not in sys.stdlib_module_names:
        return verdict  # a Python 2 name (``__builtin__``): only its mapped form resolves
    # A name that is both a Python 3 module and a Python 2 alias: the worse reading wins.
    order = {SAFE: 0, NEEDS_CODE: 1, UNSAFE: 2}
    return max((_classify_one(module, name, level), verdict), key=lambda v: order[v[0]])
