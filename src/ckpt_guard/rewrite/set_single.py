"""A set re-sharded (or converted) to one shard becomes one file with no index, as
huggingface_hub and transformers save a state dict that fits in one shard:
``split_torch_state_dict_into_shards`` names its only shard ``model.safetensors`` (the empty
suffix) and ``save_torch_state_dict`` writes no index, removing an old one. A folder left
with both would be read two ways: transformers takes ``model.safetensors`` first,
huggingface_hub's ``load_torch_model`` the index first.

In place, every state a kill can leave loads as a whole model through either route:

1. a journal (``.ckpt-guard-set-<id>.journal``: the index, the old shards, the one file);
2. the file written, verified and fsynced under a hidden name, then linked to its name —
   never over an existing file (commit 1: transformers now loads it, the index still names
   the old set, complete);
3. the index rewritten to name the new file for every tensor (commit 2: both routes reach it);
4. the old shards removed, then the index, the journal last.

The next ``fix`` of the set (:func:`.set_swap.settle_journals` → :func:`settle_single`)
rolls a run killed after commit 1 forward, and removes the hidden file of a run killed
before it. A converted ``.bin`` set keeps its index and shards: only the new file is added.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
from collections.abc import Callable
from typing import Any

from ckpt_guard.read.sharded import INDEX_SUFFIX, JOURNAL_SUFFIX, SET_TEMP_MARK, load_index
from ckpt_guard.rewrite import atomic


def single_name(index_name: str) -> str:
    """``model.safetensors.index.json`` → ``model.safetensors`` (the unsharded name)."""
    return index_name[: -len(INDEX_SUFFIX)]


def single_metadata(base: dict[str, str] | None, index: dict[str, Any]) -> dict[str, str] | None:
    """The file's ``__metadata__``: the shards' own, plus the index's string metadata
    (huggingface_hub puts its ``metadata`` into an unsharded file's header; ``total_size``
    is the index's own bookkeeping)."""
    extra = {k: v for k, v in (index.get("metadata") or {}).items()
             if k != "total_size" and isinstance(v, str)}
    return {**extra, **(base or {})} or None


def index_blocks_single(index: dict[str, Any]) -> str | None:
    """Why the index cannot go (its metadata holds values no safetensors header can carry),
    or ``None``."""
    odd = [k for k, v in (index.get("metadata") or {}).items()
           if k != "total_size" and not isinstance(v, str)]
    return f"the index's metadata {odd[0]!r} is not a string" if odd else None


def swap_single(folder: str, index_path: str, final: str,
                write: Callable[[str], None], *, replaces: list[str] | None,
                total_size: int, keep: Any = None) -> None:
    """Write the set's one file ``final`` in place (steps above). ``write(dest)`` writes and
    verifies it; ``replaces``: the old shards that go (``None``: a conversion, the ``.bin``
    set and its index are kept); ``keep``: the stash keeper, given the old index and shards
    before commit 1."""
    from ckpt_guard.rewrite.set_swap import cleanup_folder, settle_journals, temp_name

    token = secrets.token_hex(4)
    name = os.path.basename(final)
    temp = os.path.join(folder, temp_name(name, token))
    journal = os.path.join(folder, f"{SET_TEMP_MARK}{token}{JOURNAL_SUFFIX}")
    try:
        if replaces is not None:
            _write_journal(journal, os.path.basename(index_path), replaces, name, total_size)
        write(temp)
        if keep is not None:
            keep.keep_set(index_path, replaces or [])
        os.link(temp, final)  # commit 1; fails rather than replace a file of that name
        os.unlink(temp)
        atomic.sync_dir(folder)
        if replaces is not None:
            settle_journals(folder)  # commits 2, the old set goes, the journal last
        if keep is not None:
            keep.set_written(final)
    except BaseException:
        with contextlib.suppress(OSError, ValueError):
            settle_journals(folder)  # after commit 1: rolled forward; before: journal goes
            cleanup_folder(folder)  # the hidden file no index names
        raise


def _write_journal(path: str, index_name: str, replaces: list[str], single: str,
                   total_size: int) -> None:
    data = json.dumps({"index": index_name, "source": index_name, "replaces": replaces,
                       "single": single, "total_size": total_size}).encode()
    with open(path, "wb") as fh:
        fh.write(data)
        atomic.sync_file(fh)
    atomic.sync_dir(os.path.dirname(path) or ".")


def settle_single(folder: str, journal: dict[str, Any], is_old: Callable[[str], bool]) -> int:
    """Finish a one-file re-shard its journal describes, if its file is in place (commit 1
    happened: it was complete and verified before it got its name): the index names it
    (commit 2), the old shards ``is_old`` accepts go, then the index. Returns how many files
    were removed; nothing is done before commit 1 (the old set stands)."""
    from ckpt_guard.rewrite.set_swap import write_index

    single = os.path.basename(str(journal["single"]))
    index_name = os.path.basename(str(journal["index"]))
    final = os.path.join(folder, single)
    index_path = os.path.join(folder, index_name)
    if not os.path.isfile(final) or not index_name.endswith(INDEX_SUFFIX):
        return 0
    removed = 0
    if os.path.exists(index_path):
        index = load_index(index_path)
        if set(index["weight_map"].values()) != {single}:
            index["weight_map"] = {k: single for k in index["weight_map"]}
            if isinstance(journal.get("total_size"), int):
                index["metadata"] = {**(index.get("metadata") or {}),
                                     "total_size": journal["total_size"]}
            write_index(index_path, index)  # commit 2
        for old in journal.get("replaces") or []:
            old = os.path.basename(str(old))
            if old != single and is_old(old):
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(os.path.join(folder, old))
                    removed += 1
        atomic.sync_dir(folder)
        os.unlink(index_path)
        removed += 1
        atomic.sync_dir(folder)
    return removed


def left_journal(path: str) -> bool:
    """Is there a journal of a one-file re-shard into ``path`` beside it (a run killed
    before its last step)? Its fix then settles it (:func:`.set_swap.recover`)."""
    folder, name = os.path.split(os.path.abspath(path))
    try:
        names = os.listdir(folder)
    except OSError:
        return False
    for n in names:
        if n.startswith(SET_TEMP_MARK) and n.endswith(JOURNAL_SUFFIX):
            try:
                with open(os.path.join(folder, n), "rb") as fh:
                    if json.loads(fh.read(1 << 20)).get("single") == name:
                        return True
            except (OSError, ValueError, AttributeError):
                continue
    return False


__all__ = ["left_journal", "index_blocks_single", "settle_single", "single_metadata", "single_name",
           "swap_single"]
