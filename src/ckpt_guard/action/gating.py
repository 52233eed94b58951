"""Which policy gates a run, and what the log and comment say when a pull request changes it.

On pull requests (unless ``policy_from: head``) the base commit's policy gates, so that a
pull request cannot loosen the gate it is judged by (``policysource``); the pull request's own
policy is only described — its rule changes and, in check mode, the files that would get
another verdict under it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from ckpt_guard.action import checking
from ckpt_guard.action.commands import Workflow
from ckpt_guard.action.event import RunContext, Scope
from ckpt_guard.action.policysource import GatePolicy, base_policy, policy_path
from ckpt_guard.action.settings import Mode, PolicyFrom, Settings
from ckpt_guard.policy import Policy
from ckpt_guard.report.model import Report


def gate_policy(s: Settings, ctx: RunContext, workspace: Path, scope: Scope) -> GatePolicy:
    """The checkout's policy; on pull requests (unless ``policy_from: head``) the base
    commit's. Raises ``PolicyError`` when the policy in force cannot be had."""
    def head() -> Policy:
        return checking.load_policy(s.policy, workspace)

    if ctx.is_pull_request and s.policy_from is PolicyFrom.BASE and scope.kind == "diff":
        return base_policy(s.policy, workspace, scope.base, head)
    return GatePolicy(head(), "the checkout")


def policy_notes(s: Settings, workspace: Path, gate: GatePolicy, report: Report,
                 files: Sequence[str], wf: Workflow) -> tuple[str, ...]:
    """What the pull request's own policy would change: its rules, and (in check mode)
    the files that would get another verdict under it. Also a warning in the log."""
    if not gate.changed:
        return ()
    rel = policy_path(s.policy, workspace)
    notes = [f"This pull request changes the policy `{rel}`; the gate uses the policy of "
             f"{gate.origin}. Its changes: " + "; ".join(gate.changes) + "."]
    if isinstance(gate.head_policy, Policy) and s.mode is Mode.CHECK:
        theirs = {f.path: f.status for f in
                  checking.run_check(files, gate.head_policy, workspace).files}
        moved = [f"`{f.path}` {f.status} → {theirs.get(f.path, 'not checked (excluded)')}"
                 for f in report.files if theirs.get(f.path) != f.status]
        notes.append("Under the pull request's policy: " + (
            "; ".join(moved) if moved else "no file would get another verdict") + ".")
    wf.warning(" ".join(notes).replace("`", ""), title="ckpt-guard: policy changed")
    return tuple(notes)
