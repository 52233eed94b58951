"""Shared helpers of the rewrite tests: policies, running a fix, comparing with torch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ckpt_guard.analyze import analyze
from ckpt_guard.policy import RuleConfig, builtin_policy
from ckpt_guard.read import read_path
from ckpt_guard.rewrite import FixResult, fix_file

FIXABLE = ("optimizer-state", "training-state", "ema-duplicate", "fp32-payload")


def fix_rules(**options: dict[str, Any]) -> dict[str, RuleConfig]:
    """The built-in policy with every fixable rule set to ``fix`` and fp32-payload's
    ``max-bytes`` at 0 (the fixtures are small: cast them all); ``options`` maps a rule id
    (underscores for dashes) to option changes."""
    rules = dict(builtin_policy().rules)
    for rid in FIXABLE:
        rules[rid] = rules[rid].merged({"action": "fix"})
    rules["fp32-payload"] = rules["fp32-payload"].merged({"max-bytes": 0})
    for key, change in options.items():
        rid = key.replace("_", "-")
        rules[rid] = rules[rid].merged(change)
    return rules


def run_fix(path: Path | str, rules: dict | None = None, **kw: Any) -> FixResult:
    ckpt = read_path(str(path))
    return fix_file(str(path), analyze(ckpt), fix_rules() if rules is None else rules, **kw)


def renames(result: FixResult) -> dict[str, str]:
    """``{new top-level key: old key}`` for strips that moved a subtree (``ema → model``)."""
    out = {}
    for change in result.changes:
        left, sep, right = change.partition(" → ")
        if sep and right.isidentifier() and right != "None":
            out[right] = left
    return out


def assert_close_to(original: Any, fixed: Any, path: str) -> str:
    """``fixed`` is ``original`` exactly, or its FP16/BF16 rounding. Returns how."""
    import torch

    assert fixed.shape == original.shape, path
    if fixed.dtype == original.dtype:
        assert torch.equal(fixed, original) or (
            fixed.is_floating_point() and torch.equal(fixed.isnan(), original.isnan())
            and torch.equal(fixed.nan_to_num(), original.nan_to_num())), path
        return "equal"
    assert original.dtype == torch.float32, (path, original.dtype, fixed.dtype)
    assert fixed.dtype in (torch.float16, torch.bfloat16), (path, fixed.dtype)
    expected = original.to(fixed.dtype)  # torch's own rounding
    assert torch.equal(fixed, expected), path
    return "cast"
