"""The release gate: read a release's weight assets, check them, replace fixed ones.

Assets are fetched through ``GET /repos/{o}/{r}/releases/assets/{id}`` with ``Accept:
application/octet-stream``; GitHub answers 302 to a signed blob URL on another host, which
is followed without the token. A check reads each asset from there **by range** (metadata
only, read/remote.py), like any remote file; an asset whose host ignores ``Range`` and is
over the whole-download cap, and every asset in ``mode: fix`` (which needs the bytes), is
downloaded whole instead. Replacing an asset (delete, upload) works
only while the release is a draft: immutable releases reject asset changes after publishing
(422), so a rewriting gate must run before publish (draft → gate → publish).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckpt_guard.action.github import GitHub, GitHubError
from ckpt_guard.report.model import Report

IMMUTABLE_NOTE = (
    "the release is already published: GitHub's immutable releases reject asset changes after "
    "publishing, so ckpt-guard does not replace assets of a published release. Gate the "
    "release while it is a draft (create the draft, run ckpt-guard with mode: fix and "
    "release_assets: true, then publish) — see docs/workflows/release-gate.yml.")


@dataclass(frozen=True)
class Asset:
    id: int
    name: str
    size: int
    path: Path  # where it was (or, read by range, would be) downloaded
    url: str = ""  # read by range from here (with ``headers``) instead
    headers: tuple[tuple[str, str], ...] = ()


ASSET_MAX = 2 * 1024**3  # GitHub's cap on a release asset
TEMP_SUFFIX = ".ckpt-guard-new"


@dataclass
class Gate:
    release: dict[str, Any]
    assets: list[Asset] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # names not matching the policy
    errors: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)  # wanted asset name -> why not checked
    replaced: list[str] = field(default_factory=list)

    @property
    def draft(self) -> bool:
        return bool(self.release.get("draft"))


def _safe_name(name: str) -> str:
    """A file name for the download: no separators or "..", whatever the asset is called."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", name).lstrip(".") or "asset"


def find_release(gh: GitHub, repo: str, *, payload_release: dict[str, Any] | None,
                 tag: str) -> dict[str, Any] | None:
    """The release to gate: the event's, else the one for ``tag`` — drafts included, which
    ``/releases/tags/{tag}`` does not return, so the list is searched."""
    if payload_release:
        return payload_release
    if not tag:
        return None
    for rel in gh.paginate(f"/repos/{repo}/releases"):
        if rel.get("tag_name") == tag:
            return rel
    return None


def download_assets(gh: GitHub, repo: str, release: dict[str, Any], dest: Path,
                    wanted: Callable[[str], bool], *, by_range: bool = False) -> Gate:
    """The release's assets ``wanted`` accepts, downloaded under ``dest`` — or, with
    ``by_range``, only located (their blob URL) to be read by range."""
    gate = Gate(release)
    assets = release.get("assets")
    if not isinstance(assets, list) or release.get("id") and not assets:
        assets = list(gh.paginate(f"/repos/{repo}/releases/{release['id']}/assets"))
    dest.mkdir(parents=True, exist_ok=True)
    for a in assets:
        name = str(a.get("name", ""))
        if not wanted(name) or name.endswith(TEMP_SUFFIX):
            gate.skipped.append(name)
            continue
        # One directory per asset id: names that sanitise alike ("a b.pt", "a_b.pt") never
        # overwrite each other, and the file keeps its name for the policy's path rules.
        aid, size = int(a["id"]), int(a.get("size") or 0)
        target = dest / str(aid) / _safe_name(name)
        try:
            if by_range:
                url, headers = gh.download_location(f"/repos/{repo}/releases/assets/{aid}")
                gate.assets.append(Asset(aid, name, size, target, url,
                                         tuple(headers.items())))
                continue
            _download(gh, repo, aid, size, target)
        except GitHubError as e:
            gate.errors.append(f"{name}: {e}")
            gate.failed[name] = f"could not fetch the release asset: {e}"
            continue
        gate.assets.append(Asset(aid, name, size, target))
    return gate


def _download(gh: GitHub, repo: str, aid: int, size: int, target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    gh.download(f"/repos/{repo}/releases/assets/{aid}", target,
                max_bytes=size if 0 < size <= ASSET_MAX else ASSET_MAX)


def check_assets(gh: GitHub, repo: str, gate: Gate, policy: Any, dest: Path) -> Report:
    """Check the gate's assets by range; an asset whose host ignores ``Range`` (and is too
    big to take whole into memory) is downloaded and checked from disk instead."""
    from ckpt_guard.action import checking
    from ckpt_guard.action.lfsremote import RemoteObject
    from ckpt_guard.read.remote import NO_RANGE

    remote = {str(a.path): RemoteObject(a.url, a.headers) for a in gate.assets if a.url}
    report = checking.run_check([str(a.path) for a in gate.assets], policy, dest,
                                remote=remote)
    by_path = {str(a.path): a for a in gate.assets}
    for i, fr in enumerate(report.files):
        asset = by_path.get(str(dest / fr.path))
        if asset is None or not any(NO_RANGE in f.message for f in fr.findings):
            continue
        try:
            _download(gh, repo, asset.id, asset.size, asset.path)
        except GitHubError as e:
            gate.errors.append(f"{asset.name}: {e}")
            continue  # the finding that it could not be read stands
        again = checking.run_check([str(asset.path)], policy, dest).files
        if again:
            again[0].notes.append("its host ignores range requests: downloaded whole")
            report.files[i] = again[0]
    return report


def replace_asset(gh: GitHub, repo: str, gate: Gate, asset: Asset) -> str | None:
    """Swap ``asset`` for its rewritten file (at ``asset.path``). None when done, else why
    not (a published release, or the API said no)."""
    if not gate.draft:
        return IMMUTABLE_NOTE
    upload_url = str(gate.release.get("upload_url") or "")
    if not upload_url:
        return "the release payload has no upload_url"
    # Upload under a temporary name first, so a failed upload never leaves the release
    # without the asset; then delete the old one and give the new one its name. A temporary
    # upload left by an earlier, interrupted run is ours: remove it first.
    temp = asset.name + TEMP_SUFFIX
    new_id = None
    try:
        current = list(gh.paginate(f"/repos/{repo}/releases/{int(gate.release['id'])}/assets"))
        if not any(c.get("id") == asset.id for c in current):
            return "the asset changed since it was downloaded; not replacing it"
        for stale in current:
            if stale.get("name") == temp:
                gh.request("DELETE", f"/repos/{repo}/releases/assets/{int(stale['id'])}")
        new = gh.upload(upload_url, asset.path, temp)
        new_id = int(new["id"])
        gh.request("DELETE", f"/repos/{repo}/releases/assets/{asset.id}")
    except (GitHubError, KeyError, TypeError, ValueError) as e:
        if new_id is not None:  # the old asset is still there: take the upload back
            with contextlib.suppress(GitHubError):
                gh.request("DELETE", f"/repos/{repo}/releases/assets/{new_id}")
        if isinstance(e, GitHubError) and e.status == 422:
            return f"GitHub refused the change (422): {e.message}. {IMMUTABLE_NOTE}"
        return str(e) if isinstance(e, GitHubError) else "unexpected API answer"
    try:
        gh.request("PATCH", f"/repos/{repo}/releases/assets/{new_id}", json={"name": asset.name})
    except GitHubError as e:
        return (f"the fixed file was uploaded as {temp!r} and the old asset deleted, but "
                f"renaming it failed ({e}): rename it to {asset.name!r} before publishing")
    gate.replaced.append(asset.name)
    return None
