"""``lfs: remote``: LFS pointer files in the checkout are checked by reading their objects by
range through the Git LFS batch API — nothing pulled. Real git-lfs pointers in a real
repository, the entrypoint as a real process, a stand-in LFS server and blob host on loopback."""

from __future__ import annotations

import base64
import json

import pytest
import torch

from tests.action.fakegithub import FakeGitHub
from tests.action.gitrepo import commit, git, has_lfs, init, lfs_init
from tests.action.runner import REPO, TOKEN, pr_payload, run_action
from tests.action.scenarios import ckpt_bytes, stripped
from tests.remote.servers import FakeLfs

pytestmark = pytest.mark.skipif(not has_lfs(), reason="git-lfs not installed")


def _big_training() -> dict:
    n, width = 60, 8192
    return {"model": {f"l{i}.w": torch.zeros(width) for i in range(n)},
            "optimizer": {"state": {i: {"step": torch.tensor(1.0), "exp_avg": torch.zeros(width),
                                        "exp_avg_sq": torch.zeros(width)} for i in range(n)},
                          "param_groups": [{"lr": 0.1, "params": list(range(n))}]}}


def _lfs_repo(tmp_path):
    origin = init(tmp_path / "origin")
    lfs_init(origin)
    base = commit(origin, "base", {".gitattributes": (origin / ".gitattributes").read_bytes(),
                                   "w.pt": stripped()})
    data = ckpt_bytes(_big_training())
    head = commit(origin, "train", {"w.pt": data})
    ws = tmp_path / "ws"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{origin}", str(ws),
        env={"GIT_LFS_SKIP_SMUDGE": "1"})
    objects = {p.name: p.read_bytes() for p in (origin / ".git" / "lfs" / "objects").rglob("*")
               if p.is_file()}
    return ws, base, head, data, objects


def test_lfs_remote_reads_objects_by_range_without_pulling(tmp_path):
    ws, base, head, data, objects = _lfs_repo(tmp_path)
    with FakeGitHub(REPO) as api, FakeLfs(REPO, objects) as lfs:
        r = run_action(ws, tmp_path / "run", event="pull_request",
                       payload=pr_payload(51, base, head), api_url=api.url,
                       inputs={"lfs": "remote"}, extra_env={"GITHUB_SERVER_URL": lfs.url})
        assert r.rc == 1, r.stdout + r.stderr
        report = json.loads((ws / "ckpt-guard-report" / "report.json").read_text())
        (f,) = report["files"]
        assert f["format"] == "torch-zip" and f["status"] == "fail"
        assert f["size_bytes"] == len(data)
        assert any(x["rule"] == "optimizer-state" for x in f["findings"])
        assert (ws / "w.pt").read_bytes().startswith(b"version https://git-lfs")  # not pulled
        (batch,) = lfs.log.requests
        cred = base64.b64encode(f"x-access-token:{TOKEN}".encode()).decode()
        assert batch[2]["authorization"] == f"Basic {cred}"
        assert lfs.batches[0]["operation"] == "download"
        blob_headers = [h for _, _, h in lfs.blobs.log.requests]
        assert blob_headers and all(h.get("x-signed") == "sig-123" and "authorization" not in h
                                    for h in blob_headers)
        assert lfs.blobs.log.bytes_sent < len(data)  # ranges, not the object
        assert "reading 1 LFS object(s) by range" in r.stdout


def test_lfs_remote_failure_is_a_warning_and_the_pointer_is_reported(tmp_path):
    ws, base, head, _, _ = _lfs_repo(tmp_path)
    with FakeGitHub(REPO) as api, FakeLfs(REPO, {}) as lfs:
        r = run_action(ws, tmp_path / "run", event="pull_request",
                       payload=pr_payload(52, base, head), api_url=api.url,
                       inputs={"lfs": "remote"}, extra_env={"GITHUB_SERVER_URL": lfs.url})
    report = json.loads((ws / "ckpt-guard-report" / "report.json").read_text())
    (f,) = report["files"]
    assert f["format"] == "lfs-pointer"
    assert any("Object does not exist" in w for w in r.annotations("warning")), r.stdout


def test_lfs_pointer_shards_of_a_set_are_read_by_range_as_the_real_set(tmp_path):
    """A sharded set in LFS, the pull request changing one shard: with ``lfs: remote`` every
    shard of the set (changed or not) is read by range, and the set is judged as the real
    objects — not as LFS-pointer shards."""
    from safetensors.torch import load_file, save_file

    from tests.sharded.sets import index_of, make_set, state_dict

    origin = init(tmp_path / "origin")
    lfs_init(origin, "*.safetensors")
    index = make_set(tmp_path / "set")
    shards = sorted(set(index_of(index)["weight_map"].values()))
    files = {p.name: p.read_bytes() for p in index.parent.iterdir()}
    base = commit(origin, "base", {".gitattributes": (origin / ".gitattributes").read_bytes(),
                                   **files})
    changed = load_file(str(index.parent / shards[1]))
    save_file({k: v + 1 for k, v in changed.items()}, str(tmp_path / "s2"), {"format": "pt"})
    head = commit(origin, "retrain", {shards[1]: (tmp_path / "s2").read_bytes()})
    ws = tmp_path / "ws"
    git(tmp_path, "clone", "-q", "--depth", "1", f"file://{origin}", str(ws),
        env={"GIT_LFS_SKIP_SMUDGE": "1"})
    assert (ws / shards[0]).read_bytes().startswith(b"version https://git-lfs")
    objects = {p.name: p.read_bytes() for p in (origin / ".git" / "lfs" / "objects").rglob("*")
               if p.is_file()}
    with FakeGitHub(REPO) as api, FakeLfs(REPO, objects) as lfs:
        r = run_action(ws, tmp_path / "run", event="pull_request",
                       payload=pr_payload(53, base, head), api_url=api.url,
                       inputs={"lfs": "remote"}, extra_env={"GITHUB_SERVER_URL": lfs.url})
        assert r.rc == 0, r.stdout + r.stderr
        report = json.loads((ws / "ckpt-guard-report" / "report.json").read_text())
        (f,) = report["files"]
        assert f["path"] == index.name and f["format"] == "sharded-safetensors"
        assert f["status"] == "pass" and f["findings"] == [], f["findings"]
        assert [s["path"] for s in f["shards"]] == shards
        assert all(s["format"] == "safetensors" for s in f["shards"])
        assert f["tensor_count"] == len(state_dict())
        requested = sorted(o["oid"] for b in lfs.batches for o in b["objects"])
        assert len(requested) == len(shards)  # every shard, not only the changed one
        assert all((ws / s).read_bytes().startswith(b"version https://git-lfs") for s in shards)
        assert "reading 3 LFS object(s) by range" in r.stdout
