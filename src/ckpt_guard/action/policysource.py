"""Which policy gates a run — on pull requests, the base branch's, not the pull request's.

A pull request that adds a training file (or a file that runs code) could otherwise also set
that rule to ``off`` in ``.ckpt-guard.yml``, or exclude its path, and pass its own gate. So on
``pull_request``/``pull_request_target`` the policy is read from the base commit
(``git cat-file`` of ``BASE:<policy path>``, the base fetched when the checkout is shallow);
a policy the pull request changes is only reported — what it changes, rule by rule, and which
files would get another verdict under it. ``policy_from: head`` trusts the pull request's
policy (for repositories whose pull requests are all trusted).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckpt_guard.action.gitio import Git
from ckpt_guard.policy import PolicyError
from ckpt_guard.policy.load import find_policy_file, load_text
from ckpt_guard.policy.model import Policy

DEFAULT_NAME = ".ckpt-guard.yml"


@dataclass(frozen=True)
class GatePolicy:
    """The policy the run uses, where it came from, and (when the pull request changes the
    policy) the pull request's own policy — ``None`` when unchanged, a ``PolicyError`` when
    the pull request's file does not even load — with the differences in words."""

    policy: Policy
    origin: str  # e.g. "the base commit 1a2b3c4" / "the checkout"
    head_policy: Policy | PolicyError | None = None
    changes: tuple[str, ...] = field(default_factory=tuple)

    @property
    def changed(self) -> bool:
        return self.head_policy is not None


def policy_path(setting: str | None, workspace: Path) -> str:
    """The policy file's path relative to the workspace, as the run would use it."""
    if setting:
        return Path(setting).as_posix()
    found = find_policy_file(workspace)
    if found is not None:
        try:
            return found.resolve().relative_to(workspace.resolve()).as_posix()
        except ValueError:
            pass
    return DEFAULT_NAME


def base_policy(setting: str | None, workspace: Path, base: str,
                load_head: Any) -> GatePolicy:
    """The policy at the pull request's ``base`` commit (built-in when the base has no
    policy file). ``load_head()`` loads the checkout's policy for the comparison. Raises
    ``PolicyError`` when the base commit cannot be had or its policy does not load — a gate
    that cannot tell which policy is in force fails rather than trusting the pull request."""
    from ckpt_guard.policy import builtin_policy

    rel = policy_path(setting, workspace)
    git = Git(workspace)
    short = base[:7]
    if not base or not git.is_repo() or not git.ensure_commit(base):
        raise PolicyError(
            f"cannot read the policy of the base commit {short or '(none in the event)'}: it is "
            "not in the checkout and could not be fetched. The gate does not trust the pull "
            "request's own policy; fetch the base (actions/checkout `fetch-depth: 0`) or set "
            "`policy_from: head`.")
    spec = f"{base}:./{rel}"
    if git.ok("cat-file", "-e", spec):
        text = git.run("cat-file", "blob", spec)
        policy = load_text(text, filename=f"{rel} (at base {short})", path=workspace / rel)
    elif setting:
        raise PolicyError(f"{rel}: policy file not found at the base commit {short} "
                          "(input 'policy'; the gate uses the base branch's policy)")
    else:
        policy = builtin_policy()
    origin = f"the base commit {short}"
    try:
        head = load_head()
    except PolicyError as e:
        return GatePolicy(policy, origin, e, (f"the pull request's policy does not load: {e}",))
    changes = tuple(describe_changes(policy, head))
    return GatePolicy(policy, origin, head if changes else None, changes)


def _effective(p: Policy) -> dict[str, Any]:
    return {
        "rules": {k: (c.action, dict(c.options)) for k, c in sorted(p.rules.items())},
        "include": list(p.include), "exclude": list(p.exclude), "convert": p.convert,
        "overrides": [(list(o.paths), {k: dict(v) for k, v in o.rules.items()}, o.convert)
                      for o in p.overrides],
    }


def _opts(options: Mapping[str, Any]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(options.items()))


def describe_changes(base: Policy, head: Policy) -> list[str]:
    """What the head policy changes against the base one, one phrase each (empty: nothing).
    Names and values come from policy files of the pull request: callers render them inert."""
    a, b = _effective(base), _effective(head)
    out: list[str] = []
    for rule in sorted(set(a["rules"]) | set(b["rules"])):
        (act_a, opt_a), (act_b, opt_b) = a["rules"].get(rule, ("-", {})), \
            b["rules"].get(rule, ("-", {}))
        if act_a != act_b:
            out.append(f"rule `{rule}`: {act_a} → {act_b}")
        changed = {k for k in set(opt_a) | set(opt_b) if opt_a.get(k) != opt_b.get(k)}
        if changed:
            out.append(f"rule `{rule}` options: {_opts({k: opt_a.get(k) for k in changed})} "
                       f"→ {_opts({k: opt_b.get(k) for k in changed})}")
    for key in ("include", "exclude"):
        added = [g for g in b[key] if g not in a[key]]
        removed = [g for g in a[key] if g not in b[key]]
        if added:
            out.append(f"{key} adds " + ", ".join(f"`{g}`" for g in added))
        if removed:
            out.append(f"{key} drops " + ", ".join(f"`{g}`" for g in removed))
    if a["convert"] != b["convert"]:
        out.append(f"convert: {a['convert']} → {b['convert']}")
    if a["overrides"] != b["overrides"]:
        out.append(f"overrides: {len(a['overrides'])} → {len(b['overrides'])} entries, changed")
    return out
