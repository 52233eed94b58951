"""The plan ``rewrite`` carries out: made by the rules (:mod:`ckpt_guard.policy.planning`),
never decided here. A :class:`Plan` holds the tree with every typed change already applied
to a copy (``root``) and the storages to cast; the writers only write it.

:func:`projected_size` is the one thing planning asks of rewrite (through a callable, as
policy never imports rewrite): the size of the zip a legacy file would become.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace as dc_replace
from typing import Any

from ckpt_guard.analyze.model import Analysis
from ckpt_guard.analyze.tree_ops import copy_tree
from ckpt_guard.policy.directories import DIRECTORY_FORMATS, plan_directory
from ckpt_guard.policy.plan_types import CastItem, Change, apply
from ckpt_guard.policy.plan_types import FilePlan as Plan
from ckpt_guard.policy.planning import REWRITABLE, plan_file
from ckpt_guard.policy.strips import RuleView as Rule
from ckpt_guard.policy.strips import rule_view as rule
from ckpt_guard.vocab import Format

__all__ = ["CastItem", "Plan", "Rule", "make_plan", "projected_size", "replay", "rule"]


# A legacy file at most this large has its cast candidates' values scanned when its output
# size is projected (check included): what fix keeps FP32 for its values, and the record of
# it, can make a tiny file's zip larger than the input — then there is no plan, for check as
# for fix. The read is bounded by this size, so check's cost still does not grow with tensor
# bytes; larger files cannot grow (a zip's overhead is a few hundred bytes per record).
SCAN_LEGACY_BELOW = 4 * 1024 * 1024


def projected_size(analysis: Analysis, plan: Plan) -> int | None:
    """The size of the torch zip ``plan`` writes (``None``: the tree cannot be written, which
    the fix itself then reports)."""
    from ckpt_guard.rewrite.fix import FixError, _projected_size, decide_overflow

    ckpt = analysis.checkpoint
    if (ckpt.format == Format.TORCH_LEGACY and ckpt.size_bytes <= SCAN_LEGACY_BELOW
            and any(i.target == "float16" for i in plan.cast)):
        # Scan on a copy: the plan itself is decided again by the fix that carries it out.
        plan = dc_replace(plan, cast=[dc_replace(i) for i in plan.cast],
                          kept_fp32=list(plan.kept_fp32), value_kept=dict(plan.value_kept),
                          notes=list(plan.notes))
        try:
            with open(ckpt.path, "rb") as src:
                decide_overflow(plan, src, None)
        except (OSError, FixError):
            return None  # the fix itself reports why
    try:
        return _projected_size(plan, ckpt.archive_prefix or "archive", ckpt.byteorder)[1]
    except FixError:
        return None


def output_size_for(convert: str | None) -> Callable[[Analysis, Plan], int | None]:
    """The output-size projection planning asks for: a legacy file converted to safetensors
    is written as a new file (its input stays), so the zip it is not rewritten as cannot make
    it grow; one that cannot be converted (not a flat state dict) stays a torch zip."""
    if convert != Format.SAFETENSORS:
        return projected_size

    def size(analysis: Analysis, plan: Plan) -> int | None:
        from ckpt_guard.rewrite.safetensors import convertible

        return None if convertible(plan.root)[0] is not None else projected_size(analysis,
                                                                                 plan)
    return size


def make_plan(analysis: Analysis, rules: Mapping[str, Any], *,
              convert: str | None = None) -> Plan:
    """What fixing ``analysis.checkpoint`` under ``rules`` (rule id → RuleConfig) does."""
    if analysis.checkpoint.format in DIRECTORY_FORMATS:  # deletes training files, if any
        return plan_directory(analysis, rules)
    # A DCP directory is planned for its conversion to safetensors (rewrite/dcp_convert.py).
    return plan_file(analysis, rules, output_size=output_size_for(convert),
                     formats=(*REWRITABLE, Format.DCP_DIR))


def replay(root: Any, changes: Iterable[Change]) -> Any:
    """A copy of ``root`` with ``changes`` carried out (a plan's changes describe its tree
    completely: replaying them on the original gives the plan's ``root``)."""
    out = copy_tree(root)
    for change in changes:
        apply(out, change)
    return out
