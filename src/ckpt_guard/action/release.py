"""The release gate: download a release's weight assets, check them, replace fixed ones.

Assets download through ``GET /repos/{o}/{r}/releases/assets/{id}`` with ``Accept:
application/octet-stream``; GitHub answers 302 to a signed blob URL on another host, which
:meth:`GitHub.download` follows without the token. Replacing an asset (delete, upload) works
only while the release is a draft: immutable releases reject asset changes after publishing
(422), so a rewriting gate must run before publish (draft → gate → publish).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ckpt_guard.action.github import GitHub, GitHubError

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
    path: Path  # where it was downloaded


@dataclass
class Gate:
    release: dict[str, Any]
    assets: list[Asset] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # names not matching the policy
    errors: list[str] = field(default_factory=list)
    replaced: list[str] = field(default_factory=list)

    @property
    def draft(self) -> bool:
        return bool(self.release.get("draft"))


def _safe_name(name: str) -> str:
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
                    wanted: Callable[[str], bool]) -> Gate:
    gate = Gate(release)
    assets = release.get("assets")
    if not isinstance(assets, list) or release.get("id") and not assets:
        assets = list(gh.paginate(f"/repos/{repo}/releases/{release['id']}/assets"))
    dest.mkdir(parents=True, exist_ok=True)
    for a in assets:
        name = str(a.get("name", ""))
        if not wanted(name):
            gate.skipped.append(name)
            continue
        target = dest / _safe_name(name)
        try:
            gh.download(f"/repos/{repo}/releases/assets/{int(a['id'])}", target)
        except GitHubError as e:
            gate.errors.append(f"{name}: {e}")
            continue
        gate.assets.append(Asset(int(a["id"]), name, int(a.get("size", 0)), target))
    return gate


def replace_asset(gh: GitHub, repo: str, gate: Gate, asset: Asset) -> str | None:
    """Swap ``asset`` for its rewritten file (at ``asset.path``). None when done, else why
    not (a published release, or the API said no)."""
    if not gate.draft:
        return IMMUTABLE_NOTE
    upload_url = str(gate.release.get("upload_url") or "")
    if not upload_url:
        return "the release payload has no upload_url"
    # Upload under a temporary name first, so a failed upload never leaves the release
    # without the asset; then delete the old one and give the new one its name.
    try:
        new = gh.upload(upload_url, asset.path, f"{asset.name}.ckpt-guard-new")
        gh.request("DELETE", f"/repos/{repo}/releases/assets/{asset.id}")
        gh.request("PATCH", f"/repos/{repo}/releases/assets/{int(new['id'])}",
                   json={"name": asset.name})
    except GitHubError as e:
        if e.status == 422:
            return f"GitHub refused the change (422): {e.message}. {IMMUTABLE_NOTE}"
        return str(e)
    gate.replaced.append(asset.name)
    return None
