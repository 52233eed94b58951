"""Discovery: which files a run looks at — the paths named (files, directories walked,
sharded sets as one unit, remote URLs), or with none the repository's files the policy
matches — as :class:`Target` s for :mod:`ckpt_guard.app.check` and :mod:`ckpt_guard.app.fix`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path

from ckpt_guard.read.checkpoint import UnreadableError


def is_remote(path: str) -> bool:
    """:func:`ckpt_guard.read.remote.is_remote`, importing that module (its range reader,
    URL parsing and dataclasses) only for a path that can be a URL at all."""
    if "://" not in path:
        return False
    from ckpt_guard.read.remote import is_remote as remote

    return remote(path)


@dataclass(frozen=True)
class Target:
    """One path to check: ``path`` as shown to users, ``abspath`` to read, ``relpath`` (POSIX,
    relative to the policy's base directory) for glob matching."""

    path: str
    abspath: str
    relpath: str
    outside: str = ""  # non-empty: why this path must not be read (e.g. symlink escape)
    # Read this URL by range instead of the local file (e.g. an LFS pointer's object).
    source: str = ""
    source_headers: tuple[tuple[str, str], ...] = ()
    # A sharded set's shards to read by range instead (absolute path, URL, headers).
    shard_sources: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = ()
    # Size in the base revision (``size-growth``): None = no base; 0 = new since the base.
    base_size: int | None = None
    # Said in the report whatever the read gives (e.g. a shard URL whose set was not found).
    notes: tuple[str, ...] = ()


def git_root(start: Path) -> Path | None:
    """The enclosing git work tree: the nearest directory holding ``.git`` (a folder, or a
    file in worktrees and submodules). A walk up, not a ``git`` subprocess: it runs on every
    start of every hook invocation."""
    here = Path(start).resolve()
    for directory in (here, *here.parents):
        if (directory / ".git").exists():
            return directory
    return None


def git_files(root: Path) -> list[str]:
    """Tracked and untracked-but-not-ignored files of the repository at ``root``."""
    import subprocess  # only here: ~8 ms of every cold start otherwise

    out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                         cwd=root, capture_output=True, timeout=120, check=True)
    return sorted({p for p in out.stdout.decode("utf-8", "surrogateescape").split("\0") if p})


def _display(path: Path, cwd: Path) -> str:
    try:
        return os.path.relpath(path, cwd)
    except ValueError:  # another drive (Windows)
        return str(path)


def _relpath(path: Path, base: Path) -> str:
    try:
        return path.relative_to(base).as_posix()
    except ValueError:
        return path.as_posix().lstrip("/")


def _inside(path: Path, root: Path) -> bool:
    try:
        path.relative_to(root)
    except ValueError:
        return False
    return True


def _escape_reason(path: Path, root: Path) -> str:
    """Why ``path`` must not be read, or ``""``: a path named inside the repository whose
    real location — through a symlink at any component, not only the last — is outside it
    (or nowhere). Paths named outside the repository are the user's explicit choice."""
    named = Path(os.path.abspath(path))
    roots = (Path(os.path.abspath(root)), root.resolve())
    if not any(_inside(named, r) for r in roots):
        return ""
    real = Path(os.path.realpath(path))
    if not os.path.lexists(real) or (path.is_symlink() and not path.exists()):
        return "broken symlink" if os.path.lexists(path) else ""
    if not _inside(real, roots[1]):
        return f"symlink points outside the repository ({real})"
    return ""


def discover(paths: Iterable[str], policy, *, root: Path, cwd: Path | None = None
             ) -> Iterator[Target]:
    """Expand ``paths`` into targets; with no paths, every repository file the policy matches.

    Files named explicitly are checked unless the policy excludes them; directories are walked
    with include and exclude applied, and a checkpoint directory (Hugging Face Trainer,
    DeepSpeed) is one target.
    """
    from ckpt_guard.read.sharded import SetFinder, is_index_name, shard_alone, unsharded_name

    cwd = cwd or Path.cwd()
    base = Path(policy.base_dir) if getattr(policy, "base_dir", None) else root
    seen: set[str] = set()
    sets = SetFinder()

    def target(p: Path) -> Target | None:
        key = os.path.abspath(p)
        if key in seen:
            return None
        seen.add(key)
        return Target(_display(p, cwd), key, _relpath(Path(key), base), _escape_reason(p, root))

    def set_target(p: Path, matched: bool) -> Target | None:
        """The target for ``p``: its sharded set's index when ``p`` is an index or a shard
        (the set is one unit, however many of its files are named or staged), else ``p``
        itself when ``matched``. Policy globs see the set as its unsharded name
        (``model.safetensors``)."""
        idx = sets.index_for(os.path.abspath(p))
        if idx is None:
            t = target(p) if matched else None
            note = shard_alone(t.abspath) if t is not None else None
            return replace(t, notes=(*t.notes, note)) if note else t
        t = target(Path(idx))
        if t is None:
            return None
        t = replace(t, relpath=_relpath(Path(unsharded_name(t.abspath)), base))
        return None if policy.excludes(t.relpath) else t

    def walked(p: Path, rel: str) -> Target | None:
        if is_index_name(rel):
            return set_target(p, False) if policy.matches(unsharded_name(rel)) else None
        return set_target(p, True) if policy.matches(rel) else None

    paths = list(paths)
    if not paths:
        for rel in git_files(root) if git_root(root) else []:
            p = root / rel
            if p.name == ".metadata" and _checkpoint_dir(p.parent):
                # A torch.distributed.checkpoint directory: no file of it matches the
                # weight globs, yet torch unpickles .metadata. Checked as one target.
                t = target(p.parent)
                if t and not policy.excludes(t.relpath):
                    yield t
                continue
            if p.is_dir():
                continue
            t = walked(p, _relpath(Path(os.path.abspath(p)), base))
            if t:
                yield t
        return
    for raw in paths:
        if is_remote(raw):  # read by range, never downloaded (read/remote.py)
            from ckpt_guard.read.remote_expand import expand

            try:
                for entry in expand(raw, lambda rel: policy.matches(rel)):
                    if entry.url not in seen:
                        seen.add(entry.url)
                        yield Target(entry.url, entry.url, _remote_relpath(entry.url),
                                     notes=entry.notes)
            except UnreadableError as e:  # no such repository, revision, token… : a finding
                yield Target(raw, raw, _remote_relpath(raw), outside=str(e))
            continue
        p = Path(raw) if os.path.isabs(raw) else cwd / raw
        if p.is_dir() and not p.is_symlink() and not _checkpoint_dir(p):
            for dirpath, dirnames, filenames in os.walk(p):
                dirnames[:] = sorted(d for d in dirnames if d != ".git")
                d = Path(dirpath)
                for name in list(dirnames):
                    sub = d / name
                    if _checkpoint_dir(sub):
                        dirnames.remove(name)
                        t = target(sub)
                        if t and not policy.excludes(t.relpath):
                            yield t
                for name in sorted(filenames):
                    sub = d / name
                    t = walked(sub, _relpath(Path(os.path.abspath(sub)), base))
                    if t:
                        yield t
        else:
            dcp = _dcp_directory(p)
            if dcp is not None:  # a DCP file stands for its directory, checked once
                t = target(dcp)
                if t and not policy.excludes(t.relpath):
                    yield t
                continue
            if p.is_file() and not p.is_symlink() and not _escape_reason(p, root):
                t = set_target(p, not policy.excludes(
                    _relpath(Path(os.path.abspath(p)), base)))
                if t:
                    yield t
                continue
            t = target(p)
            if t and not policy.excludes(t.relpath):
                yield t


def _remote_relpath(url: str) -> str:
    """What policy globs match for a remote file: its path inside the repository or bucket
    (``hf://org/repo@rev/models/x.pt`` → ``models/x.pt``)."""
    from urllib.parse import urlsplit

    from ckpt_guard.read.sharded import unsharded_name

    if url.startswith("hf://"):
        from ckpt_guard.read.remote import HubPath

        return unsharded_name(HubPath.parse(url).path)  # a set: as its unsharded name
    return unsharded_name(urlsplit(url).path.lstrip("/"))


def _dcp_directory(p: Path) -> Path | None:
    """The torch.distributed.checkpoint directory ``p`` (a ``*.distcp`` or ``.metadata``
    file, e.g. staged and passed by the pre-commit hook) belongs to: only its directory as a
    whole says what ``dcp.load`` runs (a ``.distcp`` alone is items back to back, not a file
    torch loads)."""
    if not (p.name == ".metadata" or p.name.lower().endswith(".distcp")) or not p.is_file():
        return None
    from ckpt_guard.read.directories import directory_format
    from ckpt_guard.vocab import Format

    try:
        return p.parent if directory_format(str(p.parent)) == Format.DCP_DIR else None
    except UnreadableError:
        return None


def _checkpoint_dir(p: Path) -> bool:
    """Is ``p`` a Hugging Face Trainer or DeepSpeed checkpoint directory (checked as one)?"""
    from ckpt_guard.read.directories import directory_format

    try:
        return directory_format(str(p)) is not None
    except UnreadableError:
        return False
