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
are removed.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable, Mapping
from typing import Any

from ckpt_guard.analyze.model import Analysis
from ckpt_guard.policy.model import RuleConfig
from ckpt_guard.policy.rules.fp32_payload import set_payload, unlimited
from ckpt_guard.read import read_path
from ckpt_guard.read.checkpoint import UnreadableError
from ckpt_guard.read.sharded import SET_TEMP_MARK, expected_total_size, load_index
from ckpt_guard.rewrite import atomic
from ckpt_guard.rewrite.plan import Plan, make_plan
from ckpt_guard.rewrite.result import FixResult

ProgressFn = Callable[[int, int], None]


class SetError(Exception):
    """The set cannot be rewritten as a unit. One line for users."""


def _temp_name(final: str, token: str) -> str:
    """``.ckpt-guard-set-<token>.<final name>``: hidden, and ending as the final name does
    (transformers picks the safetensors or torch loader by a shard's extension)."""
    head, base = os.path.split(final)
    return os.path.join(head, f"{SET_TEMP_MARK}{token}.{base}")


def _final_name(temp: str) -> str | None:
    """The final shard name a step-1 file stands for (``None``: not one of ours)."""
    head, base = os.path.split(temp)
    if not base.startswith(SET_TEMP_MARK):
        return None
    _token, dot, final = base[len(SET_TEMP_MARK):].partition(".")
    return os.path.join(head, final) if dot and final else None


def _write_index(path: str, index: dict[str, Any]) -> int:
    """Replace the index atomically (temporary beside it, fsync, rename, directory fsync)."""
    data = (json.dumps(index, indent=2, sort_keys=False, ensure_ascii=False) + "\n").encode()
    with atomic.temporary_beside(path) as (fh, tmp):
        fh.write(data)
        atomic.sync_file(fh)
        fh.close()
        atomic.commit(tmp, path, mode_from=path if os.path.exists(path) else None)
    return len(data)


def _link_over(folder: str, temp: str, final: str) -> None:
    """Make ``final`` the same file as ``temp``: link to a fresh name, rename over."""
    link = os.path.join(folder, _temp_name(final, "link-" + secrets.token_hex(4)))
    os.link(os.path.join(folder, temp), link)
    try:
        os.replace(link, os.path.join(folder, final))
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(link)
        raise


def finish_swap(index_path: str) -> bool:
    """Steps 3–5 for an index that still names step-1 files (a run killed between the two
    commits), then remove leftovers no index names. Returns whether anything was done."""
    folder = os.path.dirname(index_path) or "."
    index = load_index(index_path)
    wm: dict[str, str] = index["weight_map"]
    pending = {s: _final_name(s) for s in set(wm.values()) if _final_name(s)}
    done = False
    if pending:
        for temp, final in pending.items():
            _link_over(folder, temp, final)  # type: ignore[arg-type]
        atomic.sync_dir(folder)
        index["weight_map"] = {k: pending.get(v) or v for k, v in wm.items()}
        _write_index(index_path, index)
        done = True
    named = set(index["weight_map"].values())
    for name in os.listdir(folder):
        if SET_TEMP_MARK in name and name.startswith(".") and name not in named:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))
                done = True
    done |= atomic.remove_stale(index_path) > 0
    return done


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
                progress: ProgressFn | None = None) -> FixResult:
    """Apply the ``fix`` rules to every shard of the set ``index_path`` names; see the module
    docstring for how the set is replaced. ``out_path``: write the fixed set there (the index
    at ``out_path``, shards beside it) and leave the input as it is."""
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
            name = rel if out_path else _temp_name(rel, token)
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
        if dry_run:
            index_size = os.path.getsize(index_path)
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
        index_size = _write_index(target_index, index)  # commit 1 (in place)
        if not out_path:
            finish_swap(index_path)  # steps 3–5: final names, commit 2, cleanup
            index_size = os.path.getsize(index_path)
    except BaseException:
        if not out_path and not dry_run:
            with contextlib.suppress(OSError, UnreadableError, ValueError):
                _cleanup(folder, index_path)
        raise
    return _result(index_path, size, sum(sizes.values()) + index_size, results, kept, notes,
                   dry_run=False, out_path=out_path)


def recover(index_path: str) -> str | None:
    """Before a fix reads a set: finish the swap a killed run left between its two commits,
    or remove the files a run killed before commit 1 left (no index names them). Returns a
    note when something was done."""
    folder = os.path.dirname(index_path) or "."
    try:
        if _names_step1(index_path):
            finish_swap(index_path)
            return "finished the set replacement an interrupted fix began"
        leftovers = [n for n in os.listdir(folder) if SET_TEMP_MARK in n and n.startswith(".")]
        if leftovers:
            _cleanup(folder, index_path)
            return f"removed {len(leftovers)} file(s) left by an interrupted fix"
    except (OSError, UnreadableError):
        return None  # the check that follows reports what is wrong with the set
    return None


def _names_step1(index_path: str) -> bool:
    """Does the index name step-1 files (a run killed between the two commits)?"""
    return any(_final_name(s) for s in load_index(index_path)["weight_map"].values())


def _cleanup(folder: str, index_path: str) -> None:
    """After a failure before commit 1: remove the step-1 files the index does not name."""
    named = set(load_index(index_path)["weight_map"].values())
    for name in os.listdir(folder):
        if SET_TEMP_MARK in name and name.startswith(".") and name not in named:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))


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


__all__ = ["SetError", "finish_swap", "fix_sharded"]
