"""Adding a rule touches one module plus its tests: a throwaway rule, written here as its
module would be and registered as its line in ``registry.py`` would register it, shows up in
the generated schema, built-in defaults, init template and rules docs, is evaluated, has its
findings made fixable by its own plan, and is carried out by ``fix`` — with no other module
edited. (Then ``scripts/gen_policy_files.py`` regenerates the shipped files. Tables other
modules derive from the registry when they are imported — SARIF help, report rule ids,
policy size options — pick a rule up from its registry line; a rule registered at run time,
as here, is not in them.)"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import jsonschema
import pytest
import torch

from ckpt_guard.analyze import analyze
from ckpt_guard.analyze.tree_ops import storages_of
from ckpt_guard.policy import RuleConfig
from ckpt_guard.policy.plan_types import RulePlan
from ckpt_guard.policy.rules import evaluate, generate, registry
from ckpt_guard.policy.rules.base import Context, Finding, Option, PlanContext, Rule
from ckpt_guard.policy.strips import Edits, RuleView
from ckpt_guard.read import read_path
from ckpt_guard.read.tree import as_mapping
from ckpt_guard.rewrite import fix_file
from ckpt_guard.vocab import Action
from tests.rewrite.helpers import fix_rules

if TYPE_CHECKING:
    from ckpt_guard.analyze.model import Analysis

SCHEMA = Path(generate.__file__).resolve().parents[1] / "schema.json"


# --- the rule's module ------------------------------------------------------------------

def _evaluate(a: Analysis, cfg: RuleConfig, ctx: Context) -> Finding | None:
    m = as_mapping(a.checkpoint.root)
    if not m or "debug" not in m:
        return None
    nbytes = sum(st.nbytes for st in storages_of(m["debug"]).values())
    return RULE.finding(cfg, f"debug dump at 'debug' ({nbytes} bytes)", nbytes, {})


def _plan(a: Analysis, cfg: RuleView, ctx: PlanContext) -> RulePlan:
    rp = RulePlan(RULE.id)
    Edits(ctx.tree, rp).drop("debug")
    return rp


RULE = Rule(
    id="debug-dump", default_action=Action.WARN, summary="Debug tensors in a weight file",
    help="Activations dumped for debugging. Set the rule to `fix` to drop them.",
    template="  # Activations dumped for debugging.\n  debug-dump:\n    action: warn\n"
             "    max-items: 3\n",
    evaluate=_evaluate, plan=_plan, removes=True,
    options=(Option("max-items", 3, {"type": "integer", "minimum": 0}),))


# --- its registry line --------------------------------------------------------------------

@pytest.fixture
def registered(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(registry, "ALL", (*registry.ALL, RULE))
    monkeypatch.setattr(registry, "EVALUATION_ORDER", (*registry.EVALUATION_ORDER, RULE))
    monkeypatch.setattr(registry, "PLAN_ORDER", (*registry.PLAN_ORDER, RULE))
    monkeypatch.setitem(registry.BY_ID, RULE.id, RULE)


# --- its tests ----------------------------------------------------------------------------

def test_a_new_rule_is_in_every_generated_file(registered: None) -> None:
    assert RULE.fixable  # a plan makes a rule fixable
    schema = generate.schema(json.loads(SCHEMA.read_text("utf-8")))
    assert schema["$defs"]["rule-debug-dump"]["then"] == {"$ref": "#/$defs/action"}
    jsonschema.validate({"version": 1, "rules": {"debug-dump": {"action": "fix",
                                                                 "max-items": 5}}}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"version": 1, "rules": {"debug-dump": {"max-itemz": 5}}}, schema)
    assert "  debug-dump:\n    action: warn\n    max-items: 3\n" in \
        generate.defaults_rules_yaml()
    assert RULE.template in generate.init_rules_yaml()
    assert "| [`debug-dump`](#debug-dump) | warn | yes | `max-items` (3) |" in \
        generate.rules_markdown()


def test_a_new_rule_is_evaluated_planned_and_fixed(registered: None, tmp_path: Path) -> None:
    path = tmp_path / "run.pt"
    torch.save({"model": {"w": torch.arange(4.0)}, "debug": {"acts": torch.ones(1000)}}, path)
    a = analyze(read_path(str(path)))
    rules = {**fix_rules(fp32_payload={"action": "off"}),
             RULE.id: RuleConfig("warn", {"max-items": 3})}
    [f], removable = evaluate(a, rules, path="run.pt")
    assert (f.rule, f.bytes, f.fixable, removable) == ("debug-dump", 4000, False, 4000)
    rules[RULE.id] = RuleConfig("fix", {"max-items": 3})
    [f], _ = evaluate(a, rules, path="run.pt")
    assert f.fixable
    result = fix_file(str(path), a, rules)
    assert result.error is None and result.changed
    assert [str(c) for c in result.changes] == ["debug removed"]
    assert set(torch.load(path, weights_only=True)) == {"model"}
    assert evaluate(analyze(read_path(str(path))), rules, path="run.pt") == ([], 0)
