"""Which workspace files a run checks, their sizes at the base, and LFS objects to pull."""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ckpt_guard.action.event import Scope
from ckpt_guard.action.gitio import Git, GitError, is_lfs_pointer_file, parse_lfs_pointer
from ckpt_guard.action.settings import Lfs


@dataclass
class Selection:
    """``files``: workspace-relative POSIX paths to check. ``changed``: those the event
    changed (None = no diff, all are "changed"). ``base_sizes``: size at the base commit
    (None = added there); only filled when a base was available. ``notes``: what to tell."""

    files: list[str] = field(default_factory=list)
    changed: set[str] | None = None
    base: str = ""
    base_label: str = "base"
    base_sizes: dict[str, int | None] | None = None
    old_paths: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def file_size(path: Path) -> int:
    """Bytes a file stands for: a Git LFS pointer's object size, else its size (0 if gone)."""
    try:
        if is_lfs_pointer_file(path):
            size = parse_lfs_pointer(path.read_bytes()[:1024])
            if size is not None:
                return size
        return path.stat().st_size
    except OSError:
        return 0


def _repo_files(git: Git, workspace: Path) -> list[str]:
    if git.is_repo():
        try:
            out = git.run("ls-files", "-z", "--cached", "--others", "--exclude-standard")
            return sorted({p for p in out.split("\0") if p})
        except GitError:
            pass
    return sorted(p.relative_to(workspace).as_posix() for p in workspace.rglob("*")
                  if p.is_file() and ".git" not in p.relative_to(workspace).parts)


def expand_globs(patterns: Sequence[str], workspace: Path) -> list[str]:
    """Workspace files matching the ``paths`` input (glob patterns, ``**`` recursive)."""
    found: set[str] = set()
    root = workspace.absolute()
    real_root = Path(os.path.realpath(root))
    for pat in patterns:
        pat = pat.removeprefix("./")
        if Path(pat).is_absolute():  # glob() takes relative patterns only
            try:
                pat = Path(pat).relative_to(root).as_posix()
            except ValueError:
                continue
        try:
            matches = list(workspace.glob(pat))
        except (ValueError, OSError):
            continue
        for p in matches:
            try:  # lexically inside; a symlink out is the engine's to report
                rel = Path(os.path.normpath(p.absolute())).relative_to(workspace.absolute())
            except ValueError:
                continue
            if not (p.is_file() or p.is_symlink()) or ".git" in rel.parts:
                continue
            # Through a symlinked directory the file lives outside the workspace (a pull
            # request can turn "models/" into a link to "/"): never read or rewrite it. A
            # symlinked file itself goes on: the engine reports it as leaving the repository.
            if not Path(os.path.realpath(p.parent)).is_relative_to(real_root):
                continue
            found.add(p.relative_to(workspace).as_posix())
    return sorted(found)


def select(scope: Scope, *, workspace: Path, matches: Callable[[str], bool],
           paths: Sequence[str] = ()) -> Selection:
    git = Git(workspace)
    sel = Selection(base_label=scope.base_label)
    diff_paths: list[str] | None = None
    if scope.kind == "diff":
        if git.ensure_commit(scope.base):
            try:
                changes = git.changes(scope.base, scope.head)
            except GitError as e:
                sel.warnings.append(f"cannot diff against {scope.base[:12]}: {e}")
                changes = None
            if changes is not None:
                sel.base = scope.base
                diff_paths = []
                for c in changes:
                    if c.deleted:
                        continue
                    diff_paths.append(c.path)
                    sel.old_paths[c.path] = c.old_path
        else:
            sel.warnings.append(
                f"the base commit {scope.base[:12]} is not in the checkout and could not be "
                "fetched; checking every matching file, without a size change against the base")

    if paths:
        sel.files = expand_globs(paths, workspace)
        if diff_paths is not None:
            sel.changed = set(diff_paths) & set(sel.files)
    elif diff_paths is not None:
        sel.files = [p for p in diff_paths if matches(p)]
        sel.changed = set(sel.files)
    else:
        sel.files = [p for p in _repo_files(git, workspace) if matches(p)]

    present = [p for p in sel.files if (workspace / p).exists()]
    for p in sorted(set(sel.files) - set(present)):
        sel.notes.append(f"{p}: changed by the event but not in the checked-out tree; skipped")
    sel.files = present

    if sel.base:
        sel.base_sizes = {p: git.size_at(sel.base, sel.old_paths.get(p, p)) for p in sel.files}
    return sel


def pull_lfs(sel: Selection, workspace: Path, mode: Lfs,
             skip: set[str] | None = None) -> list[str]:
    """Fetch LFS objects for the selected pointer files (``auto``/``fetch``), except those in
    ``skip`` (read by range instead). Returns the paths still pointers afterwards, and not
    read by range; problems go to ``sel.warnings``/``sel.notes``."""
    pointers = [p for p in sel.files
                if p not in (skip or ()) and is_lfs_pointer_file(workspace / p)]
    if not pointers or mode in (Lfs.OFF, Lfs.REMOTE):
        return pointers
    git = Git(workspace)
    if not Git.lfs_available():
        sel.warnings.append("git-lfs is not installed: LFS pointer files are checked as "
                            "pointers (size from the pointer only)")
        return pointers
    reason = git.lfs_pull(pointers)
    if reason:
        msg = f"git lfs pull failed for {len(pointers)} file(s): {reason}"
        (sel.warnings if mode is Lfs.FETCH else sel.notes).append(msg)
    left = [p for p in pointers if is_lfs_pointer_file(workspace / p)]
    pulled = len(pointers) - len(left)
    if pulled:
        sel.notes.append(f"fetched {pulled} LFS object(s) for the files being checked")
    return left
