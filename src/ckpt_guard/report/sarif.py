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
from ckpt_guard.report.model import Finding, Report

INFORMATION_URI = "https://github.com/org/ckpt-guard"
FINGERPRINT_KEY = "ckptGuardFinding/v1"

# rule id -> (short description, help: what it means and what to do)
RULE_HELP: dict[str, tuple[str, str]] = {
    "optimizer-state": (
        "Optimizer state in a weight file",
        "Optimizer state (e.g. Adam's exp_avg/exp_avg_sq, SGD momentum) is only needed to "
        "resume training; it is often twice the size of the weights. Set the rule to `fix` "
        "and run `ckpt-guard fix`, or save only the model's state_dict for release."),
    "training-state": (
        "Training-loop state in a weight file",
        "LR scheduler, AMP grad scaler and RNG state only matter for resuming training. Set "
        "the rule to `fix` and run `ckpt-guard fix` to drop them."),
    "ema-duplicate": (
        "Duplicate EMA copy of the weights",
        "The file holds the weights twice: the trained weights and their exponential moving "
        "average. Set the rule to `fix` (with `keep: ema` or `keep: weights`) and run "
        "`ckpt-guard fix` to keep one copy."),
    "fp32-payload": (
        "Float32 weights that could be half precision",
        "Float32 weights could ship as float16/bfloat16 at half the size. Set the rule to "
        "`fix` (`cast-to: float16` or `bfloat16`) and run `ckpt-guard fix`; normalization "
        "layers matched by `keep-fp32` stay float32."),
    "file-size": (
        "Weight file over the size limit",
        "The file is larger than the policy's `max-bytes`. Strip training state, cast to half "
        "precision, or store it outside the repository (Git LFS, release assets)."),
    "unsafe-pickle": (
        "Pickle that can run code when loaded",
        "The file's pickle references globals that can execute code, touch files, the network "
        "or processes: torch.load(weights_only=False) on it can run arbitrary code. Do not "
        "load it; rebuild the checkpoint from trusted code and save tensors only (a "
        "state_dict, or safetensors)."),
    "needs-code": (
        "Pickle that needs custom classes to load",
        "The pickle references classes or functions outside torch's weights_only allowlist: "
        "torch.load(weights_only=True) refuses the file, and weights_only=False imports and "
        "runs their code. Save a state_dict (or safetensors) to ship plain tensors."),
    "lfs-pointer": (
        "Git LFS pointer checked instead of the weights",
        "The file is a Git LFS pointer; the weights were not fetched, so only the pointer's "
        "declared size was checked. Run `git lfs pull`, or set `lfs: true` on "
        "actions/checkout."),
    "unreadable": (
        "File that cannot be read as weights",
        "The file is not a weight file, is truncated or corrupt, exceeds a resource limit, or "
        "cannot be opened. Check that it was written completely, or exclude it in the "
        "policy."),
}
_SECURITY = {"unsafe-pickle": "9.0", "needs-code": "4.0"}
_DEFAULT_LEVEL = {"optimizer-state": "error", "unsafe-pickle": "error", "unreadable": "error"}
LEVELS = {"fail": "error", "fix": "error", "warn": "warning"}


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
