"""A checkpoint directory's fix plan (Hugging Face Trainer ``checkpoint-N/``, DeepSpeed
``global_stepN/``): which training files ``fix`` deletes, as a
:class:`~ckpt_guard.policy.plan_types.FilePlan` like any file's — the single source of
check's "fixable" and removable bytes for the directory's training files, ``fix --dry-run``'s
projection and what ``rewrite.directories`` deletes.

A training file is a member whose name the reader marks as training state (its hint); the
rule owning it (:data:`HINT_RULE`) deletes it only with ``action: fix`` AND
``remove-training-files: true`` — never silently. Fixing a directory never rewrites a member.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from ckpt_guard.policy.plan_types import Change, FilePlan, FileRemoval, RulePlan
from ckpt_guard.policy.strips import rule_view
from ckpt_guard.vocab import Action, Format, Role

if TYPE_CHECKING:
    from ckpt_guard.analyze.model import Analysis
    from ckpt_guard.policy.rules.base import Finding
    from ckpt_guard.read.checkpoint import Checkpoint

DIRECTORY_FORMATS = (Format.HF_CHECKPOINT_DIR, Format.DEEPSPEED_DIR)

# The one map from a member's name hint (read.directories.hint_for) to the rule owning the
# file. "training" is training_args.bin (the Trainer's pickled arguments: a record of the
# run, needed by neither inference nor resuming), as the training-state rule documents;
# trainer_state.json is not a weight file and never a member.
HINT_RULE: dict[str, str] = {
    Role.OPTIMIZER: "optimizer-state", Role.SCHEDULER: "training-state",
    Role.SCALER: "training-state", Role.RNG: "training-state", "training": "training-state"}
# In the order the rules plan (policy.rules.registry.PLAN_ORDER).
RULES = ("optimizer-state", "training-state")
OPTION = "remove-training-files"

# Why a fixing rule deletes none of its files (check appends it to the finding; fix notes it).
NOT_OPTED_IN = " (set remove-training-files: true to let `ckpt-guard fix` delete them)"
KEPT_NOTE = ("training files kept: set remove-training-files: true on the rule to let fix "
             "delete them")
UNSAFE = "fix does not change a checkpoint directory holding an unsafe pickle"


@dataclass(frozen=True)
class TrainingFile:
    """A directory member named as training state: its path in the directory, its hint, the
    role its bytes count for and its size as the reader listed it (``None``: unknown)."""

    member: str
    hint: str
    role: str
    size: int | None


def training_files(a: Analysis) -> dict[str, list[TrainingFile]]:
    """Rule id → the directory's training files it owns, in the reader's order."""
    from ckpt_guard.analyze.directory import HINT_ROLES

    sizes = a.checkpoint.metadata.get("file_sizes") or {}
    out: dict[str, list[TrainingFile]] = {}
    for member, child, hint in a.children:
        rule_id = HINT_RULE.get(hint)
        if rule_id is None:
            continue
        size = sizes.get(member)
        if size is None:  # an analysis built without the reader's listing
            size = (_stat_size(a.checkpoint.path, member) if isinstance(child, BaseException)
                    else child.checkpoint.size_bytes)
        out.setdefault(rule_id, []).append(
            TrainingFile(member, hint, str(HINT_ROLES.get(hint) or Role.OTHER), size))
    return out


def _stat_size(directory: str, member: str) -> int | None:
    try:
        return os.stat(os.path.join(directory, member)).st_size
    except OSError:
        return None


def refusal(a: Analysis) -> str:
    """Why ``fix`` leaves this directory as it is whatever the policy says (``""``: it may
    not). As for files: a directory with an unsafe pickle is not handed back "fixed"."""
    if a.checkpoint.format not in DIRECTORY_FORMATS:
        return f"fix does not change {a.checkpoint.format} directories"
    if any(g.safety == "unsafe" for g in a.globals):
        return UNSAFE
    return ""


def plan_directory(a: Analysis, rules: Mapping[str, Any]) -> FilePlan:
    """What fixing the directory under ``rules`` does: for each of optimizer-state and
    training-state at ``fix`` with training files here, delete them all
    (``remove-training-files: true``) or none (then ``why_not`` and a note say so)."""
    plan = FilePlan(root=None, refused=refusal(a))
    if plan.refused:
        return plan
    by_rule = training_files(a)
    for rule_id in RULES:
        view = rule_view(rules, rule_id)
        files = by_rule.get(rule_id)
        if not view.fixes or not files:
            continue
        rp = RulePlan(rule_id)
        if not view.options.get(OPTION, False):
            rp.why_not = NOT_OPTED_IN
            rp.notes.append(KEPT_NOTE)
        else:
            for tf in files:
                rp.files.append(FileRemoval(tf.member, tf.role, tf.size or 0))
                rp.changes.append(Change.file_removed(tf.member))
        plan.rules[rule_id] = rp
        plan.changes.extend(rp.changes)
        plan.files.extend(rp.files)
        plan.notes.extend(n for n in rp.notes if n not in plan.notes)
    for f in plan.files:
        plan.removed[f.role] = plan.removed.get(f.role, 0) + f.nbytes
    return plan


def what_if(rules: Mapping[str, Any]) -> dict[str, Any]:
    """``rules`` with both training-file rules, where enabled, at ``fix`` with
    ``remove-training-files: true``: what a fix could delete once the policy asks for it
    (check's removable bytes count training files as baggage whatever the option says)."""
    out = dict(rules)
    for rule_id in RULES:
        view = rule_view(rules, rule_id)
        if view.enabled:
            out[rule_id] = {**view.options, "action": Action.FIX, OPTION: True}
    return out


def settle_directory(a: Analysis, rules: Mapping[str, Any], findings: list[Finding]
                     ) -> tuple[list[Finding], int]:
    """The directory's training-file findings (``detail.files``) made fixable exactly where
    the directory's plan deletes their files, with the same "why not" wording as a file's
    (:func:`ckpt_guard.policy.planning.judge`), and the bytes a fix could delete: the files
    of the what-if plan (:func:`what_if`) of the rules with a finding."""
    from ckpt_guard.policy.planning import judge

    plan = plan_directory(a, rules)
    asked = plan_directory(a, what_if(rules))
    out: list[Finding] = []
    removable = 0
    for f in findings:
        if f.rule not in RULES or "files" not in f.detail:
            out.append(f)
            continue
        rp = asked.rules.get(f.rule)
        removable += sum(x.nbytes for x in rp.files) if rp is not None and not asked.refused \
            else 0
        out.append(judge(f, plan, rule_view(rules, f.rule).fixes))
    return out, removable


def after(ckpt: Checkpoint, plan: FilePlan) -> Checkpoint:
    """The directory as the real fix leaves it (the planned members gone): what a dry run
    judges, as the real run's re-check reads the directory again."""
    gone = {f.member for f in plan.files}
    if not gone:
        return ckpt
    meta = dict(ckpt.metadata)
    sizes = {m: s for m, s in (meta.get("file_sizes") or {}).items() if m not in gone}
    meta["file_sizes"] = sizes
    meta["files"] = [m for m in meta.get("files", []) if m not in gone]
    meta["training_files"] = [m for m in meta.get("training_files", []) if m not in gone]
    return replace(ckpt, children=[c for c in ckpt.children if c[0] not in gone],
                   size_bytes=ckpt.size_bytes - sum(f.nbytes for f in plan.files),
                   pickles=[p for p in ckpt.pickles
                            if p.member.split(":", 1)[0] not in gone],
                   notes=[n for n in ckpt.notes if not n.startswith("training files: ")] + (
                       [f"training files: {', '.join(meta['training_files'])}"]
                       if meta["training_files"] else []),
                   metadata=meta)
