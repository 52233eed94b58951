"""Validate a parsed policy against the shipped JSON Schema and turn every schema error into
a one-line :class:`Problem` at the right line and column, in words a user can act on
(nearest valid key suggested with :mod:`difflib`)."""

from __future__ import annotations

import difflib
import json
from functools import cache
from importlib import resources
from typing import Any

import jsonschema

from ckpt_guard.policy.problem import Problem
from ckpt_guard.policy.sizes import SizeError, parse_size
from ckpt_guard.policy.yamlsrc import Path, Source

TOP_KEYS = ("version", "include", "exclude", "rules", "convert", "shards", "stash",
            "overrides")
# Spellings users write for the dtypes `cast-to` accepts.
_DTYPE_ALIASES = {"fp16": "float16", "half": "float16", "f16": "float16", "bf16": "bfloat16",
                  "torch.float16": "float16", "torch.bfloat16": "bfloat16"}

# Validators reporting on a value's own type/content: one message per value is enough, the
# first in this order wins (a list given for an action is "wrong type", not also "not one of").
_VALUE_VALIDATORS = ("type", "const", "enum", "pattern", "minimum", "minLength", "minItems")


@cache
def schema() -> dict[str, Any]:
    """The policy JSON Schema shipped in the package (Draft 2020-12)."""
    text = resources.files("ckpt_guard.policy").joinpath("schema.json").read_text("utf-8")
    return json.loads(text)


@cache
def _validator() -> jsonschema.protocols.Validator:
    return jsonschema.Draft202012Validator(schema())


def rule_ids() -> tuple[str, ...]:
    return tuple(schema()["$defs"]["rules"]["properties"])


def validate(src: Source) -> list[Problem]:
    """Problems with ``src.data`` (empty when the policy is valid)."""
    if src.data is None:
        return [Problem(1, 1, "empty policy file (it needs at least 'version: 1')")]
    problems: list[Problem] = []
    value_errors: dict[Path, jsonschema.ValidationError] = {}
    for err in _validator().iter_errors(src.data):
        path = tuple(err.absolute_path)
        if err.validator in _VALUE_VALIDATORS:
            prev = value_errors.get(path)
            if prev is None or (_VALUE_VALIDATORS.index(err.validator)
                                < _VALUE_VALIDATORS.index(prev.validator)):
                value_errors[path] = err
            continue
        problems.extend(_problems(err, path, src))
    for path, err in value_errors.items():
        line, col = src.at_value(path)
        problems.append(Problem(line, col, _value_message(err, path)))
    return problems


def _problems(err: jsonschema.ValidationError, path: Path, src: Source) -> list[Problem]:
    if err.validator == "additionalProperties" and isinstance(err.instance, dict):
        allowed = list(err.schema.get("properties", {}))
        out = []
        for key in err.instance:
            if key in allowed:
                continue
            line, col = src.at_key((*path, key))
            out.append(Problem(line, col, _unknown_key(path, key, allowed)))
        return out
    if err.validator == "required":
        line, col = src.at_value(path)
        missing = [k for k in err.validator_value if k not in err.instance]
        typos = [k for k in err.instance if isinstance(k, str) and difflib.get_close_matches(
            k, missing, n=1, cutoff=0.6)]
        if typos:  # `path:` for `paths:`: the unknown key's "did you mean" says it all
            return []
        if not path:
            return [Problem(line, col, "missing 'version' (add 'version: 1' at the top)")]
        return [Problem(line, col, f"{_name(path)} needs {_quoted(missing)}"
                        + (" (a list of globs)" if "paths" in missing else ""))]
    line, col = src.at_value(path)
    return [Problem(line, col, f"{_name(path)}: {err.message}")]


def _unknown_key(path: Path, key: Any, allowed: list[str]) -> str:
    rule = _rule_of(path)
    if _is_rules_map(path):
        what, where = "rule", ""
    elif rule is not None:
        what, where = "option", f" for rule '{rule}'"
    elif not path:
        what, where = "key", ""
    else:
        what, where = "key", f" in {_name(path)}"
    hint = ""
    if isinstance(key, str):
        close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        hint = (f" (did you mean '{close[0]}'?)" if close
                else f" (expected one of: {', '.join(allowed)})")
    return f"unknown {what} {key!r}{where}{hint}"


def _value_message(err: jsonschema.ValidationError, path: Path) -> str:
    name = _name(path)
    value = err.instance
    title = err.schema.get("title")
    if title == "size" and err.validator in ("pattern", "minimum"):
        try:
            parse_size(value)
        except SizeError as e:
            return f"invalid size {_show(e.value)} for {name} ({e.reason})"
    if err.validator == "const" and path == ("version",):
        if isinstance(value, str) and value.strip() == "1":
            return "'version' must be the number 1, not the string '1'"
        return f"unsupported policy version {_show(value)} (this ckpt-guard reads version 1)"
    if err.validator == "enum":
        choices = [str(c) for c in err.validator_value]
        if title == "check-action" and value == "fix":
            return (f"rule '{_rule_of(path)}' cannot use action 'fix' (`ckpt-guard fix` cannot "
                    f"repair what it reports); use {_or(choices)}")
        what = "action" if title in ("action", "check-action") else "value"
        hint = ""
        if isinstance(value, str):
            alias = _DTYPE_ALIASES.get(value.strip().lower())
            close = [alias] if alias in choices else difflib.get_close_matches(
                value.lower(), choices, n=1, cutoff=0.6)
            hint = f"did you mean '{close[0]}'? " if close else ""
        return f"invalid {what} {_show(value)} for {name} ({hint}expected {_or(choices)})"
    if title == "size" and err.validator == "type":
        return (f"{name} must be a size (bytes as an integer, or a string like '50MB' or "
                f"'1.5GiB'), got {_kind(value)}")
    if err.validator == "type" and not path:
        return f"the policy must be a mapping of keys ({', '.join(TOP_KEYS)}), got {_kind(value)}"
    if err.validator == "type":
        if path and _rule_of(path) is not None and _is_rules_map(path[:-1]):
            return (f"{name} must be an action (fail, fix, warn, off) or a mapping of its "
                    f"options, got {_kind(value)}")
        wanted = err.validator_value
        wanted = [wanted] if isinstance(wanted, str) else list(wanted)
        words = [_TYPE_WORDS.get(w, w) for w in wanted if w != "null"]
        return f"{name} must be {_or(words)}, got {_kind(value)}"
    if err.validator == "minItems":
        return f"{name} must not be empty"
    if err.validator == "minLength":
        return f"{name} must not be an empty string"
    return f"{name}: {err.message}"


_TYPE_WORDS = {"array": "a list", "object": "a mapping", "string": "a string",
               "integer": "an integer", "number": "a number", "boolean": "true or false"}


def _show(value: Any) -> str:
    """A scalar as YAML spells it: ``'x'``, ``5``, ``true``, ``null``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def _kind(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, (int, float)):
        return f"the number {value}"
    if isinstance(value, str):
        return f"the string {value!r}"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, (list, tuple)):
        return "a list"
    return type(value).__name__


def _or(items: list[str]) -> str:
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " or " + items[-1]


def _quoted(keys: list[str]) -> str:
    return _or([f"'{k}'" for k in keys])


def _is_rules_map(path: Path) -> bool:
    """Is ``path`` a ``rules`` mapping (top-level or an override's)?"""
    return path == ("rules",) or (len(path) == 3 and path[0] == "overrides"
                                  and path[2] == "rules")


def _rule_of(path: Path) -> str | None:
    """The rule id ``path`` is in or under, if any."""
    for i in (1, 3):
        if len(path) > i and _is_rules_map(path[:i]) and isinstance(path[i], str):
            return path[i]
    return None


def _name(path: Path) -> str:
    """How a message names the thing at ``path``."""
    if not path:
        return "the policy"
    if isinstance(path[-1], int):
        parent = path[:-1]
        if parent and parent[0] == "overrides" and len(parent) == 1:
            return f"override #{path[-1] + 1}"
        return f"entry {path[-1] + 1} of {_name(parent)}"
    rule = _rule_of(path)
    scope = f" of override #{path[1] + 1}" if path[0] == "overrides" and len(path) > 1 else ""
    if rule is not None:
        if _is_rules_map(path[:-1]) or (path[-1] == "action" and _is_rules_map(path[:-2])):
            return f"rule '{rule}'{scope}"
        return f"'{path[-1]}' of rule '{rule}'{scope}"
    return f"'{path[-1]}'{scope}"
