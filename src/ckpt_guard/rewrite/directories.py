"""Checkpoint directories (Hugging Face Trainer, DeepSpeed): delete training files, only
when the policy opts in — never silently."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ckpt_guard.analyze.model import Analysis
from ckpt_guard.policy.plan_types import Change
from ckpt_guard.rewrite.plan import rule
from ckpt_guard.rewrite.result import FixResult

# Which rule allows deleting a training file of each kind (the directory reader's hints).
# Small resume metadata (trainer_state.json, training_args.bin: hint "training") is kept.
_HINT_RULE = {"optimizer": "optimizer-state", "scheduler": "training-state",
              "scaler": "training-state", "rng": "training-state"}


def fix_directory(path: str, analysis: Analysis, rules: Mapping[str, Any], *,
                  dry_run: bool = False) -> FixResult:
    """Hugging Face Trainer / DeepSpeed checkpoint directories: delete training files, only
    for rules with ``action: fix`` AND ``remove-training-files: true`` — never silently."""
    ckpt = analysis.checkpoint
    root = Path(path)
    remove: list[tuple[str, int, str]] = []
    for rel, _child, hint in ckpt.children:
        rid = _HINT_RULE.get(hint)
        if rid is None:
            continue
        r = rule(rules, rid)
        if not (r.fixes and r.options.get("remove-training-files", False)):
            continue
        p = root / rel
        try:
            size = p.stat().st_size
        except OSError:
            continue
        remove.append((rel, size, hint))
    total = _dir_size(root)
    removed: dict[str, int] = {}
    for _rel, size, hint in remove:
        role = hint if hint in ("optimizer", "scheduler", "scaler", "rng") else "other"
        removed[role] = removed.get(role, 0) + size
    freed = sum(size for _, size, _ in remove)
    notes = []
    if not remove and any(_HINT_RULE.get(h) for _, _, h in ckpt.children):
        notes.append("training files kept: set remove-training-files: true on the rule to "
                     "let fix delete them")
    if dry_run or not remove:
        return FixResult(path=path, changed=bool(remove), size_before=total,
                         size_after=total - freed, removed=removed, notes=tuple(notes),
                         dry_run=dry_run, removed_files=tuple(r for r, _, _ in remove),
                         changes=tuple(Change.removed(r) for r, _, _ in remove))
    done: list[str] = []
    for rel, _size, _hint in remove:
        try:
            (root / rel).unlink()
        except OSError as e:
            return FixResult(path=path, changed=bool(done), size_before=total,
                             size_after=_dir_size(root), removed_files=tuple(done),
                             error=f"cannot remove {rel}: {e.strerror or e}")
        done.append(rel)
        _prune_empty(root, (root / rel).parent)
    return FixResult(path=path, changed=True, size_before=total, size_after=_dir_size(root),
                     removed=removed, removed_files=tuple(done), notes=tuple(notes),
                     changes=tuple(Change.removed(r) for r in done))


def _dir_size(root: Path) -> int:
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for f in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(dirpath, f)).st_size
    return total


def _prune_empty(root: Path, d: Path) -> None:
    """Remove directories emptied by the deletion (a DeepSpeed ``global_stepN/``)."""
    while d != root and root in d.parents:
        try:
            d.rmdir()
        except OSError:
            return
        d = d.parent
