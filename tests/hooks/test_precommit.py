"""The real `pre-commit` runs our `.pre-commit-hooks.yaml` from a git copy of this project.

pre-commit clones the hook repository at a revision and installs it into its own virtualenv
(from PyPI), exactly as users get it; PRE_COMMIT_HOME is shared across the session
(tests/hooks/conftest.py) so the environment is built once.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch
import yaml

from tests.hooks.conftest import ROOT
from tests.hooks.conftest import git as _git
from tests.hooks.conftest import pre_commit as _pre_commit
from tests.hooks.conftest import user_repo as _user_repo

WEIGHT_RE = None


def _training_ckpt(path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.BatchNorm1d(32),
                                torch.nn.Linear(32, 4))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 16)).sum().backward()
    opt.step()
    torch.save({"epoch": 5, "model": model.state_dict(), "optimizer": opt.state_dict()}, path)


def test_hook_ids_match_the_readme() -> None:
    hooks = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    readme = (ROOT / "README.md").read_text()
    for hook in hooks:
        assert hook["language"] == "python" and hook["require_serial"] is True
        assert f"id: {hook['id']}" in readme, hook["id"]


def test_files_regex_selects_weight_files() -> None:
    import re

    (hook, *_) = yaml.safe_load((ROOT / ".pre-commit-hooks.yaml").read_text())
    rx = re.compile(hook["files"])
    for name in ("a.pt", "b/c.PTH", "last.ckpt", "pytorch_model.bin", "m.safetensors",
                 "x.pth.tar", "y.pkl"):
        assert rx.search(name), name
    for name in ("README.md", "train.py", "pt", "config.json"):
        assert not rx.search(name), name


def test_check_hook_blocks_training_state(tmp_path: Path, hook_repo, pre_commit_home) -> None:
    repo = _user_repo(tmp_path, hook_repo, "ckpt-guard")
    _training_ckpt(repo / "last.pt")
    (repo / "notes.txt").write_text("not a weight file\n")
    _git("add", "-A", cwd=repo)
    p = _pre_commit(repo, pre_commit_home)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "optimizer-state" in p.stdout
    assert "last.pt" in p.stdout and "notes.txt" not in p.stdout
    assert "Traceback" not in p.stdout + p.stderr


def test_check_hook_passes_clean_weights(tmp_path: Path, hook_repo, pre_commit_home) -> None:
    repo = _user_repo(tmp_path, hook_repo, "ckpt-guard")
    torch.save({"w": torch.randn(4, 4).half()}, repo / "model.pt")
    _git("add", "-A", cwd=repo)
    p = _pre_commit(repo, pre_commit_home)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "Passed" in p.stdout


def test_fix_hook_rewrites_and_fails_like_a_fixer(tmp_path: Path, hook_repo,
                                                  pre_commit_home) -> None:
    repo = _user_repo(tmp_path, hook_repo, "ckpt-guard-fix")
    (repo / ".ckpt-guard.yml").write_text(
        "version: 1\nrules:\n  optimizer-state: {action: fix}\n"
        "  training-state: {action: fix}\n")
    _training_ckpt(repo / "last.pt")
    before = torch.load(repo / "last.pt", weights_only=True)
    _git("add", "-A", cwd=repo)
    p = _pre_commit(repo, pre_commit_home)
    assert p.returncode == 1, p.stdout + p.stderr
    assert "Fixing last.pt" in p.stdout
    after = torch.load(repo / "last.pt", weights_only=True)
    assert after.get("optimizer") is None
    for k, v in before["model"].items():
        assert torch.equal(after["model"][k], v), k
    # Stage the fix: the next run passes.
    _git("add", "-A", cwd=repo)
    p2 = _pre_commit(repo, pre_commit_home)
    assert p2.returncode == 0, p2.stdout + p2.stderr
    # The hook kept the original (resume state) in the repository's stash: restore gives it
    # back, bit for bit as torch loads it.
    assert "original kept: " in p.stdout
    (entry,) = (repo / ".git" / "ckpt-guard" / "stash").iterdir()
    r = subprocess.run([sys.executable, "-m", "ckpt_guard", "restore", "last.pt"], cwd=repo,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    restored = torch.load(repo / "last.pt", weights_only=True)
    assert restored["epoch"] == before["epoch"]
    assert restored["optimizer"]["param_groups"] == before["optimizer"]["param_groups"]
    for k, v in before["optimizer"]["state"].items():
        for name, t in v.items():
            assert torch.equal(restored["optimizer"]["state"][k][name], t), (k, name)
    for k, v in before["model"].items():
        assert torch.equal(restored["model"][k], v), k
    assert not entry.exists()
