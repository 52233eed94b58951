"""The rules, one module each (id, options, help, ``evaluate``), and the registry running them.

See :mod:`.base` for what a rule is and :mod:`.registry` for how to add one.
"""

from ckpt_guard.policy.rules.base import Context, Finding, Option, Rule, finding_from_dict
from ckpt_guard.policy.rules.evaluate import evaluate, evaluate_failure, evaluate_unreadable
from ckpt_guard.policy.rules.registry import ALL, BY_ID, FIXABLE_RULES, RULE_IDS

__all__ = ["ALL", "BY_ID", "Context", "FIXABLE_RULES", "Finding", "Option", "RULE_IDS", "Rule",
           "evaluate", "evaluate_failure", "evaluate_unreadable", "finding_from_dict"]
