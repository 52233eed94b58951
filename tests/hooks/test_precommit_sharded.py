"""Issue 10: sharded sets under the real `pre-commit`, when only some shards are staged.

pre-commit hands the hook the staged files that match its regex (shards; never the
``*.index.json``), after setting aside unstaged *modifications* of tracked files (its
staged-files-only stash); files never added to git stay on disk. ckpt-guard checks a named
shard as its whole set (the CLI path, tests/sharded/test_check.py). So, as users get it:

* the set is checked as one unit, as the work tree holds it during the hook: a bad shard that
  was never added to git (an untracked file of the set being committed) fails the commit of
  any shard of that set;
* a tracked shard's bad unstaged edit is not what is being committed: pre-commit stashes it,
  the set is checked with the committed shard, the edit comes back afterwards;
* the fix hook fixes the whole set (every shard cast, the index updated) when one shard is
  staged, and fails like a fixer; staging its result passes.

The hook environment is built once per session (tests/hooks/conftest.py).
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tests.adversarial import pickles as P
from tests.hooks.conftest import git, pre_commit, user_repo
from tests.sharded.sets import index_of, load_set, make_set

PAYLOAD = P.wrap_dict(P.system_call("true"))


def _shards(index: Path) -> list[str]:
    return sorted(set(index_of(index)["weight_map"].values()))


def _commit_all(repo: Path) -> None:
    """Commit without running hooks (they are not installed as git hooks here)."""
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "set", cwd=repo)


def test_an_untracked_bad_shard_fails_the_staged_set(tmp_path: Path, hook_repo,
                                                    pre_commit_home) -> None:
    repo = user_repo(tmp_path, hook_repo, "ckpt-guard")
    index = make_set(repo / "m", safe=False)
    first, *_, last = _shards(index)
    (index.parent / last).write_bytes(PAYLOAD)  # never added to git
    git("add", f"m/{first}", cwd=repo)
    assert git("status", "--porcelain", f"m/{last}", cwd=repo).startswith("??")
    p = pre_commit(repo, pre_commit_home)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "m/pytorch_model.bin.index.json" in out  # the set, reported once as its index
    assert "unsafe-pickle" in out and last in out
    assert "Traceback" not in out


def test_a_tracked_shards_unstaged_edit_is_stashed_and_the_staged_set_passes(
        tmp_path: Path, hook_repo, pre_commit_home) -> None:
    repo = user_repo(tmp_path, hook_repo, "ckpt-guard")
    index = make_set(repo / "m", safe=False)
    _commit_all(repo)
    first, *_, last = _shards(index)
    shard = torch.load(index.parent / first, weights_only=True)
    torch.save({k: v * 2 for k, v in shard.items()}, index.parent / first)  # still a good shard
    git("add", f"m/{first}", cwd=repo)
    (index.parent / last).write_bytes(PAYLOAD)  # tracked, modified, not staged
    p = pre_commit(repo, pre_commit_home, "--verbose")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out
    assert "m/pytorch_model.bin.index.json" in out and "PASS" in out  # checked as the set
    assert (index.parent / last).read_bytes() == PAYLOAD  # pre-commit put the edit back
    assert git("diff", "--name-only", cwd=repo).split() == [f"m/{last}"]  # unstaged
    assert git("diff", "--cached", "--name-only", cwd=repo).split() == [f"m/{first}"]


def test_fix_hook_fixes_the_whole_set_when_one_shard_is_staged(tmp_path: Path, hook_repo,
                                                               pre_commit_home) -> None:
    repo = user_repo(tmp_path, hook_repo, "ckpt-guard-fix")
    (repo / ".ckpt-guard.yml").write_text(
        "version: 1\nrules:\n  fp32-payload: {action: fix, cast-to: float16, "
        "max-bytes: 50kB}\n")
    index = make_set(repo / "m")
    _commit_all(repo)
    first = _shards(index)[0]
    tensors = load_file(index.parent / first)
    save_file({k: v * 2 for k, v in tensors.items()}, index.parent / first,
              metadata={"format": "pt"})
    before = load_set(index)
    git("add", f"m/{first}", cwd=repo)
    p = pre_commit(repo, pre_commit_home)
    out = p.stdout + p.stderr
    assert p.returncode == 1, out
    assert "Fixing m/model.safetensors.index.json" in out
    after = load_set(index)
    assert set(after) == set(before)
    for k, v in before.items():  # every shard cast, staged or not (norm statistics kept)
        want = v.half() if v.dtype == torch.float32 and "running_" not in k else v
        assert after[k].dtype == want.dtype and torch.equal(after[k], want), k
    assert index_of(index)["metadata"]["total_size"] == sum(
        v.numel() * v.element_size() for v in after.values())
    changed = set(git("diff", "--name-only", cwd=repo).split())
    assert changed >= {f"m/{s}" for s in _shards(index)} | {"m/model.safetensors.index.json"}
    git("add", "-A", cwd=repo)
    p2 = pre_commit(repo, pre_commit_home)
    assert p2.returncode == 0, p2.stdout + p2.stderr
