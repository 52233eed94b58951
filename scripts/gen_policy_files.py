#!/usr/bin/env python3
"""Regenerate the policy files shipped in src/ckpt_guard/policy/ from the rule registry:
schema.json (rule options), defaults.yml + defaults.json (built-in policy) and
init_template.yml (`ckpt-guard init`), and docs/rules.md. Run after changing a rule module; the tests in
tests/policy/test_registry.py fail until the files match."""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from ckpt_guard.policy.rules import generate  # noqa: E402
from ckpt_guard.policy.yamlsrc import parse  # noqa: E402

POLICY = ROOT / "src" / "ckpt_guard" / "policy"


def main() -> int:
    schema_path = POLICY / "schema.json"
    schema = generate.schema(json.loads(schema_path.read_text("utf-8")))
    schema_path.write_text(json.dumps(schema, indent=2, ensure_ascii=False) + "\n", "utf-8")
    defaults = POLICY / "defaults.yml"
    text = generate.splice(defaults.read_text("utf-8"), generate.defaults_rules_yaml())
    defaults.write_text(text, "utf-8")
    src, problems = parse(text)
    if problems or src is None:
        raise SystemExit(f"defaults.yml does not parse: {problems}")
    (POLICY / "defaults.json").write_text(json.dumps(src.data, indent=2) + "\n", "utf-8")
    template = POLICY / "init_template.yml"
    template.write_text(generate.splice(template.read_text("utf-8"),
                                        generate.init_rules_yaml()), "utf-8")
    (ROOT / "docs" / "rules.md").write_text(generate.rules_markdown(), "utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
