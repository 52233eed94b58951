"""The rule registry is the one source: schema, built-in defaults, init template, SARIF
metadata, fixability and the JSON contract's rule list all come from (or match) it."""

from __future__ import annotations

import json
from importlib import resources

import pytest

from ckpt_guard.policy import FIXABLE_RULES, builtin_policy, init_text
from ckpt_guard.policy.rules import ALL, BY_ID, RULE_IDS, generate
from ckpt_guard.policy.rules.registry import EVALUATION_ORDER
from ckpt_guard.policy.validate import schema
from ckpt_guard.policy.yamlsrc import parse
from ckpt_guard.report import sarif
from ckpt_guard.report.model import RULES
from ckpt_guard.vocab import Action

REGENERATE = "run scripts/gen_policy_files.py to regenerate it from the rule registry"


def _resource(name: str) -> str:
    return resources.files("ckpt_guard.policy").joinpath(name).read_text("utf-8")


def test_schema_is_generated_from_the_registry() -> None:
    assert schema() == generate.schema(schema()), f"schema.json drifted: {REGENERATE}"


def test_defaults_are_generated_from_the_registry() -> None:
    text = _resource("defaults.yml")
    assert text == generate.splice(text, generate.defaults_rules_yaml()), \
        f"defaults.yml drifted: {REGENERATE}"
    assert json.loads(_resource("defaults.json")) == parse(text)[0].data, \
        f"defaults.json drifted: {REGENERATE}"


def test_init_template_is_generated_from_the_registry() -> None:
    text = init_text()
    assert text == generate.splice(text, generate.init_rules_yaml()), \
        f"init_template.yml drifted: {REGENERATE}"
    fixable = ", ".join(FIXABLE_RULES)
    assert f"(only for {fixable})" in text  # the action table names exactly the fixable rules


@pytest.mark.parametrize("rule", ALL, ids=lambda r: r.id)
def test_every_rule_is_complete(rule) -> None:
    assert rule.summary and rule.help and rule.template.startswith("  ")
    assert f"  {rule.id}:" in rule.template
    # Its template block parses to its built-in setting.
    data = parse("rules:\n" + rule.template)[0].data
    assert data["rules"][rule.id] == rule.defaults()
    cfg = builtin_policy().rules[rule.id]
    assert cfg.action == rule.default_action
    assert set(cfg.options) == {o.name for o in rule.options}
    assert (rule.id in FIXABLE_RULES) is rule.fixable
    assert rule.default_action in rule.actions
    if rule.evaluate is not None:
        assert rule in EVALUATION_ORDER


def test_registry_is_the_contracts_rule_list_and_sarifs() -> None:
    assert RULES == RULE_IDS == tuple(BY_ID)
    assert set(sarif.RULE_HELP) == set(RULE_IDS)
    for rule in ALL:
        meta = sarif._rule(rule.id)
        assert meta["shortDescription"]["text"] == rule.summary
        assert meta["help"]["text"] == rule.help
    assert all(r.default_action in Action for r in ALL)


def test_every_rule_is_documented_in_the_readme() -> None:
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text("utf-8")
    table = readme[readme.index("## What it finds"):readme.index("## Command line")]
    assert [line.split("`")[1] for line in table.splitlines() if line.startswith("| `")] \
        == list(RULE_IDS)


def test_rules_reference_is_generated_from_the_registry() -> None:
    from pathlib import Path

    doc = Path(__file__).resolve().parents[2] / "docs" / "rules.md"
    assert doc.read_text("utf-8") == generate.rules_markdown(), f"docs/rules.md drifted: {REGENERATE}"
