"""One file's fix plan, assembled from the fixing rules' own plans — the single source of
check's "fixable" and removable bytes, ``fix --dry-run``'s projection and what ``fix`` does.

:func:`plan_file` copies the file's tree and lets each rule with a ``plan`` and the ``fix``
action edit the copy, in :data:`~ckpt_guard.policy.rules.registry.PLAN_ORDER` (which weights
are kept first, then what is stripped, then what is cast of what is left). ``rewrite`` only
carries a :class:`~ckpt_guard.policy.plan_types.FilePlan` out. :func:`settle` makes the
findings of those rules fixable exactly where the plan fixes them (and says why not), and
:func:`project` is what check would say of the fixed file before it is written.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

from ckpt_guard.analyze.tree_ops import copy_tree, storages_of
from ckpt_guard.policy.plan_types import FilePlan, PlanContext, RulePlan, role_by_storage
from ckpt_guard.policy.rules import registry
from ckpt_guard.policy.rules.base import Finding
from ckpt_guard.policy.strips import WHOLE_FILE, rule_view
from ckpt_guard.vocab import Action, Format, Role

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

    from ckpt_guard.analyze.model import Analysis

# The size of the file ``rewrite`` would write for a plan (``None``: it cannot tell). Given
# by the layer above (``rewrite.api.projected_size``): policy does not write files.
OutputSize = Callable[["Analysis", FilePlan], "int | None"]

# The formats `fix` rewrites (rewrite.api); anything else is never written.
REWRITABLE = (Format.TORCH_ZIP, Format.TORCH_LEGACY, Format.SAFETENSORS)
NO_PLAN = " (fix has nothing to change for it in this file)"


def refusal(a: Analysis, formats: tuple[str, ...] = REWRITABLE) -> str:
    """Why ``fix`` leaves this file as it is whatever the policy says (``""``: it may not)."""
    if a.checkpoint.format not in formats:
        return f"fix does not rewrite {a.checkpoint.format} files"
    if any(g.safety == "unsafe" for g in a.globals):
        return "fix does not rewrite a file whose pickle is unsafe"
    return ""


def what_if(rules: Mapping[str, Any], rule_ids: set[str] | None = None) -> dict[str, Any]:
    """``rules`` with every enabled rule that has a plan (of ``rule_ids``, when given) set to
    ``fix``, options kept: what a fix could remove once the policy asks for it (check's
    ``bytes_removable``)."""
    out = dict(rules)
    for rule in registry.PLAN_ORDER:
        view = rule_view(rules, rule.id)
        if view.enabled and not view.fixes and (rule_ids is None or rule.id in rule_ids):
            out[rule.id] = {**view.options, "action": Action.FIX}
    return out


def plan_file(analysis: Analysis, rules: Mapping[str, Any], *,
              output_size: OutputSize | None = None,
              formats: tuple[str, ...] = REWRITABLE, account: bool = True) -> FilePlan:
    """What fixing ``analysis.checkpoint`` under ``rules`` (rule id → RuleConfig, or plain
    ``{action: …}`` dicts) does. The reader's tree is left as read. ``formats``: the formats
    planned for (a DCP directory is planned only for ``convert: safetensors``, which writes
    a new file: none of its findings is fixable in place). ``account=False`` leaves
    ``removed`` empty (check needs only which rules have a plan: two walks of the tree
    saved)."""
    ckpt = analysis.checkpoint
    fp32 = rule_view(rules, "fp32-payload")
    plan = FilePlan(root=copy_tree(ckpt.root),
                    on_overflow=str(fp32.options.get("on-overflow", "keep")),
                    refused=refusal(analysis, formats))
    if plan.refused:
        return plan
    ctx = PlanContext(rules=rules, tree=plan.root)
    for rule in registry.PLAN_ORDER:
        view = rule_view(rules, rule.id)
        if not view.fixes or rule.plan is None:
            continue
        rp = rule.plan(analysis, view, ctx) or RulePlan(rule.id)
        plan.rules[rule.id] = rp
        plan.changes.extend(rp.changes)
        plan.cast.extend(rp.cast)
        plan.notes.extend(rp.notes)
        plan.kept_fp32.extend(rp.kept_fp32)
        plan.value_kept.update(rp.value_kept)
    if plan.changes and account:
        after = storages_of(plan.root)
        roles = role_by_storage(analysis)
        for sid, st in storages_of(ckpt.root).items():
            if sid not in after:
                role = roles.get(st.key, Role.OTHER)
                plan.removed[role] = plan.removed.get(role, 0) + st.nbytes
    if ckpt.format == Format.TORCH_LEGACY and plan.changed and output_size is not None:
        # A legacy file is rewritten as a zip: a tiny one whose only fix is a cast can grow
        # (zip records cost more than the cast saves). No plan then, as fix would refuse.
        size = output_size(analysis, plan)
        if size is not None and size > ckpt.size_bytes:
            plan.refused = (f"as a torch zip the output would be larger than the input: "
                            f"{size:,} vs {ckpt.size_bytes:,} bytes")
    return plan


def settle(analysis: Analysis, rules: Mapping[str, Any], findings: list[Finding], *,
           output_size: OutputSize | None = None) -> tuple[list[Finding], int]:
    """``findings`` with the fixable flag of every rule that has a plan decided by the file's
    plan (fixable iff the rule's action is ``fix`` and its plan for this file is non-empty;
    else the message says why not), and the bytes a fix removes: the findings' bytes of
    the rules that would have a plan were they set to ``fix``."""
    by_id = registry.BY_ID
    planned = {id(f) for f in findings if f.rule in by_id and by_id[f.rule].plan is not None}
    removable = sum(f.bytes for f in findings
                    if f.rule in by_id and by_id[f.rule].removes and id(f) not in planned)
    if not planned:
        return findings, removable
    plans: dict[bool, FilePlan] = {}

    def plan_for(fixing: bool) -> FilePlan:
        if fixing not in plans:
            # (The what-if plan sets only the rules with findings to fix: planning the
            # others would cost time and change nothing check reports.)
            asked = {f.rule for f in findings if id(f) in planned}
            plans[fixing] = plan_file(analysis, rules if fixing else what_if(rules, asked),
                                      output_size=output_size, account=False)
        return plans[fixing]

    out: list[Finding] = []
    for f in findings:
        if id(f) not in planned:
            out.append(f)
            continue
        fixing = rule_view(rules, f.rule).fixes
        plan = plan_for(fixing)
        removable += f.bytes if plan.fixes(f.rule) and by_id[f.rule].removes else 0
        out.append(judge(f, plan, fixing))
    return out, removable


def judge(f: Finding, plan: FilePlan, fixing: bool) -> Finding:
    """``f`` fixable iff its rule is at ``fix`` (``fixing``) and has a non-empty part in
    ``plan``; otherwise its message says why not (files and checkpoint directories alike)."""
    ok = plan.fixes(f.rule)
    message = f.message
    if not ok:
        why = plan.why_not(f.rule)
        if plan.refused:
            message += f" ({why})" if fixing else ""
        elif fixing:
            message += why or NO_PLAN
        elif why == WHOLE_FILE:  # advice whatever the action
            message += why
    return replace(f, fixable=ok and fixing, message=message)


def project(analysis: Analysis, plan: FilePlan | None, rules: Mapping[str, Any], findings:
            list[Finding], *, path: str, size_after: int, out_path: str | None = None
            ) -> list[Finding]:
    """What check would say of the file a dry run only plans: the findings of the planned
    (stripped) tree, judged as check judges the written file. Casts are not in the tree:
    a rule whose plan casts has no finding left, since what the cast keeps FP32 for its
    values is recorded in the output and honoured by check."""
    from ckpt_guard.analyze import analyze
    from ckpt_guard.policy.rules.evaluate import evaluate

    ckpt = analysis.checkpoint
    if plan is not None and plan.files:
        # A checkpoint directory whose training files the plan deletes: judged as the real
        # run's re-check reads it, without them (their own findings go with them).
        from ckpt_guard.policy.directories import after

        projected, _ = evaluate(analyze(after(ckpt, plan)), rules, path=path)
        return projected
    if ckpt.format == Format.DCP_DIR:
        # convert: safetensors writes the model weights alone into a new file (the directory
        # stays): what the policy fixes is gone from it, as the real run's re-check sees
        return [f for f in findings if f.action != Action.FIX]
    if plan is None or ckpt.children or ckpt.root is None or ckpt.format not in REWRITABLE \
            or out_path:
        return [f for f in findings if not f.fixable]  # what fix removes is what is fixable
    stripped = analyze(replace(ckpt, root=plan.root, size_bytes=size_after))
    projected, _ = evaluate(stripped, rules, path=path)
    casting = {rid for rid, rp in plan.rules.items() if rp.cast}
    return [f for f in projected if not (f.rule in casting and f.fixable)]
