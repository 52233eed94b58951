"""``size-growth``: a weight file grew by more than a budget against its base revision.

Judged only when a base is known: ``ckpt-guard check --base REV`` (local use, pre-commit) or
the Action (the pull request's base, the push's previous commit). A file added since the base
counts from zero: all its bytes are growth (``max-percent`` does not judge it — a percentage
of nothing is not a budget). For a Git LFS pointer the object's declared size is compared.
Per-path budgets come from the policy's ``overrides``.
"""

from __future__ import annotations

from ckpt_guard.policy.rules.base import Context, Finding, Option, Rule
from ckpt_guard.policy.rules.file_size import lfs_pointed_size
from ckpt_guard.units import format_bytes, format_limit
from ckpt_guard.vocab import Action, Format

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from ckpt_guard.analyze.model import Analysis
    from ckpt_guard.policy.model import RuleConfig

MAX_BYTES = Option("max-bytes", "10MB", {"$ref": "#/$defs/size-or-null"}, size=True)
MAX_PERCENT = Option("max-percent", None, {"type": ["number", "null"], "minimum": 0})


def _max_percent(cfg: RuleConfig) -> float | None:
    value = cfg.options.get(MAX_PERCENT.name, MAX_PERCENT.default)
    return float(value) if value is not None else None


def evaluate(a: Analysis, cfg: RuleConfig, ctx: Context) -> Finding | None:
    if ctx.base_size is None:
        return None  # no base revision to compare with
    size = a.checkpoint.size_bytes
    if a.checkpoint.format == Format.LFS_POINTER:
        pointed = lfs_pointed_size(a)
        size = pointed if pointed is not None else size
    base = ctx.base_size
    growth = size - base
    if growth <= 0:
        return None
    limit, pct_limit = cfg.max_bytes, _max_percent(cfg)
    over_bytes = limit is not None and growth > limit
    pct = growth * 100 / base if base else None
    over_pct = pct is not None and pct_limit is not None and pct > pct_limit
    if not (over_bytes or over_pct):
        return None
    if base:
        msg = (f"grew by {format_bytes(growth)} (+{pct:.1f}%) since the base, "
               f"{format_bytes(base)} → {format_bytes(size)}")
    else:
        msg = f"new since the base: {format_bytes(size)}"
    over = []
    if over_bytes:
        over.append(f"max-bytes {format_limit(limit)}")
    if over_pct:
        over.append(f"max-percent {pct_limit:g}%")
    msg += f", over {' and '.join(over)}"
    detail = {"base_bytes": base, "size_bytes": size, "growth_bytes": growth,
              "growth_percent": round(pct, 3) if pct is not None else None,
              "max_bytes": limit, "max_percent": pct_limit}
    return RULE.finding(cfg, msg, growth, detail)


RULE = Rule(
    id="size-growth",
    default_action=Action.OFF,
    evaluate=evaluate,
    options=(MAX_BYTES, MAX_PERCENT),
    summary="Weight file grew over its budget",
    help="The file grew by more than the policy allows since the base revision (the pull "
         "request's base, the previous commit of a push, or `check --base REV`). Strip "
         "training state or cast to half precision (`ckpt-guard fix`), or raise the budget "
         "for this path with an override.",
    template="""\
  # Growth against the base revision (the pull request's base or the push's previous commit
  # in the Action; `ckpt-guard check --base [REV]` locally). A file added since the base
  # counts from zero. Per-path budgets: use overrides. Judged only when a base is known.
  size-growth:
    action: off
    # Largest allowed growth in bytes (null: no byte budget).
    max-bytes: 10MB
    # Largest allowed growth in percent of the base size (null: none; not applied to new
    # files).
    max-percent: null
""",
)
