"""The swap that replaces a sharded set as a unit, and its recovery (see
:mod:`.sharded` for the steps). Loaders reach shards only through the index, so the index
is the commit point: new shards under hidden names ``.ckpt-guard-set-<id>.F``, an index
naming them (commit 1), the final names linked, an index naming those (commit 2). A fix
that changes the set's names (:mod:`.reshard`) writes a journal first, naming the old shards
that go once the index names the new set; they are removed after commit 2, the journal last.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from typing import Any

from ckpt_guard.read.checkpoint import UnreadableError
from ckpt_guard.read.sharded import (
    INDEX_SUFFIX,
    JOURNAL_SUFFIX,
    SET_TEMP_MARK,
    SHARD_NAME,
    load_index,
)
from ckpt_guard.rewrite import atomic
from ckpt_guard.rewrite.set_writer import index_bytes


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
        if _ours(name) and not name.endswith(JOURNAL_SUFFIX) and name not in named:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(folder, name))
                n += 1
    return n


def _ours(name: str) -> bool:
    """A hidden file of a set fix: a new shard, a link being made, a journal, or the
    temporary a new shard is written to (``..ckpt-guard-set-….ckpt-guard-….tmp``)."""
    return SET_TEMP_MARK in name and name.startswith(".")


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
        if index_name and isinstance(journal, dict) and journal.get("single"):
            from ckpt_guard.rewrite.set_single import settle_single

            try:  # a re-shard into one file (rewrite/set_single.py)
                removed += settle_single(folder, journal,
                                         lambda old, n=index_name: _shard_of(old, n))
            except UnreadableError:
                continue  # left as it is: check reports the index
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            continue
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
    """Is ``name`` a shard name (``<stem>-0000i-of-0000N<ext>``) of the index ``index_name``,
    or its unsharded name (``<stem><ext>``)?"""
    stem, ext = os.path.splitext(index_name[: -len(INDEX_SUFFIX)])
    if name == f"{stem}{ext}":  # the set's one-file form (a restore removes it)
        return True
    m = SHARD_NAME.fullmatch(name)
    return bool(m and m["stem"] == stem and m["ext"] == ext)


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
        leftovers = [n for n in os.listdir(folder) if _ours(n)]
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


__all__ = ["cleanup_folder", "finish_swap", "recover", "settle_journals", "temp_name",
           "write_index"]
