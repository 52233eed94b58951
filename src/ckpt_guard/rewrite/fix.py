"""Fix one torch file: strip, cast, write a torch zip atomically, verify, replace."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

from ckpt_guard.analyze.model import Analysis
from ckpt_guard.read.checkpoint import Checkpoint
from ckpt_guard.read.torch_zip import KEPT_FP32_RECORD
from ckpt_guard.read.tree import DTYPE_SIZES, Storage
from ckpt_guard.rewrite import atomic, storage_io
from ckpt_guard.rewrite.call_time import CallTimeError, check_call_time
from ckpt_guard.rewrite.cast import CastStats, within_rounding
from ckpt_guard.rewrite.pickle_writer import OutStorage, PickleWriteError, dumps, storage_type_for
from ckpt_guard.rewrite.plan import CastItem, Plan
from ckpt_guard.rewrite.result import FixResult
from ckpt_guard.rewrite.verify import VerifyError, read_back, verify_storages, verify_tree
from ckpt_guard.rewrite.zip_writer import TorchZipWriter

ProgressFn = Callable[[int, int], None]


class FixError(Exception):
    """A fix could not be done; the original is untouched. One line for users."""


class _Counting:
    """A write-only sink that only counts (for projected sizes in dry runs)."""

    def __init__(self) -> None:
        self.pos = 0
        self.end = 0

    def write(self, data: Any) -> int:
        n = len(data)
        self.pos += n
        self.end = max(self.end, self.pos)
        return n

    def seek(self, pos: int, whence: int = 0) -> int:
        self.pos = pos
        return pos

    def tell(self) -> int:
        return self.pos


class ProgressCounter:
    def __init__(self, fn: ProgressFn | None, total: int):
        self.fn = fn
        self.total = total
        self.done = 0

    def __call__(self, n: int) -> None:
        self.done += n
        if self.fn is not None:
            self.fn(min(self.done, self.total), self.total)


@dataclass
class _Layout:
    root: Any
    pickle: bytes
    storages: list[tuple[Storage, OutStorage]]
    targets: dict[int, str]  # id(storage) → cast target
    value_kept: dict[str, str]  # recorded in the archive (read.torch_zip.KEPT_FP32_RECORD)


def _layout(plan: Plan, targets: dict[int, str]) -> _Layout:
    outs: dict[int, OutStorage] = {}

    def storage_out(st: Storage) -> OutStorage:
        out = outs.get(id(st))
        if out is None:
            key = str(len(outs))
            target = targets.get(id(st))
            if target is not None:
                out = OutStorage(key, target, st.numel, st.location, storage_type_for(target))
            else:
                out = OutStorage(key, st.dtype, st.numel, st.location,
                                 st.storage_type or storage_type_for(st.dtype))
            outs[id(st)] = out
        return out

    data, storages = dumps(plan.root, storage_out)
    return _Layout(plan.root, data, storages, targets, dict(plan.value_kept))


_META_RECORDS = ((".format_version", b"1"), (".storage_alignment", b"64"))


def _write_zip(fh: Any, src: BinaryIO | None, layout: _Layout, prefix: str, byteorder: str,
               cast_stats: dict[int, CastStats],
               progress: ProgressCounter | None) -> dict[str, tuple[int, int]]:
    """Write the archive (``src`` None: sizes only, into a counting sink); returns storage
    key → (nbytes, crc32) as written."""
    w = TorchZipWriter(fh, prefix)
    w.write_bytes("data.pkl", layout.pickle)
    for name, data in _META_RECORDS:
        w.write_bytes(name, data)
    w.write_bytes("byteorder", byteorder.encode())
    written: dict[str, tuple[int, int]] = {}
    buf = bytearray(storage_io.CHUNK) if src is not None else bytearray()
    for st, out in layout.storages:
        out_bytes = out.numel * DTYPE_SIZES.get(out.dtype, 1)
        name = f"data/{out.key}"
        if src is None:
            w.reserve_record(name, out_bytes)
            continue
        if st.offset is None:
            raise FixError(f"storage {st.key}: location in the file unknown")
        target = layout.targets.get(id(st))
        if target is not None:
            stats = cast_stats.setdefault(id(st), CastStats())
            chunks = storage_io.casted(src, st.offset, st.nbytes, buf, target, stats, progress)
        else:
            chunks = storage_io.copied(src, st.offset, st.nbytes, buf, progress)
        crc = w.write_record(name, chunks, out_bytes)
        written[out.key] = (out_bytes, crc)
    w.write_bytes("version", b"3\n")
    w.write_bytes(".data/serialization_id", serialization_id())
    if layout.value_kept:
        w.write_bytes(KEPT_FP32_RECORD, json.dumps(
            {"kept_fp32": layout.value_kept}, sort_keys=True).encode())
    w.close()
    return written


def serialization_id() -> bytes:
    """40 random decimal digits, as torch.save writes (from os.urandom: `secrets` would
    import hashlib's OpenSSL binding, ~10 ms of a fix, for this alone)."""
    return f"{int.from_bytes(os.urandom(20), 'big') % 10**40:040d}".encode()


def decide_overflow(plan: Plan, src: BinaryIO, progress: ProgressCounter | None) -> None:
    """Scan FP16 cast candidates before writing; apply ``on-overflow`` to those FP16 would
    damage. (Zip output skips this pass: it checks while casting and redoes the rare file
    where a storage turned out damaged, see :func:`_apply_overflow`.)"""
    buf = bytearray(storage_io.CHUNK)
    for item in list(plan.cast):
        if item.target != "float16":
            continue
        if item.storage.offset is None:
            raise FixError(f"storage {item.storage.key}: location in the file unknown")
        stats = storage_io.scan(src, item.storage.offset, item.storage.nbytes, buf, progress)
        problem = stats.fp16_problem()
        if problem is not None:
            _apply_overflow(plan, item, problem)


def _apply_overflow(plan: Plan, item: CastItem, problem: str) -> None:
    """``on-overflow``: ``keep`` the tensor FP32, cast it to ``bfloat16`` instead, or ``fail``."""
    if plan.on_overflow == "fail" or item.target != "float16":
        raise FixError(f"fp32-payload: {item.paths[0]}: {problem} (on-overflow: "
                       f"{plan.on_overflow})")
    if plan.on_overflow == "bfloat16":
        item.target = "bfloat16"
        plan.notes.append(f"{item.paths[0]}: cast to bfloat16 instead ({problem})")
    else:
        plan.cast.remove(item)
        plan.kept_fp32.extend((p, problem) for p in item.paths)
        plan.value_kept.update((p, problem) for p in item.paths)


def _projected_size(plan: Plan, prefix: str, byteorder: str) -> tuple[_Layout, int]:
    try:
        layout = _layout(plan, {id(i.storage): i.target for i in plan.cast})
    except PickleWriteError as e:
        raise FixError(f"cannot write the object tree: {e}") from e
    sink = _Counting()
    _write_zip(sink, None, layout, prefix, byteorder, {}, None)
    return layout, sink.end


def fix_torch(path: str, analysis: Analysis, plan: Plan, *, out_path: str | None,
              dry_run: bool, progress: ProgressFn | None,
              source: atomic.Source | None = None) -> FixResult:
    """Rewrite ``path`` as a torch zip: to ``out_path``, else in place over ``source.real``
    (see :func:`atomic.source_for`: symlinks resolved, owner and mode kept)."""
    ckpt = analysis.checkpoint
    size_before = ckpt.size_bytes
    if ckpt.format == "torch-legacy":
        plan.notes.append("legacy format rewritten as zip")
    prefix = ckpt.archive_prefix or "archive"
    target = out_path or (source.real if source else path)
    with open(path, "rb") as src:
        if source is not None:  # the file named is still the one analysed
            atomic.ensure_unchanged(path, source.stat, os.fstat(src.fileno()))
        if dry_run:
            prog = ProgressCounter(progress, sum(i.storage.nbytes for i in plan.cast))
            decide_overflow(plan, src, prog)
            _, size_after = _projected_size(plan, prefix, ckpt.byteorder)
            if size_after > size_before and out_path is None:  # as the real run decides
                return _result(path, plan, size_before, size_before, changed=False,
                               dry_run=True, note=f"not rewritten: the output ({size_after} "
                               f"bytes) would be larger than the input ({size_before} bytes)")
            return _result(path, plan, size_before, size_after, changed=True, dry_run=True,
                           out_path=out_path)
        with atomic.temporary_beside(target) as (fh, tmp):
            for _attempt in range(len(plan.cast) + 1):
                layout, size_after = _projected_size(plan, prefix, ckpt.byteorder)
                if size_after > size_before and out_path is None:
                    return _result(path, plan, size_before, size_before, changed=False,
                                   note=f"not rewritten: the output ({size_after} bytes) would"
                                        f" be larger than the input ({size_before} bytes)")
                moved = sum(st.nbytes for st, _ in layout.storages)
                prog = ProgressCounter(progress, 2 * moved)  # read + verify
                fh.seek(0)
                fh.truncate()
                cast_stats: dict[int, CastStats] = {}
                written = _write_zip(fh, src, layout, prefix, ckpt.byteorder, cast_stats, prog)
                damaged = [(item, p) for item in plan.cast
                           if (p := cast_stats[id(item.storage)].problem(item.target))]
                if not damaged:
                    break
                # Rare: redo the file with on-overflow applied to the damaged storages.
                for item, problem in damaged:
                    _apply_overflow(plan, item, problem)
            merged = CastStats()
            for item in plan.cast:
                s = cast_stats[id(item.storage)]
                if not within_rounding(s, item.target):
                    raise FixError(f"cast of {item.paths[0]} to {item.target} went beyond "
                                   f"rounding (relative error {s.rounding_rel_err:.3g})")
                merged.merge(s)
            prog.total = prog.done + sum(n for n, _ in written.values())
            with atomic.syncing(fh):
                back = _verify(tmp, fh, layout, written, prog)
            size_after = os.fstat(fh.fileno()).st_size
            fh.close()
            atomic.commit(tmp, target, mode_from=path, source=source)
    return replace(_result(path, plan, size_before, size_after, changed=True, stats=merged,
                           out_path=out_path), verified=replace(back, path=target))


def _verify(tmp: str, fh: BinaryIO, layout: _Layout, written: Mapping[str, tuple[int, int]],
            prog: ProgressCounter) -> Checkpoint:
    """The written file as our reader sees it, once it proved to be what was meant."""
    try:
        # Independent of our reader's modelling of calls: the output must mean the same
        # whatever its callees do with their arguments (CPython's unpickler, inert globals).
        check_call_time(layout.pickle)
    except CallTimeError as e:
        raise VerifyError(f"verification failed: {e}") from e
    back = read_back(tmp, "torch-zip")
    outs = {id(st): out for st, out in layout.storages}
    verify_tree(layout.root, back, lambda st: outs[id(st)])
    fh.seek(0)
    verify_storages(fh, back, written, prog)
    return back


def _result(path: str, plan: Plan, size_before: int, size_after: int, *, changed: bool,
            stats: CastStats | None = None, dry_run: bool = False,
            out_path: str | None = None, note: str | None = None) -> FixResult:
    cast_to = sorted({i.target for i in plan.cast})
    return FixResult(
        path=path, changed=changed, size_before=size_before, size_after=size_after,
        removed=dict(plan.removed) if changed else {},
        cast_bytes=sum(i.storage.nbytes for i in plan.cast) if changed else 0,
        cast_to=",".join(cast_to) if cast_to and changed else None,
        kept_fp32=tuple(plan.kept_fp32),
        max_abs_err=stats.max_abs_err if stats else 0.0,
        max_rel_err=stats.max_rel_err if stats else 0.0,
        flushed_to_zero=stats.underflow if stats else 0,
        subnormal=stats.subnormal if stats else 0,
        changes=tuple(plan.changes) if changed else (),
        notes=tuple([*plan.notes, *([note] if note else [])]),
        out_path=out_path, dry_run=dry_run)
