"""Keep (and restore) the training files a checkpoint directory's fix deletes — one stash
entry per directory.

A Hugging Face Trainer ``checkpoint-N/`` or DeepSpeed ``global_stepN/`` fix with
``remove-training-files: true`` deletes ``optimizer.pt``, ``scheduler.pt``, ``rng_state*.pth``,
``*_optim_states.pt``…: the resume state. Before the first deletion every file the plan deletes
is hard-linked (else reflinked/copied, as for single files: :func:`.stash.place`) into one
entry, ``<id>/originals/<member's relative path>``, with ``entry.json`` (``kind: directory``,
``files``) — built under a hidden name, fsynced and renamed into place, so the entry is
complete or absent. When it cannot be made nothing is deleted.

``restore`` puts every kept member back: a member that is absent is linked in under its name
(``link`` never overwrites), one that exists again with the kept content is left, one that
differs is refused unless forced (then the current one is kept in a new entry first and the
kept one renamed over it). The entry stays whole until every member is back and the folder
fsynced; only then is it renamed to a hidden name and removed. A run killed in between leaves
the entry (and some members back, which the next restore finds identical): never neither.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import time
from dataclasses import replace
from pathlib import Path

from ckpt_guard.rewrite import atomic
from ckpt_guard.rewrite.stash import (
    _NO_LINK,
    SET_ORIGINALS,
    Entry,
    Keeper,
    StashError,
    building,
    complete,
    copy_file,
    fsync_path,
    place,
    write_entry_json,
)

KIND = "directory"


def keep_for(keeper: Keeper, root: str, members: dict[str, os.stat_result],
             rules: tuple[str, ...]) -> Entry:
    """Through ``keeper`` (its stash, shown name and retention): keep the members of
    ``root`` its fix deletes (relative path → its stat when planned) as one entry; raises
    :class:`.stash.StashError`, and then nothing may be deleted."""
    keeper.keep_many("the training files", "none was deleted", root,
                     lambda d: keep_directory(root, members, rules=rules or keeper.rules,
                                              shown=keeper.shown or root, directory=d))
    assert keeper.entry is not None
    return keeper.entry


def keep_directory(root: str, members: dict[str, os.stat_result], *,
                   rules: tuple[str, ...], shown: str, directory: Path) -> Entry:
    """Stash the ``members`` of ``root`` (each still the file its stat describes) as one
    new complete, fsynced entry in ``directory``."""
    real = os.path.realpath(root)
    stats = {_member(m): st for m, st in members.items()}
    names = list(stats)
    with building(directory) as (eid, partial):
        held = partial / SET_ORIGINALS
        held.mkdir()
        hows, size = set(), 0
        for name in names:
            dest = held / name
            dest.parent.mkdir(parents=True, exist_ok=True)
            hows.add(place(os.path.join(real, name), dest, stats[name]))
            fsync_path(dest)
            size += stats[name].st_size
        for d in {(held / n).parent for n in names}:
            fsync_path(d)
        fsync_path(held)
        how = hows.pop() if len(hows) == 1 else "+".join(sorted(hows))
        entry = Entry(eid, real, shown, time.time(), size, tuple(rules), how, (0, 0, 0, 0),
                      stash=str(directory), kind=KIND, files=tuple(names))
        complete(partial, directory, eid, entry)
    return entry


def record_deleted(keeper: Keeper, deleted: list[str]) -> None:
    """After the deletions: an entry names only what was deleted (a member the fix left in
    place — changed meanwhile, or undeletable — is dropped from it; none deleted: no entry),
    so restore never sees a member "exist again"."""
    entry = keeper.entry
    if entry is None or entry.kind != KIND or set(deleted) == set(entry.files):
        return
    folder = Path(entry.stash) / entry.id
    with contextlib.suppress(OSError):
        if not deleted:
            _drop(folder)
            keeper.entry = None
            return
        left = [n for n in entry.files if n not in deleted]
        size = entry.size - sum(os.stat(Path(entry.path) / n).st_size for n in left)
        done = replace(entry, files=tuple(n for n in entry.files if n in deleted), size=size)
        write_entry_json(folder, done)  # atomic: the old or the new list, both restorable
        keeper.entry = done
        for n in left:
            (Path(entry.path) / n).unlink()


def restore_directory(entry: Entry, shown: str, *, force: bool) -> Entry:
    """Put back every member ``entry`` kept (see the module docstring) and drop the entry.
    Refuses (:class:`StashError`) when a member exists again with other content, unless
    ``force`` — the current members are then kept in the stash first."""
    root = entry.original
    held = Path(entry.path)
    names = [_member(n) for n in entry.files]
    lost = [n for n in names if not (held / n).is_file()]
    if lost:
        raise StashError(f"the stash entry of {shown} is incomplete ({lost[0]} is missing "
                         f"from {held})")
    if not os.path.isdir(root) and not force:
        raise StashError(f"{shown} is no longer a directory; use --force to recreate it with "
                         f"the {len(names)} kept file(s) only")
    absent, clash = [], []
    for n in names:
        target = os.path.join(root, n)
        if not os.path.lexists(target):
            absent.append(n)
        elif not _same(held / n, target):
            clash.append(n)
    if clash and not force:
        raise StashError(f"{os.path.join(shown, clash[0])} exists again and is not the file "
                         f"ckpt-guard deleted on {entry.when}"
                         + (f" ({len(clash)} such files)" if len(clash) > 1 else "")
                         + "; use --force to replace it anyway")
    if clash:  # forced: the current files may be someone's work, so they are kept too
        current = {n: os.stat(os.path.join(root, n)) for n in clash}
        keep_for(Keeper(rules=("restore --force",), shown=shown,
                        directory=Path(entry.stash)), root, current, ("restore --force",))
    folders: set[str] = set()
    for n in absent + clash:
        target = os.path.join(root, n)
        try:
            os.makedirs(os.path.dirname(target), exist_ok=True)
            _put_back(held / n, target, over=n in clash)
        except OSError as e:
            raise StashError(f"cannot restore {os.path.join(shown, n)}: {e.strerror or e}; "
                             f"the kept files are still in the stash ({held}), run restore "
                             f"again") from e
        folders.add(os.path.dirname(target))
    for d in sorted(folders, key=len, reverse=True):
        atomic.sync_dir(d)
    _drop(Path(entry.stash) / entry.id)
    return entry


def _put_back(src: Path, target: str, *, over: bool) -> None:
    """``src`` (in the stash) as ``target``: the same inode where a link can be made, else a
    fsynced copy; an absent target is created by ``link`` itself (never overwriting), one
    being replaced gets the file under a temporary name first, then ``os.replace``."""
    if not over:
        try:
            os.link(src, target)
            return
        except OSError as e:
            if e.errno not in _NO_LINK:
                raise
    tmp = os.path.join(os.path.dirname(target),
                       f".{os.path.basename(target)}{atomic.TEMP_MARK}"
                       f"{secrets.token_hex(4)}.tmp")
    try:
        try:
            os.link(src, tmp)
        except OSError as e:
            if e.errno not in _NO_LINK:
                raise
            copy_file(str(src), Path(tmp))
            fsync_path(tmp)
        if over:
            os.replace(tmp, target)
        else:
            try:
                os.link(tmp, target)  # still never over a file that appeared meanwhile
            except OSError as e:
                if e.errno not in _NO_LINK:
                    raise
                os.replace(tmp, target)  # a filesystem without links at all
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def _same(kept: Path, target: str) -> bool:
    """Is ``target`` the kept file (the same inode) or byte-identical to it?"""
    a, b = os.stat(kept), os.stat(target)
    if (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino):
        return True
    if a.st_size != b.st_size:
        return False
    with open(kept, "rb") as fa, open(target, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def _member(name: str) -> str:
    """A member's relative path, refused if it could leave the directory."""
    norm = os.path.normpath(name)
    if os.path.isabs(norm) or norm == ".." or norm.startswith(".." + os.sep) or norm == ".":
        raise StashError(f"not a member path: {name!r}")
    return norm


def _drop(folder: Path) -> None:
    """Remove an entry: first renamed to a hidden name (``entries`` skips it), so a run
    killed while removing it never leaves a half entry that looks whole."""
    hidden = folder.with_name(f".{folder.name}.restored")
    try:
        os.rename(folder, hidden)
    except OSError:
        hidden = folder
    shutil.rmtree(hidden, ignore_errors=True)


__all__ = ["keep_directory", "keep_for", "record_deleted", "restore_directory"]
