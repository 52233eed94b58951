"""``training-state``: LR schedulers, AMP grad scalers and RNG states in a weight file."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ckpt_guard.policy.plan_types import RulePlan
from ckpt_guard.policy.rules.base import Context, Finding, PlanContext, Rule, at, share
from ckpt_guard.policy.rules.optimizer_state import REMOVE_TRAINING_FILES
from ckpt_guard.policy.strips import Edits, RuleView, plan_training
from ckpt_guard.units import format_bytes
from ckpt_guard.vocab import TRAINING_ROLES, Action, Role

if TYPE_CHECKING:
    from ckpt_guard.analyze.model import Analysis
    from ckpt_guard.policy.model import RuleConfig

ROLE_WORDS = {Role.SCHEDULER: "LR scheduler", Role.SCALER: "grad scaler", Role.RNG: "RNG state",
              "training": "training metadata"}


def evaluate(a: Analysis, cfg: RuleConfig, ctx: Context) -> Finding | None:
    subtrees = [s for s in a.subtrees if s.role in TRAINING_ROLES]
    nbytes = sum(a.bytes_by_role.get(r, 0) for r in TRAINING_ROLES)
    if not (subtrees or nbytes):
        return None
    parts = [f"{ROLE_WORDS[s.role]}{at([s.path])}" for s in subtrees]
    if not parts:
        parts = [ROLE_WORDS[r] for r in TRAINING_ROLES if a.bytes_by_role.get(r)]
    size = (f"{format_bytes(nbytes)}{share(nbytes, a, short=True)}" if nbytes
            else "no tensor data")
    msg = f"{', '.join(parts)} ({size})"
    detail = {"paths": [s.path for s in subtrees],
              "by_role": {str(r): a.bytes_by_role.get(r, 0) for r in TRAINING_ROLES}}
    return RULE.finding(cfg, msg, nbytes, detail)


def plan(a: Analysis, cfg: RuleView, ctx: PlanContext) -> RulePlan:
    """The framework's own strip of its training keys, then every scheduler, scaler and RNG
    subtree left set to None."""
    rp = RulePlan("training-state")
    plan_training(a, Edits(ctx.tree, rp),
                  optimizer_fixed=ctx.view("optimizer-state").fixes)
    return rp


RULE = Rule(
    id="training-state",
    default_action=Action.WARN,
    removes=True,
    evaluate=evaluate,
    plan=plan,
    options=(REMOVE_TRAINING_FILES,),
    summary="Training-loop state in a weight file",
    help="LR scheduler, AMP grad scaler and RNG state only matter for resuming training. Set "
         "the rule to `fix` and run `ckpt-guard fix` to drop them.",
    template="""\
  # Training-loop state: LR schedulers, AMP grad scalers, RNG states.
  training-state:
    action: warn
    # As for optimizer-state, for scheduler.pt, scaler.pt, rng_state*.pth, training_args.bin.
    remove-training-files: false
""",
)
