"""The base revision a ``size-growth`` budget is judged against, for local use and hooks:
``ckpt-guard check --base REV``, or ``--base`` alone for the merge base with the default
branch (``origin/HEAD``, else ``main``, else ``master``).

Sizes come from git's object database (``cat-file -s``; an LFS pointer blob stands for its
object's size), never from checking out the base.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

from ckpt_guard.action.gitio import Git, GitError


class BaseError(Exception):
    """The base revision cannot be resolved (one line for users; exit 2)."""


def default_branch(git: Git) -> str:
    """The default branch's ref: ``origin/HEAD``'s target, else ``main``, else ``master``."""
    try:
        ref = git.run("symbolic-ref", "-q", "--short", "refs/remotes/origin/HEAD").strip()
        if ref:
            return ref
    except GitError:
        pass
    for name in ("main", "master", "origin/main", "origin/master"):
        if git.ok("rev-parse", "--verify", "-q", f"{name}^{{commit}}"):
            return name
    raise BaseError("--base: no default branch found (origin/HEAD, main or master); "
                    "name the base revision: --base REV")


def resolve_base(root: Path, rev: str) -> str:
    """The commit ``rev`` names (``""``: the merge base of HEAD with the default branch)."""
    git = Git(root)
    if not git.is_repo():
        raise BaseError("--base needs a git repository")
    try:
        if not rev:
            branch = default_branch(git)
            return git.run("merge-base", "HEAD", branch).strip()
        return git.run("rev-parse", "--verify", "-q", f"{rev}^{{commit}}").strip()
    except GitError as e:
        raise BaseError(f"--base {rev or '(merge base)'}: {e}") from e


def base_sizes(root: Path, commit: str) -> Callable[[str], int | None]:
    """A function from a checked file's absolute path to its size at ``commit`` (``0``: the
    file did not exist there; ``None``: outside the repository, no base to compare)."""
    git = Git(root)
    real_root = os.path.realpath(root)

    def size_of(abspath: str) -> int | None:
        rel = os.path.relpath(os.path.realpath(abspath), real_root)
        if rel.startswith(".."):
            return None
        size = git.size_at(commit, Path(rel).as_posix())
        return 0 if size is None else size

    return size_of
