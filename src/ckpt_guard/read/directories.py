"""Checkpoint directories: Hugging Face Trainer ``checkpoint-N/``, DeepSpeed checkpoints and
torch.distributed.checkpoint (DCP) directories (:mod:`ckpt_guard.read.dcp`).

The directory becomes one :class:`Checkpoint` whose ``children`` are its weight files, each
read on its own, with a hint from the file's name saying what role the whole file plays
(``optimizer.pt`` is optimizer state however it is laid out inside).
"""

from __future__ import annotations

import os
import re
import stat
from dataclasses import replace

from ckpt_guard.read.checkpoint import Checkpoint, LimitExceeded, UnreadableError
from ckpt_guard.read.limits import Limits
from ckpt_guard.vocab import Format, Role

MAX_DEPTH = 4  # checkpoint-N/global_stepN/<files> is as deep as real layouts go

_HINTS: tuple[tuple[str, re.Pattern[str]], ...] = (
    (Role.OPTIMIZER, re.compile(r"(.*optim_states\.pt|optimizer.*\.(pt|bin|pth))")),
    (Role.SCHEDULER, re.compile(r"(lr_)?scheduler.*\.(pt|bin|pth)")),
    (Role.SCALER, re.compile(r"scaler.*\.(pt|bin|pth)")),
    (Role.RNG, re.compile(r"rng_state.*\.pth?")),
    ("training", re.compile(r"training_args\.bin|trainer_state\.json")),
    (Role.WEIGHTS, re.compile(r"(pytorch_model|model|adapter_model|tf_model|flax_model)"
                              r"([-.].*)?\.(safetensors|bin|pt|pth|ckpt)"
                              r"|.*model_states\.pt|.*\.safetensors")),
)

# What only the Trainer writes. A folder that merely holds optimizer.pt or rng_state.pth is
# walked file by file instead (each file's content still says what it is), so a directory
# fix — which may delete training files — only ever acts on a real Trainer checkpoint.
_HF_MARKERS = re.compile(r"trainer_state\.json|training_args\.bin")
_HF_CKPT_NAME = re.compile(r"checkpoint-\d+")
_DS_FILES = re.compile(r".*mp_rank_\d+_model_states\.pt|.*optim_states\.pt")
# Members with these names are never skipped as "not a weight file" (any case: torch.load
# opens model.PT as model.pt on macOS and Windows).
_WEIGHT_EXT = re.compile(r".*\.(pt|pth|bin|ckpt|safetensors|pkl|pickle|tar|h5|onnx|gguf|"
                         r"torchscript|ptl)", re.IGNORECASE)


def hint_for(name: str) -> str:
    """The role a checkpoint-directory member's file name gives it ("" when none)."""
    base = name.rsplit("/", 1)[-1]
    for hint, pattern in _HINTS:
        if pattern.fullmatch(base):
            return hint
    return ""


def _names(path: str, cap: int = Limits().max_dir_files) -> tuple[list[str], list[str]]:
    files, dirs = [], []
    try:
        with os.scandir(path) as it:
            for n, entry in enumerate(it):
                if n >= cap:
                    raise LimitExceeded(f"directory holds more than {cap} entries")
                try:
                    if entry.is_dir(follow_symlinks=False):
                        dirs.append(entry.name)
                    elif entry.is_file():
                        files.append(entry.name)
                except OSError:
                    continue
    except OSError as e:
        raise UnreadableError(f"cannot list directory: {e.strerror or e}") from e
    return sorted(files), sorted(dirs)


def directory_format(path: str, limits: Limits | None = None) -> str | None:
    """``hf-checkpoint-dir``, ``deepspeed-dir``, ``dcp-dir`` or ``None`` for a directory that
    is none of them."""
    from ckpt_guard.read.dcp import is_dcp

    cap = (limits or Limits()).max_dir_files
    files, dirs = _names(path, cap)
    if is_dcp(files):
        return Format.DCP_DIR
    has_weights = any(hint_for(f) == Role.WEIGHTS for f in files)
    if any(_HF_MARKERS.fullmatch(f) for f in files) or (
            _HF_CKPT_NAME.fullmatch(os.path.basename(os.path.normpath(path))) and has_weights):
        return Format.HF_CHECKPOINT_DIR
    if any(_DS_FILES.fullmatch(f) for f in files):
        return Format.DEEPSPEED_DIR
    if "latest" in files or dirs:
        for d in dirs:
            sub_files, _ = _names(os.path.join(path, d), cap)
            if any(_DS_FILES.fullmatch(f) for f in sub_files):
                return Format.DEEPSPEED_DIR
    return None


def _walk(path: str, limits: Limits) -> list[tuple[str, int]]:
    """(relative path, size) of every regular file under ``path``, iteratively, bounded."""
    out: list[tuple[str, int]] = []
    pending: list[tuple[str, int]] = [("", 0)]
    while pending:
        rel, depth = pending.pop()
        files, dirs = _names(os.path.join(path, rel) if rel else path, limits.max_dir_files)
        for f in files:
            relf = f"{rel}/{f}" if rel else f
            try:
                st = os.stat(os.path.join(path, relf))
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                out.append((relf, st.st_size))
                if len(out) > limits.max_dir_files:
                    raise LimitExceeded(f"directory holds more than {limits.max_dir_files} files")
        if depth < MAX_DEPTH:
            pending.extend((f"{rel}/{d}" if rel else d, depth + 1) for d in reversed(dirs))
    out.sort()
    return out


def read_directory(path: str, limits: Limits, *, root: str | None = None) -> Checkpoint:
    """Read a Trainer or DeepSpeed checkpoint directory; other directories are unreadable.
    ``root``: members must really live under it (see :func:`ckpt_guard.read.read_path`)."""
    # Imported here: read_path dispatches to this module.
    from ckpt_guard.read import read_path
    from ckpt_guard.read.sniff import NotAWeightFile

    fmt = directory_format(path, limits)
    if fmt == Format.DCP_DIR:
        from ckpt_guard.read.dcp import read_dcp_directory

        return read_dcp_directory(path, limits, root=root)
    if fmt is None:
        raise UnreadableError("directory is not a checkpoint directory "
                              "(neither a Hugging Face Trainer nor a DeepSpeed checkpoint)")
    files = _walk(path, limits)
    children: list[tuple[str, Checkpoint | UnreadableError, str]] = []
    skipped: list[str] = []
    for rel, _size in files:
        hint = hint_for(rel)
        try:
            child: Checkpoint | UnreadableError = read_path(os.path.join(path, rel), limits,
                                                             root=root)
        except NotAWeightFile as e:
            # config.json, trainer_state.json, `latest`, tokenizer files…: listed, not read.
            if hint in ("", "training") and not _WEIGHT_EXT.fullmatch(rel):
                skipped.append(rel)
                continue
            child = e
        except UnreadableError as e:
            child = e
        children.append((rel, child, hint))
    training = [rel for rel, _c, hint in children if hint not in ("", Role.WEIGHTS)]
    training += [rel for rel in skipped if hint_for(rel) == "training"]
    notes = [f"training files: {', '.join(sorted(training))}"] if training else []
    pickles = [replace(p, member=f"{rel}:{p.member}") for rel, child, _h in children
               if isinstance(child, Checkpoint) for p in child.pickles]
    return Checkpoint(path=path, format=fmt, size_bytes=sum(s for _r, s in files),
                      children=children, notes=notes, pickles=pickles,
                      # file_sizes: each member's size as listed, the one source of a
                      # directory fix's sizes (policy.directories)
                      metadata={"files": [r for r, _s in files], "other_files": skipped,
                                "file_sizes": dict(files),
                                "training_files": sorted(training)})
