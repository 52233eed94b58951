"""The policy layer: ``.ckpt-guard.yml`` → :class:`Policy`; an analysis + rules → findings.

Units: sizes in a policy accept decimal (``50MB`` = 50·10⁶) and binary (``1.5GiB``) units
(:func:`parse_size`); messages print decimal units (:func:`ckpt_guard.report.units.format_bytes`).
"""

from __future__ import annotations

from ckpt_guard.policy.errors import PolicyError
from ckpt_guard.policy.load import (
    POLICY_NAMES,
    builtin_policy,
    find_policy_file,
    init_text,
    load_policy,
    load_text,
)
from ckpt_guard.policy.model import ACTIONS, FIXABLE_RULES, Override, Policy, RuleConfig
from ckpt_guard.policy.rules import evaluate, evaluate_failure, evaluate_unreadable
from ckpt_guard.policy.sizes import SizeError, parse_size

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

# The built-in include globs (weight-file extensions; `check` sniffs formats by content,
# these only choose which files a repository walk picks).
DEFAULT_INCLUDE: tuple[str, ...] = builtin_policy().include



def __getattr__(name: str) -> Any:
    # Imported when first asked for: see ckpt_guard.policy.problem.
    if name == "Problem":
        from ckpt_guard.policy.problem import Problem

        return Problem
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "ACTIONS", "DEFAULT_INCLUDE", "FIXABLE_RULES", "POLICY_NAMES", "Override", "Policy",
    "PolicyError", "Problem", "RuleConfig", "SizeError", "builtin_policy", "evaluate",
    "evaluate_failure", "evaluate_unreadable", "find_policy_file", "init_text", "load_policy",
    "load_text", "parse_size",
]
