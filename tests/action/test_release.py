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


def test_hostile_and_colliding_asset_names_stay_in_their_own_directory(api, tmp_path):
    names = {"../../escape.pt": b"A", "/abs/x.pt": b"B", "a b.pt": b"C", "a_b.pt": b"D",
             "..": b"E", "..\\win.pt": b"F"}
    rel = api.add_release(tag="v1", draft=True, assets=names)
    dest = tmp_path / "dl"
    gate = download_assets(gh(api), REPO, rel, dest, lambda n: True)
    assert {a.name: a.path.read_bytes() for a in gate.assets} == names
    for a in gate.assets:
        assert a.path.resolve().is_relative_to(dest.resolve()) and a.path.parent.parent == dest
    assert not (tmp_path / "escape.pt").exists() and not list(tmp_path.glob("*.pt"))


def test_an_asset_larger_than_declared_is_refused(api, tmp_path):
    rel = api.add_release(tag="v1", draft=True, assets={"model.pt": b"M" * 4096})
    rel["assets"][0]["size"] = 100  # the blob host sends more than the API declared
    gate = download_assets(gh(api), REPO, rel, tmp_path, lambda n: True)
    assert not gate.assets and "model.pt" in gate.failed
    assert "more than the expected 100 bytes" in gate.failed["model.pt"]
    assert not [p for p in tmp_path.rglob("*") if p.is_file()]  # no partial file left


def test_replace_cleans_a_stale_temp_upload_and_never_loses_the_asset(api, tmp_path):
    rel = api.add_release(tag="v1", draft=True, assets={"model.pt": b"M" * 4096,
                                                        "model.pt.ckpt-guard-new": b"old"})
    gate = download_assets(gh(api), REPO, rel, tmp_path, lambda n: True)
    assert gate.skipped == ["model.pt.ckpt-guard-new"]  # our own leftovers are not checked
    (asset,) = gate.assets
    asset.path.write_bytes(b"m" * 1000)
    # the old asset cannot be deleted: the upload is taken back, the original stays
    api.fail("DELETE", rf"/repos/acme/models/releases/assets/{asset.id}", 404)
    why = replace_asset(gh(api), REPO, gate, asset)
    assert why and "404" in why
    assert [(a["name"], a["size"]) for a in api.state.releases[0]["assets"]] == [
        ("model.pt", 4096)]
    # next run: replaced, and a rename that fails says exactly what to do
    api.fail("PATCH", r"/repos/acme/models/releases/assets/\d+", 404)
    why = replace_asset(gh(api), REPO, gate, asset)
    assert "uploaded as 'model.pt.ckpt-guard-new'" in why and "rename it to 'model.pt'" in why
    # a later run finds the asset it downloaded gone: it touches nothing
    assert replace_asset(gh(api), REPO, gate, asset).startswith("the asset changed")
    assert [a["name"] for a in api.state.releases[0]["assets"]] == ["model.pt.ckpt-guard-new"]


def _training_bytes() -> bytes:
    import torch

    from tests.action.scenarios import ckpt_bytes

    return ckpt_bytes({"model": {f"l{i}.w": torch.zeros(8192) for i in range(40)},
                       "optimizer": {"state": {i: {"exp_avg": torch.zeros(8192)}
                                               for i in range(40)},
                                     "param_groups": [{"lr": 0.1, "params": list(range(40))}]}})


@pytest.mark.parametrize("ignores_range", [False, True], ids=["ranges", "no-ranges"])
def test_assets_are_read_by_range_and_downloaded_only_when_the_host_ignores_it(
        api, tmp_path, monkeypatch, ignores_range):
    from ckpt_guard.action.release import check_assets
    from ckpt_guard.policy import builtin_policy
    from ckpt_guard.read import remote

    data = _training_bytes()
    api.state.blob_ignores_range = ignores_range
    monkeypatch.setattr(remote, "FULL_DOWNLOAD_CAP", len(data) // 2)  # too big to take whole
    rel = api.add_release(tag="v1", draft=False, assets={"train.pt": data})
    gate = download_assets(gh(api), REPO, rel, tmp_path, lambda n: True, by_range=True)
    (asset,) = gate.assets
    assert asset.url.startswith(api.blob_url) and not asset.path.exists()
    assert not api.blob_requests  # located through the API's redirect, nothing fetched yet
    report = check_assets(gh(api), REPO, gate, builtin_policy(), tmp_path)
    (f,) = report.files
    assert f.status == "fail" and f.format == "torch-zip", f.findings
    assert all("authorization" not in r.headers for r in api.blob_requests)
    if ignores_range:  # fell back to downloading it whole, and said so
        assert asset.path.read_bytes() == data
        assert "its host ignores range requests: downloaded whole" in f.notes
    else:
        assert not asset.path.exists() and api.blob_bytes < len(data) / 4
        assert all("range" in r.headers for r in api.blob_requests)
