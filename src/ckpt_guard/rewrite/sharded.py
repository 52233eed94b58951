"""Fix a sharded set as one unit: cast every shard (streaming, verified, with the single-file
writers), update the index's ``total_size``, and replace the set atomically as a whole.

Loaders reach shards only through the index, so the index is the commit point. The swap:

1. every changed shard ``F`` is written, verified and fsynced as ``.F.ckpt-guard-set-<id>``
   (a new name: the old set stays whole and is what the index names);
2. an index naming those new files, with the new ``total_size``, replaces the index
   (fsynced, directory fsynced) — commit 1: loading now gives the whole new set;
3. each new file is hard-linked over its final name ``F`` (link to a temporary name, rename;
   the old ``F`` is no longer named by the index, so replacing it is invisible to loaders);
4. an index naming the final names replaces the index — commit 2;
5. the ``.…ckpt-guard-set-…`` names are removed.

A kill at any moment leaves an index whose every entry is in a complete shard of one
generation: all old before commit 1, all new after it. A run that finds an index still naming
step-1 files (killed between the commits) finishes steps 3–5 first; leftovers no index names
are removed (:mod:`.set_swap`).

A fix that changes the set's file names — ``shards: {max-shard-size}`` re-sharding, or
``convert: safetensors`` of a ``.bin`` set — writes the whole set anew through the same swap
(:mod:`.reshard`).
"""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from ckpt_guard.analyze.model import Analysis
from ckpt_guard.policy.model import RuleConfig
from ckpt_guard.policy.rules.fp32_payload import set_payload, unlimited
from ckpt_guard.read import read_path
from ckpt_guard.read.checkpoint import UnreadableError
from ckpt_guard.read.sharded import expected_total_size, load_index
from ckpt_guard.read.tree import DTYPE_SIZES
from ckpt_guard.rewrite import atomic
from ckpt_guard.rewrite.plan import Plan, make_plan
from ckpt_guard.rewrite.result import FixResult
from ckpt_guard.rewrite.set_swap import (
    _names_step1,
    cleanup_folder,
    finish_swap,
    recover,
    temp_name,
    write_index,
)
from ckpt_guard.rewrite.set_writer import index_bytes
from ckpt_guard.rewrite.tree_ops import storages_of

ProgressFn = Callable[[int, int], None]


class SetError(Exception):
    """The set cannot be rewritten as a unit. One line for users."""


def _shard_rules(analysis: Analysis, rules: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """Per-shard rules: ``fp32-payload`` decided once over the set (its ``max-bytes`` is the
    set's), then every shard casts what is castable in it."""
    out = dict(rules)
    notes: list[str] = []
    cfg = rules.get("fp32-payload")
    if isinstance(cfg, RuleConfig) and cfg.fixes:
        payload = set_payload(analysis, rules)
        if payload is not None and payload.over_limit:
            out["fp32-payload"] = unlimited(cfg)
        else:
            out["fp32-payload"] = RuleConfig("off")
            if payload is not None and payload.castable:
                notes.append(f"float32 weights not cast: {payload.castable:,} castable bytes in "
                             f"the set, not over fp32-payload max-bytes ({payload.limit:,})")
    return out, notes


def fix_sharded(index_path: str, analysis: Analysis, rules: Mapping[str, Any], *,
                out_path: str | None = None, dry_run: bool = False,
                progress: ProgressFn | None = None, convert: str | None = None,
                max_shard_size: int | None = None, keep: Any = None) -> FixResult:
    """Apply the ``fix`` rules to every shard of the set ``index_path`` names; see the module
    docstring for how the set is replaced. ``out_path``: write the fixed set there (the index
    at ``out_path``, shards beside it) and leave the input as it is. ``convert=
    "safetensors"`` (a ``.bin`` set) and ``max_shard_size`` (re-shard) write the set anew,
    under new names (:mod:`.reshard`). ``keep`` (a :class:`.stash.Keeper`, in place only):
    the index and every shard the fix replaces or removes are stashed as one entry before
    the first commit; when that fails, the set is left as it was."""
    from ckpt_guard.rewrite.fix import ProgressCounter, decide_overflow, fix_torch
    from ckpt_guard.rewrite.safetensors import fix_safetensors

    ckpt = analysis.checkpoint
    size = ckpt.size_bytes
    folder = os.path.dirname(index_path) or "."
    if not dry_run and not out_path and _names_step1(index_path):
        raise SetError("an interrupted fix left this set under temporary names; run "
                       "`ckpt-guard fix` on it again to finish")
    problems = ckpt.metadata.get("shard_problems") or []
    if problems:
        raise SetError(f"the index disagrees with its shards ({problems[0]['message']}): "
                       "not rewritten; repair the set first")
    shard_rules, notes = _shard_rules(analysis, rules)
    out_folder = os.path.dirname(out_path) or "." if out_path else folder
    token = secrets.token_hex(4)
    plans: list[tuple[str, Analysis, Plan]] = []
    kept: list[tuple[str, str]] = []
    for rel, child, _hint in analysis.children:
        if not isinstance(child, Analysis) or child.checkpoint.format not in (
                "safetensors", "torch-zip", "torch-legacy"):
            raise SetError(f"shard {rel} cannot be rewritten "
                           f"({getattr(getattr(child, 'checkpoint', None), 'format', child)})")
        plan = make_plan(child, shard_rules)
        kept.extend(plan.kept_fp32)
        notes.extend(n for n in plan.notes if n not in notes)
        plans.append((rel, child, plan))
    renamed = _rewrite_set(index_path, analysis, plans, ckpt.format, convert, max_shard_size,
                           out_path=out_path, dry_run=dry_run, progress=progress, notes=notes,
                           kept=kept, keep=keep)
    if renamed is not None:
        return renamed
    changed = [(rel, child, plan) for rel, child, plan in plans if plan.changed]
    if not changed and not out_path:
        return FixResult(path=index_path, size_before=size, size_after=size,
                         kept_fp32=tuple(kept), notes=tuple(notes))
    results: dict[str, FixResult] = {}
    written: dict[str, str] = {}  # shard → the name it has in the new index
    try:
        for rel, child, plan in plans:
            src = os.path.join(folder, rel)
            if not plan.changed:
                if out_path:  # an unchanged shard is copied as it is
                    written[rel] = rel
                    if not dry_run:
                        _copy(src, os.path.join(out_folder, rel))
                continue
            name = rel if out_path else temp_name(rel, token)
            dest = os.path.join(out_folder, name)
            if child.checkpoint.format == "safetensors":
                res = fix_safetensors(src, child, plan, out_path=dest, dry_run=dry_run,
                                      progress=progress, decide_overflow=decide_overflow,
                                      progress_cls=ProgressCounter)
            else:
                res = fix_torch(src, child, plan, out_path=dest, dry_run=dry_run,
                                progress=progress)
            if res.error:
                raise SetError(f"{rel}: {res.error}")
            results[rel] = res
            written[rel] = name
        sizes = {rel: os.path.getsize(os.path.join(folder, rel)) for rel, _c, _p in plans}
        sizes.update({rel: r.size_after for rel, r in results.items()})
        index = load_index(index_path)
        if dry_run:  # the index as it would be written (total_size's digits count too)
            projected = dict(index)
            projected["metadata"] = {**(index.get("metadata") or {}),
                                     "total_size": _projected_total(plans)}
            index_size = len(index_bytes(projected))
            return _result(index_path, size, sum(sizes.values()) + index_size, results, kept,
                           notes, dry_run=True, out_path=out_path)
        new_children = []
        for rel, _c, _p in plans:
            back = read_path(os.path.join(out_folder, written.get(rel, rel)))
            new_children.append((rel, back, "weights"))
        index.setdefault("metadata", {})
        if index["metadata"] is None:
            index["metadata"] = {}
        index["metadata"]["total_size"] = expected_total_size(new_children)
        wm = index["weight_map"]
        index["weight_map"] = {k: written.get(v, v) for k, v in wm.items()}
        target_index = out_path or index_path
        if keep is not None and not out_path:  # the originals, before any is replaced
            keep.keep_set(index_path, sorted(results))
        index_size = write_index(target_index, index)  # commit 1 (in place)
        if not out_path:
            finish_swap(index_path)  # steps 3–5: final names, commit 2, cleanup
            index_size = os.path.getsize(index_path)
            if keep is not None:
                keep.set_written(index_path)
    except BaseException:
        if not out_path and not dry_run:
            with contextlib.suppress(OSError, UnreadableError, ValueError):
                cleanup_folder(folder)
        raise
    return _result(index_path, size, sum(sizes.values()) + index_size, results, kept, notes,
                   dry_run=False, out_path=out_path)


def _projected_total(plans: list[tuple[str, Analysis, Plan]]) -> int:
    """The new ``total_size`` a dry run projects: each kept storage once, cast ones at the
    size of their target."""
    total = 0
    for _rel, _child, plan in plans:
        targets = {id(i.storage): i.target for i in plan.cast}
        for sid, st in storages_of(plan.root).items():
            target = targets.get(sid)
            total += st.numel * DTYPE_SIZES[target] if target else st.nbytes
    return total


def _rewrite_set(index_path: str, analysis: Analysis, plans: list[tuple[str, Analysis, Plan]],
                 fmt: str, convert: str | None, max_shard_size: int | None, *,
                 out_path: str | None, dry_run: bool, progress: ProgressFn | None,
                 notes: list[str], kept: list[tuple[str, str]],
                 keep: Any = None) -> FixResult | None:
    """The set written anew when it is converted or re-sharded; ``None``: fixed shard by
    shard under its own names (nothing to convert, the layout already as asked)."""
    from ckpt_guard.rewrite.reshard import SetRefused, convert_refusal, rewrite_set

    to_safetensors = convert == "safetensors" and fmt == "sharded-torch"
    if to_safetensors:
        why = convert_refusal(plans)
        if why:  # as a single-file convert: still fixed, under its own format, and said why
            notes.append(f"not converted to safetensors ({why}): kept a torch set")
            to_safetensors = False
    if max_shard_size is not None and fmt == "sharded-torch" and not to_safetensors:
        notes.append("max-shard-size re-shards safetensors sets (with `convert: safetensors` "
                     "a .bin set is written as one); the .bin shards keep their boundaries")
        max_shard_size = None
    if not to_safetensors and max_shard_size is None:
        return None
    try:
        return rewrite_set(index_path, analysis, plans, convert=to_safetensors,
                           max_shard_size=max_shard_size, out_path=out_path, dry_run=dry_run,
                           progress=progress, notes=notes, kept=kept, keep=keep)
    except SetRefused as e:
        return FixResult(path=index_path, size_before=analysis.checkpoint.size_bytes,
                         size_after=analysis.checkpoint.size_bytes, kept_fp32=tuple(kept),
                         notes=(*notes, str(e)))


def _copy(src: str, dest: str) -> None:
    import shutil

    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    with atomic.temporary_beside(dest) as (fh, tmp):
        with open(src, "rb") as s:
            shutil.copyfileobj(s, fh, 1 << 20)
        atomic.sync_file(fh)
        fh.close()
        atomic.commit(tmp, dest, mode_from=src)


def _result(path: str, before: int, after: int, results: dict[str, FixResult],
            kept: list[tuple[str, str]], notes: list[str], *, dry_run: bool,
            out_path: str | None) -> FixResult:
    rs = list(results.values())
    removed: dict[str, int] = {}
    for r in rs:
        for k, v in r.removed.items():
            removed[k] = removed.get(k, 0) + v
    shard_notes = [f"{len(rs)} shard{'s' if len(rs) != 1 else ''} "
                   f"{'would be' if dry_run else ''}{' ' if dry_run else ''}rewritten; the "
                   f"index's total_size {'would be' if dry_run else 'was'} updated"]
    return FixResult(
        path=path, changed=True, size_before=before, size_after=after, removed=removed,
        cast_bytes=sum(r.cast_bytes for r in rs),
        cast_to=",".join(sorted({t for r in rs if r.cast_to for t in r.cast_to.split(",")}))
        or None,
        kept_fp32=tuple(kept),
        max_abs_err=max((r.max_abs_err for r in rs), default=0.0),
        max_rel_err=max((r.max_rel_err for r in rs), default=0.0),
        flushed_to_zero=sum(r.flushed_to_zero for r in rs),
        subnormal=sum(r.subnormal for r in rs),
        changes=tuple(c for r in rs for c in r.changes),
        notes=tuple([*notes, *shard_notes]), out_path=out_path, dry_run=dry_run)


__all__ = ["SetError", "finish_swap", "fix_sharded", "recover"]
