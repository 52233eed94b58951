"""``file-size``: a weight file (or the LFS object a pointer names) over ``max-bytes``."""

from __future__ import annotations

from ckpt_guard.policy.rules.base import Context, Finding, Option, Rule
from ckpt_guard.units import format_bytes, format_limit
from ckpt_guard.vocab import Action, Format

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from ckpt_guard.analyze.model import Analysis
    from ckpt_guard.policy.model import RuleConfig


def lfs_pointed_size(a: Analysis) -> int | None:
    """The size an LFS pointer declares for its object (``None``: not a pointer, or none)."""
    if a.checkpoint.format != Format.LFS_POINTER:
        return None
    size = a.checkpoint.metadata.get("size")
    return size if isinstance(size, int) and not isinstance(size, bool) else None


def evaluate(a: Analysis, cfg: RuleConfig, ctx: Context) -> Finding | None:
    what, size = "", a.checkpoint.size_bytes
    if a.checkpoint.format == Format.LFS_POINTER:
        size = lfs_pointed_size(a)
        if size is None:
            return None
        what = "the LFS object is "
    if cfg.max_bytes is None or size <= cfg.max_bytes:
        return None
    msg = f"{what}{format_bytes(size)}, over max-bytes {format_limit(cfg.max_bytes)}"
    return RULE.finding(cfg, msg, size, {"size_bytes": size, "max_bytes": cfg.max_bytes})


RULE = Rule(
    id="file-size",
    default_action=Action.OFF,
    evaluate=evaluate,
    options=(Option("max-bytes", "100MiB", {"$ref": "#/$defs/size"}, size=True),),
    summary="Weight file over the size limit",
    help="The file is larger than the policy's `max-bytes`. Strip training state, cast to half "
         "precision, or store it outside the repository (Git LFS, release assets).",
    template="""\
  # Files larger than max-bytes (for an LFS pointer: the size of the object it points to).
  file-size:
    action: off
    max-bytes: 100MiB          # GitHub refuses files over 100 MiB
""",
)
