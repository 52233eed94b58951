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
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ckpt_guard.policy.match import tensor_matches
from ckpt_guard.read.tree import TensorRef

if TYPE_CHECKING:
    from ckpt_guard.analyze.model import Analysis
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


# --- the fp32-payload decision, shared by check (evaluate) and fix (rewrite.plan) -------------

def _action_options(cfg: Any) -> tuple[str, dict]:
    """``(action, options)`` of a RuleConfig, a ``{action: …, option: …}`` dict or a bare
    action string (hand-built rule mappings, as tests and the rewrite API accept)."""
    if cfg is None:
        return "off", {}
    if isinstance(cfg, str):
        return cfg, {}
    if isinstance(cfg, Mapping):
        return str(cfg.get("action", "off")), {k: v for k, v in cfg.items() if k != "action"}
    return str(getattr(cfg, "action", "off")), dict(getattr(cfg, "options", {}) or {})


def ema_dropped_role(a: Analysis, rules: Mapping[str, Any]) -> str | None:
    """The role a fix of ``ema-duplicate`` drops as the duplicate copy (``weights`` or
    ``ema``), if the file has both and the rule is on."""
    action, options = _action_options(rules.get("ema-duplicate"))
    if action == "off":
        return None
    if not (a.bytes_by_role.get("ema", 0) and a.bytes_by_role.get("weights", 0)):
        return None
    return "weights" if str(options.get("keep", "ema")) == "ema" else "ema"


@dataclass
class FP32Payload:
    """What ``fp32-payload`` sees in one file: castable FP32 storages and what stays FP32."""

    castable: int = 0  # bytes of FP32 storages a cast would rewrite
    n_cast: int = 0  # tensors viewing them
    kept: list[tuple[str, str]] = field(default_factory=list)  # (tensor path, why)
    kept_bytes: int = 0
    limit: int = 0  # max-bytes (0: none)

    @property
    def over_limit(self) -> bool:
        """The one decision: the rule reports — and a fix casts — only above ``max-bytes``."""
        return self.castable > 0 and self.castable > self.limit


def fp32_payload(a: Analysis, rules: Mapping[str, Any]) -> FP32Payload | None:
    """The castable FP32 bytes of ``a`` under ``rules`` (``None`` when the rule is off).
    Storages, not tensors, are what a cast rewrites; a storage that any kept-FP32 view uses
    stays FP32 (so savings are never overstated)."""
    action, options = _action_options(rules.get("fp32-payload"))
    if action == "off":
        return None
    kept_roles = {"weights", "ema"} - {ema_dropped_role(a, rules)}
    storages: dict[str, tuple[int, str | None]] = {}
    tensors_by_storage: dict[str, list[str]] = {}
    keep = KeepFP32(options, ((t.path, t.ref) for t in a.tensors))
    for t in a.tensors:
        if t.role not in kept_roles or t.dtype != "float32" or t.ref.storage is None:
            continue
        key = t.storage_key or ""
        why = keep.reason(t.path)
        nbytes, prev = storages.get(key, (t.ref.storage.nbytes, None))
        storages[key] = (nbytes, prev or why)
        tensors_by_storage.setdefault(key, []).append(t.path)
    limit = options.get("max-bytes")
    out = FP32Payload(limit=int(limit) if limit is not None else 0)
    for key, (nbytes, why) in storages.items():
        if why is None:
            out.castable += nbytes
            out.n_cast += len(tensors_by_storage[key])
        else:
            out.kept_bytes += nbytes
            out.kept.extend((p, why) for p in tensors_by_storage[key])
    return out
