"""``optimizer-state``: optimizer state (Adam moments, SGD momentum…) in a weight file."""

from __future__ import annotations

from ckpt_guard.policy.describe import find, optimizer_summary
from ckpt_guard.policy.rules.base import Context, Finding, Option, Rule, at, share
from ckpt_guard.units import format_bytes
from ckpt_guard.vocab import Action, Role

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from ckpt_guard.analyze.model import Analysis
    from ckpt_guard.policy.model import RuleConfig
    from ckpt_guard.policy.plan_types import PlanContext, RulePlan
    from ckpt_guard.policy.strips import RuleView

REMOVE_TRAINING_FILES = Option("remove-training-files", False, {"type": "boolean"})


def evaluate(a: Analysis, cfg: RuleConfig, ctx: Context) -> Finding | None:
    subtrees = [s for s in a.subtrees if s.role == Role.OPTIMIZER]
    nbytes = a.bytes_by_role.get(Role.OPTIMIZER, 0)
    if not (subtrees or nbytes):
        return None
    descriptions = []
    for s in subtrees:
        summary = optimizer_summary(find(a.checkpoint.root, s.path)) or s.what
        if summary and summary not in descriptions:
            descriptions.append(summary)
    where = at([s.path for s in subtrees])
    msg = (f"{format_bytes(nbytes)}{share(nbytes, a)}{where}" if nbytes
           else f"state{where} (no tensor data)")
    if descriptions:
        msg += f": {'; '.join(descriptions)}"
    return RULE.finding(cfg, msg, nbytes, {"paths": [s.path for s in subtrees]})


def plan(a: Analysis, cfg: RuleView, ctx: PlanContext) -> RulePlan:
    """The framework's own strip of its optimizer keys, then every optimizer subtree left
    set to None (a file that *is* the state has no plan: remove the file instead)."""
    from ckpt_guard.policy.plan_types import RulePlan  # (imported by plans only: a check
    from ckpt_guard.policy.strips import Edits, plan_optimizer  # of a clean file makes none)

    rp = RulePlan("optimizer-state")
    plan_optimizer(a, Edits(ctx.tree, rp))
    return rp


RULE = Rule(
    id="optimizer-state",
    default_action=Action.FAIL,
    removes=True,
    evaluate=evaluate,
    plan=plan,
    options=(REMOVE_TRAINING_FILES,),
    summary="Optimizer state in a weight file",
    help="Optimizer state (e.g. Adam's exp_avg/exp_avg_sq, SGD momentum) is only needed to "
         "resume training; it is often twice the size of the weights. Set the rule to `fix` "
         "and run `ckpt-guard fix`, or save only the model's state_dict for release.",
    template="""\
  # Optimizer state (Adam's exp_avg/exp_avg_sq, SGD momentum, Lightning optimizer_states,
  # DeepSpeed optim files, Hugging Face optimizer.pt) — usually 2x the weights.
  optimizer-state:
    action: fail
    # Checkpoint directories (HF Trainer checkpoint-N/, DeepSpeed): may `fix` delete the
    # optimizer files (optimizer.pt, DeepSpeed *_optim_states.pt)? Never done silently.
    remove-training-files: false
""",
)
