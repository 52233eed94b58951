"""The base revision a ``size-growth`` budget is judged against, for local use and hooks:
``ckpt-guard check --base REV``, or ``--base`` alone for the merge base with the default
branch (``origin/HEAD``, else ``main``, else ``master``).

Sizes come from git's object database (``cat-file -s``; an LFS pointer blob stands for its
object's size), never from checking out the base.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from ckpt_guard.read.lfs import MAX_POINTER_BYTES, looks_like_lfs_pointer

_POINTER_SIZE = re.compile(rb"^size (\d+)$", re.M)
# No hooks, pager or prompt: the same hygiene as the Action's git calls.
_SAFE = ("-c", "core.hooksPath=/dev/null", "--no-pager")


class BaseError(Exception):
    """The base revision cannot be resolved (one line for users; exit 2)."""


def _git(root: Path, *args: str) -> str | None:
    """``git args`` in ``root``: its stdout, or ``None`` when it fails."""
    try:
        p = subprocess.run(["git", *_SAFE, *args], cwd=root, capture_output=True, timeout=120,
                           env={**os.environ, "GIT_TERMINAL_PROMPT": "0"})
    except (OSError, subprocess.SubprocessError):
        return None
    return p.stdout.decode("utf-8", "surrogateescape") if p.returncode == 0 else None


def default_branch(root: Path) -> str:
    """The default branch's ref: ``origin/HEAD``'s target, else ``main``, else ``master``."""
    ref = (_git(root, "symbolic-ref", "-q", "--short", "refs/remotes/origin/HEAD") or "").strip()
    if ref:
        return ref
    for name in ("main", "master", "origin/main", "origin/master"):
        if _git(root, "rev-parse", "--verify", "-q", f"{name}^{{commit}}") is not None:
            return name
    raise BaseError("--base: no default branch found (origin/HEAD, main or master); "
                    "name the base revision: --base REV")


def resolve_base(root: Path, rev: str) -> str:
    """The commit ``rev`` names (``""``: the merge base of HEAD with the default branch)."""
    if _git(root, "rev-parse", "--git-dir") is None:
        raise BaseError("--base needs a git repository")
    if not rev:
        branch = default_branch(root)
        commit = _git(root, "merge-base", "HEAD", branch)
        if commit is None:
            raise BaseError(f"--base: HEAD and {branch} have no merge base")
        return commit.strip()
    commit = _git(root, "rev-parse", "--verify", "-q", f"{rev}^{{commit}}")
    if commit is None:
        raise BaseError(f"--base {rev}: not a commit in this repository")
    return commit.strip()


def size_at(root: Path, commit: str, relpath: str) -> int | None:
    """Size of ``relpath`` at ``commit`` — an LFS pointer blob stands for its object's size —
    or ``None`` when it does not exist there."""
    spec = f"{commit}:{relpath}"
    out = _git(root, "cat-file", "-s", spec)
    if out is None or not out.strip().isdigit():
        return None
    size = int(out)
    if size <= MAX_POINTER_BYTES:
        try:
            blob = subprocess.run(["git", *_SAFE, "cat-file", "blob", spec], cwd=root,
                                  capture_output=True, timeout=60, check=True).stdout
        except (OSError, subprocess.SubprocessError):
            return size
        m = _POINTER_SIZE.search(blob) if looks_like_lfs_pointer(blob) else None
        if m:
            return int(m.group(1))
    return size


def base_sizes(root: Path, commit: str) -> Callable[[str], int | None]:
    """A function from a checked file's absolute path to its size at ``commit`` (``0``: the
    file did not exist there; ``None``: outside the repository, no base to compare)."""
    real_root = os.path.realpath(root)

    def size_of(abspath: str) -> int | None:
        rel = os.path.relpath(os.path.realpath(abspath), real_root)
        if rel.startswith(".."):
            return None
        size = size_at(root, commit, Path(rel).as_posix())
        return 0 if size is None else size

    return size_of
