"""The known-bad: modules and names whose globals are ``unsafe`` however a pickle uses them
(see :mod:`ckpt_guard.analyze.safety`), each with the reason users see. Anything stdlib that
is not on safety's short value list is unsafe too; this data only names the rest and words
the reasons. Module entries cover their submodules (whole dotted components, compared
case-insensitively)."""

from __future__ import annotations

DENY_MODULES: dict[str, str] = {
    **dict.fromkeys(("os", "posix", "nt", "posixpath", "ntpath", "shutil", "tempfile", "io",
                     "_io", "fileinput", "glob", "linecache", "mmap", "zipfile", "tarfile",
                     "gzip", "bz2", "lzma", "sqlite3", "dbm", "shelve"),
                    "file system access"),
    **dict.fromkeys(("subprocess", "_posixsubprocess", "pty", "signal", "multiprocessing",
                     "_multiprocessing", "concurrent", "threading", "_thread", "asyncio",
                     "platform", "commands", "popen2", "webbrowser", "pydoc", "mailcap"),
                    "process control / command execution"),
    **dict.fromkeys(("socket", "_socket", "ssl", "select", "selectors", "urllib", "urllib2",
                     "urllib3", "http", "httplib", "requests", "httpx", "aiohttp", "ftplib",
                     "smtplib", "telnetlib", "poplib", "imaplib", "nntplib", "xmlrpc",
                     "socketserver", "wsgiref", "huggingface_hub", "boto3", "botocore",
                     "paramiko"), "network access"),
    **dict.fromkeys(("builtins", "__builtin__", "code", "codeop", "compileall", "py_compile",
                     "types", "ast", "dis", "inspect", "gc", "ctypes", "_ctypes", "cffi",
                     "cProfile", "profile", "pdb", "bdb", "trace", "timeit", "doctest",
                     "IPython", "jinja2", "sympy", "numexpr", "sys", "site", "sysconfig",
                     "mpmath", "triton", "typing_extensions", "typing_inspect"),
                    "code execution / interpreter internals"),
    # Installed beside torch, never stored by a checkpoint: a constructor there does I/O
    # (fsspec's LocalFileOpener opens and truncates its path) or compiles code.
    **dict.fromkeys(("fsspec", "filelock", "networkx"),
                    "library installed beside torch that checkpoints never store (its classes "
                    "touch files or run code when constructed)"),
    # CapWords classes whose constructors act: psutil.Popen starts a process, h5py.File and
    # cv2.VideoWriter create files, cv2.VideoCapture opens URLs, tensorboardX/wandb writers
    # create log files or start runs. Checkpoints never store them.
    **dict.fromkeys(("psutil", "pexpect", "sh", "plumbum", "docker", "fabric", "invoke",
                     "git", "cv2", "h5py", "zarr", "tensorboardX", "wandb", "mlflow",
                     "comet_ml", "neptune", "clearml"),
                    "library whose classes start processes, open files or URLs, or start "
                    "runs when constructed"),
    **dict.fromkeys(("importlib", "imp", "zipimport", "pkgutil", "runpy", "pkg_resources",
                     "setuptools", "distutils", "pip", "ensurepip", "venv"),
                    "import machinery (loads and runs arbitrary modules)"),
    **dict.fromkeys(("operator", "_operator", "functools", "_functools", "itertools",
                     "copyreg", "copy_reg", "weakref", "contextlib", "abc"),
                    "call/attribute plumbing (getattr, partial, methodcaller chains)"),
    **dict.fromkeys(("pickle", "_pickle", "cPickle", "pickletools", "marshal", "dill",
                     "joblib", "cloudpickle", "yaml", "ruamel", "jsonpickle",
                     "torch.serialization", "torch.storage", "torch.hub", "torch.jit",
                     "torch._C", "torch.package", "torch.utils", "torch.fx", "torch.ops",
                     "torch.multiprocessing", "torch._dynamo", "torch._inductor",
                     "torch.export", "torch.compiler", "torch.distributed", "torch.backends",
                     "torch._ops", "torch.library", "numpy.lib", "numpy.ctypeslib",
                     "numpy.testing", "numpy.f2py", "numpy.distutils", "numpy.load",
                     "pandas.io", "keras", "tensorflow", "transformers.dynamic_module_utils"),
                    "nested loader / code loader (unpickles or runs embedded payloads)"),
    "logging": "logging (FileHandler/SocketHandler/config.listen touch files and network)",
}
DENY_NAMES: dict[str, str] = {
    **dict.fromkeys(("eval", "exec", "execfile", "compile", "__import__", "import_module",
                     "getattr", "setattr", "delattr", "globals", "locals", "vars", "apply",
                     "breakpoint", "input", "exit", "quit", "help", "system", "popen",
                     "getoutput", "getstatusoutput", "spawn", "startfile", "fork", "kill",
                     "run_path", "run_module", "run_code", "resolve_name", "load_module",
                     "attrgetter", "methodcaller", "itemgetter", "partial", "reduce",
                     "runstring", "run_command", "exec_command", "CodeType", "FunctionType",
                     "LambdaType", "MethodType", "urlopen", "urlretrieve", "Popen", "call",
                     "check_call", "check_output", "loads", "load", "unsafe_load",
                     "full_load", "load_model", "read_pickle", "from_file", "open",
                     "remove", "unlink", "rmtree", "rmdir", "rename", "touch", "write_text",
                     "write_bytes", "mkdir", "makedirs", "chmod", "chown", "save",
                     "set_trace", "get_class_from_dynamic_module", "_load_from_bytes",
                     # classes whose constructor opens or creates files/streams wherever
                     # they are re-exported (pandas.HDFStore, torch's SummaryWriter, ...)
                     "HDFStore", "ExcelWriter", "VideoCapture", "VideoWriter",
                     "SummaryWriter", "FileWriter", "EventFileWriter", "SSHClient"),
                    "a function that executes code, loads payloads or touches the system"),
}
# ML frameworks whose *functions* download, install or execute (ultralytics'
# check_requirements runs pip, transformers' auto factories fetch remote code, mmengine/
# detectron2 configs exec Python): their classes are needs-code, their functions unsafe.
FRAMEWORKS = frozenset({
    "transformers", "diffusers", "accelerate", "timm", "torchvision", "torchaudio",
    "lightning", "pytorch_lightning", "lightning_fabric", "mmengine", "mmcv", "mmdet",
    "detectron2", "ultralytics", "yolov5", "models", "utils", "rfdetr", "hydra", "omegaconf",
    "deepspeed", "sklearn", "scipy", "pandas", "onnx", "onnxruntime", "safetensors", "peft",
    "datasets", "fairseq", "fvcore", "iopath", "tensorboard"})
NOT_MODULES = ("builtins", "__builtin__", "os", "sys", "subprocess", "posix", "nt", "socket",
                "importlib", "pickle", "torch", "numpy", "shutil", "ctypes", "runpy", "code")
