"""Real git repositories for the action's tests."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.com",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.com",
       "GIT_CONFIG_NOSYSTEM": "1", "HOME": os.environ.get("HOME", "/tmp")}


def git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True,
                          env={**ENV, **(env or {})}).stdout.strip()


def init(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "commit.gpgsign", "false")
    return path


def commit(repo: Path, message: str, files: dict[str, bytes | None]) -> str:
    """Write (bytes) or delete (None) files, commit everything, return the SHA."""
    for rel, data in files.items():
        p = repo / rel
        if data is None:
            git(repo, "rm", "-q", "--", rel)
            continue
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "--allow-empty", "-m", message)
    return git(repo, "rev-parse", "HEAD")


def has_lfs() -> bool:
    return shutil.which("git-lfs") is not None


def lfs_init(repo: Path, pattern: str = "*.pt") -> None:
    git(repo, "lfs", "install", "--local")
    git(repo, "lfs", "track", pattern)
