"""``needs-code``: a pickle of classes or functions outside torch's weights_only allowlist."""

from __future__ import annotations

import sys

from ckpt_guard.policy.rules.base import Context, Finding, Option, Rule, and_, listing
from ckpt_guard.policy.rules.unsafe_pickle import trusted
from ckpt_guard.vocab import Action, Format

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from ckpt_guard.analyze.model import Analysis
    from ckpt_guard.policy.model import RuleConfig


def third_party(modules: list[str]) -> list[str]:
    """The distinct top-level packages of ``modules`` a user may have to install: not the
    standard library, not torch (which loading needs anyway)."""
    tops = dict.fromkeys(m.split(".")[0] for m in modules)
    return [t for t in tops if t and t != "torch" and t not in sys.stdlib_module_names
            and not t.startswith("_")]


def evaluate(a: Analysis, cfg: RuleConfig, ctx: Context) -> Finding | None:
    uses = list({g.use.qualname: g.use for g in a.globals if g.safety == "needs-code"}.values())
    if not uses:
        return None
    trusted_names = trusted([u.qualname for u in uses], cfg.trusted_globals)
    uses = [u for u in uses if u.qualname not in trusted_names]
    if not uses:
        return None  # every class is the team's own (trusted-globals)
    classes = [u.qualname for u in uses]
    n = len(classes)
    if a.checkpoint.format == Format.TORCHSCRIPT:
        msg = (f"TorchScript archive: torch.load(weights_only=True) refuses it, and "
               f"torch.jit.load runs the compiled code it carries (e.g. {classes[0]})")
        return RULE.finding(cfg, msg, 0, {"classes": classes})
    packages = third_party([u.module for u in uses])
    one = n == 1
    if a.checkpoint.format == Format.DCP_DIR:
        # .metadata's foreign globals are unsafe (analyze.dcp): these are in non-tensor items,
        # which DefaultLoadPlanner.load_bytes reads with torch.load(weights_only=False).
        need = (f"needs {'packages' if len(packages) != 1 else 'package'} "
                f"{and_([repr(p) for p in packages])} importable and " if packages else "")
        msg = (f"{n} {'class or function' if one else 'classes or functions'} outside torch's "
               f"weights_only allowlist in non-tensor items ({listing(classes, 3)}): dcp.load "
               f"reads those items with torch.load(weights_only=False), which {need}runs "
               f"{'its' if one else 'their'} code")
        return RULE.finding(cfg, msg, 0, {"classes": classes})
    msg = (f"{n} {'class or function' if one else 'classes or functions'} outside torch's "
           f"weights_only allowlist ({listing(classes, 3)}): torch.load(weights_only=True) "
           f"refuses this file")
    if packages:
        many = len(packages) != 1
        msg += (f"; weights_only=False needs {'packages' if many else 'package'} "
                f"{and_([repr(p) for p in packages])} importable and runs "
                f"{'their' if many else 'its'} code")
    else:
        msg += (f"; load it with weights_only=False, or allow {'it' if one else 'them'} with "
                f"torch.serialization.add_safe_globals")
    return RULE.finding(cfg, msg, 0, {"classes": classes})


RULE = Rule(
    id="needs-code",
    default_action=Action.WARN,
    evaluate=evaluate,
    security="4.0",
    options=(Option("trusted-globals", [], {
        "description": "Globs over qualified names (`mycompany.models.*`) of a team's own "
                       "classes: matching `needs-code` globals are trusted and not reported. "
                       "Never makes an `unsafe` global pass; patterns naming the standard "
                       "library or known code-execution modules are refused.",
        "type": ["array", "null"], "items": {"type": "string", "minLength": 1}}),),
    summary="Pickle that needs custom classes to load",
    help="The pickle references classes or functions outside torch's weights_only allowlist: "
         "torch.load(weights_only=True) refuses the file, and weights_only=False imports and "
         "runs their code. Save a state_dict (or safetensors) to ship plain tensors.",
    template="""\
  # Pickles of custom classes (e.g. ultralytics DetectionModel, argparse.Namespace) or of
  # functions stored as values: the file will not load with torch.load(weights_only=True),
  # and torch.load(weights_only=False) imports those packages and runs their classes' code.
  # (A function the pickle *calls* is unsafe-pickle, not this.) `action: fail` is the strict
  # mode: only files torch's weights_only loader accepts (or trusted classes) pass.
  needs-code:
    action: warn
    # Your team's own classes, as globs over qualified names (e.g. "mycompany.models.*"):
    # trusted, so not reported. Never makes an unsafe-pickle global pass; patterns naming
    # the standard library or code-execution modules (os.*, builtins.eval) are refused.
    trusted-globals: []
""",
)
