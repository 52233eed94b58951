"""Every rule, in the order the documentation, the schema and the init template list them.

Adding a rule: write its module (``RULE`` + ``evaluate``, and ``plan`` when ``fix`` can act on
it), add it to :data:`ALL` (and, if it judges single files, to :data:`EVALUATION_ORDER`; if it
plans, to :data:`PLAN_ORDER`), run ``scripts/gen_policy_files.py`` to
regenerate the schema, the built-in defaults and the init template, and test it.
"""

from __future__ import annotations

from ckpt_guard.policy.rules import (
    ema_duplicate,
    file_size,
    fp32_payload,
    lfs_pointer,
    needs_code,
    optimizer_state,
    shard_index,
    size_growth,
    training_state,
    unreadable,
    unsafe_pickle,
)
from ckpt_guard.policy.rules.base import Rule

ALL: tuple[Rule, ...] = (
    optimizer_state.RULE, training_state.RULE, ema_duplicate.RULE, fp32_payload.RULE,
    file_size.RULE, size_growth.RULE, unsafe_pickle.RULE, needs_code.RULE, lfs_pointer.RULE,
    shard_index.RULE, unreadable.RULE,
)
BY_ID: dict[str, Rule] = {r.id: r for r in ALL}
RULE_IDS: tuple[str, ...] = tuple(BY_ID)
# Rules `ckpt-guard fix` can act on (they accept the `fix` action).
FIXABLE_RULES: tuple[str, ...] = tuple(r.id for r in ALL if r.fixable)
# The order rules judge one file in (findings are then sorted by severity, stably): what
# the file is first (a pointer, a pickle that runs code), then baggage, then sizes.
EVALUATION_ORDER: tuple[Rule, ...] = (
    lfs_pointer.RULE, unsafe_pickle.RULE, needs_code.RULE, optimizer_state.RULE,
    training_state.RULE, ema_duplicate.RULE, fp32_payload.RULE, file_size.RULE,
    size_growth.RULE,
)


def get(rule_id: str) -> Rule:
    return BY_ID[rule_id]
# The order the rules' plans edit a file's tree in (policy.planning): which copy of the
# weights is kept first (a framework's strip then trims what will be the model: ultralytics'
# model.args, model.criterion), then what is stripped, then what is left is cast.
PLAN_ORDER: tuple[Rule, ...] = (
    ema_duplicate.RULE, optimizer_state.RULE, training_state.RULE, fp32_payload.RULE,
)
