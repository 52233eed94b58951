"""Workflow commands, outputs and the step summary, through real files."""

from __future__ import annotations

import io

import pytest

from ckpt_guard.action.commands import SUMMARY_LIMIT, Workflow, escape_data, escape_property
from ckpt_guard.action.settings import (
    CommentMode,
    FailOn,
    Lfs,
    Mode,
    Settings,
    SettingsError,
    Threshold,
)
from tests.action.commands_parse import parse_outputs


def test_escaping_matches_the_toolkit():
    assert escape_data("50% done\r\nnext") == "50%25 done%0D%0Anext"
    assert escape_property("a:b,c%\n") == "a%3Ab%2Cc%25%0A"


def test_annotations_and_groups():
    out = io.StringIO()
    wf = Workflow({}, out)
    wf.error("optimizer-state: 208 MB\nsecond", file="models/a,b:c.pt", title="ckpt-guard")
    wf.warning("w", file="x.pt")
    with wf.group("details"):
        wf.info("inside")
    assert out.getvalue().splitlines() == [
        "::error file=models/a%2Cb%3Ac.pt,title=ckpt-guard::optimizer-state: 208 MB%0Asecond",
        "::warning file=x.pt::w",
        "::group::details", "inside", "::endgroup::"]


def test_outputs_multiline_safe(tmp_path):
    f = tmp_path / "output"
    f.write_text("")
    wf = Workflow({"GITHUB_OUTPUT": str(f)}, io.StringIO())
    wf.set_output("status", "fail")
    wf.set_output("tricky", "a\nb<<EOF\nEOF")
    assert parse_outputs(f.read_text()) == {"status": "fail", "tricky": "a\nb<<EOF\nEOF"}


def test_summary_is_capped(tmp_path):
    f = tmp_path / "summary"
    wf = Workflow({"GITHUB_STEP_SUMMARY": str(f)}, io.StringIO())
    assert wf.add_summary("# first\n")
    assert wf.add_summary("é" * SUMMARY_LIMIT)
    data = f.read_bytes()
    assert len(data) <= SUMMARY_LIMIT
    assert data.startswith(b"# first") and b"Truncated" in data
    data.decode("utf-8")  # never cut inside a character
    assert not Workflow({}, io.StringIO()).add_summary("x")


def test_settings_typed_and_validated():
    s = Settings.from_env({"INPUT_MODE": "Fix", "INPUT_PATHS": "models/**/*.pt\n dist/*.bin, x.pt",
                           "INPUT_COMMENT": "false", "INPUT_LFS": "fetch",
                           "INPUT_FAIL_ON": "warn", "INPUT_GITHUB_TOKEN": "ghs_secret",
                           "INPUT_RELEASE_ASSETS": "true", "INPUT_POLICY": " cfg/p.yml "})
    assert s.mode is Mode.FIX and s.lfs is Lfs.FETCH and s.fail_on is FailOn.WARN
    assert s.paths == ("models/**/*.pt", "dist/*.bin", "x.pt")
    assert s.comment is CommentMode.NEVER and s.release_assets and not s.commit_fixes
    assert s.policy == "cfg/p.yml"
    assert "ghs_secret" not in repr(s)
    d = Settings.from_env({})
    assert d.mode is Mode.CHECK and d.comment is CommentMode.AUTO and d.policy is None
    assert d.paths == () and d.comment_threshold == Threshold(percent=1.0) and d.label == ""
    assert Settings.from_env({"INPUT_COMMENT": "true"}).comment is CommentMode.ALWAYS
    assert Settings.from_env({"INPUT_COMMENT": "on-change"}).comment is CommentMode.ON_CHANGE
    assert Settings.from_env({"INPUT_COMMENT_THRESHOLD": "2MB"}).comment_threshold == \
        Threshold(bytes=2_000_000)
    with pytest.raises(SettingsError, match="'comment_threshold'"):
        Settings.from_env({"INPUT_COMMENT_THRESHOLD": "lots"})
    with pytest.raises(SettingsError, match="'comment' must be one of auto|always"):
        Settings.from_env({"INPUT_COMMENT": "sometimes"})
    with pytest.raises(SettingsError, match="'mode' must be one of check|fix"):
        Settings.from_env({"INPUT_MODE": "strip"})
    with pytest.raises(SettingsError, match="'commit_fixes' must be true or false"):
        Settings.from_env({"INPUT_COMMIT_FIXES": "maybe"})


def test_info_lines_never_become_workflow_commands():
    out = io.StringIO()
    wf = Workflow({}, out)
    wf.info("  ::error title=pwned::x.pt: changed by the event\n::add-mask::a\rnext ##[error]v1")
    lines = out.getvalue().splitlines()
    assert len(lines) == 3
    for line in lines:  # what the runner checks: TrimStart().StartsWith("::"), "##[" anywhere
        assert not line.lstrip().startswith("::") and "##[" not in line
    assert lines[0].replace("\u200b", "") == "  ::error title=pwned::x.pt: changed by the event"


def test_registered_secrets_never_written(tmp_path):
    out, f, summ = io.StringIO(), tmp_path / "output", tmp_path / "summary"
    wf = Workflow({"GITHUB_OUTPUT": str(f), "GITHUB_STEP_SUMMARY": str(summ)}, out)
    secret = "ghs_abcSECRETdef"
    wf.mask(secret)
    wf.mask("")  # no token: nothing to mask (and "" must not mask everything)
    wf.warning(f"git push: fatal: https://x-access-token:{secret}@github.com/a/b",
               file=f"{secret}.pt", title=secret)
    wf.info(f"url {secret}")
    wf.set_output("o", secret)
    wf.add_summary(f"# {secret}")
    written = out.getvalue() + f.read_text() + summ.read_text()
    assert secret not in written and written.count("***") == 6
