"""`fix` of a sharded set in place keeps the original set (issue 9, "nothing lost"): sets
written by huggingface_hub.save_torch_state_dict, real git repositories and the user cache,
the real CLI; `restore` puts back byte-identical files that safetensors loads as before."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest
from safetensors.torch import load_file

from tests.rewrite.test_stash import _git, _run
from tests.sharded.sets import index_of, make_set

POLICY = ("version: 1\nrules:\n  fp32-payload: {action: fix, cast-to: float16, "
          "max-bytes: 50kB}\n")
RESHARD = POLICY + "shards: {max-shard-size: 30kB}\n"


def _files(folder: Path) -> dict[str, str]:
    """Every file of the folder (hidden leftovers included) and its digest."""
    return {n: hashlib.sha256((folder / n).read_bytes()).hexdigest()
            for n in sorted(os.listdir(folder)) if (folder / n).is_file()}


def _tensors(index: Path) -> dict:
    out = {}
    for shard in sorted(set(index_of(index)["weight_map"].values())):
        out.update(load_file(index.parent / shard))
    return out


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and (a[k] == b[k]).all()
                                        for k in a)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    c = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(c))
    return c


def _setup(root: Path, policy: str, *, git: bool) -> Path:
    root.mkdir()
    if git:
        _git("init", "-q", "-b", "main", cwd=root)
    (root / ".ckpt-guard.yml").write_text(policy)
    return make_set(root / "m")


def _fix(root: Path, *args: str) -> dict:
    p = _run("fix", "m", "--format", "json", *args, cwd=root)
    assert p.returncode == 0, p.stdout + p.stderr
    (f,) = json.loads(p.stdout)["files"]
    assert f["status"] == "fixed", f
    return f["details"]["fix"]


@pytest.mark.parametrize(("git", "policy", "by"), [
    (True, POLICY, "m/model.safetensors.index.json"),
    (False, RESHARD, "m/model-00001-of-00002.safetensors"),
], ids=["cast-in-git", "reshard-outside-git"])
def test_set_fix_keeps_the_original_set_and_restore_puts_it_back(
        tmp_path: Path, cache: Path, git: bool, policy: str, by: str) -> None:
    root = tmp_path / "r"
    index = _setup(root, policy, git=git)
    before, tensors = _files(index.parent), _tensors(index)
    inodes = {n: os.stat(index.parent / n).st_ino for n in before}
    kept = _fix(root)["stash"]
    stash = (root / ".git" / "ckpt-guard" / "stash") if git else cache / "ckpt-guard" / "stash"
    assert Path(kept["path"]).parent.parent == stash and kept["how"] == "hard link"
    # One entry: the index first, then every shard the fix replaced or removed (all three).
    assert kept["files"] == sorted(before, key=lambda n: not n.endswith(".index.json"))
    for n in before:  # the very original files (inodes), byte for byte
        assert os.stat(Path(kept["path"]) / n).st_ino == inodes[n]
    after = _files(index.parent)
    assert after != before and not _equal(_tensors(index), tensors)
    if policy == RESHARD:
        assert sorted(after) == ["model-00001-of-00002.safetensors",
                                 "model-00002-of-00002.safetensors",
                                 "model.safetensors.index.json"]

    text = _run("stash", "list", cwd=root).stdout
    assert f"{index} + 3 shards (sharded set)" in text and "fp32-payload" in text
    (entry,) = json.loads(_run("stash", "list", "--format", "json", cwd=root).stdout)["entries"]
    assert entry["files"] == kept["files"] and entry["size"] == sum(
        os.path.getsize(Path(kept["path"]) / n) for n in kept["files"])

    p = _run("restore", by, cwd=root)  # the index or any shard: the whole set comes back
    assert p.returncode == 0 and "restored the sharded set" in p.stdout, p.stdout + p.stderr
    assert _files(index.parent) == before  # no leftover, no fixed shard, byte-identical
    assert {n: os.stat(index.parent / n).st_ino for n in before} == inodes
    assert _equal(_tensors(index), tensors)
    assert json.loads(_run("stash", "list", "--format", "json", cwd=root).stdout)[
        "entries"] == []


def test_text_report_says_where_the_set_went(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "r"
    _setup(root, POLICY, git=True)
    p = _run("fix", "m", cwd=root)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "original set (index + 3 shards) kept: " in p.stdout
    assert "ckpt-guard restore m/model.safetensors.index.json" in p.stdout


@pytest.mark.parametrize("how", ["--no-stash", "policy"])
def test_no_stash_keeps_nothing(tmp_path: Path, cache: Path, how: str) -> None:
    root = tmp_path / "r"
    _setup(root, POLICY + ("stash: never\n" if how == "policy" else ""), git=True)
    fix = _fix(root, *([how] if how == "--no-stash" else []))
    assert "stash" not in fix
    assert not (root / ".git" / "ckpt-guard").exists()
    assert not (cache / "ckpt-guard" / "stash").exists()


def test_a_failing_stash_leaves_the_set_untouched(tmp_path: Path, cache: Path) -> None:
    root = tmp_path / "r"
    index = _setup(root, RESHARD, git=True)
    (root / ".git" / "ckpt-guard").mkdir()
    (root / ".git" / "ckpt-guard" / "stash").write_text("not a directory")
    before = _files(index.parent)
    p = _run("fix", "m", cwd=root)
    assert p.returncode == 1 and "cannot keep the original set in the stash" in p.stdout, \
        p.stdout + p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    assert _files(index.parent) == before  # no new shard, no journal, no temporary


def test_restore_refuses_a_set_changed_since_unless_forced(tmp_path: Path,
                                                           cache: Path) -> None:
    root = tmp_path / "r"
    index = _setup(root, POLICY, git=True)
    before, tensors = _files(index.parent), _tensors(index)
    _fix(root)
    shard = index.parent / "model-00002-of-00003.safetensors"
    shard.write_bytes(shard.read_bytes())  # the user saved it again
    changed = _files(index.parent)
    p = _run("restore", "m/model.safetensors.index.json", cwd=root)
    assert p.returncode == 1 and "--force" in p.stderr and "Traceback" not in p.stderr
    assert _files(index.parent) == changed
    p = _run("restore", "m/model.safetensors.index.json", "--force", cwd=root)
    assert p.returncode == 0, p.stderr
    assert _files(index.parent) == before and _equal(_tensors(index), tensors)
    # Forced: the set it replaced was kept too.
    (entry,) = json.loads(_run("stash", "list", "--format", "json", cwd=root).stdout)["entries"]
    assert entry["rules"] == ["restore --force"]
    assert {n: hashlib.sha256((Path(entry["path"]) / n).read_bytes()).hexdigest()
            for n in entry["files"]} == changed


def test_a_restore_killed_at_its_commits_leaves_one_whole_set(tmp_path: Path,
                                                              cache: Path) -> None:
    """SIGKILL (tests/sharded/killer.py) just before and after each of restore's two index
    commits: the index names the fixed set or the original one, whole, never a mix; a
    forced restore then gives the original files back exactly."""
    from tests.sharded.sets import load_set
    from tests.sharded.test_fix import _run as killer

    probe = tmp_path / "probe"
    _setup(probe, RESHARD, git=True)
    _fix(probe)
    log = killer(probe, "restore", "m/model.safetensors.index.json").stderr
    steps = log.split("LOG=")[1].split()
    commits = [i + 1 for i, s in enumerate(steps) if s == "replace:model.safetensors.index.json"]
    assert len(commits) == 2
    for k in sorted({commits[0], commits[0] + 1, commits[1], commits[1] + 1}):
        root = tmp_path / f"k{k}"
        index = _setup(root, RESHARD, git=True)
        before, original = _files(index.parent), load_set(index)
        _fix(root)
        fixed = load_set(index)
        p = killer(root, "restore", "m/model.safetensors.index.json", kill_at=k)
        assert p.returncode == -9, p.stderr
        now = load_set(index)
        assert _equal(now, original if k > commits[0] else fixed), k
        p = _run("restore", "m/model.safetensors.index.json", "--force", cwd=root)
        assert p.returncode == 0, p.stdout + p.stderr
        assert _files(index.parent) == before, k
