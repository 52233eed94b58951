"""What reading one path yields: a :class:`Checkpoint`, or an :class:`UnreadableError`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ckpt_guard.read.tree import Storage

# Format names of the JSON report contract.
FORMATS = ("torch-zip", "torch-legacy", "torchscript", "safetensors", "lfs-pointer",
           "hf-checkpoint-dir", "deepspeed-dir", "unknown")


class UnreadableError(Exception):
    """The path cannot be read as a weight file. The message is one line for users."""


class LimitExceeded(UnreadableError):
    """A resource limit (opcodes, memo, depth, sizes) was hit while reading."""


@dataclass(frozen=True)
class GlobalUse:
    """A global a pickle references, and through which opcode (``GLOBAL``, ``STACK_GLOBAL``,
    ``INST``, ``OBJ``-target, ``EXT``). ``member`` names the pickle inside the file
    (e.g. ``archive/data.pkl``)."""

    module: str
    name: str
    opcode: str
    member: str = ""

    @property
    def qualname(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass
class Checkpoint:
    """One weight file (or checkpoint directory), read from metadata only.

    ``root`` is the object tree (see :mod:`ckpt_guard.read.tree`); for safetensors a dict of
    name → TensorRef. ``storages`` maps storage key → :class:`Storage` (each counted once).
    ``globals`` lists every global referenced by any pickle in the file, in order of
    appearance. ``children`` holds the member files of a checkpoint directory, each a
    ``(relative path, Checkpoint | UnreadableError, hint)`` where ``hint`` is the role the
    file's name gives it (``optimizer``, ``scheduler``, ``scaler``, ``rng``, ``training``,
    ``weights`` or ``""``).
    """

    path: str
    format: str
    size_bytes: int
    root: Any = None
    storages: dict[str, Storage] = field(default_factory=dict)
    globals: list[GlobalUse] = field(default_factory=list)
    children: list[tuple[str, Checkpoint | UnreadableError, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)
    # Zip-based files: the archive's top folder (e.g. "archive") and the pickle's protocol.
    archive_prefix: str = ""
    pickle_protocol: int | None = None
    byteorder: str = "little"
