"""``unreadable``: a path that cannot be read as weights (judged from the reader's error,
not from an analysis)."""

from __future__ import annotations

from ckpt_guard.policy.rules.base import Finding, Rule, Rules, one_line
from ckpt_guard.vocab import Action


def evaluate_error(err: BaseException, rules: Rules, *, member: str = "") -> Finding | None:
    """The finding for a path the reader could not read (``None`` when the rule is off).
    ``member`` names the file inside a checkpoint directory."""
    cfg = rules.get(RULE.id)
    if cfg is None or not cfg.enabled:
        return None
    prefix = f"{member}: " if member else ""
    detail = {"error": type(err).__name__}
    if member:
        detail["member"] = member
    return RULE.finding(cfg, f"{prefix}{one_line(err)}", 0, detail)


RULE = Rule(
    id="unreadable",
    default_action=Action.FAIL,
    summary="File that cannot be read as weights",
    help="The file is not a weight file, is truncated or corrupt, exceeds a resource limit, or "
         "cannot be opened. Check that it was written completely, or exclude it in the "
         "policy.",
    template="""\
  # Files that cannot be read as weights: truncated, corrupt, not a weight file, over a
  # resource limit, permission denied, a symlink leading out of the repository.
  unreadable: fail
""",
)
