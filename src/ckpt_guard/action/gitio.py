"""The git (and git-lfs) operations the action needs, through the ``git`` command.

Reads only metadata: diffs by name, blob sizes (``cat-file -s``), LFS pointer sizes (a pointer
blob is < 1 KiB). Base commits absent from a shallow checkout are fetched by SHA.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

LFS_SPEC = b"version https://git-lfs.github.com/spec/v1"
_POINTER_SIZE = re.compile(rb"^size (\d+)$", re.M)
_POINTER_OID = re.compile(rb"^oid sha256:([0-9a-f]{64})$", re.M)
NULL_SHA = "0" * 40


# Every git command: no hooks (a same-repository PR's earlier steps could have planted some
# in .git/hooks or set core.hooksPath), no pager/prompt.
SAFE = ("-c", "core.hooksPath=/dev/null", "--no-pager")
ENV = {"GIT_TERMINAL_PROMPT": "0"}


class GitError(RuntimeError):
    """A git command failed; the message is git's own first error line."""


@dataclass(frozen=True)
class Change:
    """One changed path between two commits. ``status`` is git's letter (A, M, R, C, T, D);
    ``old_path`` is the path at the base (differs from ``path`` for renames/copies)."""

    status: str
    path: str
    old_path: str

    @property
    def deleted(self) -> bool:
        return self.status == "D"


def parse_lfs_pointer(data: bytes) -> int | None:
    """Size of the object an LFS pointer stands for, or None if ``data`` is no pointer."""
    if len(data) > 1024 or not data.startswith(LFS_SPEC):
        return None
    m = _POINTER_SIZE.search(data)
    return int(m.group(1)) if m else None


def lfs_object(path: Path) -> tuple[str, int] | None:
    """``(sha256 oid, size)`` of the object the LFS pointer file ``path`` stands for."""
    try:
        with open(path, "rb") as fh:
            data = fh.read(1025)
    except OSError:
        return None
    size, oid = parse_lfs_pointer(data), _POINTER_OID.search(data)
    return (oid.group(1).decode(), size) if size is not None and oid else None


def is_lfs_pointer_file(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            head = fh.read(1025)
    except OSError:
        return False
    return parse_lfs_pointer(head) is not None


class Git:
    def __init__(self, cwd: Path) -> None:
        self.cwd = Path(cwd)

    def run(self, *args: str, check: bool = True, input: bytes | None = None) -> str:
        try:
            proc = subprocess.run(["git", *SAFE, *args], cwd=self.cwd, input=input,
                                  capture_output=True, timeout=600,
                                  env={**os.environ, **ENV})
        except (OSError, subprocess.TimeoutExpired) as e:
            raise GitError(f"git {args[0]}: {e}") from e
        if check and proc.returncode != 0:
            err = proc.stderr.decode(errors="replace").strip().splitlines()
            raise GitError(f"git {args[0]}: {err[-1] if err else f'exit {proc.returncode}'}")
        return proc.stdout.decode(errors="surrogateescape")

    def ok(self, *args: str) -> bool:
        try:
            self.run(*args)
        except GitError:
            return False
        return True

    # -- repository state ---------------------------------------------------------------
    def is_repo(self) -> bool:
        return self.ok("rev-parse", "--git-dir")

    def toplevel(self) -> Path | None:
        try:
            return Path(self.run("rev-parse", "--show-toplevel").strip())
        except GitError:
            return None

    def head(self) -> str | None:
        try:
            return self.run("rev-parse", "HEAD").strip()
        except GitError:
            return None

    def origin_is(self, server_url: str, repository: str) -> bool:
        """Is ``origin`` the repository ``repository`` on ``server_url`` (as actions/checkout
        leaves it)? Only then is the event's LFS server the checkout's."""
        url = self.run("remote", "get-url", "origin", check=False).strip()
        want = f"{server_url.rstrip('/')}/{repository}".lower()
        return bool(url) and url.lower().removesuffix("/").removesuffix(".git") == want

    def has_commit(self, rev: str) -> bool:
        return bool(rev) and rev != NULL_SHA and self.ok("cat-file", "-e", f"{rev}^{{commit}}")

    def is_shallow(self) -> bool:
        return self.run("rev-parse", "--is-shallow-repository", check=False).strip() == "true"

    def ensure_commit(self, rev: str, remote: str = "origin") -> bool:
        """Make ``rev`` (a SHA) available, fetching just that commit when the clone is shallow
        or lacks it. False when it cannot be had (force-pushed away, no remote, …)."""
        if self.has_commit(rev):
            return True
        if not rev or rev == NULL_SHA:
            return False
        self.ok("fetch", "--no-tags", "--no-recurse-submodules", "--depth=1", remote, rev)
        return self.has_commit(rev)

    # -- what changed ------------------------------------------------------------------
    def changes(self, base: str, head: str = "HEAD") -> list[Change]:
        """Paths changed from ``base`` to ``head`` (renames followed, ``-z`` safe)."""
        out = self.run("diff", "--name-status", "-z", "-M", base, head, "--")
        fields = out.split("\0")
        changes: list[Change] = []
        i = 0
        while i < len(fields) and fields[i]:
            status = fields[i][0]
            if status in "RC":
                changes.append(Change(status, fields[i + 2], fields[i + 1]))
                i += 3
            else:
                changes.append(Change(status, fields[i + 1], fields[i + 1]))
                i += 2
        return changes

    def tracked_files(self, rev: str | None = None) -> list[str]:
        if rev is None:
            out = self.run("ls-files", "-z", "--cached")
        else:
            out = self.run("ls-tree", "-r", "-z", "--name-only", rev)
        return [p for p in out.split("\0") if p]

    def size_at(self, rev: str, path: str) -> int | None:
        """Size of ``path`` at ``rev``: the LFS object's size when the blob is a pointer,
        else the blob's size; None when the path does not exist there."""
        spec = f"{rev}:{path}"
        try:
            size = int(self.run("cat-file", "-s", spec).strip())
        except (GitError, ValueError):
            return None
        if size <= 1024:
            try:
                proc = subprocess.run(["git", "cat-file", "blob", spec], cwd=self.cwd,
                                      capture_output=True, timeout=60, check=True)
            except (OSError, subprocess.SubprocessError):
                return size
            pointer = parse_lfs_pointer(proc.stdout)
            if pointer is not None:
                return pointer
        return size

    # -- LFS -----------------------------------------------------------------------------
    @staticmethod
    def lfs_available() -> bool:
        if shutil.which("git-lfs") is None:
            return False
        try:
            return subprocess.run(["git", "lfs", "version"], capture_output=True,
                                  timeout=30).returncode == 0
        except (OSError, subprocess.SubprocessError):
            return False

    def lfs_tracked(self, paths: Iterable[str]) -> set[str]:
        """Paths whose ``filter`` attribute is ``lfs`` (what check-added-large-files does)."""
        paths = list(paths)
        if not paths:
            return set()
        out = self.run("check-attr", "-z", "--stdin", "filter", check=False,
                       input=b"\0".join(p.encode() for p in paths) + b"\0")
        fields = out.split("\0")
        return {fields[i] for i in range(0, len(fields) - 2, 3) if fields[i + 2] == "lfs"}

    def lfs_pull(self, paths: Sequence[str]) -> str | None:
        """Fetch and check out the LFS objects of just ``paths``. None on success, else the
        reason in one line."""
        if not paths:
            return None
        # --include takes comma-separated patterns; escape the pattern characters of names.
        include = ",".join(re.sub(r"([\\*?\[\],])", r"\\\1", p) for p in paths)
        # git-lfs only checks objects out when its filter is configured ("Git LFS is not
        # installed for this repository"); configure it for this command only.
        filters = ["-c", "filter.lfs.clean=git-lfs clean -- %f",
                   "-c", "filter.lfs.smudge=git-lfs smudge -- %f",
                   "-c", "filter.lfs.process=git-lfs filter-process",
                   "-c", "filter.lfs.required=true"]
        try:
            self.run(*filters, "lfs", "pull", "--include", include, "--exclude", "")
        except GitError as e:
            return str(e)
        return None

    # -- committing fixes --------------------------------------------------------------
    def commit_and_push(self, paths: Sequence[str], message: str, branch: str,
                        remote: str = "origin") -> str:
        """Commit ``paths`` as github-actions[bot] and push to ``branch``; returns the SHA."""
        ident = ["-c", "user.name=github-actions[bot]",
                 "-c", "user.email=41898282+github-actions[bot]@users.noreply.github.com"]
        if not branch:
            raise GitError("no head branch to push to")
        # Literal pathspecs: a fixed file named "*.pt" or ":(glob)**" adds only itself.
        self.run("--literal-pathspecs", "add", "--", *paths)
        self.run(*ident, "--literal-pathspecs", "commit", "--no-verify", "--no-gpg-sign",
                 "-m", message, "--", *paths)
        self.run("push", "--no-verify", remote, f"HEAD:refs/heads/{branch}")
        return self.run("rev-parse", "HEAD").strip()
