"""What an ``hf://`` URL stands for: a file, or a repository or folder expanded to its weight
files and sharded sets — at the revision pinned to its commit once, so that every file of
one run comes from the same commit (read/remote.py reads each by range)."""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ckpt_guard.read.checkpoint import UnreadableError
from ckpt_guard.read.remote import HubPath, RemoteNotFound, _hub


@dataclass
class RemoteEntry:
    """One remote file to check: ``url`` as shown (``hf://…@<commit>/path``), its size
    when the listing gave it, and ``notes`` for its report (a shard checked without its set)."""

    url: str
    size: int | None = None
    notes: tuple[str, ...] = ()


def expand(url: str, wanted: Callable[[str], bool]) -> Iterator[RemoteEntry]:
    """The remote files ``url`` stands for: itself, or for an ``hf://`` repository or folder
    every file ``wanted(path)`` accepts — at the revision pinned to its commit, so that every
    file of one run comes from the same commit. A sharded set is one entry, its index
    (``wanted`` sees it as its unsharded name, as for local sets); so is a shard named on its
    own whose index is beside it, at any URL (loaders look for the index there too)."""
    if not url.startswith("hf://"):
        yield _shard_or_set(url)
        return
    from ckpt_guard.read.sharded import SHARD_NAME

    hub = _hub()
    hp = HubPath.parse(url)
    api = hub.HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    try:
        sha = api.repo_info(hp.repo_id, revision=hp.revision, repo_type=hp.repo_type).sha \
            or hp.revision
        if hp.path:
            m = SHARD_NAME.fullmatch(posixpath.basename(hp.path))
            index = (posixpath.join(posixpath.dirname(hp.path),
                                    f"{m['stem']}{m['ext']}.index.json") if m else None)
            found = api.get_paths_info(hp.repo_id, [hp.path, *([index] if index else [])],
                                       revision=sha, repo_type=hp.repo_type)
            named = [f for f in found if f.path == hp.path]
            if not named:
                raise UnreadableError(f"{url}: no such file or folder at {str(sha)[:12]}")
            if isinstance(named[0], hub.hf_api.RepoFile):
                idx = [f for f in found if f.path == index]
                if idx and hp.path in _set_members(hp, idx[0].path, sha):
                    yield RemoteEntry(hp.url(index, sha), None)  # a shard: its whole set
                    return
                note = (() if index is None else
                        (_alone(posixpath.basename(index), "does not name it" if idx
                                else "is not beside it"),))
                yield RemoteEntry(hp.url(hp.path, sha), _size(named[0]), note)
                return
        items = api.list_repo_tree(hp.repo_id, path_in_repo=hp.path or None, recursive=True,
                                   revision=sha, repo_type=hp.repo_type)
        files = [it for it in items if isinstance(it, hub.hf_api.RepoFile)]
    except UnreadableError:
        raise
    except Exception as e:  # huggingface_hub's errors: repository/revision not found, 401…
        first = str(e).splitlines()[0][:200] if str(e) else ""
        raise UnreadableError(f"{url}: {type(e).__name__}: {first}") from e
    yield from _group_sets(hp, sha, files, wanted)


def _alone(index_name: str, why: str) -> str:
    from ckpt_guard.read.sharded import alone_note

    return alone_note(index_name, why)


def _shard_or_set(url: str) -> RemoteEntry:
    """A URL other than ``hf://``: a file named like a shard (``…/model-00001-of-00003.
    safetensors``) stands for its set when the index beside it (``model.safetensors.index.
    json``, as transformers names it) names it; else it is checked alone, with a note saying
    why. The index URL drops the shard URL's query: a query (a signature) belongs to one
    object."""
    from urllib.parse import quote, unquote, urlsplit, urlunsplit

    from ckpt_guard.read.remote_sharded import index_bytes
    from ckpt_guard.read.sharded import SHARD_NAME, parse_index, shards_of

    parts = urlsplit(url)
    folder, _, quoted = parts.path.rpartition("/")
    name = unquote(quoted)  # as the index names its shards
    m = SHARD_NAME.fullmatch(name)
    if not m:
        return RemoteEntry(url)
    index_name = f"{m['stem']}{m['ext']}.index.json"
    index_url = urlunsplit(parts._replace(path=f"{folder}/{quote(index_name)}", query="",
                                          fragment=""))
    try:
        raw, _r, _b = index_bytes(index_url)
        members = shards_of(parse_index(raw))
    except UnreadableError as e:  # 404, refused, not an index: the file is still checked
        why = "is not beside it" if isinstance(e, RemoteNotFound) else f"cannot be read: {e}"
        return RemoteEntry(url, notes=(_alone(index_name, why),))
    if name not in members:  # the index names other files: this one is nobody's shard
        return RemoteEntry(url, notes=(_alone(index_name, "does not name it"),))
    return RemoteEntry(index_url)


def _set_members(hp: HubPath, index_path: str, sha: str | None) -> set[str]:
    """Repository paths of the shards ``index_path`` names (empty when it is not a readable
    index: then it is nobody's set, as a broken local index is)."""
    from ckpt_guard.read.remote_sharded import index_bytes
    from ckpt_guard.read.sharded import parse_index, shards_of

    try:
        raw, _r, _b = index_bytes(hp.url(index_path, sha))
        shards = shards_of(parse_index(raw))
    except UnreadableError:
        return set()
    folder = posixpath.dirname(index_path)
    return {posixpath.normpath(posixpath.join(folder, s)) for s in shards}


def _group_sets(hp: HubPath, sha: str | None, files: list,  # type: ignore[type-arg]
                wanted: Callable[[str], bool]) -> Iterator[RemoteEntry]:
    """A repository listing as entries: each sharded set (index + the shards it names) one
    entry, the other files ``wanted`` accepts one each, in path order."""
    from ckpt_guard.read.remote_sharded import remember_listing
    from ckpt_guard.read.sharded import is_index_name, unsharded_name

    by_path = {it.path: it for it in files}
    folders: dict[str, list[str]] = {}
    for p in by_path:
        folders.setdefault(posixpath.dirname(p), []).append(posixpath.basename(p))
    for folder, names in folders.items():  # the set reader's extra-shard check needs them
        remember_listing(hp.url(folder, sha), names)
    out: list[tuple[str, RemoteEntry]] = []
    claimed: set[str] = set()
    for p in sorted(by_path):
        if not is_index_name(p):
            continue
        members = _set_members(hp, p, sha)
        if not members:
            continue
        claimed |= members
        if wanted(unsharded_name(p)) or any(wanted(m) for m in members):
            size = sum(_size(by_path[m]) or 0 for m in members if m in by_path)
            out.append((p, RemoteEntry(hp.url(p, sha), size + (_size(by_path[p]) or 0))))
    out += [(p, RemoteEntry(hp.url(p, sha), _size(it))) for p, it in by_path.items()
            if p not in claimed and not is_index_name(p) and wanted(p)]
    for _p, entry in sorted(out, key=lambda pe: pe[0]):
        yield entry


def _size(item) -> int | None:  # type: ignore[no-untyped-def]
    lfs = getattr(item, "lfs", None)
    return getattr(lfs, "size", None) or getattr(item, "size", None)
