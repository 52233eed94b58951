"""The shipped policy files, generated from the rule registry.

``schema.json`` (each rule's options), ``defaults.yml``/``defaults.json`` (the built-in
policy) and ``init_template.yml`` (what ``ckpt-guard init`` writes) carry a part per rule;
that part comes from the rule's module. ``scripts/gen_policy_files.py`` rewrites the files;
``tests/policy/test_registry.py`` fails when they drift from the registry.
"""

from __future__ import annotations

import copy
import json
from typing import Any

from ckpt_guard.policy.rules import registry
from ckpt_guard.policy.rules.base import Rule

SIZE_OR_NULL = {"title": "size", "type": ["integer", "string", "null"], "minimum": 0}


def schema(current: dict[str, Any]) -> dict[str, Any]:
    """``current`` (the shipped schema) with every rule's part regenerated."""
    out = copy.deepcopy(current)
    defs = out["$defs"]
    for key in [k for k in defs if k.startswith("rule-")]:
        del defs[key]
    defs["size-or-null"] = {**SIZE_OR_NULL, "pattern": defs["size"]["pattern"]}
    defs["rules"]["properties"] = {r.id: {"$ref": f"#/$defs/rule-{r.id}"}
                                   for r in registry.ALL}
    for r in registry.ALL:
        defs[f"rule-{r.id}"] = _rule_schema(r)
    return out


def _rule_schema(r: Rule) -> dict[str, Any]:
    action = {"$ref": "#/$defs/action" if r.fixable else "#/$defs/check-action"}
    props = {"action": action, **{o.name: dict(o.schema) for o in r.options}}
    return {"if": {"type": "string"}, "then": action,
            "else": {"type": "object", "additionalProperties": False, "properties": props}}


def _scalar(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    text = str(value)
    return json.dumps(text) if not text or text[0] in "*&!|>'\"%@`[]{},#?:-" else text


def defaults_rules_yaml() -> str:
    """The ``rules:`` section of ``defaults.yml``."""
    lines = ["rules:"]
    for r in registry.ALL:
        d = r.defaults()
        if isinstance(d, str):
            lines.append(f"  {r.id}: {d}")
            continue
        lines.append(f"  {r.id}:")
        for key, value in d.items():
            if isinstance(value, (list, tuple)) and value:
                lines.append(f"    {key}:")
                lines.extend(f"      - {json.dumps(str(v))}" for v in value)
            elif isinstance(value, (list, tuple)):
                lines.append(f"    {key}: []")
            else:
                lines.append(f"    {key}: {_scalar(value)}")
    return "\n".join(lines) + "\n"


def init_rules_yaml() -> str:
    """The ``rules:`` section of ``init_template.yml``: each rule's explained block."""
    return "rules:\n" + "\n".join(r.template for r in registry.ALL)


def splice(text: str, section: str) -> str:
    """``text`` (a policy file) with its top-level ``rules:`` section replaced by
    ``section``: from the ``rules:`` line to the next line starting in column 0 other than
    a blank one (``convert:`` or the comment above it)."""
    lines = text.splitlines(keepends=True)
    start = next(i for i, ln in enumerate(lines) if ln.rstrip() == "rules:")
    end = start + 1
    while end < len(lines) and (not lines[end].strip() or lines[end][0] in " \t"):
        end += 1
    # Keep the blank line(s) that separate the section from what follows.
    blank = end
    while blank > start + 1 and not lines[blank - 1].strip():
        blank -= 1
    return "".join(lines[:start]) + section + "".join(lines[blank:end]) + "".join(lines[end:])


def rules_markdown() -> str:
    """``docs/rules.md``: every rule's id, built-in action, fixability, options with their
    defaults and help — generated, never edited by hand."""
    out = ["# Rules", "",
           "<!-- generated from the rule registry by scripts/gen_policy_files.py; "
           "do not edit -->", "",
           "| rule | built-in action | `fix` can remove it | options (built-in value) |",
           "|---|---|---|---|"]
    for r in registry.ALL:
        opts = ", ".join(f"`{o.name}` ({_scalar(o.default) if not isinstance(o.default, list) else json.dumps(o.default)})"  # noqa: E501
                         for o in r.options) or "—"
        out.append(f"| [`{r.id}`](#{r.id}) | {r.default_action} | "
                   f"{'yes' if r.fixable else 'no'} | {opts} |")
    for r in registry.ALL:
        out += ["", f"## {r.id}", "", f"**{r.summary}.** {r.help}", "",
                "As `ckpt-guard init` writes it:", "", "```yaml", r.template.rstrip("\n"),
                "```"]
    return "\n".join(out) + "\n"
