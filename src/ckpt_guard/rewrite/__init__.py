"""Rewrite weight files: strip training state, cast FP32 weights — streaming, atomic, verified.

Public API::

    fix_file(path, analysis, rules, *, out_path=None, dry_run=False, progress=None) -> FixResult
    fix_directory(path, analysis, rules, *, dry_run=False, plan=None) -> FixResult

``rules`` maps rule id → ``policy.RuleConfig`` (or a plain ``{"action": …, option: …}``);
only rules whose action is ``fix`` act. ``progress(bytes_done, bytes_total)`` is called as
storages stream through. Nothing is ever executed from the file and torch is not needed.
A failure leaves the original untouched and comes back as ``FixResult.error`` (one line).
"""

from ckpt_guard.rewrite.api import fix_file, plan_fix
from ckpt_guard.rewrite.atomic import stale_temporaries
from ckpt_guard.rewrite.directories import fix_directory
from ckpt_guard.rewrite.plan import Plan
from ckpt_guard.rewrite.result import FixResult

__all__ = ["fix_file", "fix_directory", "plan_fix", "FixResult", "Plan", "stale_temporaries"]
