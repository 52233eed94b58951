"""Which FP32 tensors stay FP32: one decision shared by ``check`` (what a cast would save)
and ``fix`` (what it casts), so a fixed file never fails the rule that fixed it.

A tensor stays FP32 when a ``keep-fp32`` glob matches its path, or — while the policy keeps
the built-in globs — when it belongs to a normalization layer found by *structure*, never by
substring or by shape:

* the layer's own name, split into tokens on ``.``/``_``/``-``/digits/camelCase, holds a
  normalization token (``bn1``, ``LayerNorm``, ``ln_f``, ``attention_norm``,
  ``final_layernorm``; not ``normal_layers`` nor ``denormalize``);
* the layer holds BatchNorm statistics (``running_mean``/``running_var``/
  ``num_batches_tracked``: BatchNorm under any name, e.g. ``model.1`` in a Sequential);
* the pickle names the layer's class (full-module pickles): ``torch.nn.BatchNorm2d``,
  ``LayerNorm``, ``GroupNorm``, ``RMSNorm``, ``InstanceNorm*``, ``FrozenBatchNorm2d``, …

A tensor a full-module pickle holds as a plain attribute of a module (not a parameter or a
buffer: ultralytics' ``DetectionModel.stride``) stays as it is too: ``Module.half()``, which
the frameworks' own strips call, leaves it FP32.

A one-dimensional ``weight`` alone says nothing (flattened linear weights of equivariant
networks are 1-D too).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from ckpt_guard.policy.match import tensor_matches
from ckpt_guard.read.tree import Opaque, TensorRef
from ckpt_guard.vocab import Action, Role

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

    from ckpt_guard.analyze.model import Analysis
    from ckpt_guard.policy.model import RuleConfig

NORM_TOKENS = frozenset({
    "norm", "norms", "bn", "ln", "gn", "layernorm", "batchnorm", "groupnorm", "rmsnorm",
    "instancenorm", "syncbatchnorm", "syncbn", "normalization", "frozenbatchnorm",
    "localresponsenorm", "lrn", "batchnorm1d", "batchnorm2d", "batchnorm3d",
})
NORM_LEAVES = frozenset({"weight", "bias", "running_mean", "running_var",
                         "num_batches_tracked"})
BN_STATS = frozenset({"running_mean", "running_var", "num_batches_tracked"})
NORMALIZATION = "normalization layer"
ATTRIBUTE = "module attribute, not a parameter or buffer"

# camelCase and acronym boundaries (LayerNorm → Layer Norm, RMSNorm → RMS Norm), digits.
_WORDS = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")


def name_tokens(name: str) -> list[str]:
    """``name`` split into lower-case words on ``.``, ``_``, ``-``, digits and camelCase
    (``ln_f`` → ``ln f``, ``LayerNorm2d`` → ``layer norm 2 d``, ``bn1`` → ``bn 1``)."""
    return [w.lower() for w in _WORDS.findall(name)]


def is_norm_name(name: str) -> bool:
    """Does a layer or class name say normalization, token-wise? Also accepts the glued
    lower-case forms (``layernorm``, ``batchnorm2d``)."""
    words = name_tokens(name)
    if any(w in NORM_TOKENS for w in words):
        return True
    return re.sub(r"[^a-z]", "", name.lower()) in NORM_TOKENS


def norm_module_paths(root: Any) -> set[str]:
    """Dotted paths (as tensors are named) of opaque modules whose pickled class is a
    normalization layer: the producer's own word, in full-module pickles."""
    from ckpt_guard.analyze.walk import keys_of, module_attributes, path_text, walk

    out: set[str] = set()

    def visit(path: Any, node: Any, inh: Any) -> None:
        if isinstance(node, Opaque) and module_attributes(node) is not None \
                and is_norm_name(node.name):
            out.add(path_text(keys_of(path)))
        return None

    walk(root, visit)
    return out


def attribute_tensor_paths(root: Any) -> set[str]:
    """Paths of tensors that full-module pickles hold as plain module attributes (outside
    ``_parameters``/``_buffers``): ``Module.half()`` does not cast them, so neither do we."""
    from ckpt_guard.analyze.walk import (
        MODULE_INTERNALS,
        keys_of,
        module_attributes,
        path_text,
        walk,
    )

    out: set[str] = set()

    def visit(path: Any, node: Any, inh: Any) -> None:
        attrs = module_attributes(node)
        if attrs is not None:
            here = keys_of(path)
            for k, v in attrs.items():
                if k not in MODULE_INTERNALS and isinstance(k, str) \
                        and isinstance(v, TensorRef):
                    out.add(path_text((*here, k)))
        return None

    walk(root, visit)
    return out


def norm_prefixes(tensors: Iterable[tuple[str, TensorRef]],
                  classes: Iterable[str] = ()) -> set[str]:
    """Module prefixes (dotted paths) that are normalization layers."""
    out: set[str] = set(classes)
    for p, _ref in tensors:
        prefix, _, leaf = p.rpartition(".")
        if leaf in BN_STATS or (leaf in NORM_LEAVES and is_norm_name(_layer_name(prefix))):
            out.add(prefix)
    return out


def _layer_name(prefix: str) -> str:
    """The name a layer goes by: its last path segment, or the container's name for an
    indexed member (``blocks.0.norms.1`` → ``norms``)."""
    parts = prefix.split(".")
    while len(parts) > 1 and parts[-1].isdigit():
        parts.pop()
    return parts[-1]


def default_globs() -> tuple[str, ...]:
    from ckpt_guard.policy.load import builtin_policy

    return builtin_policy().rules["fp32-payload"].keep_fp32


def structural(options: Mapping[str, Any]) -> bool:
    """Does the structural normalization check apply? Only while the policy keeps the
    built-in globs: a user's own ``keep-fp32`` list says exactly what stays."""
    globs = tuple(options.get("keep-fp32", ()))
    return "keep-fp32" not in options or globs == default_globs()


class KeepFP32:
    """The keep-FP32 decision for one file's tensors under one ``fp32-payload`` config.
    ``root`` (the reader's tree) lets the pickled module classes speak."""

    def __init__(self, options: Mapping[str, Any], tensors: Iterable[tuple[str, TensorRef]],
                 root: Any = None) -> None:
        self.globs = tuple(options.get("keep-fp32", ()))
        if structural(options):
            classes = norm_module_paths(root) if root is not None else set()
            self.norms = norm_prefixes(tensors, classes)
            self.attributes = attribute_tensor_paths(root) if root is not None else set()
        else:
            self.norms = set()
            self.attributes = set()

    def reason(self, path: str) -> str | None:
        """Why ``path`` stays FP32 (``keep-fp32 '<glob>'`` or ``normalization layer``), or
        ``None`` when it may be cast."""
        glob = tensor_matches(path, self.globs)
        if glob is not None:
            return f"keep-fp32 '{glob}'"
        prefix, _, leaf = path.rpartition(".")
        if prefix in self.norms and leaf in NORM_LEAVES:
            return NORMALIZATION
        if path in self.attributes:
            return ATTRIBUTE
        return None


def for_rule(cfg: RuleConfig, tensors: Iterable[tuple[str, TensorRef]],
             root: Any = None) -> KeepFP32:
    return KeepFP32(dict(cfg.options), tensors, root)


# --- the fp32-payload decision, shared by check (evaluate) and fix (rewrite.plan) -------------

def _action_options(cfg: Any) -> tuple[str, dict]:
    """``(action, options)`` of a RuleConfig, a ``{action: …, option: …}`` dict or a bare
    action string (hand-built rule mappings, as tests and the rewrite API accept)."""
    if cfg is None:
        return Action.OFF, {}
    if isinstance(cfg, str):
        return cfg, {}
    if isinstance(cfg, Mapping):
        return str(cfg.get("action", Action.OFF)), {k: v for k, v in cfg.items() if k != "action"}
    return str(getattr(cfg, "action", Action.OFF)), dict(getattr(cfg, "options", {}) or {})


def ema_dropped_role(a: Analysis, rules: Mapping[str, Any]) -> str | None:
    """The role a fix of ``ema-duplicate`` drops as the duplicate copy (``weights`` or
    ``ema``), if the file has both and the rule is on."""
    action, options = _action_options(rules.get("ema-duplicate"))
    if action == Action.OFF:
        return None
    if not (a.bytes_by_role.get(Role.EMA, 0) and a.bytes_by_role.get(Role.WEIGHTS, 0)):
        return None
    if a.framework == "mmengine":
        # mmengine's EMAHook already swapped the EMA into state_dict; the fix (either keep)
        # deletes ema_state_dict, as publish_model.py does: that is the copy removed.
        return Role.EMA
    return Role.WEIGHTS if str(options.get("keep", Role.EMA)) == Role.EMA else Role.EMA


class FP32Payload:
    """What ``fp32-payload`` sees in one file: castable FP32 storages and what stays FP32.
    (A plain class: a dataclass costs every cold ``check`` ~0.4 ms to create.)"""

    __slots__ = ("castable", "n_cast", "kept", "kept_bytes", "limit")

    def __init__(self, *, limit: int = 0) -> None:
        self.castable = 0  # bytes of FP32 storages a cast would rewrite
        self.n_cast = 0  # tensors viewing them
        self.kept: list[tuple[str, str]] = []  # (tensor path, why)
        self.kept_bytes = 0
        self.limit = limit  # max-bytes (0: none)

    @property
    def over_limit(self) -> bool:
        """The one decision: the rule reports — and a fix casts — only above ``max-bytes``."""
        return self.castable > 0 and self.castable > self.limit


# safetensors: the __metadata__ key where fix records the tensors it kept FP32 for their values.
KEPT_FP32_METADATA = "ckpt_guard.kept_fp32"
VALUES = "values: "  # prefix of a recorded reason


def recorded_kept(metadata: Mapping[str, Any]) -> dict[str, str]:
    """Tensor path → why, for the tensors a previous ``fix`` kept FP32 because of their
    values (out of FP16's range, or flushing to zero in bulk): check reads metadata only and
    cannot see values, so fix records them in the file it writes (a torch zip record, a
    safetensors ``__metadata__`` key) and both check and the next fix honour the record.
    The record only ever keeps tensors FP32; it never makes anything pass a safety rule."""
    kept = metadata.get("kept_fp32")
    if kept is None:
        import json

        text = (metadata.get("__metadata__") or {}).get(KEPT_FP32_METADATA)
        try:
            kept = json.loads(text) if isinstance(text, str) else None
        except ValueError:
            kept = None
    if not isinstance(kept, dict):
        return {}
    return {k: v for k, v in kept.items() if isinstance(k, str) and isinstance(v, str)}


def fp32_payload(a: Analysis, rules: Mapping[str, Any]) -> FP32Payload | None:
    """The castable FP32 bytes of ``a`` under ``rules`` (``None`` when the rule is off).
    Storages, not tensors, are what a cast rewrites; a storage that any kept-FP32 view uses
    stays FP32 (so savings are never overstated)."""
    action, options = _action_options(rules.get("fp32-payload"))
    if action == Action.OFF:
        return None
    # The duplicate copy is out of the cast only when a fix drops it: with ema-duplicate at
    # warn the file keeps both, and fix casts both (issue 9, defect 3).
    dropped = (ema_dropped_role(a, rules)
               if _action_options(rules.get("ema-duplicate"))[0] == Action.FIX else None)
    kept_roles = {Role.WEIGHTS, Role.EMA} - {dropped}
    storages: dict[str, tuple[int, str | None]] = {}
    tensors_by_storage: dict[str, list[str]] = {}
    keep = KeepFP32(options, ((t.path, t.ref) for t in a.tensors), a.checkpoint.root)
    recorded = recorded_kept(a.checkpoint.metadata)
    for t in a.tensors:
        if t.role not in kept_roles or t.dtype != "float32" or t.ref.storage is None:
            continue
        key = t.storage_key or ""
        why = keep.reason(t.path) or (VALUES + recorded[t.path] if t.path in recorded
                                      else None)
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
