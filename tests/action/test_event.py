"""What each event asks the action to check, and the annotation budget."""

from __future__ import annotations

import io
import json

import pytest

from ckpt_guard.action.commands import Workflow
from ckpt_guard.action.event import RunContext, scope_for
from ckpt_guard.action.main import Action, exit_code, overall_status
from ckpt_guard.action.settings import FailOn, Settings
from ckpt_guard.report.model import FileReport, Finding, Report
from tests.action.runner import pr_payload


def ctx(tmp_path, event: str, payload: dict, **env: str) -> RunContext:
    p = tmp_path / "event.json"
    p.write_text(json.dumps(payload))
    return RunContext.from_env({"GITHUB_EVENT_NAME": event, "GITHUB_EVENT_PATH": str(p),
                                "GITHUB_REPOSITORY": "acme/models",
                                "GITHUB_WORKSPACE": str(tmp_path), **env})


@pytest.mark.parametrize("event", ["pull_request", "pull_request_target"])
def test_pull_request_events_diff_against_the_base(tmp_path, event):
    c = ctx(tmp_path, event, pr_payload(5, "a" * 40, "b" * 40))
    s = scope_for(c, release_assets=False)
    assert (s.kind, s.base, s.head, s.base_label) == ("diff", "a" * 40, "HEAD", "`main`")
    assert c.pr_number == 5 and c.is_pull_request and not c.is_fork
    assert ctx(tmp_path, event, pr_payload(5, "a" * 40, "b" * 40,
                                           head_repo="fork/models")).is_fork


def test_push_and_new_branch(tmp_path):
    s = scope_for(ctx(tmp_path, "push", {"before": "a" * 40, "after": "b" * 40}),
                  release_assets=False)
    assert (s.kind, s.base) == ("diff", "a" * 40)
    s = scope_for(ctx(tmp_path, "push", {"before": "0" * 40, "after": "b" * 40}),
                  release_assets=False)
    assert s.kind == "all"


@pytest.mark.parametrize("event", ["workflow_dispatch", "schedule", "release"])
def test_everything_else_checks_all_matching_files(tmp_path, event):
    assert scope_for(ctx(tmp_path, event, {"release": {"id": 1}}),
                     release_assets=False).kind == "all"


def test_release_gate_on_release_events_and_tags(tmp_path):
    assert scope_for(ctx(tmp_path, "release", {"release": {"id": 1}}),
                     release_assets=True).kind == "release"
    tag = ctx(tmp_path, "push", {"before": "0" * 40}, GITHUB_REF="refs/tags/v1")
    assert tag.tag == "v1" and scope_for(tag, release_assets=True).kind == "release"


def test_bad_payload_is_a_clean_error(tmp_path):
    from ckpt_guard.action.event import EventError

    (tmp_path / "event.json").write_text("{not json")
    with pytest.raises(EventError, match="cannot read the event payload"):
        RunContext.from_env({"GITHUB_EVENT_PATH": str(tmp_path / "event.json")})


def failing(i: int, status: str = "fail") -> FileReport:
    action = "fail" if status == "fail" else "warn"
    return FileReport(path=f"m/{i}.pt", status=status,
                      findings=[Finding("optimizer-state", action, f"state {i}")])


def test_annotations_capped_at_ten_of_each(tmp_path):
    out = io.StringIO()
    report = Report(files=[failing(i) for i in range(14)] + [failing(i, "warn")
                                                             for i in range(30, 33)])
    Action(Settings.from_env({}), ctx(tmp_path, "push", {}), Workflow({}, out)).annotate(report)
    lines = out.getvalue().splitlines()
    assert sum(line.startswith("::error ") for line in lines) == 10
    assert sum(line.startswith("::warning ") for line in lines) == 3
    (note,) = [line for line in lines if line.startswith("::notice")]
    assert "4 more file(s) with errors" in note


def test_exit_follows_policy_and_fail_on():
    warn = Report(files=[failing(1, "warn")])
    fail = Report(files=[failing(1)])
    ok = Report(files=[FileReport(path="a.pt")])
    assert [exit_code(r, FailOn.FAIL) for r in (ok, warn, fail)] == [0, 0, 1]
    assert [exit_code(r, FailOn.WARN) for r in (ok, warn, fail)] == [0, 1, 1]
    assert [exit_code(r, FailOn.NEVER) for r in (ok, warn, fail)] == [0, 0, 0]
    assert [overall_status(r) for r in (ok, warn, fail)] == ["pass", "warn", "fail"]


def test_paths_globs_stay_inside_the_workspace(tmp_path):
    from ckpt_guard.action.select import expand_globs

    ws = tmp_path / "ws"
    (ws / "a" / "b").mkdir(parents=True)
    (ws / "a" / "b" / "m.pt").write_bytes(b"x")
    (ws / "top.pt").write_bytes(b"x")
    (tmp_path / "outside.pt").write_bytes(b"x")
    (ws / "link.pt").symlink_to(tmp_path / "outside.pt")
    assert expand_globs(["**/*.pt"], ws) == ["a/b/m.pt", "link.pt", "top.pt"]
    assert expand_globs(["../*.pt", str(tmp_path / "outside.pt")], ws) == []
    assert expand_globs([str(ws / "top.pt"), "./a/**/*.pt"], ws) == ["a/b/m.pt", "top.pt"]


def test_globs_never_reach_through_a_symlinked_directory(tmp_path):
    from ckpt_guard.action.select import expand_globs

    ws, outside = tmp_path / "ws", tmp_path / "outside"
    (ws / "models").mkdir(parents=True)
    outside.mkdir()
    (outside / "secret.pt").write_bytes(b"x")
    (ws / "models" / "ok.pt").write_bytes(b"x")
    (ws / "models" / "up").symlink_to(outside)  # a PR can commit this link
    (ws / "direct.pt").symlink_to(outside / "secret.pt")
    assert expand_globs(["models/*/*.pt", "models/up/secret.pt", "*.pt", "models/*.pt"],
                        ws) == ["direct.pt", "models/ok.pt"]  # direct.pt: the engine says no
