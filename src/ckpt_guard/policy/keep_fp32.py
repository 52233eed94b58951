"""Which FP32 tensors stay FP32: one decision shared by ``check`` (what a cast would save)
and ``fix`` (what it casts), so a fixed file never fails the rule that fixed it.

A tensor stays FP32 when a ``keep-fp32`` glob matches its path, or — while the policy keeps
the built-in globs — when it belongs to a normalization layer found by structure: a layer
holding running statistics (BatchNorm under any name, e.g. ``model.1`` in a Sequential), a
layer whose ``weight`` is one-dimensional (BatchNorm, LayerNorm, GroupNorm, RMSNorm: linear and
conv weights never are), or a layer whose name says so (``bn1``, ``LayerNorm``, ``ln_f``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ckpt_guard.policy.match import tensor_matches
from ckpt_guard.read.tree import TensorRef

if TYPE_CHECKING:
    from ckpt_guard.policy.model import RuleConfig

NORM_NAME = re.compile(r"(?i)(norm|^(bn|ln|gn)(_?\d+|_f)?$)")
NORM_LEAVES = frozenset({"weight", "bias", "running_mean", "running_var",
                         "num_batches_tracked"})
NORMALIZATION = "normalization layer"


def norm_prefixes(tensors: Iterable[tuple[str, TensorRef]]) -> set[str]:
    """Module prefixes (dotted paths) that are normalization layers."""
    out: set[str] = set()
    for p, ref in tensors:
        prefix, _, leaf = p.rpartition(".")
        if leaf in ("running_mean", "running_var") or (
                leaf == "weight" and len(ref.shape) == 1) or (
                leaf in NORM_LEAVES and NORM_NAME.search(prefix.rpartition(".")[2])):
            out.add(prefix)
    return out


def default_globs() -> tuple[str, ...]:
    from ckpt_guard.policy.load import builtin_policy

    return builtin_policy().rules["fp32-payload"].keep_fp32


def structural(options: dict) -> bool:
    """Does the structural normalization check apply? Only while the policy keeps the
    built-in globs: a user's own ``keep-fp32`` list says exactly what stays."""
    globs = tuple(options.get("keep-fp32", ()))
    return "keep-fp32" not in options or (bool(globs) and globs == default_globs())


class KeepFP32:
    """The keep-FP32 decision for one file's tensors under one ``fp32-payload`` config."""

    def __init__(self, options: dict, tensors: Iterable[tuple[str, TensorRef]]) -> None:
        self.globs = tuple(options.get("keep-fp32", ()))
        self.norms = norm_prefixes(tensors) if structural(options) else set()

    def reason(self, path: str) -> str | None:
        """Why ``path`` stays FP32 (``keep-fp32 '<glob>'`` or ``normalization layer``), or
        ``None`` when it may be cast."""
        glob = tensor_matches(path, self.globs)
        if glob is not None:
            return f"keep-fp32 '{glob}'"
        prefix, _, leaf = path.rpartition(".")
        if prefix in self.norms and leaf in NORM_LEAVES:
            return NORMALIZATION
        return None


def for_rule(cfg: RuleConfig, tensors: Iterable[tuple[str, TensorRef]]) -> KeepFP32:
    return KeepFP32(dict(cfg.options), tensors)
