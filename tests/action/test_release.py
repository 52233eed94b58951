"""Release assets through the loopback API: download via 302, replace while draft only."""

from __future__ import annotations

import copy

import pytest

from ckpt_guard.action.github import GitHub
from ckpt_guard.action.release import IMMUTABLE_NOTE, download_assets, find_release, replace_asset
from tests.action.fakegithub import FakeGitHub

REPO = "acme/models"


@pytest.fixture
def api():
    with FakeGitHub(REPO) as fake:
        yield fake


def gh(api):
    return GitHub("ghs_token", api.url, backoff=0.01)


def test_download_only_weight_assets(api, tmp_path):
    rel = api.add_release(tag="v1", draft=True,
                          assets={"model.pt": b"M" * 2048, "notes.txt": b"hello"})
    gate = download_assets(gh(api), REPO, rel, tmp_path / "dl", lambda n: n.endswith(".pt"))
    assert [a.name for a in gate.assets] == ["model.pt"] and gate.skipped == ["notes.txt"]
    assert gate.assets[0].path.read_bytes() == b"M" * 2048
    assert all("authorization" not in r.headers for r in api.blob_requests)


def test_find_draft_release_by_tag(api):
    api.add_release(tag="v0", draft=False, assets={})
    rel = api.add_release(tag="v2", draft=True, assets={})
    assert find_release(gh(api), REPO, payload_release=None, tag="v2")["id"] == rel["id"]
    assert find_release(gh(api), REPO, payload_release=None, tag="nope") is None


def test_replace_asset_on_draft(api, tmp_path):
    rel = api.add_release(tag="v1", draft=True, assets={"model.pt": b"M" * 4096})
    gate = download_assets(gh(api), REPO, rel, tmp_path, lambda n: True)
    (asset,) = gate.assets
    asset.path.write_bytes(b"m" * 1000)  # the "fixed" file
    assert replace_asset(gh(api), REPO, gate, asset) is None
    (now,) = api.state.releases[0]["assets"]
    assert now["name"] == "model.pt" and now["size"] == 1000 and now["id"] != asset.id
    assert api.state.blobs[now["id"]] == b"m" * 1000
    (up,) = api.of("POST", r"/uploads/repos/acme/models/releases/\d+/assets")
    assert up.query["name"] == ["model.pt.ckpt-guard-new"]
    assert up.headers["content-type"] == "application/octet-stream"
    assert api.of("DELETE", rf"/repos/acme/models/releases/assets/{asset.id}")
    assert gate.replaced == ["model.pt"]


def test_published_release_is_never_modified(api, tmp_path):
    rel = api.add_release(tag="v1", draft=False, assets={"model.pt": b"M" * 10})
    gate = download_assets(gh(api), REPO, rel, tmp_path, lambda n: True)
    assert replace_asset(gh(api), REPO, gate, gate.assets[0]) == IMMUTABLE_NOTE
    assert not [r for r in api.requests if r.method in ("POST", "DELETE", "PATCH")]


def test_422_from_the_api_is_explained(api, tmp_path):
    rel = copy.deepcopy(api.add_release(tag="v1", draft=True, assets={"model.pt": b"M" * 10}))
    gate = download_assets(gh(api), REPO, rel, tmp_path, lambda n: True)
    api.state.releases[0]["draft"] = False  # published after the event's payload was made
    why = replace_asset(gh(api), REPO, gate, gate.assets[0])
    assert why.startswith("GitHub refused the change (422)") and "immutable" in why
    assert api.state.releases[0]["assets"][0]["name"] == "model.pt"
