"""The rewrite entry points: fix one file (torch or safetensors), or a checkpoint directory."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ckpt_guard.analyze.model import Analysis
from ckpt_guard.policy.directories import DIRECTORY_FORMATS, plan_directory
from ckpt_guard.policy.planning import REWRITABLE
from ckpt_guard.read.checkpoint import UnreadableError
from ckpt_guard.rewrite import atomic
from ckpt_guard.rewrite.atomic import TargetError
from ckpt_guard.rewrite.directories import fix_directory
from ckpt_guard.rewrite.fix import FixError, ProgressCounter, decide_overflow, fix_torch
from ckpt_guard.rewrite.pickle_writer import PickleWriteError
from ckpt_guard.rewrite.plan import Plan, make_plan, rule
from ckpt_guard.rewrite.result import FixResult
from ckpt_guard.rewrite.safetensors import (
    convert_to_safetensors,
    convertible,
    fix_safetensors,
)
from ckpt_guard.rewrite.storage_io import InputChanged
from ckpt_guard.rewrite.verify import VerifyError
from ckpt_guard.vocab import Format

ProgressFn = Callable[[int, int], None]
_DEBUG_ENV = "CKPT_GUARD_DEBUG"
_EXPECTED = (FixError, VerifyError, PickleWriteError, InputChanged, UnreadableError,
             TargetError, OSError, ValueError)


def plan_fix(analysis: Analysis, rules: Mapping[str, Any], *,
             convert: str | None = None) -> Plan:
    """What a fix would strip and cast (no I/O beyond what the analysis already did, but for
    a small legacy file's values: rewrite.plan.projected_size)."""
    return make_plan(analysis, rules, convert=convert)


def fix_file(path: str, analysis: Analysis, rules: Mapping[str, Any], *,
             out_path: str | None = None, dry_run: bool = False,
             progress: ProgressFn | None = None, convert: str | None = None,
             stat_before: os.stat_result | None = None,
             keep: Callable[[str, os.stat_result, str], None] | None = None,
             max_shard_size: int | None = None,
             plan: Plan | None = None) -> FixResult:
    """Apply the ``fix`` rules to one weight file: carry out ``plan`` (made by
    :func:`plan_fix` when not given — the same plan check's "fixable" comes from).

    In place by default (temporary file beside it, fsync, verify with our own reader,
    ``os.replace``, mode kept); with ``out_path`` the result goes there and ``path`` is only
    read. Never writes an output larger than the input in place.

    ``convert="safetensors"`` (or a rule option ``convert: safetensors``) writes a
    state-dict style torch file's result as safetensors instead, to ``out_path`` or beside
    the input with a ``.safetensors`` suffix (never over another existing file); the input
    itself is kept.

    ``stat_before`` is ``os.stat(path)`` taken before ``analysis`` was read: a file changed
    since is not rewritten. In place, a symlink's target is rewritten (the link stays), owner,
    group and mode are kept, read-only files are refused, and leftovers of a killed run are
    removed. ``keep`` (see :mod:`.stash`) is called with the original just before an in-place
    rewrite replaces it; when it raises, the file is not rewritten (a checkpoint directory:
    the training files its fix deletes are kept first, :mod:`.stash_dir`). ``max_shard_size``
    (sharded sets): re-shard as huggingface_hub does (:mod:`.sharded`, :mod:`.reshard`).
    """
    ckpt = analysis.checkpoint
    size = ckpt.size_bytes
    unsafe = [g.use.qualname for g in analysis.globals if g.safety == "unsafe"]
    if unsafe:
        # The same verdict as check's unsafe-pickle: a rewrite re-emits every object as read,
        # so it would launder nothing; the output is re-checked as well (verify.read_back).
        return FixResult(path=path, size_before=size, size_after=size, error=(
            f"the pickle is unsafe ({unsafe[0]}): not rewritten; remove its payload first"))
    if ckpt.format in DIRECTORY_FORMATS:
        plan = plan if plan is not None else plan_directory(analysis, rules)
        if out_path is not None and plan.files:
            # A directory's fix deletes training files in place: with --out (a copy wanted,
            # the original untouched) it must not run at all.
            return FixResult(path=path, size_before=size, size_after=size, error=(
                "not fixed: --out writes copies, but a checkpoint directory's fix deletes "
                f"its training files in place ({', '.join(f.member for f in plan.files)}); "
                "run fix without --out to remove them"))
        from ckpt_guard.rewrite.stash import Keeper

        # Deleted training files are kept as one stash entry (a Keeper's), before any goes.
        return fix_directory(path, analysis, rules, dry_run=dry_run, plan=plan,
                             keep=keep if not dry_run and isinstance(keep, Keeper) else None)
    if ckpt.format == Format.DCP_DIR:
        if (convert or _option(rules, "convert")) != Format.SAFETENSORS:
            return FixResult(path=path, size_before=size, size_after=size, notes=(
                "a DCP directory is not rewritten; `convert: safetensors` in the policy writes "
                "its model weights as one safetensors file beside it",))
        from ckpt_guard.rewrite.dcp_convert import convert_dcp

        return convert_dcp(path, analysis, rules, out_path=out_path, dry_run=dry_run,
                           progress=progress)
    if ckpt.format in (Format.SHARDED_SAFETENSORS, Format.SHARDED_TORCH):
        from ckpt_guard.rewrite.sharded import SetError, fix_sharded

        try:
            return fix_sharded(path, analysis, rules, out_path=out_path, dry_run=dry_run,
                               progress=progress, convert=convert or _option(rules, "convert"),
                               max_shard_size=max_shard_size, keep=keep)
        except (SetError, *_EXPECTED) as e:
            return FixResult(path=path, size_before=size, size_after=size, error=_one_line(e))
    if ckpt.format not in REWRITABLE:
        return FixResult(path=path, size_before=size, size_after=size,
                         notes=(f"{ckpt.format} files are not rewritten",))
    try:
        plan = plan if plan is not None else make_plan(
            analysis, rules, convert=convert or _option(rules, "convert"))
        if plan.refused:
            return FixResult(path=path, size_before=size, size_after=size,
                             notes=(f"not rewritten: {plan.refused}",))
        convert = convert or _option(rules, "convert")
        if convert == Format.SAFETENSORS and ckpt.format != Format.SAFETENSORS:
            _pairs, why = convertible(plan.root)
            if _pairs is None:
                # Not a flat state dict (Lightning, YOLO, resume dicts): still fixed, as a
                # torch zip under its own name (issue 9, defect 1), and said why.
                plan.notes.append(f"not converted to safetensors ({why}): kept a torch zip")
                convert = None
        if not plan.changed and not convert:
            return FixResult(path=path, size_before=size, size_after=size,
                             kept_fp32=tuple(plan.kept_fp32), notes=tuple(plan.notes))
        if out_path is not None:
            Path(out_path).parent.mkdir(parents=True, exist_ok=True)
        if convert == Format.SAFETENSORS and ckpt.format != Format.SAFETENSORS:
            # Never safetensors bytes under a torch name, with --out too.
            target = str(Path(out_path or path).with_suffix(".safetensors"))
            beside = out_path is None and os.path.realpath(target) != os.path.realpath(path)
            if beside and os.path.lexists(target) and not dry_run:
                return FixResult(path=path, size_before=size, size_after=size, notes=(
                    f"not converted: {target} exists (remove it, or use --out DIR)",))
            source = atomic.source_for(path, stat_before, in_place=not beside,
                                       keep=None if beside else keep)
            return convert_to_safetensors(path, analysis, plan, target, dry_run=dry_run,
                                          progress=progress, decide_overflow=decide_overflow,
                                          progress_cls=ProgressCounter, source=source)
        in_place = out_path is None and not dry_run
        source = atomic.source_for(path, stat_before, in_place=in_place,
                                   keep=keep if in_place else None)
        cleaned = atomic.remove_stale(source.real) if in_place else 0
        if ckpt.format == Format.SAFETENSORS:
            result = fix_safetensors(path, analysis, plan, out_path=out_path, dry_run=dry_run,
                                     progress=progress, decide_overflow=decide_overflow,
                                     progress_cls=ProgressCounter, source=source)
        else:
            result = fix_torch(path, analysis, plan, out_path=out_path, dry_run=dry_run,
                               progress=progress, source=source)
        notes = [*(source.notes if result.changed and not dry_run else ()), *([f"removed {cleaned} temporary file(s) left by an "
                                   "interrupted fix"] if cleaned else [])]
        return replace(result, notes=result.notes + tuple(notes)) if notes else result
    except _EXPECTED as e:
        return FixResult(path=path, size_before=size, size_after=size, error=_one_line(e))
    except Exception as e:  # a bug must not become a traceback for users (nor lose data)
        if os.environ.get(_DEBUG_ENV):
            raise
        return FixResult(path=path, size_before=size, size_after=size,
                         error=f"internal error while fixing: {type(e).__name__}: "
                               f"{_one_line(e)}")


def _option(rules: Mapping[str, Any], name: str) -> str | None:
    """An option any rule carries (``convert: safetensors``)."""
    for rid in rules:
        value = rule(rules, rid).options.get(name)
        if value:
            return str(value)
    return None


def _one_line(e: BaseException) -> str:
    if isinstance(e, OSError) and e.strerror:
        return f"{e.strerror}: {e.filename}" if e.filename else e.strerror
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
