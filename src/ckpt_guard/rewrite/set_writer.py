"""Write a sharded set's tensors as new safetensors shards: the layout huggingface_hub
gives (``split_state_dict_into_shards_factory``), each shard streamed from the input shards
(cast per plan), fsynced and verified with our own reader.

Used when a fix changes the set's file names: re-sharding to ``max-shard-size`` and
converting a ``.bin`` set to safetensors (see :mod:`.reshard`). Memory holds one copy buffer,
never a tensor: every output byte is read from its input shard while it is written.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, BinaryIO

from ckpt_guard.policy.keep_fp32 import KEPT_FP32_METADATA
from ckpt_guard.read.safetensors import CODES
from ckpt_guard.read.tree import DTYPE_SIZES, TensorRef
from ckpt_guard.rewrite import atomic, storage_io
from ckpt_guard.rewrite.cast import CastStats
from ckpt_guard.rewrite.crc import crc32
from ckpt_guard.rewrite.safetensors import _verify, header_bytes


@dataclass(frozen=True)
class SetTensor:
    """One tensor of the new set: where its bytes are in which input shard, what it becomes."""

    name: str
    source: str  # the input shard's path
    ref: TensorRef
    offset: int  # absolute offset of its first input byte
    nbytes: int  # input bytes
    cast: str | None  # target dtype, None: copied as it is

    @property
    def code(self) -> str:
        return CODES[self.cast] if self.cast else CODES.get(self.ref.dtype, "U8")

    @property
    def out_nbytes(self) -> int:
        """Bytes written, which is what huggingface_hub's ``get_storage_size`` counts for the
        (contiguous, unshared) tensors a safetensors shard holds."""
        return self.ref.numel * DTYPE_SIZES[self.cast] if self.cast else self.nbytes


def split(tensors: Iterable[tuple[str, int]], max_shard_size: int) -> list[list[str]]:
    """huggingface_hub's ``split_state_dict_into_shards_factory`` for unshared tensors
    (name, bytes) in order: greedy; a tensor that would tip the current shard over the
    limit starts a new one; a tensor larger than the limit gets a shard of its own, placed
    when it is met (before the shard still being filled)."""
    shards: list[list[str]] = []
    current: list[str] = []
    size = 0
    for name, nbytes in tensors:
        if nbytes > max_shard_size:
            shards.append([name])
            continue
        if size + nbytes > max_shard_size:
            shards.append(current)
            current, size = [], 0
        current.append(name)
        size += nbytes
    if current:
        shards.append(current)
    return [s for s in shards if s]  # an empty first shard is appended when one tips it


def shard_names(stem: str, ext: str, count: int) -> list[str]:
    """``model-00001-of-00003.safetensors`` … (huggingface_hub's ``filename_pattern``)."""
    return [f"{stem}-{i:05d}-of-{count:05d}{ext}" for i in range(1, count + 1)]


def shard_metadata(base: dict[str, str] | None, kept: dict[str, str],
                   names: Iterable[str]) -> dict[str, str] | None:
    """A shard's ``__metadata__``: ``base`` plus the keep-FP32 record of its own tensors."""
    mine = {n: kept[n] for n in names if n in kept}
    if not mine:
        return base
    return {**(base or {}), KEPT_FP32_METADATA: json.dumps(mine, sort_keys=True)}


# torch.distributed.checkpoint's HF storage (hf_storage.py): per shard, ``{fqn: {"saved_offsets":
# [...]}}`` for every tensor of that shard — its reader looks each key of a file up in the
# file's own entry (a missing key is a KeyError), so a re-shard rebuilds it per new shard.
DCP_SHARDING_KEY = "DCP_SHARDING_INFO"


def dcp_sharding(metadatas: Iterable[dict[str, str] | None]) -> dict[str, Any] | None:
    """The input shards' DCP sharding entries merged by tensor name; ``None`` when no shard
    has one. Raises ``ValueError`` for an entry that is not a JSON object."""
    merged: dict[str, Any] | None = None
    for meta in metadatas:
        raw = (meta or {}).get(DCP_SHARDING_KEY)
        if raw is None:
            continue
        got = json.loads(raw)
        if not isinstance(got, dict):
            raise ValueError(f"{DCP_SHARDING_KEY} is not a JSON object")
        merged = {**(merged or {}), **got}
    return merged


def with_dcp_sharding(metas: list[dict[str, str] | None], groups: list[list[SetTensor]],
                      merged: dict[str, Any] | None) -> list[dict[str, str] | None]:
    """Each new shard's ``__metadata__`` with its own tensors' sharding entries (a tensor
    without one gets what the reader assumes without any: offsets 0)."""
    if merged is None:
        return metas
    return [{**(m or {}), DCP_SHARDING_KEY: json.dumps(
        {t.name: merged.get(t.name, {"saved_offsets": [0] * len(t.ref.shape)}) for t in g})}
        for m, g in zip(metas, groups, strict=True)]


def projected_size(tensors: list[SetTensor], metadata: dict[str, str] | None) -> int:
    head, spans = header_bytes(_entries(tensors), metadata)
    return len(head) + (spans[-1][2] if spans else 0)


def _entries(tensors: list[SetTensor]) -> list[tuple[str, str, list[int], int]]:
    return [(t.name, t.code, list(t.ref.shape), t.out_nbytes) for t in tensors]


class Sources:
    """The input shards, opened as the set is written; at most ``MAX_OPEN`` at a time (a
    set of thousands of shards must not run out of file descriptors)."""

    MAX_OPEN = 32

    def __init__(self) -> None:
        self._open: dict[str, BinaryIO] = {}

    def get(self, path: str) -> BinaryIO:
        fh = self._open.pop(path, None)
        if fh is None:
            if len(self._open) >= self.MAX_OPEN:  # the least recently used goes
                self._open.pop(next(iter(self._open))).close()
            fh = open(path, "rb")  # noqa: SIM115 (closed in close())
        self._open[path] = fh  # most recently used last
        return fh

    def close(self) -> None:
        for fh in self._open.values():
            fh.close()
        self._open.clear()


def write_shard(dest: str, tensors: list[SetTensor], metadata: dict[str, str] | None,
                sources: Sources, stats: dict[int, CastStats],
                prog: Callable[[int], None] | None, *, mode_from: str | None) -> int:
    """Write ``tensors`` as the safetensors file ``dest`` (temporary beside it, fsync,
    verify, rename); ``stats`` collects cast statistics by ``id(storage)``. Returns its size."""
    entries = _entries(tensors)
    head, spans = header_bytes(entries, metadata)
    by_name = {t.name: t for t in tensors}
    buf = bytearray(storage_io.CHUNK)
    written: dict[str, tuple[int, int]] = {}
    with atomic.temporary_beside(dest) as (fh, tmp):
        fh.write(head)
        for name, _begin, _end in spans:
            t = by_name[name]
            src = sources.get(t.source)
            if t.cast:
                s = stats.setdefault(id(t.ref.storage), CastStats())
                chunks = storage_io.casted(src, t.offset, t.nbytes, buf, t.cast, s, prog)
            else:
                chunks = storage_io.copied(src, t.offset, t.nbytes, buf, prog)
            crc = n = 0
            for chunk in chunks:
                crc = crc32(chunk, crc)
                n += len(chunk)
                fh.write(chunk)
            written[name] = (n, crc)
        atomic.sync_file(fh)
        _verify(tmp, fh, entries, metadata, written, prog)
        fh.close()
        size = os.path.getsize(tmp)
        atomic.commit(tmp, dest, mode_from=mode_from)
    return size


def weight_map(groups: list[list[str]], names: list[str]) -> dict[str, str]:
    """``tensor → shard`` in shard order (as huggingface_hub's ``tensor_to_filename``)."""
    return {t: name for group, name in zip(groups, names, strict=True) for t in group}


def index_bytes(index: dict[str, Any]) -> bytes:
    """The index as written (and as a dry run counts it)."""
    return (json.dumps(index, indent=2, sort_keys=False, ensure_ascii=False) + "\n").encode()


__all__ = ["DCP_SHARDING_KEY", "SetTensor", "Sources", "dcp_sharding", "index_bytes", "projected_size", "shard_metadata",
           "shard_names", "split", "weight_map", "with_dcp_sharding", "write_shard"]
