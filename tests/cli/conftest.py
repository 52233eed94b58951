from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None,
            check_no_traceback: bool = True) -> subprocess.CompletedProcess:
    """Run the real ``ckpt-guard`` console entry in a subprocess."""
    e = dict(os.environ)
    e.pop("COLUMNS", None)
    if env:
        e.update(env)
    p = subprocess.run([sys.executable, "-m", "ckpt_guard", *args], cwd=cwd, env=e,
                       capture_output=True, text=True, timeout=300)
    if check_no_traceback:
        assert "Traceback" not in p.stderr, p.stderr
        assert "Traceback" not in p.stdout, p.stdout
    return p


@pytest.fixture
def cli():
    return run_cli


@pytest.fixture
def git_repo(tmp_path: Path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    subprocess.run(["git", "init", "-q", "-b", "main", str(repo)], check=True)
    subprocess.run(["git", "-C", str(repo), "config", "user.email", "t@example.invalid"],
                   check=True)
    subprocess.run(["git", "-C", str(repo), "config", "user.name", "t"], check=True)
    return repo
