"""Checkpoint directories (Hugging Face Trainer, DeepSpeed): carry out the directory's plan
(:func:`ckpt_guard.policy.directories.plan_directory`) — delete the training files it names,
nothing else. Which files, and why, is decided there (and only there): check's "fixable", the
dry run and this run read the same plan. With a stash (:mod:`.stash_dir`), every file about to
be deleted is kept there first, as one entry; if that fails, nothing is deleted.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ckpt_guard.analyze.model import Analysis
from ckpt_guard.policy.directories import plan_directory
from ckpt_guard.policy.plan_types import Change, FilePlan, FileRemoval
from ckpt_guard.rewrite.result import FixResult

if TYPE_CHECKING:
    from ckpt_guard.rewrite.stash import Keeper


def fix_directory(path: str, analysis: Analysis, rules: Mapping[str, Any], *,
                  dry_run: bool = False, plan: FilePlan | None = None,
                  keep: Keeper | None = None) -> FixResult:
    """Delete the training files ``plan`` (made from ``rules`` when not given) names: only
    for rules with ``action: fix`` AND ``remove-training-files: true`` — never silently.

    A dry run is the plan, unexecuted. Each file is deleted on its own (``unlink`` is atomic);
    one that cannot be deleted, or whose size changed since it was read (a run writing it
    again), is left and reported, and the others are still deleted. Folders the deletion
    empties (a DeepSpeed ``global_stepN/``) are removed. ``keep`` (a :class:`.stash.Keeper`):
    the files to delete are first kept in its stash as one complete entry (then
    ``keep.entry``); when that fails nothing is deleted and the result is an error."""
    plan = plan if plan is not None else plan_directory(analysis, rules)
    size = analysis.checkpoint.size_bytes
    if plan.refused:
        return FixResult(path=path, size_before=size, size_after=size,
                         notes=(f"not changed: {plan.refused}",))
    if dry_run or not plan.files:
        return _result(path, size, plan.files, plan, dry_run=dry_run)
    root = Path(path)
    done: list[FileRemoval] = []
    errors: list[str] = []
    todo: dict[str, tuple[FileRemoval, os.stat_result]] = {}
    for f in plan.files:
        try:
            st = os.stat(root / f.member)  # as the reader listed it
        except OSError as e:
            errors.append(f"cannot remove {f.member}: {e.strerror or e}")
            continue
        if st.st_size != f.nbytes:
            errors.append(f"{f.member} changed since it was read ({f.nbytes:,} bytes, now "
                          f"{st.st_size:,}): not removed")
            continue
        todo[f.member] = (f, st)
    if keep is not None and todo:
        from ckpt_guard.rewrite.stash import StashError
        from ckpt_guard.rewrite.stash_dir import keep_for

        rules = tuple(r for r, rp in plan.rules.items() if rp.files)
        try:
            keep_for(keep, path, {m: st for m, (_, st) in todo.items()}, rules)
        except StashError as e:
            return FixResult(path=path, size_before=size, size_after=size,
                             notes=tuple(plan.notes), error="; ".join([str(e), *errors]))
    for f, st in todo.values():
        target = root / f.member
        try:
            now = os.stat(target)
            if (now.st_ino, now.st_size, now.st_mtime_ns) != (
                    st.st_ino, st.st_size, st.st_mtime_ns):  # written again since it was kept
                errors.append(f"{f.member} changed while being fixed: not removed")
                continue
            target.unlink()
        except OSError as e:
            errors.append(f"cannot remove {f.member}: {e.strerror or e}")
            continue
        done.append(f)
        _prune_empty(root, target.parent)
    if keep is not None and keep.entry is not None:
        from ckpt_guard.rewrite.stash_dir import record_deleted

        record_deleted(keep, [f.member for f in done])
    return _result(path, size, done, plan, error="; ".join(errors) or None)


def _result(path: str, size: int, files: list[FileRemoval], plan: FilePlan, *,
            dry_run: bool = False, error: str | None = None) -> FixResult:
    removed: dict[str, int] = {}
    for f in files:
        removed[f.role] = removed.get(f.role, 0) + f.nbytes
    return FixResult(path=path, changed=bool(files), size_before=size,
                     size_after=size - sum(f.nbytes for f in files), removed=removed,
                     notes=tuple(plan.notes), dry_run=dry_run, error=error,
                     removed_files=tuple(f.member for f in files),
                     changes=tuple(Change.file_removed(f.member) for f in files))


def _prune_empty(root: Path, d: Path) -> None:
    """Remove directories emptied by the deletion (a DeepSpeed ``global_stepN/``)."""
    while d != root and root in d.parents:
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent
