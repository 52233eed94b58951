"""``lfs-pointer``: a Git LFS pointer checked instead of the weights it points to."""

from __future__ import annotations

from ckpt_guard.policy.rules.base import Context, Finding, Rule
from ckpt_guard.policy.rules.file_size import lfs_pointed_size
from ckpt_guard.units import format_bytes
from ckpt_guard.vocab import Action, Format

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from ckpt_guard.analyze.model import Analysis
    from ckpt_guard.policy.model import RuleConfig


def evaluate(a: Analysis, cfg: RuleConfig, ctx: Context) -> Finding | None:
    if a.checkpoint.format != Format.LFS_POINTER:
        return None
    pointed = lfs_pointed_size(a)
    oid = str(a.checkpoint.metadata.get("oid", ""))
    what = f"a {format_bytes(pointed)} object" if pointed is not None else "an object"
    short = f" ({oid[:19]}…)" if len(oid) > 19 else (f" ({oid})" if oid else "")
    target = f' --include="{ctx.path}"' if ctx.path else ""
    msg = (f"Git LFS pointer to {what}{short}, not the weights themselves: fetch LFS objects "
           f"to check it (`git lfs pull{target}`, or `lfs: true` on actions/checkout)")
    return RULE.finding(cfg, msg, pointed or 0, {"oid": oid, "size": pointed})


RULE = Rule(
    id="lfs-pointer",
    default_action=Action.WARN,
    evaluate=evaluate,
    summary="Git LFS pointer checked instead of the weights",
    help="The file is a Git LFS pointer; the weights were not fetched, so only the pointer's "
         "declared size was checked. Run `git lfs pull`, or set `lfs: true` on "
         "actions/checkout.",
    template="""\
  # Git LFS pointer files checked instead of the weights (LFS objects not fetched; in GitHub
  # Actions set `lfs: true` on actions/checkout).
  lfs-pointer: warn
""",
)
