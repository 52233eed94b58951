"""`fix` keeps the original (issue 9, "nothing lost"): real files, real git repositories
(a worktree too), the real CLI in subprocesses; `torch.load` of what restore put back equals
the original."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

POLICY = "version: 1\nrules:\n  optimizer-state: fix\n  training-state: fix\n"


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", "-c", "user.email=t@example.invalid", "-c", "user.name=t",
                           *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def _cli(*args: str, cwd: Path, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ckpt_guard", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """The same CLI in this process (cheaper than a subprocess for the many small calls)."""
    import contextlib
    import io

    from ckpt_guard.cli import main

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main(list(args))
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


def _ckpt(path: Path, seed: int = 0) -> dict:
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.BatchNorm1d(16))
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(4, 8)).sum().backward()
    opt.step()
    torch.save({"epoch": seed, "model": model.state_dict(), "optimizer": opt.state_dict()},
               path)
    return torch.load(path, weights_only=True)


def _equal(a: object, b: object) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(
            _equal(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple):
        return type(a) is type(b) and len(a) == len(b) and all(map(_equal, a, b))
    return a == b


def _repo(path: Path) -> Path:
    path.mkdir(parents=True)
    _git("init", "-q", "-b", "main", cwd=path)
    (path / ".ckpt-guard.yml").write_text(POLICY)
    return path


@pytest.fixture
def no_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


def test_fix_hard_links_the_original_into_git_and_restore_puts_it_back(
        tmp_path: Path, no_user_cache: Path) -> None:
    repo = _repo(tmp_path / "repo")
    original = _ckpt(repo / "last.pt")
    ino = os.stat(repo / "last.pt").st_ino
    p = _cli("fix", "last.pt", "--format", "json", cwd=repo)
    assert p.returncode == 0, p.stderr
    kept = json.loads(p.stdout)["files"][0]["details"]["fix"]["stash"]
    stash = repo / ".git" / "ckpt-guard" / "stash"
    assert Path(kept["path"]).parent.parent == stash and kept["how"] == "hard link"
    # The stash holds the original's inode; the working name now holds the fixed file.
    assert os.stat(kept["path"]).st_ino == ino != os.stat(repo / "last.pt").st_ino
    assert torch.load(repo / "last.pt", weights_only=True)["optimizer"] is None
    assert _equal(torch.load(kept["path"], weights_only=True), original)

    text = _run("stash", "list", cwd=repo).stdout
    assert str(repo / "last.pt") in text and "optimizer-state" in text and "hard link" in text
    listed = json.loads(_run("stash", "list", "--format", "json", cwd=repo).stdout)
    (entry,) = listed["entries"]
    assert entry["rules"] == ["optimizer-state"] and entry["size"] > 0 and entry["when"]

    p = _cli("restore", "last.pt", cwd=repo)
    assert p.returncode == 0, p.stderr
    assert os.stat(repo / "last.pt").st_ino == ino  # the very file, moved back
    assert _equal(torch.load(repo / "last.pt", weights_only=True), original)
    assert json.loads(_run("stash", "list", "--format", "json", cwd=repo).stdout)[
        "entries"] == []


def test_text_output_says_where_the_original_went(tmp_path: Path, no_user_cache: Path) -> None:
    repo = _repo(tmp_path / "repo")
    _ckpt(repo / "last.pt")
    p = _run("fix", "last.pt", cwd=repo)
    assert p.returncode == 0 and "original kept: " in p.stdout, p.stdout + p.stderr
    assert "ckpt-guard restore last.pt" in p.stdout


def test_worktree_stash_is_the_common_git_dir(tmp_path: Path, no_user_cache: Path) -> None:
    repo = _repo(tmp_path / "repo")
    _git("add", "-A", cwd=repo)
    _git("commit", "-qm", "policy", cwd=repo)
    wt = tmp_path / "wt"
    _git("worktree", "add", "-q", str(wt), "-b", "exp", cwd=repo)
    assert (wt / ".git").is_file()
    original = _ckpt(wt / "run" / "last.pt") if (wt / "run").mkdir() is None else None
    p = _cli("fix", "run/last.pt", "--format", "json", cwd=wt)
    assert p.returncode == 0, p.stderr
    kept = Path(json.loads(p.stdout)["files"][0]["details"]["fix"]["stash"]["path"])
    assert kept.parent.parent == repo / ".git" / "ckpt-guard" / "stash"
    assert _cli("restore", "run/last.pt", cwd=wt).returncode == 0
    assert _equal(torch.load(wt / "run" / "last.pt", weights_only=True), original)


def test_outside_a_repository_the_user_cache_is_used_across_filesystems(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shm = Path("/dev/shm")
    cache = tmp_path / "cache"
    if shm.is_dir() and os.access(shm, os.W_OK) and \
            os.stat(shm).st_dev != os.stat(tmp_path).st_dev:
        import tempfile

        cache = Path(tempfile.mkdtemp(dir=shm))  # another filesystem: no hard link there
    try:
        env = {"XDG_CACHE_HOME": str(cache)}
        d = tmp_path / "plain"
        d.mkdir()
        (d / "policy.yml").write_text(POLICY)
        original = _ckpt(d / "last.pt")
        p = _cli("fix", "last.pt", "--policy", "policy.yml", "--format", "json", cwd=d,
                 env=env)
        assert p.returncode == 0, p.stderr
        kept = json.loads(p.stdout)["files"][0]["details"]["fix"]["stash"]
        assert kept["path"].startswith(str(cache / "ckpt-guard" / "stash"))
        if cache.parent == shm:
            assert kept["how"] in ("copy", "reflink")
        assert _equal(torch.load(kept["path"], weights_only=True), original)
        assert _cli("restore", "last.pt", cwd=d, env=env).returncode == 0
        assert _equal(torch.load(d / "last.pt", weights_only=True), original)
    finally:
        if cache.parent == shm:
            import shutil

            shutil.rmtree(cache, ignore_errors=True)


def test_restore_refuses_a_file_changed_since_the_fix_unless_forced(
        tmp_path: Path, no_user_cache: Path) -> None:
    repo = _repo(tmp_path / "repo")
    original = _ckpt(repo / "last.pt")
    assert _run("fix", "last.pt", cwd=repo).returncode == 0
    newer = _ckpt(repo / "last.pt", seed=1)  # the user trained on and saved again
    p = _run("restore", "last.pt", cwd=repo)
    assert p.returncode == 1 and "--force" in p.stderr and "Traceback" not in p.stderr
    assert _equal(torch.load(repo / "last.pt", weights_only=True), newer)
    p = _run("restore", "last.pt", "--force", cwd=repo)
    assert p.returncode == 0, p.stderr
    assert _equal(torch.load(repo / "last.pt", weights_only=True), original)
    # Forced: the newer file was kept too, nothing lost.
    (entry,) = json.loads(_run("stash", "list", "--format", "json", cwd=repo).stdout)[
        "entries"]
    assert _equal(torch.load(entry["path"], weights_only=True), newer)
    p = _run("restore", "nothing.pt", cwd=repo)
    assert p.returncode == 1 and "no stashed original" in p.stderr


def test_retention_prunes_the_oldest(tmp_path: Path, no_user_cache: Path) -> None:
    repo = _repo(tmp_path / "repo")
    (repo / ".ckpt-guard.yml").write_text(POLICY + "stash:\n  max-entries: 2\n")
    for seed in range(3):
        _ckpt(repo / "last.pt", seed=seed)
        assert _run("fix", "last.pt", cwd=repo).returncode == 0
    es = json.loads(_run("stash", "list", "--format", "json", cwd=repo).stdout)["entries"]
    assert [torch.load(e["path"], weights_only=True)["epoch"] for e in es] == [1, 2]
    (repo / ".ckpt-guard.yml").write_text(POLICY + "stash: {max-bytes: 1}\n")
    _ckpt(repo / "last.pt", seed=3)
    assert _run("fix", "last.pt", cwd=repo).returncode == 0
    es = json.loads(_run("stash", "list", "--format", "json", cwd=repo).stdout)["entries"]
    assert [torch.load(e["path"], weights_only=True)["epoch"] for e in es] == [3]


@pytest.mark.parametrize("how", ["policy", "flag"])
def test_stash_can_be_turned_off(tmp_path: Path, no_user_cache: Path, how: str) -> None:
    repo = _repo(tmp_path / "repo")
    if how == "policy":
        (repo / ".ckpt-guard.yml").write_text(POLICY + "stash: never\n")
    _ckpt(repo / "last.pt")
    p = _run("fix", "last.pt", "--format", "json", *(["--no-stash"] if how == "flag" else []),
             cwd=repo)
    assert p.returncode == 0, p.stderr
    assert "stash" not in json.loads(p.stdout)["files"][0]["details"]["fix"]
    assert not (repo / ".git" / "ckpt-guard").exists()


def test_a_failing_stash_aborts_the_fix_of_that_file(tmp_path: Path,
                                                     no_user_cache: Path) -> None:
    repo = _repo(tmp_path / "repo")
    _ckpt(repo / "last.pt")
    before = (repo / "last.pt").read_bytes()
    (repo / ".git" / "ckpt-guard").write_text("in the way\n")  # the stash cannot be made
    p = _run("fix", "last.pt", cwd=repo)
    assert p.returncode == 1 and "Traceback" not in p.stdout + p.stderr
    assert "cannot keep the original in the stash" in p.stdout
    assert (repo / "last.pt").read_bytes() == before
    assert not [n for n in os.listdir(repo) if n.endswith(".tmp")]


def test_the_action_fixes_without_a_stash(tmp_path: Path, no_user_cache: Path) -> None:
    from ckpt_guard.action.checking import run_fix
    from ckpt_guard.policy import load_policy

    repo = _repo(tmp_path / "repo")
    _ckpt(repo / "last.pt")
    policy = load_policy(str(repo / ".ckpt-guard.yml"), repo)
    report = run_fix(["last.pt"], policy, repo)
    assert report.files[0].status == "fixed"
    assert not (repo / ".git" / "ckpt-guard").exists()
    # Nothing stashed in the user cache either (the validated policy may be remembered there).
    assert not (no_user_cache / "ckpt-guard" / "stash").exists()


def test_git_dir_of_a_submodule_style_gitfile(tmp_path: Path) -> None:
    from ckpt_guard.rewrite.stash import git_dir_for, stash_dir_for

    real = tmp_path / "super" / ".git" / "modules" / "sub"
    real.mkdir(parents=True)
    sub = tmp_path / "super" / "sub"
    sub.mkdir()
    (sub / ".git").write_text("gitdir: ../.git/modules/sub\n")
    assert git_dir_for(sub / "w.pt") == real.resolve()
    assert stash_dir_for(sub / "w.pt") == real.resolve() / "ckpt-guard" / "stash"
