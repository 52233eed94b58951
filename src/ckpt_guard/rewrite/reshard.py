"""Fixes that change a sharded set's file names: re-sharding to ``max-shard-size`` and
converting a ``.bin`` set (``pytorch_model-0000i-of-N.bin``) to a safetensors set
(``model-0000i-of-N.safetensors`` + ``model.safetensors.index.json``).

The new shards are laid out as huggingface_hub's ``save_torch_state_dict`` lays them out
(:func:`.set_writer.split`), written under hidden names and committed through the index as
:mod:`.sharded` does for every set; a journal beside them names the old shards that go once
the new index is in place, so a kill at any moment leaves the old set or the new one, and
old shards left by a killed run are removed by the next run, never taken for the new set.

A converted set is written beside the ``.bin`` set, which is kept, as a single-file
``convert: safetensors`` keeps its input: the user removes it once the new set works.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable
from typing import Any

from ckpt_guard.analyze.model import Analysis
from ckpt_guard.policy.keep_fp32 import KEPT_FP32_METADATA, recorded_kept
from ckpt_guard.read.sharded import (
    INDEX_SUFFIX,
    JOURNAL_SUFFIX,
    SET_TEMP_MARK,
    load_index,
    shards_of,
)
from ckpt_guard.read.tree import DTYPE_SIZES
from ckpt_guard.rewrite import atomic
from ckpt_guard.rewrite.cast import CastStats, within_rounding
from ckpt_guard.rewrite.plan import Plan
from ckpt_guard.rewrite.result import FixResult
from ckpt_guard.rewrite.safetensors import convertible
from ckpt_guard.rewrite.set_single import index_blocks_single, single_metadata, single_name
from ckpt_guard.rewrite.set_writer import (
    DCP_SHARDING_KEY,
    SetTensor,
    Sources,
    dcp_sharding,
    index_bytes,
    projected_size,
    shard_metadata,
    shard_names,
    split,
    weight_map,
    with_dcp_sharding,
    write_shard,
)
from ckpt_guard.rewrite.verify import VerifyError
from ckpt_guard.units import format_limit

Shard = tuple[str, Analysis, Plan]  # (name in the index, its analysis, its plan)


class SetRefused(Exception):
    """Not rewritten this way (one line for users); the caller keeps the set as it is."""


def convert_refusal(plans: list[Shard]) -> str | None:
    """Why a ``.bin`` set cannot become safetensors faithfully (the single-file
    ``convert`` refusals: not a flat state dict, shared storages, conj/neg bits, tensor
    attributes…), or ``None``."""
    for rel, _child, plan in plans:
        pairs, why = convertible(plan.root)
        if pairs is None:
            return f"{rel}: {why}"
    return None


def converted_index_name(index_name: str) -> str:
    """``pytorch_model.bin.index.json`` → ``model.safetensors.index.json`` (the names
    transformers looks for); another ``<stem>.<ext>.index.json`` → ``<stem>.safetensors…``."""
    stem = os.path.splitext(index_name[: -len(INDEX_SUFFIX)])[0]
    return f"{'model' if stem == 'pytorch_model' else stem}.safetensors{INDEX_SUFFIX}"


def _tensors(folder: str, plans: list[Shard], convert: bool) -> dict[str, SetTensor]:
    out: dict[str, SetTensor] = {}
    for rel, child, plan in plans:
        path = os.path.join(folder, rel)
        targets = {id(i.storage): i.target for i in plan.cast}
        if convert:
            pairs, why = convertible(plan.root)
            if pairs is None:
                raise SetRefused(f"{rel}: {why}")
            for name, ref in pairs:
                size = DTYPE_SIZES.get(ref.dtype, 1)
                out[name] = SetTensor(name, path, ref, (ref.storage.offset or 0)
                                      + ref.storage_offset * size, ref.numel * size,
                                      targets.get(id(ref.storage)))
        else:
            for name, ref in child.checkpoint.root.items():
                if ref.storage is None:
                    continue
                out[name] = SetTensor(name, path, ref, ref.storage.offset or 0,
                                      ref.storage.nbytes, targets.get(id(ref.storage)))
    return out


def _base_metadata(plans: list[Shard], convert: bool) -> dict[str, str] | None:
    """``__metadata__`` every new shard carries: ``{"format": "pt"}`` as safetensors.torch
    writes for converted sets; else what the input shards carry (huggingface_hub writes the
    same into each), the keep-FP32 record aside (it is per shard)."""
    if convert:
        return {"format": "pt"}
    merged: dict[str, str] = {}
    for _rel, child, _plan in plans:
        meta = child.checkpoint.metadata.get("__metadata__") or {}
        for k, v in meta.items():
            if k not in (KEPT_FP32_METADATA, DCP_SHARDING_KEY):  # both are per shard
                merged.setdefault(k, v)
    return merged or None


def rewrite_set(index_path: str, analysis: Analysis, plans: list[Shard], *, convert: bool,
                max_shard_size: int | None, out_path: str | None, dry_run: bool,
                progress: Callable[[int, int], None] | None, notes: list[str],
                kept: list[tuple[str, str]], keep: Any = None) -> FixResult | None:
    """Write the set anew (see the module docstring). ``None``: the layout asked for is the
    set's own and nothing is converted (the caller fixes the shards under their names)."""
    from ckpt_guard.rewrite.fix import ProgressCounter, decide_overflow

    folder = os.path.dirname(index_path) or "."
    index = load_index(index_path)
    old_wm: dict[str, str] = index["weight_map"]
    sources = Sources()
    try:
        total_in = sum(i.storage.nbytes for _r, _c, p in plans for i in p.cast)
        prog = ProgressCounter(progress, total_in)
        for rel, _child, plan in plans:  # on-overflow may change a target or keep a tensor
            if plan.cast:
                decide_overflow(plan, sources.get(os.path.join(folder, rel)), prog)
        tensors = _tensors(folder, plans, convert)
        order = [n for n in old_wm if n in tensors]
        if max_shard_size is not None:
            groups = split(((n, tensors[n].out_nbytes) for n in order), max_shard_size)
        else:  # the set's own boundaries
            groups = [g for s in shards_of(index) if (g := [n for n in order if old_wm[n] == s])]
        index_name = converted_index_name(os.path.basename(index_path)) if convert \
            else os.path.basename(index_path)
        stem, ext = os.path.splitext(index_name[: -len(INDEX_SUFFIX)])
        # One shard is one file with no index, as huggingface_hub saves it (set_single.py).
        single = max_shard_size is not None and len(groups) == 1 and \
            not index_blocks_single(index)
        names = [single_name(index_name)] if single else shard_names(stem, ext, len(groups))
        new_wm = weight_map(groups, names)
        if not convert and new_wm == {n: s for n, s in old_wm.items() if n in tensors} \
                and len(new_wm) == len(old_wm):
            return None
        out_folder = os.path.dirname(out_path) or "." if out_path else folder
        target = os.path.join(out_folder, names[0] if single else index_name)
        if single and not convert and not out_path and os.path.lexists(target):
            raise SetRefused(f"not re-sharded into one file: {names[0]} exists (remove it, "
                             f"or use --out DIR)")
        if convert and not out_path:
            clash = [n for n in (index_name, *names) if os.path.lexists(os.path.join(folder, n))]
            if clash:
                raise SetRefused(f"not converted: {clash[0]} exists (remove it, or use "
                                 f"--out DIR)")
        kept_values: dict[str, str] = {}
        for _rel, child, plan in plans:
            kept_values.update(recorded_kept(child.checkpoint.metadata))
            kept_values.update(plan.value_kept)
        base = _base_metadata(plans, convert)
        if single:
            base = single_metadata(base, index)
        metas = [shard_metadata(base, kept_values, g) for g in groups]
        if not convert:  # a DCP HF-storage set: each shard's own sharding entries
            try:
                dcp = dcp_sharding(child.checkpoint.metadata.get("__metadata__")
                                   for _rel, child, _plan in plans)
            except ValueError as e:
                raise SetRefused(f"not re-sharded: {e}") from e
            metas = with_dcp_sharding(metas, [[tensors[n] for n in g] for g in groups], dcp)
        new_index: dict[str, Any] = dict(index)
        new_index["metadata"] = {**(index.get("metadata") or {}),
                                 "total_size": sum(t.out_nbytes for t in tensors.values())}
        new_index["weight_map"] = new_wm
        sizes = [projected_size([tensors[n] for n in g], m) for g, m in zip(groups, metas, strict=True)]
        size_after = sum(sizes) + (0 if single else len(index_bytes(new_index)))
        what = _what(index_path, shards_of(index), names, index_name, convert, max_shard_size,
                     dry_run, copy=bool(out_path), single=single)
        shown = target if (convert or out_path or single) else None  # the app re-checks it
        if dry_run:
            return _result(index_path, analysis, plans, size_after, notes + what, kept, None,
                           shown, dry_run=True)
        prog.total = prog.done + 2 * sum(t.nbytes for t in tensors.values())
        stats: dict[int, CastStats] = {}
        shards = [[tensors[n] for n in g] for g in groups]
        mode_from = os.path.join(folder, plans[0][0])
        if single and not out_path:
            from ckpt_guard.rewrite.set_single import swap_single

            def write(dest: str) -> None:
                write_shard(dest, shards[0], metas[0], sources, stats, prog,
                            mode_from=mode_from)
                _check_casts(plans, stats)

            swap_single(folder, index_path, target, write,
                        replaces=None if convert else shards_of(index),
                        total_size=new_index["metadata"]["total_size"],
                        keep=None if convert else keep)
        elif out_path:
            os.makedirs(out_folder, exist_ok=True)
            for group, meta, name in zip(shards, metas, names, strict=True):
                write_shard(os.path.join(out_folder, name), group, meta, sources, stats,
                            prog, mode_from=mode_from)
            _check_casts(plans, stats)
            if not single:
                _write_index(target, new_index)
        else:
            _swap(folder, index_path, target, new_index, shards, metas, names,
                  replaces=[] if convert else sorted(set(shards_of(index)) - set(names)),
                  sources=sources, stats=stats, prog=prog, mode_from=mode_from, plans=plans,
                  keep=None if convert else keep)
        merged = CastStats()
        for s in stats.values():
            merged.merge(s)
        return _result(index_path, analysis, plans, size_after, notes + what, kept, merged,
                       shown, dry_run=False)
    finally:
        sources.close()


def _check_casts(plans: list[Shard], stats: dict[int, CastStats]) -> None:
    for _rel, _child, plan in plans:
        for item in plan.cast:
            if not within_rounding(stats.get(id(item.storage), CastStats()), item.target):
                raise VerifyError(f"cast of {item.paths[0]} went beyond rounding")


def _swap(folder: str, index_path: str, target: str, new_index: dict[str, Any],
          shards: list[list[SetTensor]], metas: list[dict[str, str] | None], names: list[str],
          *, replaces: list[str], sources: Sources, stats: dict[int, CastStats], prog: Any,
          mode_from: str, plans: list[Shard], keep: Any = None) -> None:
    """Write the new shards under hidden names, commit the index naming them, then give them
    their names and remove the old shards (:func:`.sharded.finish_swap`). ``keep``: the
    old index and every old shard replaced or removed are stashed before commit 1."""
    from ckpt_guard.rewrite.set_swap import (
        cleanup_folder,
        finish_swap,
        settle_journals,
        temp_name,
        write_index,
    )

    token = secrets.token_hex(4)
    journal = os.path.join(folder, f"{SET_TEMP_MARK}{token}{JOURNAL_SUFFIX}")
    try:
        write_journal(journal, os.path.basename(target), os.path.basename(index_path),
                      replaces)
        temps = [temp_name(n, token) for n in names]
        for group, meta, temp in zip(shards, metas, temps, strict=True):
            write_shard(os.path.join(folder, temp), group, meta, sources, stats, prog,
                        mode_from=mode_from)
        _check_casts(plans, stats)
        atomic.sync_dir(folder)
        staged = dict(new_index)
        staged["weight_map"] = {k: temp_name(v, token) for k, v in new_index["weight_map"].items()}
        if keep is not None:
            old = shards_of(load_index(index_path))
            keep.keep_set(index_path, [s for s in old if s in names or s in replaces])
        write_index(target, staged, mode_from=index_path)  # commit 1
        finish_swap(target)  # final names, commit 2, old shards removed, journal last
        if keep is not None:
            keep.set_written(target)
    except BaseException:
        with contextlib.suppress(OSError, ValueError):
            settle_journals(folder)  # the journal goes unless the index is between commits
            cleanup_folder(folder)  # what no index names (before commit 1: all of ours)
        raise


def write_journal(path: str, index_name: str, source: str, replaces: list[str]) -> None:
    """The journal: which index the new set is committed through (``source``: the index
    being fixed) and which old shard files go once that index names the new set. Written
    (fsynced) before any new file."""
    data = json.dumps({"index": index_name, "source": source, "replaces": replaces}).encode()
    with open(path, "wb") as fh:
        fh.write(data)
        atomic.sync_file(fh)
    atomic.sync_dir(os.path.dirname(path) or ".")


def _write_index(path: str, index: dict[str, Any]) -> None:
    from ckpt_guard.rewrite.set_swap import write_index

    write_index(path, index)


def _what(index_path: str, old: list[str], names: list[str], index_name: str, convert: bool,
          limit: int | None, dry_run: bool, *, copy: bool, single: bool = False) -> list[str]:
    would = "would be " if dry_run else ""
    n = len(names)
    if single:
        head = (f"{'converted' if convert else 're-sharded'} at max-shard-size "
                f"{format_limit(limit or 0)}: {len(old)} shard{'s' if len(old) != 1 else ''} "
                f"{would}written as one file {names[0]} with no index (as huggingface_hub "
                f"saves a model that fits in one shard)")
        if convert:
            return [f"{head}; the .bin set {os.path.basename(index_path)} is kept (remove it "
                    f"once the new file loads)"]
        return [head] if copy else [f"{head}; the old shards and index {would}removed once "
                                    f"it is in place"]
    if convert:
        out = [f"{'would be ' if dry_run else ''}converted to a safetensors set: {index_name} "
               f"+ {n} shard{'s' if n != 1 else ''}; the .bin set "
               f"{os.path.basename(index_path)} is kept (remove it once the new set loads)"]
        if limit is not None:
            out.append(f"sharded at max-shard-size {format_limit(limit)}")
        return out
    head = (f"re-sharded at max-shard-size {format_limit(limit or 0)}: {len(old)} shard"
            f"{'s' if len(old) != 1 else ''} {would}rewritten as {n} ({names[0]} …)")
    if copy:
        return [head]
    return [f"{head}; the old shard files {would}removed once the new index is in place"]


def _result(index_path: str, analysis: Analysis, plans: list[Shard], size_after: int,
            notes: list[str], kept: list[tuple[str, str]], stats: CastStats | None,
            out_path: str | None, *, dry_run: bool) -> FixResult:
    removed: dict[str, int] = {}
    for _r, _c, plan in plans:
        for k, v in plan.removed.items():
            removed[k] = removed.get(k, 0) + v
    casts = [i for _r, _c, p in plans for i in p.cast]
    return FixResult(
        path=index_path, changed=True, size_before=analysis.checkpoint.size_bytes,
        size_after=size_after, removed=removed,
        cast_bytes=sum(i.storage.nbytes for i in casts),
        cast_to=",".join(sorted({i.target for i in casts})) or None,
        kept_fp32=tuple(kept) + tuple(k for _r, _c, p in plans for k in p.kept_fp32
                                      if k not in kept),
        max_abs_err=stats.max_abs_err if stats else 0.0,
        max_rel_err=stats.max_rel_err if stats else 0.0,
        flushed_to_zero=stats.underflow if stats else 0,
        subnormal=stats.subnormal if stats else 0,
        changes=tuple(c for _r, _c, p in plans for c in p.changes),
        notes=tuple(dict.fromkeys([*notes, *(n for _r, _c, p in plans for n in p.notes)])),
        out_path=out_path, dry_run=dry_run)


__all__ = ["SetRefused", "convert_refusal", "converted_index_name", "rewrite_set"]
