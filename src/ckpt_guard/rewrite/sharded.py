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
from ckpt_guard.read.sharded import (
    INDEX_SUFFIX,
    JOURNAL_SUFFIX,
    SET_TEMP_MARK,
    SHARD_NAME,
    expected_total_size,
    load_index,
)
from ckpt_guard.rewrite import atomic
from ckpt_guard.rewrite.plan import Plan, make_plan
from ckpt_guard.rewrite.result import FixResult
from ckpt_guard.rewrite.set_writer import index_bytes

ProgressFn = Callable[[int, int], None]


class SetError(Exception):
    """The set cannot be rewritten as a unit. One line for users."""


def temp_name(final: str, token: str) -> str:
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


def write_index(path: str, index: dict[str, Any], *, mode_from: str | None = None) -> int:
    """Replace (or create) the index atomically (temporary beside it, fsync, rename,
    directory fsync)."""
    data = index_bytes(index)
    with atomic.temporary_beside(path) as (fh, tmp):
        fh.write(data)
        atomic.sync_file(fh)
        fh.close()
        atomic.commit(tmp, path, mode_from=path if os.path.exists(path) else mode_from)
    return len(data)


def _link_over(folder: str, temp: str, final: str) -> None:
    """Make ``final`` the same file as ``temp``: link to a fresh name, rename over."""
    link = os.path.join(folder, temp_name(final, "link-" + secrets.token_hex(4)))
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
        write_index(index_path, index)
        done = True
    done |= settle_journals(folder) > 0  # old shards a re-shard replaced, then its journal
    done |= cleanup_folder(folder) > 0
    done |= atomic.remove_stale(index_path) > 0
    return done


def _indexes(folder: str) -> list[str]:
    """The readable shard indexes in ``folder``."""
    out = []
    for name in sorted(os.listdir(folder)):
        if name.endswith(INDEX_SUFFIX):
            path = os.path.join(folder, name)
            with contextlib.suppress(UnreadableError):
                load_index(path)
                out.append(path)
    return out


def cleanup_folder(folder: str) -> int:
    """Remove our hidden set files (``.ckpt-guard-set-…``) that no index in ``folder`` names
    (a converted set beside a ``.bin`` set is named by its own index); journals are left to
    :func:`settle_journals`. Returns how many were removed."""
    named: set[str] = set()
    for idx in _indexes(folder):
        named |= set(load_index(idx)["weight_map"].values())
    n = 0
    for name in os.listdir(folder):
        if name.startswith(SET_TEMP_MARK) and not name.endswith(JOURNAL_SUFFIX) \
                and name not in named:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))
                n += 1
    return n


def settle_journals(folder: str) -> int:
    """Act on the journals a re-shard or set conversion wrote (see :mod:`.reshard`): once
    the journal's index names the new set (none of the old shards, no hidden name), the old
    shard files it lists go, then the journal; when the index still names the old set (killed
    before commit 1), only the journal goes. An index between its two commits keeps its
    journal until :func:`finish_swap` has run. Returns how many old shards were removed."""
    removed = 0
    for name in sorted(os.listdir(folder)):
        if not (name.startswith(SET_TEMP_MARK) and name.endswith(JOURNAL_SUFFIX)):
            continue
        path = os.path.join(folder, name)
        try:
            with open(path, "rb") as fh:
                journal = json.loads(fh.read(1 << 20))
            index_name = os.path.basename(str(journal["index"]))
            replaces = [os.path.basename(str(r)) for r in journal["replaces"]]
        except (OSError, ValueError, KeyError, TypeError):
            replaces, index_name = [], ""  # torn before any new file was written
        index_path = os.path.join(folder, index_name)
        if index_name.endswith(INDEX_SUFFIX) and os.path.exists(index_path):
            try:
                named = set(load_index(index_path)["weight_map"].values())
            except UnreadableError:
                continue  # left as it is: check reports the index
            if any(_final_name(s) for s in named):
                continue  # between the commits: finish_swap first
            if replaces and not named & set(replaces):
                for old in replaces:
                    if _shard_of(old, index_name):  # never anything but this set's shards
                        with contextlib.suppress(FileNotFoundError):
                            os.unlink(os.path.join(folder, old))
                            removed += 1
                atomic.sync_dir(folder)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
    return removed


def _shard_of(name: str, index_name: str) -> bool:
    """Is ``name`` a shard name (``<stem>-0000i-of-0000N<ext>``) of the index ``index_name``?"""
    stem, ext = os.path.splitext(index_name[: -len(INDEX_SUFFIX)])
    m = SHARD_NAME.fullmatch(name)
    return bool(m and m["stem"] == stem and m["ext"] == ext)


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
                max_shard_size: int | None = None) -> FixResult:
    """Apply the ``fix`` rules to every shard of the set ``index_path`` names; see the module
    docstring for how the set is replaced. ``out_path``: write the fixed set there (the index
    at ``out_path``, shards beside it) and leave the input as it is. ``convert=
    "safetensors"`` (a ``.bin`` set) and ``max_shard_size`` (re-shard) write the set anew,
    under new names (:mod:`.reshard`)."""
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
                           kept=kept)
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
        index_size = write_index(target_index, index)  # commit 1 (in place)
        if not out_path:
            finish_swap(index_path)  # steps 3–5: final names, commit 2, cleanup
            index_size = os.path.getsize(index_path)
    except BaseException:
        if not out_path and not dry_run:
            with contextlib.suppress(OSError, UnreadableError, ValueError):
                cleanup_folder(folder)
        raise
    return _result(index_path, size, sum(sizes.values()) + index_size, results, kept, notes,
                   dry_run=False, out_path=out_path)


def _rewrite_set(index_path: str, analysis: Analysis, plans: list[tuple[str, Analysis, Plan]],
                 fmt: str, convert: str | None, max_shard_size: int | None, *,
                 out_path: str | None, dry_run: bool, progress: ProgressFn | None,
                 notes: list[str], kept: list[tuple[str, str]]) -> FixResult | None:
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
                           progress=progress, notes=notes, kept=kept)
    except SetRefused as e:
        return FixResult(path=index_path, size_before=analysis.checkpoint.size_bytes,
                         size_after=analysis.checkpoint.size_bytes, kept_fp32=tuple(kept),
                         notes=(*notes, str(e)))


def recover(index_path: str) -> str | None:
    """Before a fix reads a set: finish the swap a killed run left between its two commits
    (of any set in the folder: a conversion commits through a new index), remove the old
    shards a re-shard replaced, or the files a run killed before commit 1 left (no index
    names them). Returns a note when something was done."""
    folder = os.path.dirname(index_path) or "."
    try:
        finished = False
        for idx in _indexes(folder):
            if _names_step1(idx):
                finish_swap(idx)
                finished = True
        if finished:
            return "finished the set replacement an interrupted fix began"
        leftovers = [n for n in os.listdir(folder) if n.startswith(SET_TEMP_MARK)]
        if leftovers:
            settle_journals(folder)
            cleanup_folder(folder)
            return f"removed {len(leftovers)} file(s) left by an interrupted fix"
    except (OSError, UnreadableError):
        return None  # the check that follows reports what is wrong with the set
    return None


def _names_step1(index_path: str) -> bool:
    """Does the index name step-1 files (a run killed between the two commits)?"""
    return any(_final_name(s) for s in load_index(index_path)["weight_map"].values())


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
