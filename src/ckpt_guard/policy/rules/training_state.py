"""``training-state``: LR schedulers, AMP grad scalers and RNG states in a weight file."""

from __future__ import annotations

from ckpt_guard.policy.rules.base import Context, Finding, Rule, at, share
from ckpt_guard.policy.rules.optimizer_state import REMOVE_TRAINING_FILES
from ckpt_guard.units import format_bytes
from ckpt_guard.vocab import TRAINING_ROLES, Action, Role

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from ckpt_guard.analyze.model import Analysis
    from ckpt_guard.policy.model import RuleConfig
    from ckpt_guard.policy.plan_types import PlanContext, RulePlan
    from ckpt_guard.policy.strips import RuleView

ROLE_WORDS = {Role.SCHEDULER: "LR scheduler", Role.SCALER: "grad scaler", Role.RNG: "RNG state",
              "training": "training metadata"}


def _dropped_with_training(a: Analysis) -> tuple[list[str], int]:
    """Keys the framework's own strip drops as training state whose tensors no rule owns
    (role ``other``: an EMA callback's averaged weights in Lightning's ``callbacks``, as
    RF-DETR saves them), and the bytes of the storages only they hold: a training-state fix
    removes them, so check must say so (else it promises less than fix removes)."""
    # No framework recognised: no strip of its own to mirror (and a cold check of such a file
    # need not import strips and the conventions).
    if a.framework == "generic":
        return [], 0
    from ckpt_guard.policy.strips import training_keys

    keys = training_keys(a)
    if not keys:
        return [], 0
    held: dict[str, tuple[bool, int]] = {}  # storage key → (only under those keys, bytes)
    paths: set[str] = set()
    for e in a.tensors:
        st = e.ref.storage
        if st is None:
            continue
        top = e.path.split(".", 1)[0]
        ours = e.role == Role.OTHER and top in keys
        if ours:
            paths.add(top)
        prev = held.get(st.key)
        held[st.key] = ((prev[0] if prev else True) and ours, st.nbytes)
    nbytes = sum(n for only, n in held.values() if only)
    return (sorted(paths), nbytes) if nbytes else ([], 0)


def evaluate(a: Analysis, cfg: RuleConfig, ctx: Context) -> Finding | None:
    subtrees = [s for s in a.subtrees if s.role in TRAINING_ROLES]
    nbytes = sum(a.bytes_by_role.get(r, 0) for r in TRAINING_ROLES)
    dropped, dropped_bytes = _dropped_with_training(a)
    nbytes += dropped_bytes
    if not (subtrees or nbytes):
        return None
    parts = [f"{ROLE_WORDS[s.role]}{at([s.path])}" for s in subtrees]
    if dropped:
        from ckpt_guard.policy.strips import mirrors

        parts.append(f"state {mirrors(a)} drops{at(dropped)}")
    if not parts:
        parts = [ROLE_WORDS[r] for r in TRAINING_ROLES if a.bytes_by_role.get(r)]
    size = (f"{format_bytes(nbytes)}{share(nbytes, a, short=True)}" if nbytes
            else "no tensor data")
    msg = f"{', '.join(parts)} ({size})"
    detail = {"paths": [s.path for s in subtrees] + dropped,
              "by_role": {str(r): a.bytes_by_role.get(r, 0) for r in TRAINING_ROLES}}
    return RULE.finding(cfg, msg, nbytes, detail)


def plan(a: Analysis, cfg: RuleView, ctx: PlanContext) -> RulePlan:
    """The framework's own strip of its training keys, then every scheduler, scaler and RNG
    subtree left set to None."""
    from ckpt_guard.policy.plan_types import RulePlan
    from ckpt_guard.policy.strips import Edits, plan_training

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
