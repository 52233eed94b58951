"""The sticky PR comment against the loopback API."""

from __future__ import annotations

import pytest

from ckpt_guard.action.comment import MARKER, find_comment, upsert_comment, with_marker
from ckpt_guard.action.github import GitHub
from tests.action.fakegithub import BOT, HUMAN, FakeGitHub

REPO = "acme/models"


@pytest.fixture
def api():
    with FakeGitHub(REPO) as fake:
        yield fake


def gh(api: FakeGitHub) -> GitHub:
    return GitHub("ghs_token", api.url, backoff=0.01)


def test_creates_then_updates_the_same_comment(api):
    first = upsert_comment(gh(api), REPO, 5, "run 1")
    assert first.action == "created"
    second = upsert_comment(gh(api), REPO, 5, "run 2: all clear")
    assert second.action == "updated" and second.comment_id == first.comment_id
    (c,) = api.state.comments[5]
    assert c["body"] == f"{MARKER}\nrun 2: all clear"
    assert len(api.of("POST", r"/repos/acme/models/issues/5/comments")) == 1
    assert len(api.of("PATCH", rf"/repos/acme/models/issues/comments/{c['id']}")) == 1
    assert upsert_comment(gh(api), REPO, 5, "run 2: all clear").action == "unchanged"


def test_finds_own_comment_beyond_the_first_page(api):
    for i in range(130):
        api.add_comment(9, f"chatter {i}", HUMAN)
    api.add_comment(9, f"{MARKER}\nquoted by a human", HUMAN)  # never ours to edit
    ours = api.add_comment(9, f"{MARKER}\nold report", BOT)
    assert find_comment(gh(api), REPO, 9)["id"] == ours["id"]
    res = upsert_comment(gh(api), REPO, 9, "new report")
    assert res.action == "updated" and res.comment_id == ours["id"]
    assert len(api.of("GET", r"/repos/acme/models/issues/9/comments")) >= 2 * 2
    assert not api.of("POST", r"/repos/acme/models/issues/9/comments")


def test_personal_token_matches_its_own_login(api):
    api.state.viewer = {"login": "release-bot", "type": "User"}
    api.add_comment(2, f"{MARKER}\nby someone else's bot", BOT)
    mine = api.add_comment(2, f"{MARKER}\nmine", {"login": "release-bot", "type": "User"})
    assert upsert_comment(gh(api), REPO, 2, "x").comment_id == mine["id"]


def test_no_comment_created_when_nothing_to_report(api):
    res = upsert_comment(gh(api), REPO, 4, "no weight files", create=False)
    assert res.action == "skipped" and not api.state.comments.get(4)


def test_fork_token_403_is_reported_not_raised(api):
    api.state.forbid_writes = True
    res = upsert_comment(gh(api), REPO, 3, "report")
    assert res.action == "forbidden" and "403" in res.reason
    assert "Resource not accessible" in res.reason


def test_5xx_on_create_then_success(api):
    api.fail("POST", r"/repos/acme/models/issues/6/comments", 502)
    assert upsert_comment(gh(api), REPO, 6, "report").action == "created"
    assert len(api.state.comments[6]) == 1


def test_body_capped_at_github_limit(api):
    text = with_marker("x" * 100_000)
    assert len(text) <= 65_536 and text.startswith(MARKER) and "Truncated" in text
    assert upsert_comment(gh(api), REPO, 8, "y" * 100_000).action == "created"


def test_prefers_the_actions_bot_over_another_bot_quoting_the_marker(api):
    quoting_app = {"login": "pr-summary[bot]", "type": "Bot", "id": 77}
    api.add_comment(4, f"Summary of the PR body: {MARKER}", quoting_app)
    ours = api.add_comment(4, f"{MARKER}\nold report", BOT)
    assert find_comment(gh(api), REPO, 4)["id"] == ours["id"]
    res = upsert_comment(gh(api), REPO, 4, "new")
    assert res.action == "updated" and res.comment_id == ours["id"]
    assert "Summary of the PR body" in api.state.comments[4][0]["body"]


def test_a_response_that_is_not_json_is_a_failure_not_a_crash(api):
    api.fail_with("GET", r"/repos/acme/models/issues/6/comments", 200, b"<html>proxy</html>")
    res = upsert_comment(gh(api), REPO, 6, "x")
    assert res.action == "failed" and "not JSON" in res.reason
