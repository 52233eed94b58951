"""Quiet comments, thresholds and labels: what reaches the pull request, and when.

Real git repositories with base and head commits, the entrypoint as a real process and the
GitHub API stand-in on loopback; the decision itself is also tested as a pure function."""

from __future__ import annotations

import pytest

from ckpt_guard.action.comment import MARKER, comment_wanted
from ckpt_guard.action.settings import CommentMode, Threshold
from ckpt_guard.report.markdown import Context, render_markdown
from ckpt_guard.report.model import FileReport, Report
from tests.action.fakegithub import BOT, FakeGitHub
from tests.action.runner import REPO, pr_payload, run_action
from tests.action.scenarios import ckpt_bytes, make_small_pr, stripped, training, weights


@pytest.fixture
def api():
    with FakeGitHub(REPO) as server:
        yield server


def _fr(path: str, status: str = "pass", size: int = 1000) -> FileReport:
    return FileReport(path=path, status=status, size_bytes=size)


@pytest.mark.parametrize(("mode", "files", "bases", "threshold", "post"), [
    # auto: nothing changed / only passing files with a small change → quiet
    (CommentMode.AUTO, [], {}, Threshold(percent=1), False),
    (CommentMode.AUTO, [_fr("a.pt", size=1005)], {"a.pt": 1000}, Threshold(percent=1), False),
    (CommentMode.AUTO, [_fr("a.pt", size=1010)], {"a.pt": 1000}, Threshold(percent=1), True),
    (CommentMode.AUTO, [_fr("a.pt", size=1010)], {"a.pt": 1000}, Threshold(bytes=11), False),
    (CommentMode.AUTO, [_fr("a.pt", size=1000)], {"a.pt": None}, Threshold(percent=50), True),
    (CommentMode.AUTO, [_fr("a.pt", "warn")], {"a.pt": 1000}, Threshold(percent=1), True),
    (CommentMode.AUTO, [_fr("a.pt", "fail")], {"a.pt": 1000}, Threshold(percent=1), True),
    (CommentMode.ON_CHANGE, [_fr("a.pt")], {"a.pt": 1000}, Threshold(percent=1), True),
    (CommentMode.ON_CHANGE, [], {}, Threshold(percent=1), False),
    (CommentMode.ALWAYS, [], {}, Threshold(percent=1), True),
    (CommentMode.NEVER, [_fr("a.pt", "fail")], {"a.pt": None}, Threshold(percent=1), False),
])
def test_when_a_new_comment_is_posted(mode, files, bases, threshold, post):
    ctx = Context(base_sizes=bases, changed=[f.path for f in files])
    wanted, why = comment_wanted(mode, Report(files=files), ctx, threshold)
    assert wanted is post, why


def test_unchanged_files_do_not_count_as_changes():
    ctx = Context(base_sizes={"old.pt": 10}, changed=[])
    wanted, why = comment_wanted(CommentMode.AUTO, Report(files=[_fr("old.pt", "fail")]), ctx,
                                 Threshold(percent=1))
    assert not wanted and "changes no weight file" in why


def test_auto_stays_quiet_when_no_weight_file_changed(tmp_path, api):
    ws, base, head = make_small_pr(tmp_path, {}, {"notes.txt": b"only docs"})
    r = run_action(ws, tmp_path / "run", event="pull_request", api_url=api.url,
                   payload=pr_payload(31, base, head), inputs={"paths": "models/*.pt"})
    assert r.rc == 0, r.stdout + r.stderr
    assert 31 not in api.state.comments
    assert "no PR comment: the pull request changes no weight file" in r.stdout


def test_auto_quiet_below_the_threshold_and_loud_above(tmp_path, api):
    small = ckpt_bytes({"model": weights(32)})
    ws, base, head = make_small_pr(tmp_path, {"models/w.pt": small},
                                   {"models/w.pt": ckpt_bytes({"model": weights(33)})})
    quiet = run_action(ws, tmp_path / "q", event="pull_request", api_url=api.url,
                       payload=pr_payload(32, base, head),
                       inputs={"comment_threshold": "50%"})
    assert quiet.rc == 0 and 32 not in api.state.comments, quiet.stdout
    loud = run_action(ws, tmp_path / "l", event="pull_request", api_url=api.url,
                      payload=pr_payload(32, base, head), inputs={"comment_threshold": "1B"})
    assert loud.rc == 0
    (c,) = api.state.comments[32]
    assert "all clear" in c["body"]


def test_an_existing_comment_is_updated_to_all_clear_even_when_quiet(tmp_path, api):
    ws, base, head = make_small_pr(tmp_path, {}, {"notes.txt": b"docs"})
    earlier = api.add_comment(33, f"{MARKER}\n### ckpt-guard: ❌ 1 of 1 fails", user=BOT)
    r = run_action(ws, tmp_path / "run", event="pull_request", api_url=api.url,
                   payload=pr_payload(33, base, head))
    assert r.rc == 0, r.stdout + r.stderr
    (c,) = api.state.comments[33]  # never deleted, never a second one
    assert c["id"] == earlier["id"] and "no weight files to check" in c["body"]


def test_never_posts_nothing_even_when_failing(tmp_path, api):
    ws, base, head = make_small_pr(tmp_path, {}, {"models/train.pt": ckpt_bytes(training())})
    r = run_action(ws, tmp_path / "run", event="pull_request", api_url=api.url,
                   payload=pr_payload(34, base, head), inputs={"comment": "never"})
    assert r.rc == 1 and 34 not in api.state.comments
    assert not api.of("POST", r".*/comments") and not api.of("GET", r".*/comments")


def test_label_follows_the_violations(tmp_path, api):
    ws, base, head = make_small_pr(tmp_path, {}, {"models/train.pt": ckpt_bytes(training())})
    label = "weights: blocked"
    r = run_action(ws, tmp_path / "fail", event="pull_request", api_url=api.url,
                   payload=pr_payload(35, base, head), inputs={"label": label})
    assert r.rc == 1 and api.state.labels[35] == [label], r.stdout
    # the author strips the file: the next run removes the label
    (ws / "models/train.pt").write_bytes(stripped())
    r = run_action(ws, tmp_path / "pass", event="pull_request", api_url=api.url,
                   payload=pr_payload(35, base, head), inputs={"label": label})
    assert r.rc == 0 and api.state.labels[35] == [], r.stdout
    (delete,) = api.of("DELETE", r".*/labels/.*")
    assert delete.path.endswith("/labels/weights%3A%20blocked")
    # removing a label that is not there is not an error
    r = run_action(ws, tmp_path / "again", event="pull_request", api_url=api.url,
                   payload=pr_payload(35, base, head), inputs={"label": label})
    assert r.rc == 0 and not r.annotations("warning"), r.stdout


def test_pie_chart_is_inert_for_hostile_role_names():
    fr = FileReport(path="evil.pt", status="fail", size_bytes=100, tensor_bytes_total=30,
                    by_role={"weights": 10, "optimizer": 10, '```\nclick A "javascript:x"': 10})
    md = render_markdown(Report(files=[fr]))
    chart = md[md.index("```mermaid"):]
    chart = chart[:chart.index("```", 3) + 3]
    assert chart.count("```") == 2 and "javascript" not in chart and "click" not in chart
    assert '"other" : 10' in chart and '"optimizer" : 10' in chart
    assert "title Tensor bytes by role" in chart
