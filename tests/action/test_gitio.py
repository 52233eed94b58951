"""git plumbing on real repositories: diffs, renames, shallow clones, LFS pointers."""

from __future__ import annotations

import pytest

from ckpt_guard.action.gitio import Git, parse_lfs_pointer
from tests.action.gitrepo import commit, git, has_lfs, init, lfs_init

POINTER = (b"version https://git-lfs.github.com/spec/v1\n"
           b"oid sha256:" + b"a" * 64 + b"\nsize 123456789\n")


def test_parse_lfs_pointer():
    assert parse_lfs_pointer(POINTER) == 123456789
    assert parse_lfs_pointer(b"PK\x03\x04") is None
    assert parse_lfs_pointer(POINTER + b"x" * 2000) is None


def test_changes_follow_renames_and_mark_deletes(tmp_path):
    repo = init(tmp_path / "r")
    base = commit(repo, "base", {"a.pt": b"A" * 3000, "b.pt": b"B" * 100, "c.pt": b"C" * 10,
                                 "README": b"hi"})
    (repo / "models").mkdir()
    git(repo, "mv", "a.pt", "models/a.pt")
    commit(repo, "head", {"b.pt": None, "c.pt": b"C" * 20, "new.pt": b"N"})
    changes = {c.path: c for c in Git(repo).changes(base)}
    assert changes["models/a.pt"].status == "R" and changes["models/a.pt"].old_path == "a.pt"
    assert changes["b.pt"].deleted
    assert changes["c.pt"].status == "M" and changes["new.pt"].status == "A"
    g = Git(repo)
    assert g.size_at(base, "a.pt") == 3000
    assert g.size_at(base, "new.pt") is None


def test_shallow_clone_fetches_the_base_commit(tmp_path):
    origin = init(tmp_path / "origin")
    base = commit(origin, "base", {"m.pt": b"x" * 50})
    commit(origin, "head", {"m.pt": b"y" * 80})
    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{origin}", str(clone))
    g = Git(clone)
    assert g.is_shallow() and not g.has_commit(base)
    assert g.ensure_commit(base)
    assert [c.path for c in g.changes(base)] == ["m.pt"]
    assert g.size_at(base, "m.pt") == 50
    assert not g.ensure_commit("1" * 40)


@pytest.mark.skipif(not has_lfs(), reason="git-lfs not installed (apt-get install git-lfs)")
def test_lfs_pointer_sizes_tracking_and_pull(tmp_path):
    origin = init(tmp_path / "origin")
    lfs_init(origin)
    base = commit(origin, "base", {"w.pt": b"\x01" * 4000, ".gitattributes":
                                   (origin / ".gitattributes").read_bytes()})
    commit(origin, "head", {"w.pt": b"\x02" * 9000})
    g0 = Git(origin)
    assert g0.size_at(base, "w.pt") == 4000  # the pointer's size, not the blob's
    assert int(g0.run("cat-file", "-s", f"{base}:w.pt")) < 200
    assert g0.lfs_tracked(["w.pt", "README"]) == {"w.pt"}

    clone = tmp_path / "clone"
    git(tmp_path, "clone", "-q", f"file://{origin}", str(clone), env={"GIT_LFS_SKIP_SMUDGE": "1"})
    assert parse_lfs_pointer((clone / "w.pt").read_bytes()) == 9000
    g = Git(clone)
    assert g.lfs_pull(["w.pt"]) is None
    assert (clone / "w.pt").read_bytes() == b"\x02" * 9000
