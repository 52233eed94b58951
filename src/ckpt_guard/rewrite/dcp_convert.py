"""Consolidate a torch.distributed.checkpoint directory's *model* entries into one
weights-only safetensors file — what ``dcp_to_torch_save`` + keeping the model amounts to,
without torch and without holding the model in memory.

Each tensor is written in row-major blocks of at most ``CHUNK`` bytes: a block gathers its
elements from every chunk (a ``.distcp`` item's storage, memory-mapped, viewed with the
saved tensor's strides) that overlaps it, is cast per the policy's ``fp32-payload`` when
planned, and appended to a temporary file beside the output (CRC-32 as written). The output
is then read back by our own reader and checked (names, dtypes, shapes, every tensor's
bytes) before it is renamed into place. The DCP directory itself is left as it is.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import numpy as np

from ckpt_guard.analyze.model import Analysis
from ckpt_guard.read.dcp_layout import Chunk, Entry
from ckpt_guard.read.safetensors import CODES
from ckpt_guard.read.tree import DTYPE_SIZES
from ckpt_guard.rewrite import atomic
from ckpt_guard.rewrite.cast import CastStats, ScanStats, cast_chunk, within_rounding
from ckpt_guard.rewrite.fix import FixError, ProgressCounter, _apply_overflow
from ckpt_guard.rewrite.plan import Plan, make_plan
from ckpt_guard.rewrite.result import FixResult
from ckpt_guard.rewrite.safetensors import _res, _verify, header_bytes
from ckpt_guard.rewrite.storage_io import CAST_CHUNK
from ckpt_guard.rewrite.verify import VerifyError

CHUNK = 8 << 20  # bytes of output gathered at a time
_RAW = {1: "u1", 2: "<u2", 4: "<u4", 8: "<u8", 16: "V16"}  # bytes copied as they are
MODEL_KEYS = ("model", "module", "state_dict", "model_state_dict")


def target_for(path: str, out_path: str | None) -> str:
    """``<dir>.safetensors`` beside the DCP directory, or ``--out``'s mirror + suffix."""
    base = out_path or os.path.normpath(path)
    return base + ".safetensors"


def _names(analysis: Analysis, entries: list[Entry]) -> tuple[dict[str, Entry], list[str]]:
    """The model's tensors by output name: the key paths of the ``weights`` tensors, less
    their common first key when they all sit under one (``model.0.weight`` → ``0.weight``,
    as ``sd["model"]`` names it); top-level FQNs (torchtitan) stay as they are."""
    roles = {t.ref.storage.key: t.role for t in analysis.tensors if t.ref.storage}
    by_fqn = {e.fqn: e for e in entries if e.kind == "tensor"}
    model = [by_fqn[k] for k, r in roles.items() if r == "weights" and k in by_fqn]
    notes = []
    dropped = sorted({r for k, r in roles.items() if r != "weights"})
    if dropped:
        notes.append(f"not written (not model weights): {', '.join(dropped)} tensors")
    firsts = {e.path[0] for e in model}
    strip = (len(firsts) == 1 and all(len(e.path) > 1 for e in model)
             and next(iter(firsts)) in MODEL_KEYS)
    out: dict[str, Entry] = {}
    for e in sorted(model, key=lambda e: e.fqn):
        name = ".".join(str(k) for k in (e.path[1:] if strip else e.path))
        if name in out:
            raise FixError(f"two model tensors would both be named {name!r}")
        out[name] = e
    bytes_model = [e.fqn for e in entries if e.kind == "bytes"
                   and (e.path[0] in firsts if strip else False)]
    if bytes_model:
        notes.append(f"non-tensor model entries not written: {', '.join(bytes_model[:5])}")
    return out, notes


def _view(directory: str, e: Entry, c: Chunk) -> np.ndarray:
    """The chunk's elements, as the saved tensor views its storage (memory-mapped)."""
    d = c.data
    if c.item is not None and c.item.transforms:
        raise FixError(f"{e.fqn}: stored through {', '.join(c.item.transforms)} (compressed): "
                       "convert maps chunks in place and does not decode transformed items")
    if d is None or d.offset is None:
        raise FixError(f"{e.fqn}: the location of a chunk's bytes is unknown (compressed?)")
    size = DTYPE_SIZES[e.dtype]
    base = np.memmap(os.path.join(directory, d.rel), dtype=_RAW[size], mode="r",
                     offset=d.offset, shape=(d.numel,))
    return np.lib.stride_tricks.as_strided(
        base[d.storage_offset:], shape=c.sizes, strides=tuple(s * size for s in d.stride),
        writeable=False)


def blocks(directory: str, e: Entry) -> Iterator[np.ndarray]:
    """The tensor's elements in row-major order, in arrays of at most ``CHUNK`` bytes."""
    size = DTYPE_SIZES[e.dtype]
    shape = e.shape or (1,)
    chunks = [(c.offsets or (0,), c.sizes or (1,), c) for c in e.chunks if c.numel]
    if not chunks or e.numel == 0:
        return
    views = {id(c): None for _o, _s, c in chunks}
    # Split dimension: the first whose trailing extent fits a block.
    d = 0
    while d < len(shape) - 1 and _prod(shape[d + 1:]) * size > CHUNK:
        d += 1
    inner = _prod(shape[d + 1:])
    step = max(1, CHUNK // max(inner * size, 1))
    for outer in np.ndindex(*shape[:d]) if d else [()]:
        for j0 in range(0, shape[d], step):
            j1 = min(shape[d], j0 + step)
            out = np.empty((j1 - j0, *shape[d + 1:]), dtype=_RAW[size])
            covered = 0
            for offs, sizes, c in chunks:
                if any(not (o <= i < o + s) for i, o, s in zip(outer, offs, sizes, strict=False)):
                    continue
                a, b = max(j0, offs[d]), min(j1, offs[d] + sizes[d])
                if a >= b:
                    continue
                if views[id(c)] is None:
                    v = _view(directory, e, c)
                    views[id(c)] = v.reshape(sizes) if not e.shape else v
                src = views[id(c)][tuple(i - o for i, o in zip(outer, offs, strict=False))]
                src = src[a - offs[d]:b - offs[d]]
                dst = (slice(a - j0, b - j0), *(slice(o, o + s) for o, s in
                                                zip(offs[d + 1:], sizes[d + 1:], strict=True)))
                out[dst] = src
                covered += src.size
            if covered != out.size:
                raise FixError(f"{e.fqn}: its chunks do not cover it")
            yield out.reshape(-1)


def _prod(xs: tuple[int, ...]) -> int:
    n = 1
    for x in xs:
        n *= x
    return n


def convert_dcp(path: str, analysis: Analysis, rules: Mapping[str, Any], *,
                out_path: str | None, dry_run: bool,
                progress: Callable[[int, int], None] | None) -> FixResult:
    ckpt = analysis.checkpoint
    size = ckpt.size_bytes
    broken = [rel for rel, err, _h in analysis.children if isinstance(err, Exception)]
    if broken:
        return FixResult(path=path, size_before=size, size_after=size, error=(
            f"not converted: {broken[0]} could not be read"))
    entries: list[Entry] = ckpt.metadata.get("dcp_entries") or []
    target = target_for(path, out_path)
    if os.path.lexists(target) and not dry_run:
        return FixResult(path=path, size_before=size, size_after=size, notes=(
            f"not converted: {target} exists (remove it, or use --out DIR)",))
    named, notes = _names(analysis, entries)
    if not named:
        return FixResult(path=path, size_before=size, size_after=size,
                         notes=("not converted: no model weights found",))
    odd = [n for n, e in named.items() if e.dtype not in CODES]
    if odd:
        return FixResult(path=path, size_before=size, size_after=size, notes=(
            f"not converted: {odd[0]} is {named[odd[0]].dtype}, which safetensors cannot "
            "hold",))
    plan = make_plan(analysis, rules)
    fqns = {e.fqn: e for e in named.values()}
    plan.cast = [i for i in plan.cast if i.storage.key in fqns]  # only what is written
    stamps = _stamps(path)
    prog = ProgressCounter(progress, 2 * sum(e.numel * DTYPE_SIZES[e.dtype]
                                             for e in named.values()))
    _decide_overflow(path, plan, fqns)
    targets = {i.storage.key: i.target for i in plan.cast}
    entries_out = []
    for name, e in named.items():
        cast = targets.get(e.fqn)
        code = CODES[cast] if cast else CODES[e.dtype]
        entries_out.append((name, code, list(e.shape),
                            e.numel * DTYPE_SIZES[cast or e.dtype]))
    head, spans = header_bytes(entries_out, {"format": "pt"})
    size_after = len(head) + (spans[-1][2] if spans else 0)
    notes += [*plan.notes, "the DCP directory is left as it is" + (
        f"; the model weights would be written to {target}" if dry_run else "")]
    if dry_run:
        return _result(path, plan, size, size_after, None, target, True, notes)
    stats: dict[str, CastStats] = {}
    written: dict[str, tuple[int, int]] = {}
    try:
        with atomic.temporary_beside(target) as (fh, tmp):
            fh.write(head)
            for name, _b, _e in spans:
                e = named[name]
                cast = targets.get(e.fqn)
                crc = n = 0
                for block in blocks(path, e):
                    prog(block.nbytes)
                    pieces = _cast(block, cast, stats.setdefault(e.fqn, CastStats())) \
                        if cast else [memoryview(block.view("u1"))]
                    for data in pieces:
                        crc = zlib.crc32(data, crc)
                        n += len(data)
                        fh.write(data)
                written[name] = (n, crc)
            merged = CastStats()
            for item in plan.cast:
                if item.storage.key not in stats:
                    continue
                s = stats[item.storage.key]
                if not within_rounding(s, item.target):
                    raise VerifyError(f"cast of {item.paths[0]} went beyond rounding")
                merged.merge(s)
            atomic.sync_file(fh)
            _verify(tmp, fh, entries_out, {"format": "pt"}, written, prog)
            fh.close()
            size_after = os.path.getsize(tmp)
            if _stamps(path) != stamps:
                raise atomic.TargetError("the DCP directory changed while being converted; "
                                         "run fix again")
            atomic.commit(tmp, target)
    except (OSError, ValueError, VerifyError, FixError, atomic.TargetError) as err:
        return FixResult(path=path, size_before=size, size_after=size,
                         error=str(err).splitlines()[0] if str(err) else type(err).__name__)
    return _result(path, plan, size, size_after, merged, target, False, notes)


def _cast(block: np.ndarray, target: str, stats: CastStats) -> Iterator[memoryview]:
    """FP32 values cast in cache-sized pieces (temporaries stay small)."""
    values = block.view("<f4")
    for i in range(0, values.size, CAST_CHUNK):
        out, s = cast_chunk(values[i:i + CAST_CHUNK], target)
        stats.merge(s)
        yield memoryview(out).cast("B")


def _stamps(path: str) -> dict[str, tuple[int, int, int]]:
    out = {}
    for f in sorted(os.listdir(path)):
        st = os.stat(os.path.join(path, f))
        out[f] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def _decide_overflow(path: str, plan: Plan, entries: dict[str, Entry]) -> None:
    """Scan FP16 cast candidates first; ``on-overflow`` decides for those FP16 would damage."""
    for item in list(plan.cast):
        e = entries.get(item.storage.key)
        if item.target != "float16" or e is None:
            continue
        s = ScanStats()
        for block in blocks(path, e):
            s.add(block.view("<f4"))
        problem = s.fp16_problem()
        if problem is not None:
            _apply_overflow(plan, item, problem)


def _result(path: str, plan: Plan, before: int, after: int, stats: CastStats | None,
            target: str, dry_run: bool, notes: list[str]) -> FixResult:
    return _res(path, plan, before, after, True, stats, target, dry_run, notes=notes)
