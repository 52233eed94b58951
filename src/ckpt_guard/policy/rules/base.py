"""What a rule is, what it says, and the wording helpers rules share.

A rule module (one per rule, e.g. :mod:`.optimizer_state`) defines ``RULE``, a :class:`Rule`:
its id, its options with their defaults, its help (SARIF) and init-template text,
``evaluate(analysis, cfg, ctx) -> Finding | None`` and — for a rule ``fix`` can act on —
``plan(analysis, cfg, ctx) -> RulePlan | None``: what its fix does to this file (typed tree
changes, casts), made on the plan's copy of the tree. A finding is fixable iff its rule's
action is ``fix`` and the rule has a non-empty plan for the file
(:mod:`ckpt_guard.policy.planning` assembles the rules' plans into one file plan). The registry
(:mod:`.registry`) lists the modules; the schema, the built-in defaults, the init template
and SARIF rule metadata are generated from it (``scripts/gen_policy_files.py``, and tests
that fail when the shipped files drift).

Messages never repeat the rule id (every surface prints it beside them) nor whether the
finding is fixable (``Finding.fixable`` carries that; each renderer says it its own way).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ckpt_guard.read.checkpoint import UnreadableError
from ckpt_guard.units import format_percent
from ckpt_guard.vocab import Action

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

    from ckpt_guard.analyze.model import Analysis
    from ckpt_guard.policy.model import RuleConfig
    from ckpt_guard.policy.plan_types import PlanContext, RulePlan
    from ckpt_guard.policy.strips import RuleView

Rules = Mapping[str, "RuleConfig"]


@dataclass(frozen=True)
class Finding:
    """One rule's verdict on one file. ``bytes`` is what the finding is about (e.g. the
    optimizer state's bytes, or what casting would save); ``fixable`` says ``ckpt-guard fix``
    can remove it. ``detail`` carries rule-specific structured data (paths, globals…)."""

    rule: str
    action: str  # fail | fix | warn (an :class:`~ckpt_guard.vocab.Action` value)
    message: str
    bytes: int = 0
    fixable: bool = False
    detail: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {"rule": str(self.rule), "action": str(self.action), "message": self.message,
             "bytes": self.bytes, "fixable": self.fixable}
        if self.detail:
            d["detail"] = self.detail
        return d


def finding_from_dict(d: dict[str, Any]) -> Finding:
    return Finding(rule=d["rule"], action=d["action"], message=d["message"],
                   bytes=d.get("bytes", 0), fixable=d.get("fixable", False),
                   detail=d.get("detail", {}))


@dataclass(frozen=True)
class Option:
    """One option of a rule as the policy file spells it. ``default`` is the built-in value
    as written in YAML (``"10MB"``; sizes are parsed to bytes when a policy is built);
    ``schema`` is the JSON Schema of its value; ``size`` marks byte sizes."""

    name: str
    default: Any
    schema: Mapping[str, Any]
    size: bool = False


class Context:
    """What a rule may consult beyond its own config: every rule's config for this file (a
    rule such as ``unsafe-pickle`` reads ``needs-code``'s ``trusted-globals``), the path as
    reported, and the file's size in the base revision (``size-growth``; ``None``: no base
    given; ``0``: the file is new). (A plain class: rules only read it, and a dataclass
    costs every cold ``check`` ~0.5 ms to create.)"""

    __slots__ = ("rules", "path", "base_size")

    def __init__(self, rules: Rules, path: str = "", base_size: int | None = None) -> None:
        self.rules, self.path, self.base_size = rules, path, base_size


Evaluate = Callable[["Analysis", "RuleConfig", Context], "Finding | None"]


def __getattr__(name: str) -> Any:
    # PlanContext is defined with the plan types (policy.plan_types, imported only when a plan
    # is made: a check of a clean file makes none) and still importable from here.
    if name == "PlanContext":
        from ckpt_guard.policy.plan_types import PlanContext

        return PlanContext
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


Plan = Callable[["Analysis", "RuleView", "PlanContext"], "RulePlan | None"]


@dataclass(frozen=True)
class Rule:
    """A rule, first-class. ``plan``: what a fix of it does to one file (``None``: the rule has
    no fix). ``fixable``: ``ckpt-guard fix`` can act on it (the rule then accepts the ``fix``
    action) — set by having a ``plan``. ``removes``: its finding's ``bytes`` are bytes a fix
    takes out (counted in ``bytes_removable``). ``summary``/``help``: SARIF's short and full
    description. ``template``: the rule's block in ``ckpt-guard init``'s policy (YAML with
    comments, two-space indented under ``rules:``). ``security``: SARIF security-severity."""

    id: str
    default_action: Action
    summary: str
    help: str
    template: str
    evaluate: Evaluate | None = None
    options: tuple[Option, ...] = ()
    fixable: bool = False
    removes: bool = False
    security: str | None = None
    plan: Plan | None = None

    def __post_init__(self) -> None:
        if self.plan is not None:
            object.__setattr__(self, "fixable", True)  # fixable means: has a plan

    @property
    def actions(self) -> tuple[Action, ...]:
        if self.fixable:
            return tuple(Action)
        return (Action.FAIL, Action.WARN, Action.OFF)

    def option(self, name: str) -> Option:
        return next(o for o in self.options if o.name == name)

    def defaults(self) -> dict[str, Any] | str:
        """The built-in setting as written in ``defaults.yml``: the bare action when the rule
        has no options, else ``{action: …, option: default…}``."""
        if not self.options:
            return str(self.default_action)
        return {"action": str(self.default_action),
                **{o.name: o.default for o in self.options}}

    def finding(self, cfg: RuleConfig, message: str, nbytes: int, detail: dict[str, Any],
                *, can_fix: bool = True) -> Finding:
        """A finding of this rule under ``cfg``: fixable when this rule fixes (and
        ``can_fix``); for a rule with a ``plan``, :mod:`ckpt_guard.policy.planning` then
        keeps it fixable only where the file's plan fixes it."""
        return Finding(rule=self.id, action=cfg.action, message=message, bytes=nbytes,
                       fixable=cfg.fixes and can_fix and self.fixable, detail=detail)


# --- wording -----------------------------------------------------------------------------

MAX_LISTED = 5
_SEVERITY = {Action.FAIL: 0, Action.FIX: 0, Action.WARN: 1}


def by_severity(findings: list[Finding]) -> list[Finding]:
    """Failing findings first (stable: rule order within each group)."""
    return sorted(findings, key=lambda f: _SEVERITY.get(f.action, 2))


def share(nbytes: int, a: Analysis, *, short: bool = False) -> str:
    if not nbytes or a.tensor_bytes_total <= 0:
        return ""
    pct = format_percent(nbytes, a.tensor_bytes_total)
    return f", {pct} of tensor bytes" if short else f" ({pct} of tensor bytes)"


def at(paths: list[str]) -> str:
    if not paths:
        return ""
    shown = ["the top level" if p == "" else f"'{p}'" for p in paths[:MAX_LISTED]]
    more = f" and {len(paths) - MAX_LISTED} more" if len(paths) > MAX_LISTED else ""
    return " at " + ", ".join(shown) + more


def and_(items: list[str]) -> str:
    if len(items) > MAX_LISTED:
        return listing(items)
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def listing(items: list[str], limit: int = MAX_LISTED) -> str:
    shown = ", ".join(items[:limit])
    if len(items) > limit:
        shown += f", +{len(items) - limit} more"
    return shown


def one_line(err: BaseException) -> str:
    if isinstance(err, UnreadableError):
        text = str(err)
    elif isinstance(err, OSError):
        text = f"cannot read: {err.strerror or err}"
    else:
        text = f"{type(err).__name__}: {err}" if str(err) else type(err).__name__
    text = " ".join(text.split())
    return text if len(text) <= 300 else text[:299] + "…"


def in_member(f: Finding, member: str, *, fixable: bool | None = None) -> Finding:
    """``f`` of a checkpoint directory's ``member``; ``fixable=False`` when fixing the
    directory does not remove it (it only deletes training files)."""
    message = f"{member}: {f.message}"
    if f.fixable and fixable is False:
        message += (" (name the file to fix it: fixing a directory only deletes training "
                    "files)")
    return Finding(rule=f.rule, action=f.action, message=message, bytes=f.bytes,
                   fixable=f.fixable if fixable is None else fixable,
                   detail={**f.detail, "member": member})


def enabled(rules: Rules, rule_id: str) -> RuleConfig | None:
    """``rules[rule_id]`` when present and not ``off``."""
    cfg = rules.get(rule_id)
    return cfg if cfg is not None and cfg.enabled else None
