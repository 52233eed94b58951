"""safetensors output: cast a safetensors file in place of format (``__metadata__`` kept).

Layout as the ``safetensors`` library writes it (``serialize`` in its ``tensor.rs``):
tensors sorted by dtype (larger/later dtypes first, in the library's enum order) then name,
data contiguous in that order, the JSON header compact with ``__metadata__`` first and padded
with spaces to a multiple of 8 bytes.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from ckpt_guard.analyze.model import Analysis
from ckpt_guard.policy.keep_fp32 import KEPT_FP32_METADATA
from ckpt_guard.read.safetensors import CODES
from ckpt_guard.read.tree import DTYPE_SIZES, TensorRef, as_mapping, contiguous_stride
from ckpt_guard.rewrite import atomic, storage_io
from ckpt_guard.rewrite.cast import CastStats, within_rounding
from ckpt_guard.rewrite.crc import crc32
from ckpt_guard.rewrite.plan import Plan
from ckpt_guard.rewrite.result import FixResult
from ckpt_guard.rewrite.verify import VerifyError, read_back, verify_storages

# safetensors' Dtype enum order (tensor.rs); serialization sorts by it, descending.
DTYPE_ORDER = ("BOOL", "F4", "F6_E2M3", "F6_E3M2", "U8", "I8", "F8_E5M2", "F8_E4M3",
               "F8_E8M0", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "C64", "F64",
               "I64", "U64")
_RANK = {code: i for i, code in enumerate(DTYPE_ORDER)}


def header_bytes(entries: list[tuple[str, str, list[int], int]],
                 metadata: dict[str, str] | None) -> tuple[bytes, list[tuple[str, int, int]]]:
    """``entries`` = (name, dtype code, shape, nbytes) → (8-byte length + padded JSON header,
    [(name, begin, end)] in data order)."""
    order = sorted(entries, key=lambda e: (-_RANK.get(e[1], -1), e[0]))
    header: dict[str, Any] = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    spans = []
    pos = 0
    for name, code, shape, nbytes in order:
        header[name] = {"dtype": code, "shape": list(shape), "data_offsets": [pos, pos + nbytes]}
        spans.append((name, pos, pos + nbytes))
        pos += nbytes
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw)) + raw, spans


@dataclass(frozen=True)
class _Item:
    name: str
    ref: TensorRef
    offset: int  # absolute input offset of the tensor's first byte
    nbytes: int  # input bytes


def fix_safetensors(path: str, analysis: Analysis, plan: Plan, *, out_path: str | None,
                    dry_run: bool, progress: Callable[[int, int], None] | None,
                    decide_overflow: Callable[..., None], progress_cls: Any,
                    source: atomic.Source | None = None) -> FixResult:
    """Cast a safetensors file, keeping its ``__metadata__``: to ``out_path``, else in place
    over ``source.real``."""
    ckpt = analysis.checkpoint
    items = [_Item(name, ref, ref.storage.offset or 0, ref.storage.nbytes)
             for name, ref in ckpt.root.items() if ref.storage is not None]
    return _write(path, items, ckpt.metadata.get("__metadata__"), plan, ckpt.size_bytes,
                  target=out_path or (source.real if source else path), out_path=out_path,
                  dry_run=dry_run, progress=progress, decide_overflow=decide_overflow,
                  progress_cls=progress_cls, in_place=out_path is None, source=source)


def convertible(root: Any) -> tuple[list[tuple[str, TensorRef]] | None, str]:
    """The ``name → tensor`` items of a state-dict style tree (a flat mapping of dense,
    contiguous tensors, none sharing a storage), or ``None`` and why not."""
    m = as_mapping(root)
    if not m:
        return None, "not a flat state dict (name → tensor)"
    seen: set[int] = set()
    out = []
    for k, v in m.items():
        if not isinstance(k, str) or not isinstance(v, TensorRef) or v.storage is None:
            return None, "not a flat state dict (name → tensor)"
        if v.kind not in ("tensor", "parameter") or v.dtype not in CODES:
            return None, f"{k}: {v.kind} {v.dtype} tensors have no safetensors form"
        if tuple(v.stride) != contiguous_stride(tuple(v.shape)) and v.numel > 1:
            return None, f"{k}: non-contiguous view"
        if id(v.storage) in seen:
            return None, f"{k}: shares its storage (tied weights would be untied)"
        extra = _beyond_data(v)
        if extra:
            # safetensors holds bytes, dtype and shape only: converting would drop this
            # (a conj/neg bit even changes the values torch sees).
            return None, f"{k}: {extra} has no safetensors form"
        seen.add(id(v.storage))
        out.append((k, v))
    return out, ""


def _beyond_data(ref: TensorRef) -> str | None:
    """What a tensor carries beyond its data: attributes (``__dict__`` state) or rebuild
    metadata such as the conj/neg bits, found in the rebuild call's arguments."""
    if ref.state:
        return "tensor attributes"

    def meta(args: Any, depth: int = 0) -> str | None:
        for a in args if isinstance(args, tuple) else ():
            if isinstance(a, dict) and a and depth <= 2:
                return "rebuild metadata (" + ", ".join(sorted(map(str, a))) + ")"
            if isinstance(a, tuple) and depth < 2:
                found = meta(a, depth + 1)
                if found:
                    return found
        return None

    return meta(ref.args)


def convert_to_safetensors(path: str, analysis: Analysis, plan: Plan, target: str, *,
                           dry_run: bool, progress: Callable[[int, int], None] | None,
                           decide_overflow: Callable[..., None],
                           progress_cls: Any, source: atomic.Source | None = None) -> FixResult:
    """Write the (stripped, cast) state dict of a torch file as ``target`` in safetensors
    format (metadata ``{"format": "pt"}`` as ``safetensors.torch`` writes). The input is
    left in place; the caller decides whether to remove it."""
    pairs, why = convertible(plan.root)
    if pairs is None:
        return FixResult(path=path, size_before=analysis.checkpoint.size_bytes,
                         size_after=analysis.checkpoint.size_bytes,
                         notes=(f"not converted to safetensors: {why}",))
    items = []
    for name, ref in pairs:
        size = DTYPE_SIZES.get(ref.dtype, 1)
        items.append(_Item(name, ref, (ref.storage.offset or 0) + ref.storage_offset * size,
                           ref.numel * size))
    res = _write(path, items, {"format": "pt"}, plan, analysis.checkpoint.size_bytes,
                 target=target, out_path=target, dry_run=dry_run, progress=progress,
                 decide_overflow=decide_overflow, progress_cls=progress_cls, in_place=False,
                 source=source)
    return res




def _write(path: str, items: list[_Item], metadata: dict[str, str] | None, plan: Plan,
           size_before: int, *, target: str, out_path: str | None, dry_run: bool,
           progress: Callable[[int, int], None] | None, decide_overflow: Callable[..., None],
           progress_cls: Any, in_place: bool,
           source: atomic.Source | None = None) -> FixResult:
    prog = progress_cls(progress, 2 * sum(i.nbytes for i in items))
    with open(path, "rb") as src:
        if source is not None:  # the file named is still the one analysed
            atomic.ensure_unchanged(path, source.stat, os.fstat(src.fileno()))
        if plan.cast:
            decide_overflow(plan, src, prog)
        targets = {id(i.storage): i.target for i in plan.cast}
        entries = []
        for it in items:
            cast = targets.get(id(it.ref.storage))
            code = CODES[cast] if cast else _code(it.ref)
            nbytes = it.ref.numel * DTYPE_SIZES[cast] if cast else it.nbytes
            entries.append((it.name, code, list(it.ref.shape), nbytes))
        names = {it.name for it in items}
        kept = {p: why for p, why in plan.value_kept.items() if p in names}
        if kept:  # what check cannot see: see policy.keep_fp32.recorded_kept
            metadata = {**(metadata or {}),
                        KEPT_FP32_METADATA: json.dumps(kept, sort_keys=True)}
        head, spans = header_bytes(entries, metadata)
        size_after = len(head) + (spans[-1][2] if spans else 0)
        if size_after > size_before and in_place:  # a dry run decides as the real run
            return _res(path, plan, size_before, size_before, False, None, out_path,
                        dry_run, "not rewritten: the output would be larger than the input")
        if dry_run:
            return _res(path, plan, size_before, size_after, True, None, out_path, True)
        by_name = {it.name: it for it in items}
        buf = bytearray(storage_io.CHUNK)
        stats: dict[int, CastStats] = {}
        written: dict[str, tuple[int, int]] = {}
        with atomic.temporary_beside(target) as (fh, tmp):
            fh.write(head)
            for name, _begin, _end in spans:
                it = by_name[name]
                crc = 0
                n = 0
                cast = targets.get(id(it.ref.storage))
                if cast:
                    s = stats.setdefault(id(it.ref.storage), CastStats())
                    chunks = storage_io.casted(src, it.offset, it.nbytes, buf, cast, s, prog)
                else:
                    chunks = storage_io.copied(src, it.offset, it.nbytes, buf, prog)
                for chunk in chunks:
                    crc = crc32(chunk, crc)
                    n += len(chunk)
                    fh.write(chunk)
                written[name] = (n, crc)
            merged = CastStats()
            for item in plan.cast:
                s = stats.get(id(item.storage), CastStats())
                if not within_rounding(s, item.target):
                    raise VerifyError(f"cast of {item.paths[0]} went beyond rounding")
                merged.merge(s)
            with atomic.syncing(fh):  # fsync while the output is read back
                back = _verify(tmp, fh, entries, metadata, written, prog)
            fh.close()
            size_after = os.path.getsize(tmp)
            atomic.commit(tmp, target, mode_from=path, source=source)
    # The post-fix re-check judges what verification read back (no third read).
    return replace(_res(path, plan, size_before, size_after, True, merged, out_path, False),
                   verified=replace(back, path=target))


def _code(ref: TensorRef) -> str:
    return CODES.get(ref.dtype, "U8")


def _verify(tmp: str, fh: Any, entries: list[tuple[str, str, list[int], int]],
            metadata: dict[str, str] | None, written: dict[str, tuple[int, int]],
            prog: Any) -> Any:
    back = read_back(tmp, "safetensors")
    if back.metadata.get("__metadata__") != metadata:
        raise VerifyError("verification failed: __metadata__ changed")
    for name, code, shape, _n in entries:
        ref = back.root.get(name)
        if ref is None or _code(ref) != code or list(ref.shape) != list(shape):
            raise VerifyError(f"verification failed: tensor {name} differs")
    fh.seek(0)
    verify_storages(fh, back, {k: v for k, v in written.items() if k in back.storages}, prog)
    return back


def _res(path: str, plan: Plan, before: int, after: int, changed: bool,
         stats: CastStats | None, out_path: str | None, dry_run: bool,
         note: str | None = None, notes: list[str] | None = None) -> FixResult:
    """The result of a rewrite to safetensors; ``notes`` replaces the plan's own notes."""
    if notes is None:
        notes = [*plan.notes, *([note] if note else [])]
    return FixResult(
        path=path, changed=changed, size_before=before, size_after=after,
        cast_bytes=sum(i.storage.nbytes for i in plan.cast) if changed else 0,
        cast_to=",".join(sorted({i.target for i in plan.cast})) or None if changed else None,
        kept_fp32=tuple(plan.kept_fp32),
        max_abs_err=stats.max_abs_err if stats else 0.0,
        max_rel_err=stats.max_rel_err if stats else 0.0,
        flushed_to_zero=stats.underflow if stats else 0,
        subnormal=stats.subnormal if stats else 0,
        notes=tuple(notes), out_path=out_path, dry_run=dry_run)
