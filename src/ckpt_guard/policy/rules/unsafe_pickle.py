"""``unsafe-pickle``: a pickle whose globals can run code, touch files, network or processes."""

from __future__ import annotations

from collections.abc import Callable

from ckpt_guard.policy.rules.base import Context, Finding, Rule, listing
from ckpt_guard.vocab import Action, Format

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from ckpt_guard.analyze.model import Analysis
    from ckpt_guard.policy.model import RuleConfig


def trusted(qualnames: list[str], patterns: tuple[str, ...]) -> set[str]:
    """The ``qualnames`` a ``trusted-globals`` glob matches (``*`` crosses dots:
    ``mycompany.*`` covers its subpackages). Callers only offer ``needs-code`` globals:
    trust never applies to an ``unsafe`` one."""
    if not patterns:
        return set()
    from ckpt_guard.analyze.known_classes import compile_pattern

    compiled = [compile_pattern(p, cross_dots=True) for p in patterns]
    return {q for q in qualnames if any(c.match(q) for c in compiled)}


def evaluate(a: Analysis, cfg: RuleConfig, ctx: Context) -> Finding | None:
    if a.checkpoint.format == Format.DCP_DIR:
        return from_verdicts(a.globals, cfg, ctx, loader=_dcp_loader)
    return from_verdicts(a.globals, cfg, ctx)


def _dcp_loader(verdicts: list) -> str:
    """What torch.distributed.checkpoint's load does with the pickles named (filesystem.py
    ``read_metadata``; default_planner.py ``load_bytes``)."""
    meta = any(v.use.member.split(":", 1)[0] == ".metadata" for v in verdicts)
    items = any(v.use.member.split(":", 1)[0] != ".metadata" for v in verdicts)
    how = ([".metadata with plain pickle.load"] if meta else []) + (
        ["non-tensor items with torch.load(weights_only=False)"] if items else [])
    return f"dcp.load unpickles {' and '.join(how)}: loading this checkpoint can run arbitrary code"


def from_verdicts(judged: list, cfg: RuleConfig, ctx: Context, *,
                  partial: bool = False, loader: Callable[[list], str] | None = None
                  ) -> Finding | None:
    """The finding for ``judged`` global verdicts; ``partial``: the globals of a file read
    only up to a failure (what its pickles referenced before it stops parsing); ``loader``
    words what runs the pickles named (default: ``torch.load(weights_only=False)``)."""
    verdicts = [g for g in judged if g.safety == "unsafe"]
    if not verdicts:
        return None
    parts = []
    pickled = [v for v in verdicts if v.use.opcode != "TorchScript"]
    code = [v for v in verdicts if v.use.opcode == "TorchScript"]
    before = " before it stops parsing" if partial else ""
    if pickled:
        runs = loader(pickled) if loader else ("torch.load(weights_only=False) on this file "
                                               "can run arbitrary code")
        parts.append(f"references {_named(pickled, ctx)}{before}: {runs}")
    if code:  # a TorchScript archive is a program: torch.load hands it to torch.jit.load
        parts.append(f"TorchScript code calls {_named(code, ctx)}: torch.load/torch.jit.load "
                     "compile and run this code")
    detail = {"globals": [{"global": v.use.qualname, "reason": v.reason, "opcode": v.use.opcode,
                           "member": v.use.member} for v in verdicts]}
    return RULE.finding(cfg, "; ".join(parts), 0, detail)


def _named(verdicts: list, ctx: Context) -> str:
    """``name (reason), … in member, …`` for unsafe verdicts."""
    listed: dict[str, str] = {}
    members: list[str] = []
    for v in verdicts:
        listed.setdefault(v.use.qualname, v.reason)
        if v.use.member and v.use.member not in members:
            members.append(v.use.member)
    trust_cfg = ctx.rules.get("needs-code")
    ignored = trusted(list(listed), trust_cfg.trusted_globals) if trust_cfg else set()
    for q in ignored:
        listed[q] += "; trusted-globals does not apply: trust never covers an unsafe global"
    names = [f"{q} ({r})" if r else q for q, r in listed.items()]
    where = f" in {', '.join(members)}" if members else ""
    return f"{listing(names)}{where}"


RULE = Rule(
    id="unsafe-pickle",
    default_action=Action.FAIL,
    evaluate=evaluate,
    security="9.0",
    summary="Pickle that can run code when loaded",
    help="The file's pickle references globals that can execute code, touch files, the network "
         "or processes: torch.load(weights_only=False) on it can run arbitrary code. Do not "
         "load it; rebuild the checkpoint from trusted code and save tensors only (a "
         "state_dict, or safetensors).",
    template="""\
  # Pickles referencing globals that can run code, touch files/network/processes or import
  # modules (os.system, builtins.eval, subprocess, …). Loading such a file with
  # torch.load(weights_only=False) can execute arbitrary code.
  unsafe-pickle: fail
""",
)
