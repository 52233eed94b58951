"""Classes real checkpoints carry that are outside torch's ``weights_only`` allowlist.

Each entry is data with its reason: a ``fnmatch`` pattern over the global's qualified name and
why frameworks pickle it. A match makes the global ``needs-code`` with that reason (loading
still needs ``weights_only=False`` and runs the class's own code), instead of the generic
"custom class" wording — and, for the torch entries, instead of ``unsafe`` (torch internals
are otherwise unsafe unless listed). Only classes belong here: a listed name that the pickle
*calls* is still a class being constructed; nothing here makes a function call acceptable.

Keep entries narrow (a module, not a package root), make wildcards match class names only
(``[A-Z]*``; ``*`` never crosses a dot), and cite where they occur.
"""

from __future__ import annotations

import functools
import re

KNOWN_CLASSES: dict[str, str] = {
    # torch internals that real checkpoints carry
    "torch.torch_version.TorchVersion": "str subclass holding torch.__version__ (Lightning, "
                                        "pyannote and NeMo checkpoints store it)",
    "torch.nn.utils.weight_norm.WeightNorm": "weight-norm hook of a module pickled whole",
    "torch.nn.utils.spectral_norm.SpectralNorm*": "spectral-norm hooks of a module pickled "
                                                  "whole",
    "torch.ao.quantization.*.[A-Z]*": "quantization observers/fake-quant/QConfig of a "
                                     "quantization-aware module pickled whole",
    "torch.quantization.*.[A-Z]*": "quantization observers of a module pickled whole (old "
                                  "module name)",
    "torch.return_types.*": "named tuple returned by a torch op (torch.max, torch.topk...)",
    # Lightning / omegaconf / hydra hyper-parameters
    "omegaconf.dictconfig.DictConfig": "omegaconf config (Lightning hparams from hydra)",
    "omegaconf.listconfig.ListConfig": "omegaconf config (Lightning hparams from hydra)",
    "omegaconf.base.ContainerMetadata": "omegaconf config metadata",
    "omegaconf.base.Metadata": "omegaconf node metadata",
    "omegaconf.nodes.[A-Z]*Node": "omegaconf value node",
    "omegaconf.base.SCMode": "omegaconf enum",
    "lightning_fabric.utilities.data.AttributeDict": "Lightning hparams container",
    "lightning.fabric.utilities.data.AttributeDict": "Lightning hparams container",
    "pytorch_lightning.utilities.parsing.AttributeDict": "Lightning hparams container",
    "lightning.pytorch.utilities.parsing.AttributeDict": "Lightning hparams container",
    # detection frameworks pickling whole models
    "ultralytics.nn.tasks.[A-Z]*Model": "ultralytics model class (YOLOv8+ .pt files)",
    "ultralytics.nn.modules.*.[A-Z]*": "ultralytics layer class",
    "ultralytics.utils.IterableSimpleNamespace": "ultralytics training args",
    "models.yolo.[A-Z]*": "YOLOv5/YOLOv7 model class (module path of the yolov5 repository)",
    "models.common.[A-Z]*": "YOLOv5 layer class",
    "models.experimental.[A-Z]*": "YOLOv5 layer class",
    # audio
    "pyannote.audio.core.task.Specifications": "pyannote task specification (dataclass)",
    "pyannote.audio.core.task.Problem": "pyannote enum",
    "pyannote.audio.core.task.Resolution": "pyannote enum",
    # training libraries' state objects
    "transformers.training_args.TrainingArguments": "Hugging Face Trainer arguments "
                                                    "(training_args.bin)",
    "transformers.trainer_utils.[A-Z]*": "Hugging Face Trainer enum",
    "deepspeed.runtime.fp16.loss_scaler.[A-Z]*LossScaler": "DeepSpeed loss scaler state",
    "deepspeed.utils.tensor_fragment.fragment_address": "DeepSpeed optimizer state "
                                                        "(a dataclass with a lowercase name)",
    # torch.distributed.checkpoint's metadata classes (DCP_METADATA below) outside a DCP
    # .metadata: known, but weights_only=True refuses them.
    **{name: "torch.distributed.checkpoint metadata dataclass"
       for name in ("torch.distributed.checkpoint.metadata.[A-Z]*",
                    "torch.distributed.checkpoint.metadata._MEM_FORMAT_ENCODING",
                    "torch.distributed.checkpoint.filesystem._StorageInfo",
                    "torch.distributed._shard.sharded_tensor.metadata.TensorProperties",
                    "torch.distributed._shard.sharded_tensor.metadata.MEM_FORMAT_ENCODING")},
}

# What torch's DCP writers put in a ``.metadata`` (torch/distributed/checkpoint/metadata.py,
# filesystem.py, torch 2.13; torch <= 2.1 pickled ``TensorProperties`` and its memory-format
# enum from ``torch.distributed._shard.sharded_tensor.metadata``, still importable). torch's
# ``FileSystemReader.read_metadata`` unpickles ``.metadata`` with plain ``pickle.load`` — no
# weights_only step — so inside it these are judged as the values they are: plain dataclasses
# (building one sets fields; ``MetadataIndex``'s hash reads its fields; ``TensorProperties
# .__setstate__`` unpacks a 5-tuple and maps an enum), an Enum, and the checkpoint path
# ``StorageMeta.checkpoint_id`` (``pathlib`` joins the strings it is given; nothing touches
# the file system). Anything else in a ``.metadata`` is foreign to DCP (analyze.dcp).
_DCP_CLASS = "written by torch.distributed.checkpoint's save in .metadata (a dataclass: " \
             "building it sets fields)"
DCP_METADATA: dict[str, str] = {
    **{f"torch.distributed.checkpoint.metadata.{n}": _DCP_CLASS for n in (
        "Metadata", "MetadataIndex", "TensorStorageMetadata", "BytesStorageMetadata",
        "ChunkStorageMetadata", "StorageMeta")},
    "torch.distributed.checkpoint.metadata.TensorProperties":
        f"{_DCP_CLASS}; its __setstate__ unpacks a 5-tuple",
    "torch.distributed.checkpoint.metadata._MEM_FORMAT_ENCODING":
        "memory-format enum of TensorProperties in a DCP .metadata",
    "torch.distributed.checkpoint.filesystem._StorageInfo":
        "where a DCP storage item lives (file, offset, length), written in .metadata",
    "torch.distributed._shard.sharded_tensor.metadata.TensorProperties":
        "TensorProperties as torch <= 2.1 wrote it in a DCP .metadata; its __setstate__ "
        "unpacks a 5-tuple",
    "torch.distributed._shard.sharded_tensor.metadata.MEM_FORMAT_ENCODING":
        "memory-format enum as torch <= 2.1 wrote it in a DCP .metadata",
    **{f"pathlib.{n}": "the checkpoint path (StorageMeta.checkpoint_id) in a DCP .metadata: "
                       "building a path joins strings and touches no file" for n in (
        "PosixPath", "WindowsPath", "PurePosixPath", "PureWindowsPath", "Path", "PurePath")},
}

# Third-party names that are classes although spelled in lowercase.
LOWERCASE_CLASSES = frozenset({"deepspeed.utils.tensor_fragment.fragment_address"})


@functools.lru_cache(maxsize=4096)
def known_class(qualname: str) -> str | None:
    """Why frameworks pickle ``qualname``, or ``None`` when it is not a listed class."""
    for pattern, reason in KNOWN_CLASSES.items():
        if compile_pattern(pattern, cross_dots=False).match(qualname):
            return reason
    return None


@functools.lru_cache(maxsize=256)
def compile_pattern(pattern: str, *, cross_dots: bool) -> re.Pattern[str]:
    """A case-sensitive glob over a qualified name: ``*`` (``?``) any characters (one),
    ``[...]`` a class. With ``cross_dots=False`` a wildcard stays inside one dotted component,
    so a pattern for one module never reaches its submodules."""
    any_char = "." if cross_dots else "[^.]"
    out, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            out.append(any_char + "*")
        elif ch == "?":
            out.append(any_char)
        elif ch == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            out.append("[" + ("^" + re.escape(body[1:]) if body.startswith("!")
                              else re.escape(body).replace("\\-", "-")) + "]")
            i = end
        else:
            out.append(re.escape(ch))
        i += 1
    return re.compile("".join(out) + r"\Z")
