"""Decide what a fix does to one file: which subtrees to strip (following the producing
framework's own inference convention) and which storages to cast.

The plan works on a copy of the reader's tree (containers and opaque objects copied, tensor
references, storages and globals shared), so the caller's :class:`Checkpoint` stays as read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ckpt_guard.analyze.model import Analysis
from ckpt_guard.policy.keep_fp32 import VALUES, KeepFP32, fp32_payload, recorded_kept
from ckpt_guard.policy.plan_types import Change
from ckpt_guard.read.tree import Storage, TensorRef, as_mapping
from ckpt_guard.rewrite.strip import Rule, Stripper, rule
from ckpt_guard.rewrite.tree_ops import copy_tree, path_text, storages_of, tensor_storages, walk
from ckpt_guard.vocab import Role

__all__ = ["CastItem", "Plan", "Rule", "make_plan", "rule"]

CASTABLE_ROLES = frozenset({"weights", "ema"})
CASTABLE_KINDS = frozenset({"tensor", "parameter"})
ROLE_ORDER: tuple[str, ...] = Role.values()  # the precedence, defined in ckpt_guard.vocab

@dataclass
class CastItem:
    storage: Storage
    paths: list[str]
    target: str


@dataclass
class Plan:
    root: Any
    removed: dict[str, int] = field(default_factory=dict)  # role → bytes no longer stored
    cast: list[CastItem] = field(default_factory=list)
    kept_fp32: list[tuple[str, str]] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)  # typed; each reads "optimizer → None"
    notes: list[str] = field(default_factory=list)
    on_overflow: str = "keep"
    # Tensors kept FP32 because of their values (on-overflow: keep), path → why: the writer
    # records them in the output so check and later fixes honour it (keep_fp32.recorded_kept).
    value_kept: dict[str, str] = field(default_factory=dict)

    @property
    def strips(self) -> bool:
        return bool(self.changes)

    @property
    def changed(self) -> bool:
        return bool(self.changes or self.cast)


def _role_by_storage(analysis: Analysis) -> dict[str, str]:
    rank = {r: i for i, r in enumerate(ROLE_ORDER)}
    out: dict[str, str] = {}
    for entry in analysis.tensors:
        for st in tensor_storages(entry.ref):
            cur = out.get(st.key)
            if cur is None or rank.get(entry.role, 99) < rank.get(cur, 99):
                out[st.key] = entry.role
    return out


def _plan_casts(plan: Plan, analysis: Analysis, fp32: Rule,
                rules: Mapping[str, Any]) -> None:
    if not fp32.fixes:
        return
    payload = fp32_payload(analysis, rules)
    if payload is None or not payload.over_limit:
        # check reports fp32-payload only above max-bytes; a fix made for another rule must
        # not cast below it either (one decision: policy.keep_fp32.fp32_payload).
        if payload is not None and payload.castable:
            plan.notes.append(f"float32 weights not cast: {payload.castable:,} castable bytes, "
                              f"not over fp32-payload max-bytes ({payload.limit:,})")
        return
    if analysis.checkpoint.byteorder != "little":
        plan.notes.append("big-endian storages are not cast")
        return
    target = str(fp32.options.get("cast-to", "float16"))
    roles = _role_by_storage(analysis)
    by_storage: dict[int, tuple[Storage, list[tuple[str, TensorRef]]]] = {}

    def visit(path: tuple, node: Any, inh: Any) -> Any:
        if isinstance(node, TensorRef):
            for st in tensor_storages(node):
                by_storage.setdefault(id(st), (st, []))[1].append((path_text(path), node))
        return None

    walk(plan.root, visit)
    recorded = recorded_kept(analysis.checkpoint.metadata)
    keep = KeepFP32(dict(fp32.options), (pr for _, refs in by_storage.values() for pr in refs),
                    plan.root)
    for st, refs in by_storage.values():
        if st.dtype != "float32":
            continue
        paths = sorted({p for p, _ in refs})
        if roles.get(st.key, "weights" if not analysis.tensors else "") not in CASTABLE_ROLES:
            continue
        odd = [p for p, r in refs if r.kind not in CASTABLE_KINDS or r.dtype != "float32"]
        if odd:
            plan.kept_fp32.extend((p, f"shares its storage with {odd[0]}") for p in paths
                                  if p not in odd)
            continue
        reason = next((r for r in map(keep.reason, paths) if r is not None), None)
        if reason is None and any(p in recorded for p in paths):
            why = next(recorded[p] for p in paths if p in recorded)
            plan.value_kept.update((p, why) for p in paths)
            reason = VALUES + why
        if reason is not None:
            plan.kept_fp32.extend((p, reason) for p in paths)
            continue
        plan.cast.append(CastItem(st, paths, target))


def make_plan(analysis: Analysis, rules: Mapping[str, Any]) -> Plan:
    """What fixing ``analysis.checkpoint`` under ``rules`` (rule id → RuleConfig) does."""
    ckpt = analysis.checkpoint
    fp32 = rule(rules, "fp32-payload")
    plan = Plan(root=copy_tree(ckpt.root),
                on_overflow=str(fp32.options.get("on-overflow", "keep")))
    stripper = Stripper(plan, rules)
    if ckpt.format != "safetensors":
        m = as_mapping(plan.root)
        if m is not None:
            stripper.framework(analysis.framework, m)
        stripper.roles(plan.root, analysis)
    before = storages_of(ckpt.root)
    after = storages_of(plan.root)
    roles = _role_by_storage(analysis)
    for sid, st in before.items():
        if sid not in after:
            role = roles.get(st.key, "other")
            plan.removed[role] = plan.removed.get(role, 0) + st.nbytes
    _plan_casts(plan, analysis, fp32, rules)
    return plan
