"""The words every layer shares: formats, roles, actions, statuses.

Each is a ``str`` enum whose values are the JSON contract's strings, so a member compares
equal to (and serializes exactly as) its plain string: ``Role.OPTIMIZER == "optimizer"``,
``json.dumps(Status.FAIL) == '"fail"'``, ``f"{Action.WARN}" == "warn"``. Python 3.10 has no
``enum.StrEnum``; :class:`StrEnum` below is the same thing.
"""

from __future__ import annotations

from enum import Enum


class StrEnum(str, Enum):
    """A ``str`` enum that prints, formats and serializes as its value."""

    __str__ = str.__str__
    __format__ = str.__format__

    @classmethod
    def values(cls) -> tuple[str, ...]:
        return tuple(m.value for m in cls)


class Format(StrEnum):
    """What a checked path is (``FileReport.format``)."""

    TORCH_ZIP = "torch-zip"
    TORCH_LEGACY = "torch-legacy"
    TORCHSCRIPT = "torchscript"
    SAFETENSORS = "safetensors"
    LFS_POINTER = "lfs-pointer"
    HF_CHECKPOINT_DIR = "hf-checkpoint-dir"
    DEEPSPEED_DIR = "deepspeed-dir"
    DCP_DIR = "dcp-dir"  # torch.distributed.checkpoint: .metadata + __R_N.distcp
    SHARDED_SAFETENSORS = "sharded-safetensors"  # an index + its shards (read/sharded.py)
    SHARDED_TORCH = "sharded-torch"
    UNKNOWN = "unknown"

    @property
    def is_directory(self) -> bool:
        return self in (Format.HF_CHECKPOINT_DIR, Format.DEEPSPEED_DIR, Format.DCP_DIR)

    @property
    def is_sharded(self) -> bool:
        return self in (Format.SHARDED_SAFETENSORS, Format.SHARDED_TORCH)


class Role(StrEnum):
    """The part a tensor (and its storage's bytes) plays. Declaration order is the
    precedence: a storage viewed from several roles counts for the first of these."""

    WEIGHTS = "weights"
    EMA = "ema"
    OPTIMIZER = "optimizer"
    SCHEDULER = "scheduler"
    SCALER = "scaler"
    RNG = "rng"
    OTHER = "other"

    @property
    def rank(self) -> int:
        return _ROLE_RANK[self]


_ROLE_RANK = {r: i for i, r in enumerate(Role)}
# Role precedence, defined once (see :class:`Role`).
ROLE_PRECEDENCE: tuple[Role, ...] = tuple(Role)
# Training-loop state (the ``training-state`` rule): what resuming needs and inference not.
TRAINING_ROLES: tuple[Role, ...] = (Role.SCHEDULER, Role.SCALER, Role.RNG)


def role_rank(role: str) -> int:
    """Precedence of ``role`` (lower wins); unknown roles rank last."""
    try:
        return _ROLE_RANK[Role(role)]
    except ValueError:
        return len(_ROLE_RANK)


class Action(StrEnum):
    """What a policy rule does with its findings."""

    FAIL = "fail"
    FIX = "fix"
    WARN = "warn"
    OFF = "off"

    @property
    def fails(self) -> bool:
        """Does a finding with this action fail ``check``? (``fix`` fails until fixed.)"""
        return self in (Action.FAIL, Action.FIX)


# Actions of rules that have no fix.
CHECK_ACTIONS: tuple[Action, ...] = (Action.FAIL, Action.WARN, Action.OFF)


class Status(StrEnum):
    """A checked path's outcome (``FileReport.status``)."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"
    FIXED = "fixed"


__all__ = ["Action", "CHECK_ACTIONS", "Format", "ROLE_PRECEDENCE", "Role", "Status",
           "StrEnum", "TRAINING_ROLES", "role_rank"]
