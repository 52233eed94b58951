"""SARIF: valid against the spec's schema (the parts we emit), trackable by code scanning."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import unquote, urlsplit

import jsonschema

from ckpt_guard.report.model import FileReport, Finding, Report
from ckpt_guard.report.sarif import FINGERPRINT_KEY, RULE_HELP, render_sarif
from tests.report.conftest import FIX_ALL, run

SCHEMA = json.loads((Path(__file__).parent / "sarif_subset_schema.json").read_text())


def _sarif(report: Report) -> dict:
    doc = json.loads(render_sarif(report))
    jsonschema.Draft7Validator(SCHEMA).validate(doc)
    return doc


def test_real_report_is_valid_sarif(fixture_paths) -> None:
    report = run(list(fixture_paths.values()), FIX_ALL)
    doc = _sarif(report)
    run_ = doc["runs"][0]
    rules = run_["tool"]["driver"]["rules"]
    assert [r["id"] for r in rules][:len(RULE_HELP)] == list(RULE_HELP)
    for r in rules:
        assert r["help"]["text"] and r["shortDescription"]["text"] != r["help"]["text"]
    sec = {r["id"]: r["properties"] for r in rules}
    assert sec["unsafe-pickle"]["tags"] == ["security"]
    assert float(sec["unsafe-pickle"]["security-severity"]) >= 9
    n = sum(len(f.findings) for f in report.files)
    assert len(run_["results"]) == n > 0
    for res in run_["results"]:
        assert rules[res["ruleIndex"]]["id"] == res["ruleId"]
        uri = res["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
        assert " " not in uri and urlsplit(uri).path
        assert len(res["partialFingerprints"][FINGERPRINT_KEY]) == 32
    fixable = [r for r in run_["results"] if r["properties"]["fixable"]]
    assert fixable and all(r["message"]["text"].endswith("(fixable: run `ckpt-guard fix`)")
                           for r in fixable)


def _one(path: str, finding: Finding) -> dict:
    return _sarif(Report(files=[FileReport(path, findings=[finding])]))["runs"][0]["results"][0]


def test_fingerprints_ignore_changing_figures_but_not_rule_path_or_member() -> None:
    a = _one("m/last.pt", Finding("optimizer-state", "fail", "617 kB at 'optimizer'", 617_000))
    b = _one("m/last.pt", Finding("optimizer-state", "fail", "1.2 MB at 'optimizer'", 1_200_000))
    fp = lambda r: r["partialFingerprints"][FINGERPRINT_KEY]  # noqa: E731
    assert fp(a) == fp(b)
    assert fp(a) != fp(_one("m/best.pt", Finding("optimizer-state", "fail", "x")))
    assert fp(a) != fp(_one("m/last.pt", Finding("training-state", "warn", "x")))
    in_dir = [_one("ckpt-500", Finding("unreadable", "fail", "x", detail={"member": m}))
              for m in ("a.bin", "b.bin")]
    assert fp(in_dir[0]) != fp(in_dir[1])


def test_unknown_rule_gets_its_own_descriptor() -> None:
    # `fix` reports a failed rewrite under the rule id "fix"
    doc = _sarif(Report(files=[FileReport("a.pt", findings=[
        Finding("fix", "fail", "could not fix, the original is untouched: disk full")])]))
    res = doc["runs"][0]["results"][0]
    rule = doc["runs"][0]["tool"]["driver"]["rules"][res["ruleIndex"]]
    assert rule["id"] == "fix" and res["level"] == "error"


def test_uris_are_encoded_and_absolute_paths_are_file_uris() -> None:
    doc = _sarif(Report(files=[
        FileReport("models/my model#1.pt", findings=[Finding("file-size", "fail", "x")]),
        FileReport("/tmp/w.pt", findings=[Finding("file-size", "fail", "x")])]))
    locs = [r["locations"][0]["physicalLocation"]["artifactLocation"]
            for r in doc["runs"][0]["results"]]
    assert locs[0] == {"uri": "models/my%20model%231.pt", "uriBaseId": "%SRCROOT%"}
    assert unquote(locs[0]["uri"]) == "models/my model#1.pt"
    assert locs[1] == {"uri": "file:///tmp/w.pt"}
