"""``ema-duplicate``: the weights stored twice, trained and as an exponential moving average."""

from __future__ import annotations

from ckpt_guard.policy.keep_fp32 import ema_dropped_role
from ckpt_guard.policy.rules.base import Context, Finding, Option, Rule, at
from ckpt_guard.units import format_bytes
from ckpt_guard.vocab import Action, Role

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from ckpt_guard.analyze.model import Analysis
    from ckpt_guard.policy.model import RuleConfig
    from ckpt_guard.policy.plan_types import PlanContext, RulePlan
    from ckpt_guard.policy.strips import RuleView


def evaluate(a: Analysis, cfg: RuleConfig, ctx: Context) -> Finding | None:
    dropped = ema_dropped_role(a, ctx.rules)
    if dropped is None:
        return None
    # From the option, not from the role dropped: mmengine's fix drops ema_state_dict with
    # either keep (its EMAHook already swapped the EMA into state_dict).
    kept = Role.EMA if str(cfg.options.get("keep", "ema")) == "ema" else Role.WEIGHTS
    ema_b, w_b = a.bytes_by_role[Role.EMA], a.bytes_by_role[Role.WEIGHTS]
    paths = {r: [s.path for s in a.subtrees if s.role == r] for r in (Role.EMA, Role.WEIGHTS)}
    freed = a.bytes_by_role[dropped]
    msg = (f"EMA weights{at(paths[Role.EMA])} ({format_bytes(ema_b)}) duplicate the "
           f"weights{at(paths[Role.WEIGHTS])} ({format_bytes(w_b)}); a fix keeps the "
           f"{'EMA copy' if kept == Role.EMA else 'training weights'} (keep: {kept}) and "
           f"removes {format_bytes(freed)}")
    detail = {"keep": str(kept), "ema_paths": paths[Role.EMA],
              "weights_paths": paths[Role.WEIGHTS], "ema_bytes": ema_b, "weights_bytes": w_b}
    return RULE.finding(cfg, msg, freed, detail)


def plan(a: Analysis, cfg: RuleView, ctx: PlanContext) -> RulePlan:
    """One copy of the weights kept, as the framework's own strip does (``keep: ema``: the
    EMA copy becomes the weights; ``keep: weights``: the EMA copy goes)."""
    from ckpt_guard.policy.plan_types import RulePlan  # (imported by plans only: a check
    from ckpt_guard.policy.strips import Edits, plan_ema  # of a clean file makes none)

    rp = RulePlan(RULE.id)
    plan_ema(a, Edits(ctx.tree, rp), str(cfg.options.get("keep", "ema")))
    return rp


RULE = Rule(
    id="ema-duplicate",
    default_action=Action.WARN,
    removes=True,
    evaluate=evaluate,
    plan=plan,
    options=(Option("keep", "ema", {"type": "string", "enum": ["ema", "weights"]}),),
    summary="Duplicate EMA copy of the weights",
    help="The file holds the weights twice: the trained weights and their exponential moving "
         "average. Set the rule to `fix` (with `keep: ema` or `keep: weights`) and run "
         "`ckpt-guard fix` to keep one copy.",
    template="""\
  # A second copy of the weights kept as an exponential moving average (ultralytics `ema`,
  # timm `state_dict_ema`, …).
  ema-duplicate:
    action: warn
    # Which copy a fix keeps: `ema` (what the frameworks ship for inference) or `weights`.
    keep: ema
""",
)
