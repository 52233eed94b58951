"""Keep the original of every file ``fix`` rewrites in place (issue 9, "nothing lost").

A fix in place replaces a user's file — possibly their only copy of a resume state. Just
before :func:`ckpt_guard.rewrite.atomic.commit` renames the verified output over it, the
original is *hard-linked* into a stash: no byte is copied, and since ``os.replace`` gives the
working name a new inode, the stash's name keeps the original's inode untouched. Where a hard
link is impossible (another filesystem, a filesystem without links) the original is copied,
as a reflink (copy-on-write clone) where the filesystem offers one.

Where: ``<git dir>/ckpt-guard/stash/`` of the repository holding the file (the common git
dir, so worktrees share one stash; a submodule uses its own git dir), else the user's cache
(``$XDG_CACHE_HOME/ckpt-guard/stash``, ``~/Library/Caches/…`` on macOS, ``%LOCALAPPDATA%\\…``
on Windows). One entry is a directory ``<id>/`` holding ``original`` and ``entry.json``; it
is built under a ``.partial`` name and renamed into place, so an entry either exists
completely (fsynced) or not at all — and it exists before the working file is replaced.

``ckpt-guard restore PATH`` moves the newest original of PATH back (atomically), refusing
when the current file is not the one ckpt-guard wrote unless forced.

A sharded set fixed in place is kept as one entry (``kind: set``): the index and every shard
the fix replaces or removes, under ``originals/`` (:mod:`.stash_set`). So is a checkpoint
directory's fix (``kind: directory``): the training files it deletes (:mod:`.stash_dir`).
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ckpt_guard.rewrite import atomic

ENTRY_FILE = "entry.json"
ORIGINAL = "original"
SET_ORIGINALS = "originals"
_PARTIAL = ".partial"
# errnos meaning "no hard link here", not "something is wrong": copy instead.
_NO_LINK = {errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP, errno.EOPNOTSUPP,
            errno.ENOSYS, errno.EACCES}
_FICLONE = 0x40049409  # Linux ioctl: clone (reflink) a whole file


class StashError(atomic.TargetError):
    """The original could not be kept (so the file is not rewritten). One line for users."""


@dataclass(frozen=True)
class Limits:
    """Retention: after a new entry, the oldest are pruned until at most ``max_entries``
    entries of at most ``max_bytes`` in total remain (the new entry itself is never
    pruned)."""

    max_entries: int = 20
    max_bytes: int = 20 * 10**9


@dataclass(frozen=True)
class Entry:
    """One stashed original, as ``entry.json`` records it."""

    id: str
    original: str  # real path of the file that was fixed (what restore writes)
    shown: str  # the path as the user named it
    time: float  # when it was stashed (seconds since the epoch)
    size: int
    rules: tuple[str, ...]  # the rules whose fix rewrote the file
    how: str  # "hard link" | "reflink" | "copy"
    written: tuple[int, int, int, int]  # (dev, ino, size, mtime_ns) of the file fix wrote
    stash: str = field(default="", compare=False)  # the stash directory (not stored)
    # A sharded set (kind "set"): ``original`` is its index; ``files`` the names (in the
    # index's folder) kept under ``originals/``, the index first; ``written_set`` the
    # (name, dev, ino, size, mtime_ns) of each file of the set the fix wrote — recorded once
    # the swap is done (empty: the fix did not finish, so restore wants --force).
    # A checkpoint directory (kind "directory"): ``original`` is the directory, ``files``
    # the members (relative paths) its fix deleted, kept under ``originals/``.
    kind: str = "file"
    files: tuple[str, ...] = ()
    written_set: tuple[tuple[str, int, int, int, int], ...] = ()

    @property
    def path(self) -> str:
        """Where the original's bytes are (a set: the folder holding its files)."""
        return os.path.join(self.stash, self.id, ORIGINAL if self.kind == "file"
                            else SET_ORIGINALS)

    def names(self) -> set[str]:
        """Every real path this entry is about (a set: its files, old and new; a directory:
        itself and the members it deleted)."""
        if self.kind == "directory":
            return {self.original, *(os.path.join(self.original, n) for n in self.files)}
        if self.kind != "set":
            return {self.original}
        folder = os.path.dirname(self.original)
        return {self.original, *(os.path.join(folder, n) for n in self.files),
                *(os.path.join(folder, w[0]) for w in self.written_set)}

    @property
    def when(self) -> str:
        return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(self.time))

    def to_dict(self) -> dict[str, object]:
        d = asdict(self)
        d.pop("stash")
        if self.kind != "set":
            d.pop("written_set")
        if self.kind == "file":
            d.pop("files")
        d["path"] = self.path
        d["when"] = self.when
        return d


# ---------------------------------------------------------------------------------------
# Where


def git_dir_for(path: str | os.PathLike[str]) -> Path | None:
    """The git directory of the repository whose work tree holds ``path``: ``.git`` itself,
    or for a ``.git`` *file* (worktrees, submodules) the directory it points to, and for a
    worktree the common directory its ``commondir`` names. A walk, not a ``git`` process."""
    here = Path(os.path.realpath(path))
    for d in (here.parent, *here.parent.parents):
        dotgit = d / ".git"
        if dotgit.is_dir():
            gd = dotgit
        elif dotgit.is_file():
            try:
                text = dotgit.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError):
                return None
            if not text.startswith("gitdir:"):
                return None
            gd = (d / text[len("gitdir:"):].strip()).resolve()
        else:
            continue
        common = gd / "commondir"
        if common.is_file():
            with contextlib.suppress(OSError, UnicodeDecodeError):
                gd = (gd / common.read_text(encoding="utf-8").strip()).resolve()
        return gd
    return None


def user_stash_dir() -> Path:
    """The per-user stash, following the platform's cache convention."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "ckpt-guard" / "stash"


def stash_dir_for(path: str | os.PathLike[str]) -> Path:
    """Where the original of ``path`` is kept."""
    gd = git_dir_for(path)
    return gd / "ckpt-guard" / "stash" if gd is not None else user_stash_dir()


# ---------------------------------------------------------------------------------------
# Keep


@dataclass
class Keeper:
    """Keeps originals for one ``fix`` of one file: the hook :func:`atomic.commit` calls
    right before the rename. ``entry`` is set once the original is kept."""

    rules: tuple[str, ...] = ()
    shown: str = ""
    limits: Limits = field(default_factory=Limits)
    directory: Path | None = None  # None: stash_dir_for(the file)
    entry: Entry | None = None
    pruned: int = 0

    def __call__(self, original: str, before: os.stat_result, replacement: str) -> None:
        try:
            self.entry = keep(original, before, replacement, rules=self.rules,
                              shown=self.shown or original,
                              directory=self.directory or stash_dir_for(original))
        except OSError as e:
            raise StashError(f"cannot keep the original in the stash, so it was not "
                             f"rewritten: {e.strerror or e}"
                             + (f": {e.filename}" if e.filename else "")) from e
        # Pruning only removes older entries; a failure there must not block the fix.
        with contextlib.suppress(OSError):
            self.pruned = prune(Path(self.entry.stash), self.limits, keep_id=self.entry.id)

    def keep_set(self, index_path: str, names: list[str]) -> None:
        """Keep the set's index and the shards ``names`` (the ones its fix replaces or
        removes) as one entry, before the set's first commit; raises :class:`StashError`."""
        from ckpt_guard.rewrite.stash_set import keep_set

        self.keep_many("the original set", "it was not rewritten", index_path,
                        lambda d: keep_set(index_path, names, rules=self.rules,
                                           shown=self.shown or index_path, directory=d))

    def keep_many(self, what: str, so: str, path: str,
                  make: Callable[[Path], Entry]) -> None:
        """``self.entry = make(the stash directory for path)``, an OSError there becoming
        "cannot keep <what> in the stash, so <so>" (:class:`StashError`); then prune."""
        try:
            self.entry = make(self.directory or stash_dir_for(path))
        except OSError as e:
            raise StashError(f"cannot keep {what} in the stash, so {so}: {e.strerror or e}"
                             + (f": {e.filename}" if e.filename else "")) from e
        with contextlib.suppress(OSError):
            self.pruned = prune(Path(self.entry.stash), self.limits, keep_id=self.entry.id)

    def set_written(self, index_path: str) -> None:
        """After the swap: record the set as the fix left it (what restore checks)."""
        from ckpt_guard.rewrite.stash_set import record_written

        if self.entry is not None and self.entry.kind == "set":
            with contextlib.suppress(OSError, ValueError):
                self.entry = record_written(self.entry, index_path)


def new_partial(directory: Path) -> tuple[str, Path]:
    """A fresh entry id and the hidden directory its entry is built in."""
    directory.mkdir(parents=True, exist_ok=True)
    eid = time.strftime("%Y%m%dT%H%M%S", time.gmtime()) + f"-{secrets.token_hex(4)}"
    partial = directory / f".{eid}{_PARTIAL}"
    partial.mkdir()
    return eid, partial


@contextlib.contextmanager
def building(directory: Path) -> Iterator[tuple[str, Path]]:
    """A fresh entry id and the hidden directory its entry is built in, removed if the block
    fails: a half-built entry never stays."""
    eid, partial = new_partial(directory)
    try:
        yield eid, partial
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise


def complete(partial: Path, directory: Path, eid: str, entry: Entry) -> None:
    """Write the built entry's ``entry.json`` and rename it into place."""
    write_entry_json(partial, entry)
    publish(partial, directory, eid)


def write_entry_json(folder: Path, entry: Entry) -> None:
    """``entry.json`` written atomically and fsynced (replacing an older one)."""
    data = {k: v for k, v in asdict(entry).items() if k != "stash"}
    tmp = folder / f".{ENTRY_FILE}.tmp"
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(data, fh, indent=1)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, folder / ENTRY_FILE)
    fsync_path(folder)


def publish(partial: Path, directory: Path, eid: str) -> None:
    """Rename a complete entry into place (fsynced): from now on it exists."""
    fsync_path(partial)
    os.rename(partial, directory / eid)
    fsync_path(directory)


def keep(original: str, before: os.stat_result, replacement: str, *, rules: tuple[str, ...],
         shown: str, directory: Path) -> Entry:
    """Stash ``original`` (still the file ``before`` describes) as a new complete, fsynced
    entry in ``directory``; ``replacement`` is the file about to be renamed over it."""
    with building(directory) as (eid, partial):
        dest = partial / ORIGINAL
        how = place(original, dest, before)
        fsync_path(dest)
        rep = os.stat(replacement)  # os.replace keeps inode, size and mtime
        entry = Entry(eid, original, shown, time.time(), before.st_size, tuple(rules), how,
                      (rep.st_dev, rep.st_ino, rep.st_size, rep.st_mtime_ns),
                      stash=str(directory))
        complete(partial, directory, eid, entry)
    return entry


def place(original: str, dest: Path, before: os.stat_result) -> str:
    """Hard-link (else reflink, else copy) ``original`` to ``dest``; check that what was
    placed is the file ``before`` describes. Returns how."""
    try:
        os.link(original, dest)
    except OSError as e:
        if e.errno not in _NO_LINK:
            raise
        how = copy_file(original, dest)
        now = os.stat(original)
        ident = (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns)
        if ident != (before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns) \
                or os.stat(dest).st_size != before.st_size:
            raise StashError("the file changed while its original was being stashed; "
                             "run fix again") from None
        return how
    st = os.stat(dest)
    if (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns) != (
            before.st_dev, before.st_ino, before.st_size, before.st_mtime_ns):
        raise StashError("the file changed while its original was being stashed; run fix "
                         "again")
    return "hard link"


def copy_file(src: str, dest: Path) -> str:
    with open(src, "rb") as fi, open(dest, "xb") as fo:
        if sys.platform.startswith("linux"):
            import fcntl

            try:
                fcntl.ioctl(fo.fileno(), _FICLONE, fi.fileno())
                shutil.copymode(src, dest)
                return "reflink"
            except OSError:
                pass  # not a CoW filesystem (or across filesystems): copy the bytes
        shutil.copyfileobj(fi, fo, 1 << 20)
    shutil.copymode(src, dest)
    return "copy"


def fsync_path(p: str | os.PathLike[str]) -> None:
    try:
        fd = os.open(p, os.O_RDONLY)
    except OSError:
        return  # directories cannot be opened on some platforms; the rename is atomic
    try:
        with contextlib.suppress(OSError):
            os.fsync(fd)
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------------------
# List, prune, restore


def entries(directory: Path) -> list[Entry]:
    """The complete entries in ``directory``, oldest first (unreadable ones skipped)."""
    out = []
    try:
        names = sorted(os.listdir(directory))
    except OSError:
        return []
    for name in names:
        if name.startswith("."):
            continue  # an entry still being built, or left by a killed run
        try:
            with open(directory / name / ENTRY_FILE, encoding="utf-8") as fh:
                d = json.load(fh)
            out.append(Entry(id=d["id"], original=d["original"], shown=d["shown"],
                             time=float(d["time"]), size=int(d["size"]),
                             rules=tuple(d["rules"]), how=d["how"],
                             written=tuple(d["written"]), stash=str(directory),
                             kind=str(d.get("kind", "file")),
                             files=tuple(map(str, d.get("files", ()))),
                             written_set=tuple(tuple(w) for w in d.get("written_set", ()))))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return sorted(out, key=lambda e: (e.time, e.id))


def prune(directory: Path, limits: Limits, *, keep_id: str | None = None) -> int:
    """Remove the oldest entries beyond ``limits``; returns how many were removed."""
    es = entries(directory)
    total = sum(e.size for e in es)
    removed = 0
    for e in es:
        if len(es) - removed <= limits.max_entries and total <= limits.max_bytes:
            break
        if e.id == keep_id:
            continue
        shutil.rmtree(directory / e.id)
        total -= e.size
        removed += 1
    return removed


def locations(cwd: Path) -> list[Path]:
    """The stashes ``stash list`` shows: the repository's (if ``cwd`` is in one), then the
    user's."""
    gd = git_dir_for(cwd / "_")
    out = [gd / "ckpt-guard" / "stash"] if gd is not None else []
    user = user_stash_dir()
    return out + ([user] if user not in out else [])


def all_entries(cwd: Path) -> Iterator[Entry]:
    for d in locations(cwd):
        yield from entries(d)


def restore(path: str, *, force: bool = False) -> Entry:
    """Put the newest stashed original of ``path`` back in place, atomically, and drop the
    entry. Refuses (:class:`StashError`) when the current file is not the one the fix
    wrote, unless ``force`` — and then the current file is stashed first."""
    real = os.path.realpath(path)
    directory = stash_dir_for(real)
    mine = [e for e in entries(directory) if real in e.names()]
    if not mine:
        raise StashError(f"no stashed original of {path} (in {directory})")
    entry = mine[-1]
    if entry.kind == "directory":
        from ckpt_guard.rewrite.stash_dir import restore_directory

        return restore_directory(entry, path, force=force)
    if entry.kind == "set":
        from ckpt_guard.rewrite.stash_set import restore_set

        return restore_set(entry, path, force=force)
    try:
        now = os.stat(real)
    except FileNotFoundError:
        now = None
    if now is not None and (now.st_dev, now.st_ino, now.st_size, now.st_mtime_ns) != \
            tuple(entry.written):
        if not force:
            raise StashError(f"{path} is not the file ckpt-guard wrote on {entry.when} (it "
                             f"changed since); use --force to replace it anyway")
        # Forced: the current file may be someone's work, so it is kept too.
        keep(real, now, real, rules=("restore --force",), shown=path, directory=directory)
    src = Path(entry.path)
    try:
        os.replace(src, real)  # same filesystem: the original's inode moves back
    except OSError as e:
        if e.errno != errno.EXDEV:
            raise StashError(f"cannot restore {path}: {e.strerror or e}") from e
        _copy_back(src, real)
    fsync_path(os.path.dirname(real) or ".")
    shutil.rmtree(Path(entry.stash) / entry.id, ignore_errors=True)
    return entry


def _copy_back(src: Path, real: str) -> None:
    """Across filesystems: copy into a temporary beside the target, fsync, rename."""
    with atomic.temporary_beside(real) as (fh, tmp):
        with open(src, "rb") as fi:
            shutil.copyfileobj(fi, fh, 1 << 20)
        atomic.sync_file(fh)
        fh.close()
        shutil.copymode(src, tmp)
        os.replace(tmp, real)
