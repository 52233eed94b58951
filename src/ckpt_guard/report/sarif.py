"""SARIF 2.1.0 output, as GitHub code scanning accepts it.

Each result carries a ``partialFingerprints`` entry computed from the rule, the file's path
and (for checkpoint directories) the member — never from the message, whose byte figures
change from commit to commit — so code scanning tracks one alert per problem across runs
instead of opening a new one whenever a size changes. (upload-sarif would otherwise hash the
file's "lines", which for a weight file are arbitrary binary.)
"""

from __future__ import annotations

import hashlib
import json
from pathlib import PurePosixPath
from typing import Any
from urllib.parse import quote

from ckpt_guard import __version__
from ckpt_guard.policy.rules.registry import ALL as ALL_RULES
from ckpt_guard.report.model import Finding, Report
from ckpt_guard.vocab import Action

INFORMATION_URI = "https://github.com/org/ckpt-guard"
FINGERPRINT_KEY = "ckptGuardFinding/v1"

# rule id -> (short description, help: what it means and what to do): the rules' own.
RULE_HELP: dict[str, tuple[str, str]] = {r.id: (r.summary, r.help) for r in ALL_RULES}
_SECURITY = {r.id: r.security for r in ALL_RULES if r.security}
# A rule failing by default is an error by default.
_DEFAULT_LEVEL = {r.id: "error" for r in ALL_RULES if r.default_action.fails}
LEVELS = {Action.FAIL: "error", Action.FIX: "error", Action.WARN: "warning"}


def _rule(rule_id: str) -> dict[str, Any]:
    short, help_text = RULE_HELP.get(rule_id, (rule_id, f"ckpt-guard reported '{rule_id}'."))
    security = rule_id in _SECURITY
    rule: dict[str, Any] = {
        "id": rule_id, "name": rule_id.title().replace("-", ""),
        "shortDescription": {"text": short}, "fullDescription": {"text": help_text},
        "help": {"text": help_text, "markdown": help_text},
        "helpUri": f"{INFORMATION_URI}#what-it-finds",
        "defaultConfiguration": {"level": _DEFAULT_LEVEL.get(rule_id, "warning")},
        "properties": {"tags": ["security"] if security else ["maintainability"]},
    }
    if security:
        rule["properties"]["security-severity"] = _SECURITY[rule_id]
    return rule


def _uri(path: str) -> dict[str, str]:
    posix = path.replace("\\", "/")
    # A file name that is not UTF-8 (held as surrogate escapes) is percent-encoded byte for
    # byte: it must not stop the report of every other file.
    quoted = quote(posix.encode("utf-8", "surrogateescape"))
    if PurePosixPath(posix).is_absolute():
        return {"uri": "file://" + quoted}
    return {"uri": quoted, "uriBaseId": "%SRCROOT%"}


def _fingerprint(path: str, finding: Finding) -> str:
    member = str(finding.detail.get("member", "")) if finding.detail else ""
    key = "\0".join((finding.rule, path.replace("\\", "/"), member))
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()[:32]


def _message(finding: Finding) -> str:
    text = finding.message
    if finding.fixable:
        text += " (fixable: run `ckpt-guard fix`)"
    return text


def render_sarif(report: Report) -> str:
    rule_ids = list(RULE_HELP)
    for f in report.files:
        rule_ids += [x.rule for x in f.findings if x.rule not in rule_ids]
    index = {rid: i for i, rid in enumerate(rule_ids)}
    results = []
    for f in report.files:
        for finding in f.findings:
            results.append({
                "ruleId": finding.rule,
                "ruleIndex": index[finding.rule],
                "level": LEVELS.get(finding.action, "note"),
                "message": {"text": _message(finding)},
                "locations": [{"physicalLocation": {
                    "artifactLocation": _uri(f.path), "region": {"startLine": 1}}}],
                "partialFingerprints": {FINGERPRINT_KEY: _fingerprint(f.path, finding)},
                "properties": {"bytes": finding.bytes, "fixable": finding.fixable},
            })
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "ckpt-guard", "version": __version__,
                                "semanticVersion": __version__,
                                "informationUri": INFORMATION_URI,
                                "rules": [_rule(r) for r in rule_ids]}},
            "results": results,
        }],
    }
    return json.dumps(doc, indent=2) + "\n"
