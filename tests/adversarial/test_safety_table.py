"""Table-driven tests of the global classifier (``ckpt_guard.analyze.safety.classify``).

The ``safe`` class is checked against the oracle: torch 2.13's own weights_only unpickler must
accept every global we call safe, and we must call safe every global it accepts.
"""

from __future__ import annotations

import io

import pytest

from ckpt_guard.analyze.safety import SAFE_GLOBALS, classify

SAFE = [
    ("torch._utils", "_rebuild_tensor_v2"), ("torch._utils", "_rebuild_tensor"),
    ("torch._utils", "_rebuild_parameter"), ("torch._utils", "_rebuild_parameter_with_state"),
    ("torch._utils", "_rebuild_qtensor"), ("torch._utils", "_rebuild_sparse_tensor"),
    ("torch._utils", "_rebuild_meta_tensor_no_storage"), ("torch._utils", "_rebuild_tensor_v3"),
    ("torch._utils", "_rebuild_wrapper_subclass"), ("torch._utils", "_rebuild_nested_tensor"),
    ("torch._tensor", "_rebuild_from_type_v2"), ("torch", "FloatStorage"),
    ("torch", "HalfStorage"), ("torch", "BFloat16Storage"), ("torch", "ByteStorage"),
    ("torch.storage", "UntypedStorage"), ("torch", "Size"), ("torch", "device"),
    ("torch", "float16"), ("torch", "bfloat16"), ("torch", "int8"), ("torch", "float8_e4m3fn"),
    ("torch.nn.parameter", "Parameter"), ("torch", "per_tensor_affine"),
    ("torch.cuda", "FloatStorage"), ("torch", "FloatTensor"),
    ("collections", "OrderedDict"), ("collections", "Counter"), ("_codecs", "encode"),
    ("builtins", "set"), ("builtins", "bytearray"), ("builtins", "complex"),
    ("__builtin__", "set"),  # Python 2 spelling, mapped by fix_imports as torch does
    ("torch.serialization", "_get_layout"),
]

NEEDS_CODE = [
    ("ultralytics.nn.tasks", "DetectionModel"), ("ultralytics.nn.modules.conv", "Conv"),
    ("models.yolo", "Model"), ("models.common", "C3"), ("__main__", "Net"),
    ("torch.nn.modules.conv", "Conv2d"), ("torch.nn.modules.container", "Sequential"),
    ("torch.nn.modules.batchnorm", "BatchNorm2d"), ("torch.nn.modules.activation", "SiLU"),
    ("torch.optim.adam", "Adam"),
    ("argparse", "Namespace"), ("collections", "defaultdict"), ("builtins", "frozenset"),
    ("builtins", "slice"), ("datetime", "datetime"), ("pathlib", "PosixPath"),
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"), ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.dtypes", "Float32DType"), ("copy_reg", "_reconstructor"), ("typing", "Any"),
    ("omegaconf.dictconfig", "DictConfig"), ("pytorch_lightning.utilities.parsing",
                                              "AttributeDict"),
    ("torch.torch_version", "TorchVersion"),  # torch.__version__ in Lightning checkpoints
    ("omegaconf.nodes", "AnyNode"), ("omegaconf.base", "ContainerMetadata"),
    ("pyannote.audio.core.task", "Problem"), ("mycompany.models", "ResNet"),
    # TorchScript archives and DeepSpeed optimizer files (real checkpoints)
    ("torch.jit._pickle", "build_intlist"), ("torch.jit._pickle", "restore_type_tag"),
    ("__torch__.torch.nn.modules.conv", "Conv2d"),
    ("__torch__.torch.nn.modules.linear.___torch_mangle_2", "Linear"),
    ("deepspeed.utils.tensor_fragment", "fragment_address"),
    ("deepspeed.runtime.fp16.loss_scaler", "DynamicLossScaler"),
    ("transformers.training_args", "TrainingArguments"),
]

# Functions (lowercase names) that a pickle only stores as values: loading runs nothing, so
# they are needs-code; the same names called (or handed to a call) are unsafe.
NEEDS_CODE_AS_VALUE = [
    ("torch.nn.functional", "silu"), ("torch._C._nn", "gelu"), ("torch", "relu"),
    ("torch.nn.functional", "scaled_dot_product_attention"), ("numpy", "float32"),
    ("ospath", "join"),  # not os.path: an unknown package, never silently safe
    ("torch_utils", "thing"), ("mypkg.mod", "helper"),
    ("ultralytics.nn.modules.conv", "autopad"), ("models.yolo", "parse_model"),
]

UNSAFE = [
    # code execution, process and system access
    ("os", "system"), ("posix", "system"), ("nt", "system"), ("os.path", "join"),
    ("subprocess", "Popen"), ("subprocess", "check_output"), ("commands", "getoutput"),
    ("builtins", "eval"), ("builtins", "exec"), ("builtins", "compile"), ("builtins", "open"),
    ("builtins", "getattr"), ("builtins", "__import__"), ("builtins", "breakpoint"),
    ("builtins", "input"), ("__builtin__", "apply"), ("__builtin__", "eval"),
    ("builtins", "type"), ("sys", "modules"), ("shutil", "rmtree"), ("socket", "socket"),
    ("asyncio.unix_events", "_UnixSubprocessTransport"), ("multiprocessing", "Process"),
    ("pty", "spawn"), ("webbrowser", "open"), ("urllib.request", "urlopen"),
    ("http.client", "HTTPConnection"), ("requests", "get"), ("requests.api", "post"),
    ("ctypes", "CDLL"), ("_ctypes", "CFuncPtr"), ("signal", "raise_signal"),
    ("ensurepip", "_run_pip"), ("pip", "main"), ("venv", "create"), ("uuid", "_get_command_stdout"),
    ("imaplib", "IMAP4_stream"), ("platform", "popen"), ("pydoc", "pipepager"),
    ("idlelib.pyshell", "ModifiedInterpreter"), ("lib2to3.pgen2.grammar", "Grammar"),
    ("zlib", "decompress"), ("distutils.file_util", "write_file"),
    # debuggers/profilers/timers run code strings
    ("cProfile", "run"), ("cProfile", "runctx"), ("profile", "Profile"), ("pdb", "run"),
    ("bdb", "Bdb"), ("trace", "Trace"), ("timeit", "timeit"), ("doctest", "debug_script"),
    ("code", "InteractiveInterpreter"), ("codeop", "compile_command"),
    # import machinery and attribute plumbing
    ("importlib", "import_module"), ("importlib.util", "find_spec"), ("imp", "load_source"),
    ("pkgutil", "resolve_name"), ("runpy", "run_path"), ("runpy", "_run_code"),
    ("operator", "attrgetter"), ("operator", "methodcaller"), ("operator", "itemgetter"),
    ("_operator", "attrgetter"), ("functools", "partial"),
    ("functools", "reduce"), ("itertools", "starmap"), ("copyreg", "add_extension"),
    ("types", "CodeType"), ("types", "FunctionType"), ("gc", "get_objects"),
    ("inspect", "getmodule"), ("ast", "literal_eval"),
    # files and logging
    ("_io", "FileIO"), ("io", "open"), ("io", "FileIO"), ("logging", "FileHandler"),
    ("logging.config", "listen"), ("tempfile", "NamedTemporaryFile"), ("linecache", "getline"),
    ("zipfile", "ZipFile"), ("glob", "glob"),
    # nested unpicklers and loaders
    ("pickle", "loads"), ("_pickle", "loads"), ("cPickle", "loads"), ("marshal", "loads"),
    ("dill", "loads"), ("joblib", "load"), ("cloudpickle", "loads"), ("yaml", "load"),
    ("torch", "load"), ("torch.serialization", "load"), ("torch.storage", "_load_from_bytes"),
    ("torch.jit", "load"), ("torch.jit._serialization", "load"), ("torch._C", "_jit_pass"),
    ("torch._C._nn", "gelu"), ("torch.hub", "load"), ("torch.hub", "download_url_to_file"),
    ("torch.utils.cpp_extension", "load_inline"), ("torch.package", "PackageImporter"),
    ("torch.fx.graph_module", "reduce_graph_module"),
    ("torch.multiprocessing.reductions", "rebuild_storage_filename"),
    ("torch.utils.bottleneck.__main__", "run_autograd_prof"), ("torch", "from_file"),
    ("torch", "save"), ("numpy", "load"), ("numpy.lib.npyio", "load"),
    ("numpy.ctypeslib", "load_library"), ("numpy.testing._private.utils", "runstring"),
    ("numpy.f2py.diagnose", "run_command"), ("numpy.f2py.crackfortran", "getlincoef"),
    ("numpy", "fromfile"), ("numpy", "memmap"), ("numpy", "prod"),
    ("pandas", "read_pickle"), ("pandas.io.pickle", "read_pickle"),
    ("transformers.models.auto.auto_factory", "getattribute_from_module"),
    ("transformers.dynamic_module_utils", "get_class_from_dynamic_module"),
    ("huggingface_hub", "hf_hub_download"), ("ultralytics.utils.checks", "check_requirements"),
    # re-exported modules and attribute chains through allowed-looking names
    ("__main__", "os"), ("ultralytics.utils", "subprocess"), ("mypkg", "builtins"),
    ("numpy", "__builtins__"), ("numpy.core._internal", "sys"),
    ("builtins", "print.__class__.__base__.__subclasses__"),
    ("builtins", "system.__globals__"), ("numpy", "prod.os.system"),
    ("torch._utils", "_rebuild_tensor_v2.__globals__"), ("collections", "OrderedDict.fromkeys"),
    ("ultralytics.nn.tasks", "DetectionModel.__init__"), ("builtins", "dict.get"),
    ("mypkg", "__reduce__"), ("mypkg", "loads"), ("mypkg", "system"),
    # prefix tricks: not the allowlisted module
    ("torch._utilsx", "_rebuild_tensor_v2"), ("torch._utils.x", "_rebuild_tensor_v2"),
    ("torch", "_utils"), ("torch", "nn"),
    # malformed spellings: whitespace, newlines, punctuation, confusables, case variants
    ("os ", "system"), (" os", "system"), ("os", "system "), ("os", " system"),
    ("os\n", "system"), ("os", "sys\ntem"), ("torch._utils ", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_tensor_v2 "), ("torch. _utils", "_rebuild_tensor_v2"),
    ("torch.._utils", "_rebuild_tensor_v2"), ("torch._utils.", "_rebuild_tensor_v2"),
    ("torch/_utils", "_rebuild_tensor_v2"), ("", "system"), ("os", ""),
    ("\u043es", "system"),  # Cyrillic o
    ("torch._utils", "_rebuild_tensor_v\u0662"),  # Arabic-Indic digit two
    ("tor\u0441h._utils", "_rebuild_tensor_v2"),  # Cyrillic es
    ("\uff4fs", "system"),  # fullwidth o (NFKC-normalises to "os")
    ("OS", "system"), ("Subprocess", "run"), ("BUILTINS", "eval"), ("Pickle", "loads"),
    # CapWords classes whose constructors act (issue 8: classes reachable by construction)
    ("psutil", "Popen"), ("h5py", "File"), ("cv2", "VideoCapture"), ("cv2", "VideoWriter"),
    ("pandas", "HDFStore"), ("tensorboardX", "SummaryWriter"), ("wandb.sdk.wandb_run", "Run"),
    ("fsspec.implementations.local", "LocalFileOpener"), ("filelock", "FileLock"),
    ("networkx", "Graph"), ("mpmath", "mpf"), ("typing_extensions", "get_type_hints"),
    ("typing_extensions", "evaluate_forward_ref"), ("typing", "get_type_hints"),
    ("typing", "ForwardRef"), ("sympy", "sympify"), ("jinja2", "Template"),
    ("mycompany", "SummaryWriter"),
    # the reader's markers
    ("<computed>", "<computed>"), ("<extension>", "1"), ("<call>", "<call>"),
    ("<computed>", "system"), ("<mutate>", "argparse.Namespace via BUILD"),
    ("__torch__", "eval"), ("torch.jit._pickle", "load"),
]


@pytest.mark.parametrize(("module", "name"), SAFE)
def test_safe(module: str, name: str) -> None:
    assert classify(module, name)[0] == "safe"


@pytest.mark.parametrize(("module", "name"), NEEDS_CODE)
def test_needs_code(module: str, name: str) -> None:
    safety, reason = classify(module, name)
    assert safety == "needs-code", reason
    assert reason


@pytest.mark.parametrize(("module", "name"), NEEDS_CODE)
@pytest.mark.parametrize("uses", [set(), {"called"}, {"constructed", "state"}, {"passed"}])
def test_classes_are_needs_code_however_used(module: str, name: str, uses: set[str]) -> None:
    assert classify(module, name, uses)[0] == "needs-code"


@pytest.mark.parametrize(("module", "name"), NEEDS_CODE_AS_VALUE)
def test_function_stored_as_value_is_needs_code_called_is_unsafe(module: str, name: str) -> None:
    safety, reason = classify(module, name, set())
    assert safety == "needs-code", reason
    for uses in ({"called"}, {"passed"}, {"called", "state"}):
        safety, reason = classify(module, name, uses)
        assert safety == "unsafe", (uses, reason)
    assert classify(module, name)[0] == "unsafe"  # no use known: the worst case, a call


# Functions among UNSAFE that are unsafe because they would be called: only stored as a
# value, they run nothing (a module's activation F.gelu pickles as torch._C._nn.gelu).
_UNSAFE_WHEN_CALLED = {
    ("torch._C._nn", "gelu"), ("numpy", "fromfile"), ("numpy", "memmap"), ("numpy", "prod"),
    ("transformers.models.auto.auto_factory", "getattribute_from_module"),
    ("ultralytics.utils.checks", "check_requirements")}


@pytest.mark.parametrize(("module", "name"), UNSAFE)
def test_denied_names_are_unsafe_even_only_referenced(module: str, name: str) -> None:
    expected = "needs-code" if (module, name) in _UNSAFE_WHEN_CALLED else "unsafe"
    assert classify(module, name, set())[0] == expected


@pytest.mark.parametrize(("module", "name"), UNSAFE)
def test_unsafe(module: str, name: str) -> None:
    safety, reason = classify(module, name)
    assert safety == "unsafe", reason
    assert reason


def test_non_string_operands_are_unsafe() -> None:
    assert classify(b"os", "system")[0] == "unsafe"  # type: ignore[arg-type]
    assert classify("os", 42)[0] == "unsafe"  # type: ignore[arg-type]


def test_every_stdlib_module_is_unsafe_unless_allowlisted() -> None:
    """The peers' history is a list of stdlib functions nobody denied: we deny them all."""
    import sys

    allowed_modules = {"collections", "builtins", "_codecs", "argparse", "types", "copyreg",
                       "datetime", "pathlib", "decimal", "fractions", "uuid", "array", "re",
                       "typing"}
    for mod in sorted(sys.stdlib_module_names):
        if mod in allowed_modules:
            continue
        assert classify(mod, "anything")[0] == "unsafe", mod
        assert classify(mod, "Anything")[0] == "unsafe", mod


def _weights_only_accepts(qual: str) -> bool:
    """Whether torch's weights_only unpickler resolves ``GLOBAL qual`` (the oracle)."""
    torch_wo = pytest.importorskip("torch._weights_only_unpickler")
    module, name = qual.rsplit(".", 1)
    data = b"\x80\x02c" + module.encode() + b"\n" + name.encode() + b"\n."
    try:
        torch_wo.Unpickler(io.BytesIO(data)).load()
    except Exception:  # noqa: BLE001 - any rejection means "not allowed"
        return False
    return True


def test_safe_set_matches_torch_weights_only_allowlist() -> None:
    torch_wo = pytest.importorskip("torch._weights_only_unpickler")
    torch_allowed = set(torch_wo._get_allowed_globals())
    assert torch_allowed <= SAFE_GLOBALS, sorted(torch_allowed - SAFE_GLOBALS)
    for qual in sorted(SAFE_GLOBALS):
        assert _weights_only_accepts(qual), qual


@pytest.mark.parametrize(("module", "name"), NEEDS_CODE + NEEDS_CODE_AS_VALUE + UNSAFE[:60])
def test_torch_rejects_what_we_do_not_call_safe(module: str, name: str) -> None:
    """Nothing outside ``safe`` would load with torch.load(weights_only=True)."""
    if not (module.isascii() and name.isascii()) or "\n" in module + name:
        pytest.skip("not expressible as a text GLOBAL line")
    assert not _weights_only_accepts(f"{module}.{name}")


def test_typing_subscription_in_hparams_is_needs_code_not_unsafe() -> None:
    # Lightning/omegaconf hyper_parameters may hold annotations: typing.Dict[str, int]
    # pickles as _operator.getitem(typing.Dict, (str, int)), which weights_only refuses but
    # which runs no code; a call of getitem's result stays unsafe (<call>).
    import pickle
    import typing

    from ckpt_guard.read.limits import Limits
    from ckpt_guard.read.pickle_vm import load

    data = pickle.dumps({"hyper_parameters": {"ref_type": typing.Dict[str, int]}},  # noqa: UP006
                        protocol=2)
    _, uses = load(data, persistent_load=None, limits=Limits())
    verdicts = {(g.module, g.name): classify(g.module, g.name)[0] for g in uses}
    assert verdicts[("_operator", "getitem")] == "needs-code"
    assert "unsafe" not in verdicts.values(), verdicts
    assert classify("<call>", "_operator.getitem(...)")[0] == "unsafe"
