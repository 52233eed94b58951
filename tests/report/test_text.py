"""The text report as a user reads it: on a pipe (plain) and on a terminal (rich)."""

from __future__ import annotations

import re

import pytest

from ckpt_guard.report.model import FileReport, Finding, Report
from ckpt_guard.report.text import render_check, render_inspect
from ckpt_guard.report.units import format_bytes
from tests.report.conftest import FIX_ALL, run

ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _finding_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.startswith(("  ✗ ", "  ! "))]


def test_plain_check_lines_are_specific_and_not_repetitive(fixture_paths) -> None:
    report = run(list(fixture_paths.values()))
    text = render_check(report)
    assert all(ln == ln.rstrip() for ln in text.splitlines())  # no trailing spaces
    lines = _finding_lines(text)
    assert lines
    for ln in lines:
        rule, _, message = ln[4:].partition(": ")
        # the message does not repeat the rule id in words ("optimizer-state: optimizer state:")
        assert not message.lower().startswith(rule.split(" ")[0].replace("-", " "))
        assert "0 B" not in message
    adam = next(ln for ln in lines if "'optimizer_state_dict'" in ln)
    assert adam.startswith("  ✗ optimizer-state: ")
    assert adam.endswith(": Adam-style state (exp_avg, exp_avg_sq) for 8 params")
    # failing findings first within a file
    yolo = text.split(fixture_paths["ultralytics-train"].split("/")[-2])[-1]
    assert yolo.index("✗ optimizer-state") < yolo.index("! needs-code")


def test_removable_figures_agree_between_table_findings_and_summary(fixture_paths) -> None:
    report = run([fixture_paths["train-adam"]])
    [f] = report.files
    text = render_check(report)
    row = next(ln for ln in text.splitlines() if ln.startswith(f.path))
    assert row.split()[-3:] == [*format_bytes(f.bytes_removable).split(), "FAIL"]
    assert sum(x.bytes for x in f.findings if x.rule in ("optimizer-state", "training-state")) \
        == f.bytes_removable
    assert format_bytes(f.bytes_removable) in text.splitlines()[-1]


def test_summary_does_not_promise_what_fix_will_not_do(fixture_paths) -> None:
    paths = [fixture_paths["train-adam"]]
    builtin = render_check(run(paths)).splitlines()[-1]
    # the built-in policy sets nothing to `fix`: `ckpt-guard fix` would change nothing
    assert "would remove" not in builtin
    assert "is removable: set its rules to `fix` in the policy, then run `ckpt-guard fix`." \
        in builtin
    fix_all = run(paths, FIX_ALL)
    last = render_check(fix_all).splitlines()[-1]
    removable = fix_all.summary()["bytes_removable"]
    assert last.endswith(f"`ckpt-guard fix` would remove {format_bytes(removable)}.")
    assert "(fixable): " in render_check(fix_all)


def test_partly_fixable_summary() -> None:
    report = Report(files=[FileReport(
        "a.pt", status="fail", bytes_removable=3_000_000, findings=[
            Finding("optimizer-state", "fix", "x", 2_000_000, fixable=True),
            Finding("training-state", "warn", "y", 1_000_000)])])
    assert render_check(report).splitlines()[-1].endswith(
        "`ckpt-guard fix` would remove 2.0 MB of the 3.0 MB removable (the rest needs its "
        "rules set to `fix`).")


def test_dry_run_says_nothing_was_written() -> None:
    dry = {"fix": {"dry_run": True}}
    report = Report(files=[
        FileReport("a.pt", size_bytes=2_000_000, size_after=500_000, status="fixed",
                   details=dry),
        FileReport("b.pt", size_bytes=1_000, status="pass")])
    text = render_check(report)
    a_row = next(ln for ln in text.splitlines() if ln.startswith("a.pt"))
    b_row = next(ln for ln in text.splitlines() if ln.startswith("b.pt"))
    assert a_row.endswith("WOULD FIX") and "FIXED" not in text
    assert "0 B" not in b_row and b_row.split()[-3:] == ["-", "-", "PASS"]
    assert text.splitlines()[-1].endswith(
        "Dry run: 1 would be fixed, saving 1.5 MB; nothing was written.")
    for f in report.files:
        f.details = {}
    assert render_check(report).splitlines()[-1].endswith("1 fixed, 1.5 MB saved.")


@pytest.mark.parametrize("columns", [80, 100])
def test_terminal_table_fits_and_never_cuts_paths(fixture_paths, monkeypatch, columns) -> None:
    monkeypatch.setenv("COLUMNS", str(columns))
    report = run(list(fixture_paths.values()), FIX_ALL)
    text = ANSI.sub("", render_check(report, color=True))
    lines = text.splitlines()
    assert max(len(ln) for ln in lines) <= columns
    assert "…" not in text
    header = lines[1]
    assert "File" in header and "Status" in header and "Removable" in header
    for f in report.files:  # each path on one table line, whole
        assert any(f"│ {f.path} " in ln for ln in lines), f.path
    # wrapped findings hang under their text, not at column 0 (until the summary)
    body = lines[lines.index(next(ln for ln in lines if ln.startswith("╰"))) + 1:]
    body = body[:body.index(next(ln for ln in body if ln[:1].isdigit()))]
    for ln in body:
        assert ln.startswith("  ") or ln in {f.path for f in report.files}, ln


def test_inspect_words_and_shares(fixture_paths) -> None:
    report = run([fixture_paths["ultralytics-train"], fixture_paths["hf-trainer-dir"]],
                 details=True)
    text = render_inspect(report)
    assert "Opaque" not in text
    assert re.search(r"^ema\s+object ultralytics\.nn\.tasks\.DetectionModel\s+weights", text,
                     re.M)
    assert " 0.0%" not in text  # a sliver is "<0.1%", not zero
    # one row per reason, not the same sentence for each of the 6 ultralytics classes
    assert text.count("ultralytics layer class") == 1
    assert re.search(r"^Metadata: version=3, format_version=1", text, re.M)
    assert "Tensor bytes" in text  # top-level keys: tensor bytes, member table: file size
    assert re.search(r"^rng_state\.pth\s+rng\s+torch-zip\s+14\.\d kB$", text, re.M)


def test_inspect_share_of_a_sliver() -> None:
    f = FileReport("a.pt", tensor_bytes_total=10_000_000, tensor_count=2,
                   by_dtype={"float32": 9_999_968, "int64": 32})
    text = render_inspect(Report(files=[f]))
    assert re.search(r"^int64\s+32 B\s+<0\.1%$", text, re.M)
    assert re.search(r"^float32\s+10\.0 MB\s+100\.0%$", text, re.M)
    assert "2 tensors" in text


def test_no_files() -> None:
    assert render_check(Report()) == "No weight files to check.\n"
