"""Git LFS objects read by range through the LFS batch API — no ``git lfs pull``.

actions/checkout leaves LFS files as pointers unless asked, and pulling them costs LFS
bandwidth (billed by whole file size) and minutes. A check needs metadata only, so with
``lfs: remote`` the action asks the repository's LFS server for download actions
(``POST {server}/{owner}/{repo}.git/info/lfs/objects/batch``, ``operation: download``, at most
100 objects a request) and reads each object by HTTP range from the ``href`` it returns, with
exactly the ``header`` that action gives (never the job's token: the href may be another
host). The endpoint is always derived from GITHUB_SERVER_URL and the event's repository —
never from ``.lfsconfig``, which a pull request could point at a host of its choosing.
"""

from __future__ import annotations

import base64
from collections.abc import Mapping
from dataclasses import dataclass, field

BATCH_MEDIA = "application/vnd.git-lfs+json"
MAX_OBJECTS = 100  # per batch request, as git-lfs sends


@dataclass(frozen=True)
class RemoteObject:
    """Where to read one LFS object: ``url`` with ``headers`` (from the batch response)."""

    url: str
    headers: tuple[tuple[str, str], ...] = ()


@dataclass
class Resolved:
    objects: dict[str, RemoteObject] = field(default_factory=dict)  # path → where
    errors: dict[str, str] = field(default_factory=dict)  # path → why not


def batch_url(server_url: str, repository: str) -> str:
    return f"{server_url.rstrip('/')}/{repository}.git/info/lfs/objects/batch"


def resolve(pointers: Mapping[str, tuple[str, int]], *, server_url: str, repository: str,
            token: str, ref: str = "", session=None) -> Resolved:  # type: ignore[no-untyped-def]
    """Download actions for ``pointers`` (path → (oid, size)). Raises ``RuntimeError`` when
    the batch endpoint itself cannot be used (callers fall back or report)."""
    import requests

    sess = session or requests.Session()
    headers = {"Accept": BATCH_MEDIA, "Content-Type": BATCH_MEDIA}
    if token:  # as actions/checkout authenticates git: basic x-access-token
        cred = base64.b64encode(f"x-access-token:{token}".encode()).decode()
        headers["Authorization"] = f"Basic {cred}"
    by_oid: dict[tuple[str, int], list[str]] = {}
    for path, key in pointers.items():
        by_oid.setdefault(key, []).append(path)
    out = Resolved()
    keys = list(by_oid)
    url = batch_url(server_url, repository)
    for i in range(0, len(keys), MAX_OBJECTS):
        chunk = keys[i:i + MAX_OBJECTS]
        body = {"operation": "download", "transfers": ["basic"],
                "objects": [{"oid": oid, "size": size} for oid, size in chunk]}
        if ref:
            body["ref"] = {"name": ref}
        try:
            resp = sess.post(url, json=body, headers=headers, timeout=30,
                             allow_redirects=False)
        except requests.RequestException as e:
            raise RuntimeError(f"LFS batch API unreachable: {type(e).__name__}") from e
        if resp.status_code != 200:
            raise RuntimeError(f"LFS batch API answered HTTP {resp.status_code}")
        try:
            answer = resp.json()
            objects = answer["objects"]
        except (ValueError, KeyError, TypeError) as e:
            raise RuntimeError("LFS batch API answered something that is not a batch "
                               "response") from e
        for obj in objects if isinstance(objects, list) else []:
            key = (str(obj.get("oid", "")), obj.get("size"))
            paths = by_oid.get(key, [])
            err = obj.get("error")
            action = ((obj.get("actions") or {}).get("download") or {})
            href = action.get("href")
            if err or not isinstance(href, str) or not href.startswith(("https://", "http://")):
                why = (f"LFS object {key[0][:12]}: {err.get('message', 'error')} "
                       f"(code {err.get('code')})" if isinstance(err, dict)
                       else f"LFS object {key[0][:12]}: no download action")
                out.errors.update({p: why for p in paths})
                continue
            hdrs = tuple((str(k), str(v)) for k, v in (action.get("header") or {}).items())
            out.objects.update({p: RemoteObject(href, hdrs) for p in paths})
    for path in pointers:
        if path not in out.objects and path not in out.errors:
            out.errors[path] = "LFS object missing from the batch response"
    return out
