"""A checkpoint directory's fix keeps the training files it deletes (issue 9, "nothing lost"):
the real HF Trainer ``checkpoint-500/`` and DeepSpeed ``global_step10/`` directories written by
torch at test time, real git repositories, the real CLI (subprocesses where it matters, a
SIGKILLed one for crashes): fix deletes → the stash holds the very files (same inodes) →
restore → every file byte-identical and ``check``'s verdict the pre-fix one."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from tests.rewrite.test_stash import _cli, _git, _run
from tests.sharded.test_fix import _run as killer

POLICY = ("version: 1\nrules:\n"
          "  optimizer-state: {action: fix, remove-training-files: true}\n"
          "  training-state: {action: fix, remove-training-files: true}\n")
DELETED = {  # what each directory's fix deletes under POLICY
    "hf-trainer-dir": {"optimizer.pt", "scheduler.pt", "scaler.pt", "rng_state.pth",
                       "training_args.bin"},
    "deepspeed-dir": {"global_step10/zero_pp_rank_0_mp_rank_00_optim_states.pt"},
}


@pytest.fixture(autouse=True)
def _own_user_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`stash list` shows the user's stash too: one of this test's own, not the session's
    (which other tests' fixes outside a repository fill)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def _files(d: Path) -> dict[str, tuple[str, int]]:
    """Every file below ``d`` (hidden leftovers included): relative path → (sha256, inode)."""
    out = {}
    for p in sorted(d.rglob("*")):
        if p.is_file():
            out[p.relative_to(d).as_posix()] = (hashlib.sha256(p.read_bytes()).hexdigest(),
                                                os.stat(p).st_ino)
    return out


def _setup(ckpt_factory, root: Path, family: str, *, git: bool = True) -> Path:
    root.mkdir(parents=True)
    if git:
        _git("init", "-q", "-b", "main", cwd=root)
    (root / ".ckpt-guard.yml").write_text(POLICY)
    return ckpt_factory.copy(family, root / "run").path


def _verdict(root: Path, d: Path) -> tuple:
    p = _run("check", str(d.relative_to(root)), "--format", "json", cwd=root)
    (f,) = json.loads(p.stdout)["files"]
    return p.returncode, f["status"], f["size_bytes"], json.dumps(f["findings"], sort_keys=True)


def _entries(root: Path) -> list[dict]:
    return json.loads(_run("stash", "list", "--format", "json", cwd=root).stdout)["entries"]


@pytest.mark.parametrize("family", list(DELETED))
def test_fix_keeps_the_deleted_files_and_restore_puts_them_back(
        ckpt_factory, tmp_path: Path, family: str) -> None:
    root = tmp_path / "repo"
    d = _setup(ckpt_factory, root, family)
    before, verdict = _files(d), _verdict(root, d)
    assert verdict[1] == "fail"
    rel = str(d.relative_to(root))
    p = _cli("fix", rel, "--format", "json", cwd=root)
    assert p.returncode == 0, p.stdout + p.stderr
    (f,) = json.loads(p.stdout)["files"]
    assert f["status"] == "fixed"
    kept = f["details"]["fix"]["stash"]
    gone = set(before) - set(_files(d))
    assert gone == DELETED[family] == set(kept["files"])
    held = Path(kept["path"])
    assert held.parent.parent == root / ".git" / "ckpt-guard" / "stash"
    assert (kept["kind"], kept["how"]) == ("directory", "hard link")
    assert kept["size"] == sum(os.stat(held / m).st_size for m in gone)
    for m in gone:  # the very files: same inodes, same bytes
        assert (hashlib.sha256((held / m).read_bytes()).hexdigest(),
                os.stat(held / m).st_ino) == before[m]

    (e,) = _entries(root)
    assert (e["kind"], e["original"], set(e["files"])) == ("directory", str(d), gone)
    assert set(e["rules"]) == ({"optimizer-state", "training-state"}
                               if family == "hf-trainer-dir" else {"optimizer-state"})
    text = _run("stash", "list", cwd=root).stdout
    assert f"{d}/ (checkpoint directory, {len(gone)} file" in text and "hard link" in text

    p = _cli("restore", rel, cwd=root)
    assert p.returncode == 0, p.stdout + p.stderr
    assert f"restored {len(gone)} file" in p.stdout
    assert _files(d) == before  # byte-identical, the same inodes, nothing else left
    assert _verdict(root, d) == verdict
    assert _entries(root) == []
    assert not [n for n in os.listdir(root / ".git" / "ckpt-guard" / "stash")]


@pytest.mark.parametrize("where", ["same-fs", "other-fs"])
def test_restore_by_a_member_path_and_outside_git_the_user_cache(
        ckpt_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, where: str) -> None:
    cache = tmp_path / "cache"
    if where == "other-fs":
        shm = Path("/dev/shm")
        if not (shm.is_dir() and os.access(shm, os.W_OK)
                and os.stat(shm).st_dev != os.stat(tmp_path).st_dev):
            pytest.skip("no second writable filesystem (/dev/shm) here")
        cache = Path(tempfile.mkdtemp(dir=shm))  # no hard link there: copies, both ways
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    try:
        root = tmp_path / "plain"
        d = _setup(ckpt_factory, root, "deepspeed-dir", git=False)
        before = _files(d)
        p = _run("fix", "run", "--format", "json", cwd=root)
        assert p.returncode == 0, p.stdout + p.stderr
        kept = json.loads(p.stdout)["files"][0]["details"]["fix"]["stash"]
        assert Path(kept["path"]).parent.parent == cache / "ckpt-guard" / "stash"
        assert kept["how"] in (("hard link",) if where == "same-fs" else ("copy", "reflink"))
        assert not (d / "global_step10" / "zero_pp_rank_0_mp_rank_00_optim_states.pt").exists()
        member = "run/ds_ckpt/global_step10/zero_pp_rank_0_mp_rank_00_optim_states.pt"
        p = _run("restore", member, cwd=root)
        assert p.returncode == 0, p.stdout + p.stderr
        got = _files(d)
        if where == "same-fs":
            assert got == before
        else:  # copied back: the same bytes (a new inode), no temporary left
            assert {m: h for m, (h, _) in got.items()} == {m: h for m, (h, _) in before.items()}
    finally:
        if where == "other-fs":
            shutil.rmtree(cache, ignore_errors=True)


def test_restore_refuses_a_member_that_exists_again_unless_forced(
        ckpt_factory, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    d = _setup(ckpt_factory, root, "hf-trainer-dir")
    before = _files(d)
    assert _run("fix", "run", cwd=root).returncode == 0
    (d / "scheduler.pt").write_bytes(b"the user's own, newer scheduler state")
    (d / "scaler.pt").write_bytes((tmp_path / "repo" / ".git" / "ckpt-guard" / "stash"
                                   / _entries(root)[0]["id"] / "originals" / "scaler.pt"
                                   ).read_bytes())  # the same bytes again: not a clash
    now = _files(d)
    p = _run("restore", "run/checkpoint-500", cwd=root)
    assert p.returncode == 1 and "--force" in p.stderr and "scheduler.pt" in p.stderr
    assert "Traceback" not in p.stdout + p.stderr
    assert _files(d) == now  # refused: nothing was put back
    p = _run("restore", "run/checkpoint-500", "--force", cwd=root)
    assert p.returncode == 0, p.stdout + p.stderr
    got = _files(d)
    assert {m: h for m, (h, _) in got.items()} == {m: h for m, (h, _) in before.items()}
    # Forced: the file it replaced was kept too; the identical one needed nothing.
    (e,) = _entries(root)
    assert (e["kind"], e["files"], e["rules"]) == ("directory", ["scheduler.pt"],
                                                   ["restore --force"])
    assert (Path(e["path"]) / "scheduler.pt").read_bytes().startswith(b"the user's own")


@pytest.mark.parametrize("how", ["file-in-the-way", "read-only"])
def test_a_failing_stash_deletes_nothing(ckpt_factory, tmp_path: Path, how: str) -> None:
    root = tmp_path / "repo"
    d = _setup(ckpt_factory, root, "hf-trainer-dir")
    stash = root / ".git" / "ckpt-guard" / "stash"
    if how == "read-only":
        if os.geteuid() == 0:
            pytest.skip("root writes into read-only directories (file-in-the-way covers it)")
        stash.mkdir(parents=True)
        stash.chmod(0o500)
    else:
        (root / ".git" / "ckpt-guard").write_text("in the way\n")
    before = _files(d)
    try:
        p = _cli("fix", "run", "--format", "json", cwd=root)
    finally:
        if how == "read-only":
            stash.chmod(0o700)
    assert p.returncode == 1 and "Traceback" not in p.stdout + p.stderr
    (f,) = json.loads(p.stdout)["files"]
    assert f["status"] == "error"
    assert any("cannot keep the training files in the stash, so none was deleted"
               in x["message"] for x in f["findings"]), f["findings"]
    assert _files(d) == before


def test_dry_run_and_no_stash_and_the_action_keep_nothing(
        ckpt_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ckpt_guard.action.checking import run_fix
    from ckpt_guard.policy import load_policy

    cache = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    root = tmp_path / "repo"
    d = _setup(ckpt_factory, root, "hf-trainer-dir")
    before = _files(d)
    p = _run("fix", "run", "--dry-run", "--format", "json", cwd=root)
    assert p.returncode == 0 and _files(d) == before
    assert "stash" not in json.loads(p.stdout)["files"][0]["details"]["fix"]
    assert not (root / ".git" / "ckpt-guard").exists()
    # The Action: stash off, the fix otherwise unchanged (the files are deleted).
    report = run_fix(["run"], load_policy(str(root / ".ckpt-guard.yml"), root), root)
    assert report.files[0].status == "fixed"
    assert set(before) - set(_files(d)) == DELETED["hf-trainer-dir"]
    assert not (root / ".git" / "ckpt-guard").exists() and not (cache / "ckpt-guard"
                                                                / "stash").exists()
    d2 = ckpt_factory.copy("deepspeed-dir", root / "run2").path
    p = _run("fix", "run2", "--no-stash", cwd=root)
    assert p.returncode == 0 and not (d2 / "global_step10" /
                                      "zero_pp_rank_0_mp_rank_00_optim_states.pt").exists()
    assert not (root / ".git" / "ckpt-guard").exists()


def test_retention_counts_directory_entries(ckpt_factory, tmp_path: Path) -> None:
    root = tmp_path / "repo"
    _setup(ckpt_factory, root, "hf-trainer-dir")
    (root / ".ckpt-guard.yml").write_text(POLICY + "stash: {max-entries: 1}\n")
    ckpt_factory.copy("deepspeed-dir", root / "run2")
    assert _run("fix", "run", cwd=root).returncode == 0
    assert _run("fix", "run2", cwd=root).returncode == 0
    (e,) = _entries(root)  # the oldest (checkpoint-500's) pruned
    assert e["original"] == str(root / "run2" / "ds_ckpt")


def test_a_member_the_fix_could_not_delete_leaves_the_entry(ckpt_factory,
                                                            tmp_path: Path) -> None:
    """The entry names only what was deleted; none deleted: no entry (stash_dir)."""
    from ckpt_guard.rewrite.stash import Keeper, entries
    from ckpt_guard.rewrite.stash_dir import keep_for, record_deleted

    d = ckpt_factory.copy("hf-trainer-dir", tmp_path / "run").path
    stash = tmp_path / "stash"
    members = {m: os.stat(d / m) for m in ("optimizer.pt", "scheduler.pt")}
    keeper = Keeper(shown="run", directory=stash)
    keep_for(keeper, str(d), members, ("optimizer-state",))
    record_deleted(keeper, ["optimizer.pt"])
    (e,) = entries(stash)
    assert e.files == ("optimizer.pt",) and e.size == members["optimizer.pt"].st_size
    assert sorted(os.listdir(e.path)) == ["optimizer.pt"]
    keeper = Keeper(shown="run", directory=stash)
    keep_for(keeper, str(d), members, ("optimizer-state",))
    record_deleted(keeper, [])
    assert keeper.entry is None and [x.id for x in entries(stash)] == [e.id]


def test_a_fix_or_restore_killed_anywhere_loses_nothing(ckpt_factory, tmp_path: Path) -> None:
    """SIGKILL (tests/sharded/killer.py) at every file-system mutation of a restore, and
    around the fix's publish and first deletion: every training file is then in the
    directory or in a complete stash entry (never neither), and one more restore gives
    every file back byte for byte."""
    probe = tmp_path / "probe"
    _setup(ckpt_factory, probe, "hf-trainer-dir")
    steps = killer(probe, "fix", "run").stderr.split("LOG=")[1].split()
    publish = steps.index(next(s for s in steps if s.startswith("rename:") and
                               not s.startswith("rename:.")))  # the entry renamed in
    first_unlink = next(i for i, s in enumerate(steps) if s.startswith("unlink:")) + 1
    restore_steps = killer(probe, "restore", "run/checkpoint-500").stderr.split(
        "LOG=")[1].split()
    assert len(restore_steps) >= len(DELETED["hf-trainer-dir"])
    cases = [("fix", k) for k in (publish, publish + 1, first_unlink, first_unlink + 2)] + [
        ("restore", k) for k in range(1, len(restore_steps) + 1)]
    for n, (cmd, k) in enumerate(cases):
        root = tmp_path / f"k{n}"
        d = _setup(ckpt_factory, root, "hf-trainer-dir")
        before = _files(d)
        if cmd == "restore":
            assert _run("fix", "run", cwd=root).returncode == 0
        p = killer(root, cmd, "run" if cmd == "fix" else "run/checkpoint-500", kill_at=k)
        assert p.returncode == -9, (cmd, k, p.stderr)
        here = {m for m, v in _files(d).items() if before.get(m, (None,))[0] == v[0]}
        kept = {m for e in _entries(root) for m in e["files"]
                if (Path(e["path"]) / m).is_file()}
        assert set(before) <= here | kept, (cmd, k, set(before) - here - kept)
        if _entries(root):
            p = _run("restore", "run/checkpoint-500", cwd=root)
            assert p.returncode == 0, (cmd, k, p.stdout + p.stderr)
        got = {m: h for m, (h, _) in _files(d).items() if not m.startswith(".")}
        assert got == {m: h for m, (h, _) in before.items()}, (cmd, k)
