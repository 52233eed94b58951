"""SARIF 2.1.0 output, as GitHub code scanning accepts it."""

from __future__ import annotations

import json

from ckpt_guard import __version__
from ckpt_guard.report.model import Report

RULE_HELP = {
    "optimizer-state": "Optimizer state (e.g. Adam moments) is training baggage: it roughly "
                       "doubles or triples a checkpoint and is never needed for inference.",
    "training-state": "Scheduler, gradient-scaler, RNG and training-loop state only matter "
                      "for resuming training.",
    "ema-duplicate": "A second copy of the weights (EMA) duplicates the model's tensors.",
    "fp32-payload": "FP32 tensors that could ship as FP16/BF16 at half the size.",
    "file-size": "The file is larger than the policy allows.",
    "unsafe-pickle": "The pickle references globals that can execute code, touch files, the "
                     "network or processes when loaded with torch.load(weights_only=False).",
    "needs-code": "The pickle references custom classes: it will not load with "
                  "torch.load(weights_only=True) and needs their code installed.",
    "lfs-pointer": "The file is a Git LFS pointer; its contents were not fetched.",
    "unreadable": "The file could not be read as a weight file.",
}

LEVELS = {"fail": "error", "fix": "error", "warn": "warning"}


def render_sarif(report: Report) -> str:
    rules = [{"id": rid, "name": rid.title().replace("-", ""),
              "shortDescription": {"text": text}, "fullDescription": {"text": text},
              "helpUri": "https://github.com/org/ckpt-guard#rules",
              "defaultConfiguration": {"level": "error" if rid in (
                  "optimizer-state", "unsafe-pickle", "unreadable") else "warning"}}
             for rid, text in RULE_HELP.items()]
    index = {r["id"]: i for i, r in enumerate(rules)}
    results = []
    for f in report.files:
        for finding in f.findings:
            results.append({
                "ruleId": finding.rule,
                "ruleIndex": index.get(finding.rule, 0),
                "level": LEVELS.get(finding.action, "note"),
                "message": {"text": finding.message},
                "locations": [{"physicalLocation": {
                    "artifactLocation": {"uri": f.path.replace("\\", "/"),
                                         "uriBaseId": "%SRCROOT%"},
                    "region": {"startLine": 1}}}],
                "properties": {"bytes": finding.bytes, "fixable": finding.fixable},
            })
    doc = {
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "version": "2.1.0",
        "runs": [{
            "tool": {"driver": {"name": "ckpt-guard", "version": __version__,
                                "semanticVersion": __version__,
                                "informationUri": "https://github.com/org/ckpt-guard",
                                "rules": rules}},
            "results": results,
        }],
    }
    return json.dumps(doc, indent=2) + "\n"
