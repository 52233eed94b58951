"""The sticky pull-request comment: one per PR, found by a hidden marker, edited in place.

Finding our own comment (as marocchino/sticky-pull-request-comment does): list the issue's
comments page by page (100 a page, past 100 via ``Link``), keep those whose body carries the
marker and whose author is the token's identity. ``GET /user`` names that identity for a
personal token; the workflow's GITHUB_TOKEN cannot call it (403), and then the author must be a
bot (``github-actions[bot]`` or any ``type: Bot`` — a GitHub App token) — so a human who
pastes the marker into a comment is never edited.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ckpt_guard.action.github import GitHub, GitHubError
from ckpt_guard.action.settings import CommentMode, Threshold
from ckpt_guard.report.markdown import COMMENT_LIMIT, Context, size_of
from ckpt_guard.report.model import Report

MARKER = "<!-- ckpt-guard:pr-comment -->"
ACTIONS_BOT = "github-actions[bot]"


@dataclass(frozen=True)
class CommentResult:
    """``action``: created | updated | unchanged | skipped | forbidden | failed."""

    action: str
    comment_id: int | None = None
    url: str = ""
    reason: str = ""


def with_marker(body: str) -> str:
    """The comment text: marker first, capped at GitHub's 65,536 characters."""
    text = f"{MARKER}\n{body}"
    if len(text) > COMMENT_LIMIT:
        note = "\n\n> **Truncated** to GitHub's 65,536-character limit.\n"
        text = text[: COMMENT_LIMIT - len(note)] + note
    return text


def _url(comment: object) -> str:
    return str(comment.get("html_url", "")) if isinstance(comment, dict) else ""


def _viewer(gh: GitHub) -> str | None:
    try:
        login = gh.json("GET", "/user", retry=False).get("login")
    except (GitHubError, AttributeError):
        return None  # GITHUB_TOKEN: "Resource not accessible by integration"
    return str(login) if login else None


def _ours(comment: dict[str, Any], viewer: str | None) -> bool:
    if MARKER not in str(comment.get("body") or ""):
        return False
    user = comment.get("user") or {}
    if viewer is not None:
        return user.get("login") == viewer
    return user.get("login") == ACTIONS_BOT or user.get("type") == "Bot"


def find_comment(gh: GitHub, repo: str, number: int) -> dict[str, Any] | None:
    """Our comment: the oldest carrying the marker (the one earlier runs have been updating).
    Without a known identity, a github-actions[bot] comment wins over another bot's — an
    app that quotes the PR's text may repeat the marker, and is not ours to edit."""
    viewer = _viewer(gh)
    other_bot = None
    for c in gh.paginate(f"/repos/{repo}/issues/{number}/comments"):
        if not _ours(c, viewer):
            continue
        if viewer is not None or (c.get("user") or {}).get("login") == ACTIONS_BOT:
            return c
        other_bot = other_bot or c
    return other_bot


def upsert_comment(gh: GitHub, repo: str, number: int, body: str, *,
                   create: bool = True) -> CommentResult:
    """Update our comment on PR ``number`` or (when ``create``) post it. A 403 (fork PR,
    missing ``pull-requests: write``) comes back as ``forbidden``, never as an exception."""
    text = with_marker(body)
    try:
        existing = find_comment(gh, repo, number)
        if existing is not None:
            cid = int(existing["id"])
            if existing.get("body") == text:
                return CommentResult("unchanged", cid, str(existing.get("html_url", "")))
            c = gh.json("PATCH", f"/repos/{repo}/issues/comments/{cid}", json={"body": text})
            return CommentResult("updated", cid, _url(c))
        if not create:
            return CommentResult("skipped", reason="nothing to report and no earlier comment")
        c = gh.json("POST", f"/repos/{repo}/issues/{number}/comments", json={"body": text})
        return CommentResult("created", c.get("id") if isinstance(c, dict) else None, _url(c))
    except GitHubError as e:
        kind = "forbidden" if e.status in (401, 403, 404) else "failed"
        return CommentResult(kind, reason=str(e))


def comment_wanted(mode: CommentMode, report: Report, context: Context,
                   threshold: Threshold) -> tuple[bool, str]:
    """Whether to post a *new* comment, and why (an existing one is always kept current).

    ``auto``: only when the pull request changes a weight file and there is something to
    say — a file that fails or warns, or a size change of at least ``threshold`` (a new file
    always counts; so does a file whose base size is unknown)."""
    if mode is CommentMode.NEVER:
        return False, "comment: never"
    if mode is CommentMode.ALWAYS:
        return True, "comment: always"
    wanted = set(context.changed) if context.changed is not None else None
    changed = [f for f in report.files if wanted is None or f.path in wanted]
    if not changed:
        return False, "the pull request changes no weight file"
    if mode is CommentMode.ON_CHANGE:
        return True, "a weight file changed"
    if bad := [f for f in changed if f.status in ("fail", "error", "warn")]:
        return True, f"{len(bad)} changed file(s) fail or warn"
    bases = context.base_sizes or {}
    for f in changed:
        base = bases.get(f.path) if f.path in bases else None
        if threshold.exceeded(size_of(f) - (base or 0), base):
            return True, f"{f.path} changed size by at least {threshold}"
    return False, f"weight files changed, all pass, no size change of {threshold} or more"


def set_label(gh: GitHub, repo: str, number: int, label: str, present: bool) -> str:
    """Add (``present``) or remove ``label`` on the pull request; returns what happened in
    words. Removing a label that is not there is not an error."""
    from urllib.parse import quote

    if present:
        gh.json("POST", f"/repos/{repo}/issues/{number}/labels", json={"labels": [label]})
        return f"label {label!r} added"
    resp = gh.request("DELETE", f"/repos/{repo}/issues/{number}/labels/{quote(label, safe='')}",
                      ok=(404,))
    return f"label {label!r} removed" if resp.status_code < 400 else f"label {label!r} not set"
