"""The run's context (GITHUB_* variables, the event payload) and what it asks us to check.

- ``pull_request``/``pull_request_target``: files changed from the PR's base commit to the
  checked-out commit (the base is fetched when the checkout is shallow);
- ``push``: ``before..after`` (a new branch or a vanished ``before`` ⇒ every matching file);
- ``release``: the release gate (assets) when ``release_assets`` is on, else every file;
- ``workflow_dispatch``/``schedule``/anything else: every file the policy matches.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckpt_guard.action.gitio import NULL_SHA

PR_EVENTS = ("pull_request", "pull_request_target")


class EventError(ValueError):
    """The event payload cannot be read."""


@dataclass(frozen=True)
class RunContext:
    event_name: str
    payload: dict[str, Any]
    repository: str  # owner/name
    workspace: Path
    api_url: str
    server_url: str = "https://github.com"
    sha: str = ""
    ref: str = ""
    run_url: str = ""
    env: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> RunContext:
        env = dict(os.environ if env is None else env)
        payload: dict[str, Any] = {}
        path = env.get("GITHUB_EVENT_PATH")
        if path and Path(path).is_file():
            try:
                payload = json.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, ValueError) as e:
                raise EventError(f"cannot read the event payload {path}: {e}") from e
        server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
        repo = env.get("GITHUB_REPOSITORY", "") or \
            str(payload.get("repository", {}).get("full_name", ""))
        run_id = env.get("GITHUB_RUN_ID", "")
        return cls(
            event_name=env.get("GITHUB_EVENT_NAME", ""),
            payload=payload if isinstance(payload, dict) else {},
            repository=repo,
            workspace=Path(env.get("GITHUB_WORKSPACE") or os.getcwd()),
            api_url=env.get("GITHUB_API_URL", "https://api.github.com").rstrip("/"),
            server_url=server,
            sha=env.get("GITHUB_SHA", ""),
            ref=env.get("GITHUB_REF", ""),
            run_url=f"{server}/{repo}/actions/runs/{run_id}" if run_id and repo else "",
            env=env,
        )

    # -- pull requests -------------------------------------------------------------------
    @property
    def is_pull_request(self) -> bool:
        return self.event_name in PR_EVENTS and "pull_request" in self.payload

    @property
    def pr(self) -> dict[str, Any]:
        return self.payload.get("pull_request") or {}

    @property
    def pr_number(self) -> int | None:
        n = self.payload.get("number") or self.pr.get("number")
        return int(n) if isinstance(n, int) or (isinstance(n, str) and n.isdigit()) else None

    @property
    def is_fork(self) -> bool:
        """Anything but a head branch proven to live in this repository: a deleted fork has
        ``head.repo: null``, and its branch name must never be pushed to here."""
        head_repo = (self.pr.get("head") or {}).get("repo") or {}
        name = str(head_repo.get("full_name") or "")
        return not name or not self.repository or name.lower() != self.repository.lower()

    @property
    def head_ref(self) -> str:
        return str((self.pr.get("head") or {}).get("ref", ""))

    @property
    def head_sha(self) -> str:
        return str((self.pr.get("head") or {}).get("sha", ""))

    # -- releases ------------------------------------------------------------------------
    @property
    def release(self) -> dict[str, Any] | None:
        rel = self.payload.get("release")
        return rel if self.event_name == "release" and isinstance(rel, dict) else None

    @property
    def tag(self) -> str:
        return self.ref.removeprefix("refs/tags/") if self.ref.startswith("refs/tags/") else ""


@dataclass(frozen=True)
class Scope:
    """What to check. ``kind``: ``diff`` (changed files between ``base`` and ``head``),
    ``all`` (every file the policy matches), ``release`` (the release's assets)."""

    kind: str
    base: str = ""
    head: str = "HEAD"
    base_label: str = "base"
    why: str = ""


def scope_for(ctx: RunContext, *, release_assets: bool) -> Scope:
    ev = ctx.event_name
    if release_assets and (ctx.release or ctx.tag):
        return Scope("release", why="release gate over the release's assets")
    if ctx.is_pull_request:
        base = str((ctx.pr.get("base") or {}).get("sha", ""))
        ref = str((ctx.pr.get("base") or {}).get("ref", "")) or "base"
        if base:
            return Scope("diff", base=base, base_label=f"`{ref}`",
                         why=f"pull request #{ctx.pr_number}: files changed against {ref}")
        return Scope("all", why="pull request without a base commit in the payload")
    if ev == "push":
        before = str(ctx.payload.get("before", ""))
        after = str(ctx.payload.get("after", "")) or "HEAD"
        if before and before != NULL_SHA and after != NULL_SHA:
            return Scope("diff", base=before, head="HEAD", base_label="the previous push",
                         why=f"push {before[:7]}..{after[:7]}")
        return Scope("all", why="push of a new branch or tag: every matching file")
    return Scope("all", why=f"{ev or 'manual run'}: every file the policy matches")
