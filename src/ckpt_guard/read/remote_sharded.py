"""Remote sharded sets: an index (``…/model.safetensors.index.json``) on the Hub, behind an
``https://`` URL or in an object store, read with every shard it names as one unit — the same
:class:`Checkpoint` (``sharded-safetensors`` / ``sharded-torch``) and the same ``shard-index``
problems as a local set (read/sharded.py), each shard read by range (read/remote.py).

Shards are resolved as loaders resolve them (transformers' ``get_checkpoint_shard_files``):
relative to the index's folder, at the index's revision. A shard the server does not have is
a ``missing-shard`` problem, not a failure of the set. Extra shards (files named like the
set's shards that the index does not name) need a listing of the folder: the Hub and object
stores give one; a plain HTTP server does not, so there they are not looked for.

The shards are read concurrently (a few threads): each costs one or two round trips whatever
its size, so over a real network the set takes about as long as its slowest shard.
"""

from __future__ import annotations

import os
import posixpath
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from urllib.parse import quote

from ckpt_guard.read.checkpoint import Checkpoint, UnreadableError
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.remote import HubPath, RemoteNotFound, open_remote
from ckpt_guard.read.sharded import (
    MAX_INDEX_BYTES,
    assemble_set,
    parse_index,
    shards_of,
)
from ckpt_guard.vocab import Role

MAX_WORKERS = 8

# Pinned Hub revisions never change: an index or a folder listing fetched while expanding
# ``hf://ORG/REPO`` is not fetched again when the set is read (same process).
_CACHE_LOCK = threading.Lock()
_INDEX_CACHE: dict[str, bytes] = {}
_LISTING_CACHE: dict[str, list[str]] = {}


def remember_listing(folder_url: str, names: list[str]) -> None:
    """File names directly inside ``folder_url`` (a pinned ``hf://…@sha/folder``)."""
    with _CACHE_LOCK:
        _LISTING_CACHE[folder_url.rstrip("/")] = list(names)


def index_bytes(url: str, headers: dict[str, str] | None = None, *,
                name: str | None = None) -> tuple[bytes, int, int]:
    """The whole index (small: read in one or two requests), with the requests and bytes it
    cost. Raises :class:`UnreadableError` (:class:`RemoteNotFound` when it is not there)."""
    with _CACHE_LOCK:
        cached = _INDEX_CACHE.get(url)
    if cached is not None:
        return cached, 0, 0
    fh = open_remote(url, **({"headers": headers} if headers else {}),
                     **({"name": name} if name else {}))
    with fh:
        size = getattr(fh, "size", None)
        if isinstance(size, int) and size > MAX_INDEX_BYTES:
            raise UnreadableError(f"shard index is {size:,} bytes, over the "
                                  f"{MAX_INDEX_BYTES:,}-byte limit")
        raw = fh.read(MAX_INDEX_BYTES + 1)
        if len(raw) > MAX_INDEX_BYTES:
            raise UnreadableError(f"shard index is over the {MAX_INDEX_BYTES:,}-byte limit")
        stats = getattr(fh, "stats", None)
    if url.startswith("hf://") and HubPath.parse(url).revision:
        with _CACHE_LOCK:
            _INDEX_CACHE[url] = raw
    return raw, getattr(stats, "requests", 0), getattr(stats, "bytes", 0)


@dataclass(frozen=True)
class _Folder:
    """Where the shards of an index live: ``url(shard)``, and the folder's file names
    (``None``: this kind of server cannot list)."""

    url: Callable[[str], str]
    listing: Callable[[], list[str] | None]


def _folder(index_url: str) -> _Folder:
    base = index_url.rsplit("/", 1)[0]
    if index_url.startswith("hf://"):
        hp = HubPath.parse(index_url)
        folder = posixpath.dirname(hp.path)
        return _Folder(lambda s: hp.url(posixpath.join(folder, s)),
                       lambda: _hub_listing(hp, folder))
    if index_url.startswith(("http://", "https://")):
        # quoted: a name with "?", "#" or "scheme:" must stay a path under the folder
        return _Folder(lambda s: f"{base}/{quote(s, safe='/')}", lambda: None)
    return _Folder(lambda s: f"{base}/{s}", lambda: _fsspec_listing(base))


def _hub_listing(hp: HubPath, folder: str) -> list[str] | None:
    key = hp.url(folder).rstrip("/")
    with _CACHE_LOCK:
        cached = _LISTING_CACHE.get(key)
    if cached is not None:
        return cached
    from ckpt_guard.read.remote import _hub

    hub = _hub()
    api = hub.HfApi(endpoint=os.environ.get("HF_ENDPOINT") or None)
    try:
        items = api.list_repo_tree(hp.repo_id, path_in_repo=folder or None, recursive=False,
                                   revision=hp.revision, repo_type=hp.repo_type)
        names = [posixpath.basename(it.path) for it in items
                 if isinstance(it, hub.hf_api.RepoFile)]
    except Exception:  # noqa: BLE001 - only extra-shard detection depends on it
        return None
    remember_listing(key, names)
    return names


def _fsspec_listing(base: str) -> list[str] | None:
    try:
        import fsspec

        fs, path = fsspec.core.url_to_fs(base)
        return [posixpath.basename(p.rstrip("/")) for p in fs.ls(path, detail=False)]
    except Exception:  # noqa: BLE001 - only extra-shard detection depends on it
        return None


def _outside(shard: str) -> bool:
    """A name a loader would not find beside the index (absolute, ``..``, a URL)."""
    parts = shard.replace("\\", "/").split("/")
    return shard.startswith(("/", "\\")) or ".." in parts or "://" in shard or \
        (len(parts[0]) == 2 and parts[0][1] == ":")


_MISSING = object()


def read_remote_set(index_url: str, limits: Limits, *, headers: dict[str, str] | None = None,
                    name: str | None = None) -> Checkpoint:
    """Read a remote sharded set from its index URL. Raises :class:`UnreadableError` for an
    index that cannot be had or parsed; each shard's own problems stay with that shard."""
    from ckpt_guard.read import read_remote

    display = name or index_url
    raw, requests, received = index_bytes(index_url, headers, name=display)
    index = parse_index(raw)
    shards = shards_of(index)
    if len(shards) > limits.max_dir_files:
        raise UnreadableError(f"shard index names {len(shards)} shards, over the "
                              f"{limits.max_dir_files} limit")
    escaping = [s for s in shards if _outside(s)]
    wanted = [s for s in shards if s not in escaping]
    folder = _folder(index_url)
    shown = display.rsplit("/", 1)[0]

    def one(shard: str) -> Checkpoint | UnreadableError | object:
        try:
            return read_remote(folder.url(shard), limits, headers=headers,
                               name=f"{shown}/{shard}")
        except RemoteNotFound:
            return _MISSING
        except UnreadableError as e:
            return e

    with ThreadPoolExecutor(max_workers=max(1, min(MAX_WORKERS, len(wanted)))) as pool:
        results = list(pool.map(one, wanted))
        listing = folder.listing()
    children: list[tuple[str, Checkpoint | UnreadableError, str]] = []
    missing: list[str] = []
    size = len(raw)
    for shard, got in zip(wanted, results, strict=True):
        if got is _MISSING:
            missing.append(shard)
            continue
        assert isinstance(got, (Checkpoint, UnreadableError))
        if isinstance(got, Checkpoint):
            size += got.size_bytes
            requests += got.metadata.get("remote_requests", 0)
            received += got.metadata.get("remote_bytes", 0)
        children.append((shard, got, Role.WEIGHTS))
    ckpt = assemble_set(display, index, children, missing, escaping, size,
                        listing=listing if listing is not None else [])
    if listing is None:
        ckpt.notes.append("the server cannot list the index's folder: shard files the index "
                          "does not name were not looked for")
    ckpt.metadata["remote_requests"] = requests
    ckpt.metadata["remote_bytes"] = received
    return ckpt
