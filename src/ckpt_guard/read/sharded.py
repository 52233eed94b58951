"""Sharded sets: an index (``model.safetensors.index.json``, ``pytorch_model.bin.index.json``,
any ``*.index.json`` holding a ``weight_map``) and the shard files it names, read as one unit.

The set becomes one :class:`Checkpoint` (format ``sharded-safetensors`` / ``sharded-torch``)
whose ``children`` are its shards, each read on its own. What the ``shard-index`` rule judges
is computed here, while the shards' tensor names are at hand: ``metadata["shard_problems"]``,
one entry per problem. Loaders (transformers' ``get_checkpoint_shard_files``) fetch
``sorted(set(weight_map.values()))`` relative to the index's folder and trust the map, so
every disagreement between the map and the shards is a model that silently loads wrong.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping

from ckpt_guard.read.checkpoint import Checkpoint, UnreadableError
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.tree import as_mapping
from ckpt_guard.vocab import Format, Role

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

INDEX_SUFFIX = ".index.json"
MAX_INDEX_BYTES = 64 * 1024 * 1024  # a 10k-tensor index is ~1 MB
# huggingface_hub's default filename pattern: "<stem>-00001-of-00005<ext>".
SHARD_NAME = re.compile(r"(?P<stem>.+)-(?P<i>\d{5})-of-(?P<n>\d{5})(?P<ext>\.[A-Za-z0-9]+)")
# Our own names while a fix swaps a set (see rewrite/sharded.py): never "extra shards".
SET_TEMP_MARK = ".ckpt-guard-set-"
# ".ckpt-guard-set-<id>.journal": the old shards a re-shard replaces (rewrite/reshard.py).
JOURNAL_SUFFIX = ".journal"


def is_index_name(name: str) -> bool:
    return os.path.basename(name).endswith(INDEX_SUFFIX)


def load_index(path: str) -> dict[str, Any]:
    """The parsed index: ``{"metadata": {...}, "weight_map": {tensor: shard}}``, validated
    enough to be walked. Raises :class:`UnreadableError` naming what is wrong."""
    try:
        size = os.path.getsize(path)
        if size > MAX_INDEX_BYTES:
            raise UnreadableError(f"shard index is {size:,} bytes, over the "
                                  f"{MAX_INDEX_BYTES:,}-byte limit")
        with open(path, "rb") as fh:
            raw = fh.read()
    except OSError as e:
        raise UnreadableError(f"cannot read shard index: {e.strerror or e}") from e
    return parse_index(raw)


def parse_index(raw: bytes) -> dict[str, Any]:
    """:func:`load_index` on the index's bytes (a remote index is read whole: it is small)."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise UnreadableError(f"shard index is not valid JSON: {e}") from e
    if not isinstance(data, dict) or not isinstance(data.get("weight_map"), dict):
        raise UnreadableError("shard index has no weight_map object")
    wm = data["weight_map"]
    bad = [k for k, v in wm.items() if not isinstance(v, str) or not v]
    if bad:
        raise UnreadableError(f"shard index maps {bad[0]!r} to something other than a file name")
    meta = data.get("metadata")
    if meta is not None and not isinstance(meta, dict):
        raise UnreadableError("shard index metadata is not an object")
    return data


def shards_of(index: dict[str, Any]) -> list[str]:
    """The shard files a loader fetches, in its order."""
    return sorted(set(index["weight_map"].values()))


def set_format(index_path: str, shards: Iterable[str]) -> str:
    names = [os.path.basename(index_path)[: -len(INDEX_SUFFIX)], *shards]
    return (Format.SHARDED_SAFETENSORS if any(n.endswith(".safetensors") for n in names)
            else Format.SHARDED_TORCH)


def unsharded_name(index_path: str) -> str:
    """``dir/model.safetensors.index.json`` → ``dir/model.safetensors`` (what policy globs
    and overrides match for the whole set)."""
    return index_path[: -len(INDEX_SUFFIX)] if is_index_name(index_path) else index_path


def alone_note(index_name: str, why: str) -> str:
    """What a report says of a file named like a shard whose set was not found."""
    return (f"named like a shard, but the set was not found (its index {index_name} {why}): "
            "checked as a single file")


def shard_alone(path: str) -> str | None:
    """For a local file named like a shard that no index beside it claims: why it is checked
    alone (``None``: not named like a shard)."""
    m = SHARD_NAME.fullmatch(os.path.basename(path))
    if not m:
        return None
    index_name = f"{m['stem']}{m['ext']}{INDEX_SUFFIX}"
    index = os.path.join(os.path.dirname(path), index_name)
    if not os.path.exists(index):
        return alone_note(index_name, "is not beside it")
    try:
        load_index(index)
    except UnreadableError as e:
        return alone_note(index_name, f"cannot be read: {e}")
    return alone_note(index_name, "does not name it")


class SetFinder:
    """Which set a file belongs to: indexes found per folder, parsed once per folder."""

    def __init__(self) -> None:
        self._dirs: dict[str, dict[str, str]] = {}  # folder → {shard name or index: index}

    def _folder(self, folder: str) -> dict[str, str]:
        got = self._dirs.get(folder)
        if got is not None:
            return got
        got = {}
        try:
            names = sorted(os.listdir(folder))
        except OSError:
            names = []
        for name in names:
            if not name.endswith(INDEX_SUFFIX):
                continue
            path = os.path.join(folder, name)
            try:
                index = load_index(path)
            except UnreadableError:
                continue  # not a shard index (or a broken one: named, it is read and reported)
            got[name] = path
            for shard in shards_of(index):
                got.setdefault(os.path.normpath(os.path.join(folder, shard)), path)
                final = _step1_final(shard)
                if final:  # a half-swapped set (see rewrite/sharded.py): still one unit
                    got.setdefault(os.path.normpath(os.path.join(folder, final)), path)
        # A re-shard under way (rewrite/reshard.py): its new files, under names the old index
        # does not know, and the old shards it replaces belong to the set its journal names
        # (read once here: the fix of the set removes the journal while the walk goes on).
        journals = {n[len(SET_TEMP_MARK):-len(JOURNAL_SUFFIX)]: n for n in names
                    if n.startswith(SET_TEMP_MARK) and n.endswith(JOURNAL_SUFFIX)}
        for token, journal in journals.items():
            index = next((got[n] for n in _journal_indexes(folder, journal) if n in got), None)
            if not index:
                continue
            mine = [n for n in names if n.startswith(f"{SET_TEMP_MARK}{token}.")]
            mine += replaced_shards(folder, [journal], os.path.basename(index))
            for name in mine:
                got.setdefault(os.path.normpath(os.path.join(folder, name)), index)
        self._dirs[folder] = got
        return got

    def index_for(self, path: str) -> str | None:
        """The index of the set ``path`` (an index or a shard, absolute) belongs to."""
        folder, name = os.path.split(path)
        got = self._folder(folder)
        if name in got:
            return got[name]
        final = _step1_final(name)
        if final:  # a fix's own new file or link being made: part of the set it fixes
            return got.get(os.path.normpath(os.path.join(folder, final))) \
                or got.get(os.path.normpath(path))
        return got.get(os.path.normpath(path))


def _journal_indexes(folder: str, journal: str) -> list[str]:
    """The index names a journal gives: the index the new set is committed through, then the
    one being fixed (a conversion's new index does not exist before its commit)."""
    try:
        with open(os.path.join(folder, journal), "rb") as fh:
            data = json.loads(fh.read(1 << 20))
        names = [data.get("index"), data.get("source")]
    except (OSError, ValueError, AttributeError):
        return []
    return [os.path.basename(n) for n in names if isinstance(n, str)]


def _step1_final(name: str) -> str | None:
    """``.ckpt-guard-set-<id>.F`` (a fix's new file for shard ``F``) → ``F``."""
    head, base = os.path.split(name)
    if not base.startswith(SET_TEMP_MARK):
        return None
    final = base[len(SET_TEMP_MARK):].partition(".")[2]
    return os.path.join(head, final) if final else None


def index_for(path: str) -> str | None:
    """:meth:`SetFinder.index_for` without a cache (one explicit path)."""
    return SetFinder().index_for(os.path.abspath(path))


def _tensor_names(ckpt: Checkpoint) -> list[str] | None:
    """A shard's tensor names (state-dict keys), or ``None`` when it is not a flat mapping."""
    m = as_mapping(ckpt.root)
    if m is None:
        return None
    return [k for k in m if isinstance(k, str)]


def expected_total_size(children: list[tuple[str, Checkpoint | UnreadableError, str]]) -> int:
    """``total_size`` as huggingface_hub computes it: tensor data bytes, each storage once
    (a tied alias is not counted twice), headers excluded."""
    return sum(sum(s.nbytes for s in c.storages.values()) for _r, c, _h in children
               if isinstance(c, Checkpoint))


def _problems(index_path: str, index: dict[str, Any],
              children: list[tuple[str, Checkpoint | UnreadableError, str]],
              missing: list[str], escaping: list[str],
              listing: list[str] | None = None) -> list[dict[str, Any]]:
    wm: dict[str, str] = index["weight_map"]
    out: list[dict[str, Any]] = []
    by_shard: dict[str, list[str]] = {}
    for tensor, shard in wm.items():
        by_shard.setdefault(shard, []).append(tensor)
    for shard in escaping:
        out.append({"kind": "bad-shard-path", "shard": shard,
                    "message": f"shard {shard} is not a file beside the index; not read"})
    for shard in missing:
        n = len(by_shard.get(shard, []))
        out.append({"kind": "missing-shard", "shard": shard, "tensors": n,
                    "message": f"shard file {shard} is missing ({n} indexed "
                               f"tensor{'s' if n != 1 else ''} cannot load)"})
    holders: dict[str, list[str]] = {}
    readable: set[str] = set()
    for rel, child, _hint in children:
        if not isinstance(child, Checkpoint):
            continue
        if child.format == Format.LFS_POINTER:
            size = child.metadata.get("size")
            what = f" to a {size:,}-byte object" if isinstance(size, int) else ""
            out.append({"kind": "lfs-pointer-shard", "shard": rel,
                        "message": f"shard {rel} is a Git LFS pointer{what}, not weights: "
                                   f"loading the set fails"})
            continue
        names = _tensor_names(child)
        if names is None:
            out.append({"kind": "not-a-state-dict", "shard": rel,
                        "message": f"shard {rel} is not a flat name → tensor mapping"})
            continue
        readable.add(rel)
        for name in names:
            holders.setdefault(name, []).append(rel)
    for tensor, shards in holders.items():
        if len(shards) > 1:
            out.append({"kind": "duplicate-tensor", "tensor": tensor, "shards": shards,
                        "message": f"tensor {tensor} is in {len(shards)} shards "
                                   f"({', '.join(shards)}); which one loads depends on order"})
    for tensor, shard in wm.items():
        if shard not in readable:
            continue  # a missing/unreadable/pointer shard is one finding, not one per tensor
        found = holders.get(tensor, [])
        if shard not in found:
            where = f" (it is in {', '.join(found)})" if found else ""
            out.append({"kind": "missing-tensor", "tensor": tensor, "shard": shard,
                        "message": f"index maps {tensor} to {shard}, which does not hold "
                                   f"it{where}"})
    for tensor, shards in holders.items():
        if tensor not in wm:
            out.append({"kind": "unindexed-tensor", "tensor": tensor, "shard": shards[0],
                        "message": f"tensor {tensor} in {shards[0]} is not in the index "
                                   f"(loaders never see it)"})
    out.extend(_extra_shards(index_path, wm, listing))
    meta = index.get("metadata") or {}
    total = meta.get("total_size")
    if total is not None and not missing and not escaping and \
            all(isinstance(c, Checkpoint) and c.format != Format.LFS_POINTER for _r, c, _h in children):
        expected = expected_total_size(children)
        try:
            declared = int(total)
        except (TypeError, ValueError):
            declared = None
        if declared != expected:
            out.append({"kind": "total-size", "declared": total, "expected": expected,
                        "message": f"metadata.total_size is {total!r}, the shards hold "
                                   f"{expected:,} bytes of tensor data"})
    return out


def _extra_shards(index_path: str, wm: dict[str, str],
                  listing: list[str] | None = None) -> list[dict[str, Any]]:
    """Files beside the index named like this set's shards that the index does not name
    (a stale shard of an earlier save, a shard of a different count). ``listing``: the
    folder's file names when it is not a local folder (a remote set's listing)."""
    folder = os.path.dirname(index_path)
    base = os.path.basename(index_path)[: -len(INDEX_SUFFIX)]
    stem, ext = os.path.splitext(base)
    named = set(wm.values())
    # A fix killed between its two index commits: the index names ".ckpt-guard-set-<id>.F"
    # and F (being relinked to the same new file) is not a foreign shard.
    named |= {f for n in named if (f := _step1_final(n))}
    out: list[dict[str, Any]] = []
    try:
        names = sorted(listing if listing is not None else os.listdir(folder or "."))
    except OSError:
        return out
    # A re-shard killed after its new index was in place: the old shards its journal lists
    # are still there until the next fix removes them. Still findings (a journal is only a
    # file in the folder: it must not make a stale shard pass), saying what they are.
    leaving = (replaced_shards(folder or ".", names, os.path.basename(index_path))
               if listing is None else set())  # journals are local files
    for name in names:
        m = SHARD_NAME.fullmatch(name)
        if m and m["stem"] == stem and m["ext"] == ext and name not in named:
            why = ("an old shard an interrupted `ckpt-guard fix` re-sharded away; the next "
                   "`ckpt-guard fix` removes it" if name in leaving
                   else "a stale or foreign shard")
            out.append({"kind": "extra-shard", "shard": name,
                        "message": f"shard file {name} is not in the index ({why})"})
    return out


def replaced_shards(folder: str, names: list[str], index_name: str) -> set[str]:
    """The old shard names the journals in ``folder`` (of a re-shard of ``index_name``)
    list for removal."""
    out: set[str] = set()
    for name in names:
        if name.startswith(SET_TEMP_MARK) and name.endswith(JOURNAL_SUFFIX):
            try:
                with open(os.path.join(folder, name), "rb") as fh:
                    journal = json.loads(fh.read(1 << 20))
                if journal.get("index") == index_name:
                    out |= {r for r in journal.get("replaces", ()) if isinstance(r, str)}
            except (OSError, ValueError, AttributeError):
                continue  # a torn journal: written before any new file, nothing to excuse
    return out


def read_sharded(index_path: str, limits: Limits, *, root: str | None = None,
                 sources: Mapping[str, tuple[str, tuple[tuple[str, str], ...]]] | None = None
                 ) -> Checkpoint:
    """Read a sharded set from its index. Raises :class:`UnreadableError` for an index that
    cannot be parsed; each shard's own problems stay with that shard. ``sources``: shard
    path → (URL, headers) to read by range instead (an LFS pointer shard's object)."""
    from ckpt_guard.read import read_path, read_remote

    index = load_index(index_path)
    folder = os.path.dirname(index_path)
    shards = shards_of(index)
    if len(shards) > limits.max_dir_files:
        raise UnreadableError(f"shard index names {len(shards)} shards, over the "
                              f"{limits.max_dir_files} limit")
    children: list[tuple[str, Checkpoint | UnreadableError, str]] = []
    missing: list[str] = []
    escaping: list[str] = []
    size = os.path.getsize(index_path)
    for shard in shards:
        # transformers joins the name to the folder; a name leaving it is not ours to read.
        if os.path.isabs(shard) or ".." in shard.replace("\\", "/").split("/"):
            escaping.append(shard)
            continue
        path = os.path.join(folder, shard)
        if not os.path.lexists(path):
            missing.append(shard)
            continue
        remote = (sources or {}).get(os.path.abspath(path))
        try:
            child: Checkpoint | UnreadableError = (
                read_remote(remote[0], limits, headers=dict(remote[1]), name=path) if remote
                else read_path(path, limits, root=root))
            size += child.size_bytes
        except UnreadableError as e:
            child = e
        children.append((shard, child, Role.WEIGHTS))
    ckpt = assemble_set(index_path, index, children, missing, escaping, size)
    read = [c.metadata for _r, c, _h in children
            if isinstance(c, Checkpoint) and "remote_bytes" in c.metadata]
    if read:  # what reading the shards by range cost, for the report
        ckpt.metadata["remote_requests"] = sum(m["remote_requests"] for m in read)
        ckpt.metadata["remote_bytes"] = sum(m["remote_bytes"] for m in read)
    return ckpt


def assemble_set(index_path: str, index: dict[str, Any],
                 children: list[tuple[str, Checkpoint | UnreadableError, str]],
                 missing: list[str], escaping: list[str], size: int, *,
                 listing: list[str] | None = None) -> Checkpoint:
    """The set's :class:`Checkpoint` from its read shards (``children``), the shards that
    are not there (``missing``) or not beside the index (``escaping``); ``size`` = index +
    shards. ``listing``: the index folder's file names for a set that is not local."""
    shards = shards_of(index)
    problems = _problems(index_path, index, children, missing, escaping, listing)
    meta = index.get("metadata") or {}
    notes = (["an interrupted `ckpt-guard fix` left this set under temporary names (complete "
              "and consistent); the next `ckpt-guard fix` gives the shards their names back"]
             if any(s.startswith(SET_TEMP_MARK) for s in shards) else [])
    return Checkpoint(
        path=index_path, format=set_format(index_path, shards), size_bytes=size,
        children=children, notes=notes,
        metadata={"index": os.path.basename(index_path), "shards": shards,
                  "shard_count": len(shards), "tensors_indexed": len(index["weight_map"]),
                  "total_size": meta.get("total_size"), "shard_problems": problems},
        pickles=[p.__class__(member=f"{rel}:{p.member}", offset=p.offset, length=p.length,
                             sha256=p.sha256)
                 for rel, c, _h in children if isinstance(c, Checkpoint) for p in c.pickles])
