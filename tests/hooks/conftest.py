"""The hook repository and pre-commit's home, built once per session: pre-commit installs the
hooks into a virtualenv from PyPI (~1 min), which every hook test module reuses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]


def git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture(scope="session")
def hook_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A committed copy of the working tree (what a user's `rev:` would point at)."""
    dst = tmp_path_factory.mktemp("hookrepo") / "ckpt-guard"
    files = git("ls-files", "--cached", "--others", "--exclude-standard", cwd=ROOT).splitlines()
    for rel in files:
        src = ROOT / rel
        if src.is_file() and not rel.startswith(("tests/", "benchmarks/", "fuzz/", "examples/")):
            (dst / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst / rel)
    git("init", "-q", "-b", "main", cwd=dst)
    git("add", "-A", cwd=dst)
    git("-c", "user.email=t@example.invalid", "-c", "user.name=t", "commit", "-qm", "hooks",
        cwd=dst)
    return dst, git("rev-parse", "HEAD", cwd=dst)


@pytest.fixture(scope="session")
def pre_commit_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pre-commit-home")


def user_repo(tmp_path: Path, hook_repo: tuple[Path, str], hook_id: str) -> Path:
    repo = tmp_path / "user"
    repo.mkdir()
    git("init", "-q", "-b", "main", cwd=repo)
    git("config", "user.email", "t@example.invalid", cwd=repo)
    git("config", "user.name", "t", cwd=repo)
    path, rev = hook_repo
    config = {"repos": [{"repo": str(path), "rev": rev, "hooks": [{"id": hook_id}]}]}
    (repo / ".pre-commit-config.yaml").write_text(yaml.safe_dump(config))
    return repo


def pre_commit(repo: Path, home: Path, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PRE_COMMIT_HOME=str(home), PRE_COMMIT_COLOR="never")
    return subprocess.run([sys.executable, "-m", "pre_commit", "run", *args], cwd=repo,
                          env=env, capture_output=True, text=True, timeout=900)


