"""What analysis finds in a :class:`~ckpt_guard.read.checkpoint.Checkpoint`."""

from __future__ import annotations

from dataclasses import dataclass, field

from ckpt_guard.read.checkpoint import Checkpoint, GlobalUse
from ckpt_guard.read.tree import TensorRef
from ckpt_guard.vocab import Role

# Roles a tensor (and the bytes of its storage) can play.
ROLES: tuple[str, ...] = Role.values()
# Safety classes of a global referenced by a pickle.
SAFETY = ("safe", "needs-code", "unsafe")


@dataclass(frozen=True)
class TensorEntry:
    """One tensor found in the tree. ``path`` is dotted from the root, with ``nn.Module``
    internals collapsed the way ``state_dict()`` names them (``ema.model.0.conv.weight``)."""

    path: str
    role: str
    ref: TensorRef

    @property
    def dtype(self) -> str:
        return self.ref.dtype

    @property
    def shape(self) -> tuple[int, ...]:
        return self.ref.shape

    @property
    def storage_key(self) -> str | None:
        return self.ref.storage.key if self.ref.storage is not None else None


@dataclass(frozen=True)
class RoleSubtree:
    """A subtree that as a whole plays a role (e.g. ``optimizer`` → the optimizer state dict).
    ``path`` is dotted from the root (``""`` is the root itself); ``bytes`` counts its unique
    storages; ``what`` is a short human description ("torch optimizer state_dict")."""

    path: str
    role: str
    bytes: int
    what: str = ""


@dataclass(frozen=True)
class TopKey:
    """One row of inspect's top-level table."""

    key: str
    kind: str  # "tensors", "dict", "list", "Opaque <qualname>", "int", "None", …
    bytes: int
    role: str


@dataclass(frozen=True)
class GlobalVerdict:
    use: GlobalUse
    safety: str  # safe | needs-code | unsafe
    reason: str = ""


@dataclass
class Analysis:
    checkpoint: Checkpoint
    framework: str = "generic"
    tensors: list[TensorEntry] = field(default_factory=list)
    subtrees: list[RoleSubtree] = field(default_factory=list)
    bytes_by_role: dict[str, int] = field(default_factory=dict)  # unique storages
    bytes_by_dtype: dict[str, int] = field(default_factory=dict)  # unique storages
    tensor_bytes_total: int = 0
    top_level: list[TopKey] = field(default_factory=list)
    globals: list[GlobalVerdict] = field(default_factory=list)
    # Directories: analyses of member files, with the role the file name gives them.
    children: list[tuple[str, Analysis | Exception, str]] = field(default_factory=list)

    @property
    def tensor_count(self) -> int:
        return len(self.tensors)
