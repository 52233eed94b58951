"""Rewrite weight files: strip training state, cast FP32 weights — streaming, atomic, verified.

Public API::

    fix_file(path, analysis, rules, *, out_path=None, dry_run=False, progress=None) -> FixResult
    fix_directory(path, analysis, rules, *, dry_run=False) -> FixResult

``rules`` maps rule id → ``policy.RuleConfig`` (or a plain ``{"action": …, option: …}``);
only rules whose action is ``fix`` act. ``progress(bytes_done, bytes_total)`` is called as
storages stream through. Nothing is ever executed from the file and torch is not needed.
A failure leaves the original untouched and comes back as ``FixResult.error`` (one line).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ckpt_guard.analyze.model import Analysis
from ckpt_guard.read.checkpoint import UnreadableError
from ckpt_guard.rewrite.atomic import stale_temporaries
from ckpt_guard.rewrite.fix import FixError, _decide_overflow, _Progress, fix_torch
from ckpt_guard.rewrite.pickle_writer import PickleWriteError
from ckpt_guard.rewrite.plan import Plan, make_plan, rule
from ckpt_guard.rewrite.result import FixResult
from ckpt_guard.rewrite.safetensors import fix_safetensors
from ckpt_guard.rewrite.storage_io import InputChanged
from ckpt_guard.rewrite.verify import VerifyError

__all__ = ["fix_file", "fix_directory", "plan_fix", "FixResult", "Plan", "stale_temporaries"]

ProgressFn = Callable[[int, int], None]
_DEBUG_ENV = "CKPT_GUARD_DEBUG"
_REWRITABLE = ("torch-zip", "torch-legacy", "safetensors")
_EXPECTED = (FixError, VerifyError, PickleWriteError, InputChanged, UnreadableError, OSError,
             ValueError)


def plan_fix(analysis: Analysis, rules: Mapping[str, Any]) -> Plan:
    """What a fix would strip and cast (no I/O beyond what the analysis already did)."""
    return make_plan(analysis, rules)


def fix_file(path: str, analysis: Analysis, rules: Mapping[str, Any], *,
             out_path: str | None = None, dry_run: bool = False,
             progress: ProgressFn | None = None) -> FixResult:
    """Apply the ``fix`` rules to one weight file.

    In place by default (temporary file beside it, fsync, verify with our own reader,
    ``os.replace``, mode kept); with ``out_path`` the result goes there and ``path`` is only
    read. Never writes an output larger than the input in place.
    """
    ckpt = analysis.checkpoint
    size = ckpt.size_bytes
    if ckpt.format in ("hf-checkpoint-dir", "deepspeed-dir"):
        return fix_directory(path, analysis, rules, dry_run=dry_run)
    if ckpt.format not in _REWRITABLE:
        return FixResult(path=path, size_before=size, size_after=size,
                         notes=(f"{ckpt.format} files are not rewritten",))
    try:
        plan = make_plan(analysis, rules)
        if not plan.changed:
            return FixResult(path=path, size_before=size, size_after=size,
                             kept_fp32=tuple(plan.kept_fp32), notes=tuple(plan.notes))
        if out_path is not None:
            Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        if ckpt.format == "safetensors":
            return fix_safetensors(path, analysis, plan, out_path=out_path, dry_run=dry_run,
                                   progress=progress, decide_overflow=_decide_overflow,
                                   progress_cls=_Progress)
        return fix_torch(path, analysis, plan, out_path=out_path, dry_run=dry_run,
                         progress=progress)
    except _EXPECTED as e:
        return FixResult(path=path, size_before=size, size_after=size, error=_one_line(e))
    except Exception as e:  # a bug must not become a traceback for users (nor lose data)
        if os.environ.get(_DEBUG_ENV):
            raise
        return FixResult(path=path, size_before=size, size_after=size,
                         error=f"internal error while fixing: {type(e).__name__}: "
                               f"{_one_line(e)}")


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


# Which rule allows deleting a training file of each kind (the directory reader's hints).
_HINT_RULE = {"optimizer": "optimizer-state", "scheduler": "training-state",
              "scaler": "training-state", "rng": "training-state", "training": "training-state"}


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
                         dry_run=dry_run, removed_files=tuple(r for r, _, _ in remove))
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
                     removed=removed, removed_files=tuple(done), notes=tuple(notes))


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
