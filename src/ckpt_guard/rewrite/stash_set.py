"""Keep (and restore) the originals of a sharded set fixed in place — one stash entry per set.

A set's fix (:mod:`.sharded`, :mod:`.reshard`) replaces shards and the index, and a re-shard
deletes old shards once the new index is in place. Before its first commit (before any
original is replaced or removed) the index and every shard the fix replaces or removes are
hard-linked (else reflinked/copied, as for single files: :func:`.stash.place`) into one entry,
``<id>/originals/<name>``, with ``entry.json`` (``kind: set``, ``files``) — built under a
hidden name and renamed into place, so the entry is complete or absent. A failure here aborts
the set's fix before anything of the set was touched.

``restore`` puts the whole original set back through the set swap's own steps (see
:mod:`.set_swap`): the kept shards linked in under hidden names, an index naming them
(commit 1), the final names linked, the original index itself renamed into place (commit 2),
then the shards only the fixed set had are removed (a journal names them first). A loader
sees the fixed set, then the original set, never a mix; a run killed in between is finished by
the next ``fix`` as any interrupted swap is.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import time
from pathlib import Path

from ckpt_guard.read.checkpoint import UnreadableError
from ckpt_guard.read.sharded import JOURNAL_SUFFIX, SET_TEMP_MARK, is_index_name, load_index
from ckpt_guard.rewrite import atomic
from ckpt_guard.rewrite.stash import (
    SET_ORIGINALS,
    Entry,
    StashError,
    building,
    complete,
    copy_file,
    fsync_path,
    place,
    write_entry_json,
)


def keep_set(index_path: str, names: list[str], *, rules: tuple[str, ...], shown: str,
             directory: Path) -> Entry:
    """Stash the index ``index_path`` and the shards ``names`` (in its folder) as one new
    complete, fsynced entry in ``directory``."""
    real = os.path.realpath(index_path)
    folder = os.path.dirname(real)
    files = [os.path.basename(real), *dict.fromkeys(n for n in names
                                                    if n != os.path.basename(real))]
    with building(directory) as (eid, partial):
        held = partial / SET_ORIGINALS
        held.mkdir()
        hows, size = set(), 0
        for name in files:
            src = os.path.join(folder, name)
            before = os.stat(src)
            hows.add(place(src, held / name, before))
            fsync_path(held / name)
            size += before.st_size
        fsync_path(held)
        how = hows.pop() if len(hows) == 1 else "+".join(sorted(hows))
        entry = Entry(eid, real, shown, time.time(), size, tuple(rules), how, (0, 0, 0, 0),
                      stash=str(directory), kind="set", files=tuple(files))
        complete(partial, directory, eid, entry)
    return entry


def _current(index_path: str) -> tuple[tuple[str, int, int, int, int], ...]:
    """(name, dev, ino, size, mtime_ns) of the index and each shard it names; of the file
    alone when it is not an index (a set re-sharded into one file, rewrite/set_single.py)."""
    folder = os.path.dirname(index_path) or "."
    names = [os.path.basename(index_path)]
    if is_index_name(index_path):
        names += sorted(set(load_index(index_path)["weight_map"].values()))
    out = []
    for n in names:
        st = os.stat(os.path.join(folder, n))
        out.append((n, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns))
    return tuple(out)


def record_written(entry: Entry, index_path: str) -> Entry:
    """The entry with the set the fix left recorded (``entry.json`` rewritten atomically)."""
    from dataclasses import replace

    done = replace(entry, written_set=_current(os.path.realpath(index_path)))
    write_entry_json(Path(entry.stash) / entry.id, done)
    return done


def restore_set(entry: Entry, shown: str, *, force: bool) -> Entry:
    """Put the set ``entry`` kept back in place (see the module docstring) and drop the
    entry. Refuses (:class:`StashError`) when the set is not the one the fix left, unless
    ``force`` — the current set is then kept in the stash first."""
    from ckpt_guard.rewrite.reshard import write_journal
    from ckpt_guard.rewrite.set_swap import (
        _link_over,
        cleanup_folder,
        settle_journals,
        temp_name,
        write_index,
    )
    from ckpt_guard.rewrite.stash import Keeper

    index_path = entry.original
    folder = os.path.dirname(index_path)
    index_name = os.path.basename(index_path)
    held = Path(entry.path)
    try:
        original = load_index(str(held / index_name))
    except UnreadableError as e:
        raise StashError(f"the kept index of {shown} is unreadable: {e}") from e
    # What the fix left: the set through its index, or the one file it became.
    written = (os.path.join(folder, entry.written_set[0][0]) if entry.written_set
               else index_path)
    try:
        now = _current(written)
    except (OSError, UnreadableError):
        now = None
    if now != tuple(tuple(w) for w in entry.written_set) or not entry.written_set:
        if not force:
            why = ("the fix that kept it did not finish" if not entry.written_set
                   else "it changed since")
            raise StashError(f"the set of {shown} is not the one ckpt-guard wrote on "
                             f"{entry.when} ({why}); use --force to replace it anyway")
        if now is not None and written != index_path:  # it is not a set to stash
            raise StashError(f"{now[0][0]} changed since ckpt-guard wrote it on {entry.when}; "
                             f"move it away to restore the set of {shown}")
        if now is not None:  # forced: the current set may be someone's work, so kept too
            Keeper(rules=("restore --force",), shown=shown,
                   directory=Path(entry.stash)).keep_set(index_path, [n for n, *_ in now[1:]])
    kept = set(entry.files[1:])
    wanted = set(original["weight_map"].values())
    missing = [n for n in sorted(wanted - kept) if not os.path.exists(os.path.join(folder, n))]
    if missing:
        raise StashError(f"cannot restore the set of {shown}: {missing[0]}, a shard the fix "
                         f"left as it was, is missing")
    extra = sorted({n for n, *_ in (now or ())} - wanted - {index_name})
    token = secrets.token_hex(4)
    journal = os.path.join(folder, f"{SET_TEMP_MARK}{token}{JOURNAL_SUFFIX}")
    try:
        write_journal(journal, index_name, index_name, extra)
        staged = {n: temp_name(n, token) for n in sorted(kept & wanted)}
        for name, temp in staged.items():
            _link_in(held / name, os.path.join(folder, temp))
        atomic.sync_dir(folder)
        step1 = dict(original)
        step1["weight_map"] = {k: staged.get(v, v) for k, v in original["weight_map"].items()}
        write_index(index_path, step1)  # commit 1: the original set, under hidden names
        for name, temp in staged.items():
            _link_over(folder, temp, name)
        atomic.sync_dir(folder)
        back = os.path.join(folder, temp_name(index_name, token))
        _link_in(held / index_name, back)
        os.replace(back, index_path)  # commit 2: the original index itself
        atomic.sync_dir(folder)
        settle_journals(folder)  # the shards only the fixed set had, then the journal
        cleanup_folder(folder)
        atomic.remove_stale(index_path)  # an index temporary a killed run left
    except OSError as e:
        # Before commit 1 the fixed set stands, after it the original (a run between the
        # commits is finished by the next fix): only what no index names goes.
        with contextlib.suppress(OSError, ValueError):
            settle_journals(folder)
            cleanup_folder(folder)
        raise StashError(f"cannot restore the set of {shown}: {e.strerror or e}") from e
    shutil.rmtree(Path(entry.stash) / entry.id, ignore_errors=True)
    return entry


def _link_in(src: Path, dest: str) -> None:
    """``src`` (in the stash) as ``dest``: the same inode where a link can be made, else a
    fsynced copy."""
    try:
        os.link(src, dest)
    except OSError as e:
        if e.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP,
                           errno.EOPNOTSUPP, errno.ENOSYS, errno.EACCES):
            raise
        copy_file(str(src), Path(dest))
        fsync_path(dest)


__all__ = ["keep_set", "record_written", "restore_set"]
