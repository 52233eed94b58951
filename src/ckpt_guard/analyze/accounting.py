"""Byte accounting over UNIQUE storages: however many tensors view a storage, its bytes count
once — for the highest-precedence role among its viewers, under that viewer's dtype."""

from __future__ import annotations

from collections.abc import Iterable

from ckpt_guard.analyze.model import ROLES
from ckpt_guard.analyze.roles import RANK
from ckpt_guard.read.tree import Storage, TensorRef
from ckpt_guard.vocab import Role


class StorageUse:
    """Who a storage's bytes are counted for. (A plain class: only read, never compared; a
    dataclass costs every cold ``check`` ~0.5 ms to create.)"""

    __slots__ = ("storage", "role", "dtype")

    def __init__(self, storage: Storage, role: str, dtype: str) -> None:
        self.storage, self.role, self.dtype = storage, role, dtype

    @property
    def nbytes(self) -> int:
        return self.storage.nbytes


def views(ref: TensorRef) -> list[tuple[Storage, str]]:
    """``(storage, dtype)`` for every storage a tensor's bytes live in (sparse: components)."""
    if not ref.components:  # the common case, kept cheap
        return [(ref.storage, ref.dtype)] if ref.storage is not None else []
    out: list[tuple[Storage, str]] = []
    pending, seen = [ref], set()
    while pending:
        t = pending.pop()
        if id(t) in seen:
            continue
        seen.add(id(t))
        if t.storage is not None:
            out.append((t.storage, t.dtype))
        pending.extend(c for c in t.components if isinstance(c, TensorRef))
    return out


def storage_key(storage: Storage) -> str | int:
    # One Storage object per record in a file; the key is unique within a file, the id
    # guards against hand-built trees reusing keys across objects.
    return storage.key if storage.key else id(storage)


def assign(uses: Iterable[tuple[Storage, str, str]]) -> dict[str | int, StorageUse]:
    """Reduce ``(storage, role, dtype)`` viewings to one :class:`StorageUse` per storage."""
    best: dict[str | int, StorageUse] = {}
    for storage, role, dtype in uses:
        k = storage_key(storage)
        cur = best.get(k)
        if role not in RANK:  # never let an internal role name escape
            role = Role.OTHER
        if cur is None or RANK[role] < RANK[cur.role]:
            best[k] = StorageUse(storage, role, dtype)
    return best


def unique_bytes(storages: Iterable[Storage]) -> int:
    seen: dict[str | int, int] = {}
    for s in storages:
        seen.setdefault(storage_key(s), s.nbytes)
    return sum(seen.values())


def by_role(uses: dict[str | int, StorageUse]) -> dict[str, int]:
    out = dict.fromkeys(ROLES, 0)
    for u in uses.values():
        out[u.role if u.role in out else Role.OTHER] += u.nbytes
    return out


def by_dtype(uses: dict[str | int, StorageUse]) -> dict[str, int]:
    out: dict[str, int] = {}
    for u in uses.values():
        out[u.dtype] = out.get(u.dtype, 0) + u.nbytes
    return dict(sorted(out.items(), key=lambda kv: (-kv[1], kv[0])))


def merge_counts(target: dict[str, int], extra: dict[str, int]) -> None:
    for k, v in extra.items():
        target[k] = target.get(k, 0) + v
