"""Remote weight files read by byte range (read/remote.py): real HTTP servers on loopback,
a stand-in Hub that huggingface_hub itself talks to, the CLI as a real process; truth from
the same files checked locally and from torch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ckpt_guard.read.checkpoint import UnreadableError
from ckpt_guard.read.remote import HubPath, RangeFile, open_http
from tests.remote.servers import FakeHub, FileServer

pytest.importorskip("huggingface_hub")


def _training_ckpt(path: Path, n: int = 120, width: int = 2048) -> Path:
    torch.manual_seed(0)
    model = {f"layer{i}.weight": torch.zeros(width) + i for i in range(n)}
    state = {i: {"step": torch.tensor(3.0), "exp_avg": torch.zeros(width),
                 "exp_avg_sq": torch.zeros(width)} for i in range(n)}
    torch.save({"model": model, "optimizer": {"state": state, "param_groups": [
        {"lr": 0.1, "params": list(range(n))}]}, "epoch": 3}, path)
    return path


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ckpt_guard", *args], capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1",
                                          **(env or {})}, timeout=120)


def _comparable(report: dict) -> list[dict]:
    keep = ("format", "framework", "size_bytes", "tensor_bytes", "tensor_count", "status",
            "bytes_removable")
    return [{k: f.get(k) for k in keep} | {"rules": sorted(x["rule"] for x in f["findings"])}
            for f in report["files"]]


def test_https_zip_reads_metadata_only_and_agrees_with_the_local_check(tmp_path):
    ckpt = _training_ckpt(tmp_path / "last.pt")
    size = ckpt.stat().st_size
    assert size > 2_500_000
    local = json.loads(_cli("check", "--format", "json", str(ckpt)).stdout)
    with FileServer({"/w/last.pt": ckpt}) as srv:
        r = _cli("check", "--format", "json", f"{srv.url}/w/last.pt")
        requests, sent = len(srv.log.requests), srv.log.bytes_sent
    assert r.returncode == 1, r.stderr
    remote = json.loads(r.stdout)
    assert _comparable(remote) == _comparable(local)
    assert remote["files"][0]["path"].endswith("/w/last.pt")
    assert requests <= 4 and sent <= 1_000_000, (requests, sent)
    assert any(n.startswith("read remotely by range") for n in remote["files"][0]["notes"])
    # torch, on the whole file, agrees on the bytes
    sd = torch.load(ckpt, weights_only=True)
    total = sum(t.untyped_storage().nbytes() for t in sd["model"].values()) + sum(
        t.untyped_storage().nbytes() for s in sd["optimizer"]["state"].values()
        for t in s.values())
    assert remote["files"][0]["tensor_bytes"]["total"] == total


def test_safetensors_in_at_most_two_requests(tmp_path):
    from safetensors.torch import save_file

    path = tmp_path / "model.safetensors"
    save_file({f"w{i}": torch.zeros(4096) for i in range(300)}, str(path))
    with FileServer({"/model.safetensors": path}) as srv:
        r = _cli("check", "--format", "json", f"{srv.url}/model.safetensors")
        assert len(srv.log.requests) <= 2 and srv.log.bytes_sent < 200_000, srv.log.requests
    f = json.loads(r.stdout)["files"][0]
    assert f["format"] == "safetensors" and f["tensor_bytes"]["total"] == 300 * 4096 * 4


def test_a_server_ignoring_range_is_downloaded_only_under_the_cap(tmp_path):
    ckpt = _training_ckpt(tmp_path / "small.pt", n=4, width=64)
    data = ckpt.read_bytes()
    with FileServer({"/small.pt": data}, ignore_range=True) as srv:
        r = _cli("check", "--format", "json", f"{srv.url}/small.pt")
        assert json.loads(r.stdout)["files"][0]["status"] == "fail"  # optimizer state
        with pytest.raises(UnreadableError, match="does not support range requests"):
            open_http(f"{srv.url}/small.pt", full_download_cap=len(data) - 1)
        f = open_http(f"{srv.url}/small.pt")
        assert f.read() == data


def test_range_file_coalesces_adjacent_blocks_and_reads_exact_bytes():
    data = bytes(range(256)) * 1000
    calls: list[tuple[int, int]] = []

    def fetch(a: int, b: int) -> bytes:
        calls.append((a, b))
        return data[a:b + 1]

    f = RangeFile("x", len(data), fetch, block=1000, cache_blocks=8)
    f.seek(2500)
    assert f.read(3000) == data[2500:5500]
    assert calls == [(2000, 5999)]  # one request for four adjacent blocks
    f.seek(-10, os.SEEK_END)
    assert f.read(100) == data[-10:]
    f.seek(2600)
    assert f.read(10) == data[2600:2610] and len(calls) == 2  # cached
    assert f.read(10**9)[-5:] == data[-5:]


def test_unreachable_and_missing_remote_files_are_findings(tmp_path):
    with FileServer({}) as srv:
        r = _cli("check", f"{srv.url}/nope.pt")
    assert r.returncode == 1 and "HTTP 404" in r.stdout and "Traceback" not in r.stderr
    r = _cli("fix", "https://example.invalid/x.pt")
    assert r.returncode == 2 and "cannot fix a remote file" in r.stderr


def test_hf_repository_checked_by_range_with_the_token_kept_from_the_cdn(tmp_path):
    ckpt = _training_ckpt(tmp_path / "last.pt", n=40, width=1024).read_bytes()
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(10)}, str(tmp_path / "m.safetensors"))
    files = {"checkpoints/last.pt": ckpt, "model.safetensors": (tmp_path /
                                                               "m.safetensors").read_bytes(),
             "README.md": b"# card"}
    with FakeHub("org/repo", files, token="hf_sekrit") as hub:
        env = {"HF_ENDPOINT": hub.url, "HF_TOKEN": "hf_sekrit"}
        r = _cli("check", "--format", "json", "hf://org/repo", env=env)
        report = json.loads(r.stdout)
        paths = [f["path"] for f in report["files"]]
        assert paths == [f"hf://org/repo@{hub.sha}/checkpoints/last.pt",
                         f"hf://org/repo@{hub.sha}/model.safetensors"]  # README not a weight
        assert [f["status"] for f in report["files"]] == ["fail", "pass"]
        api = [h for _, p, h in hub.log.requests if p.startswith("/api/models/")]
        assert api and all(h.get("authorization") == "Bearer hf_sekrit" for h in api)
        assert hub.cdn.log.requests and not any("authorization" in h
                                                for _, _, h in hub.cdn.log.requests)
        assert hub.cdn.log.bytes_sent <= len(ckpt) + 2 * 65536
        one = _cli("check", "--format", "json", f"hf://org/repo@{hub.sha}/checkpoints/last.pt",
                   env=env)
        assert json.loads(one.stdout)["files"][0]["status"] == "fail"
        bad = _cli("check", "hf://org/repo@nope", env=env)
        assert bad.returncode == 1 and "hf://org/repo@nope" in bad.stdout
        assert "Traceback" not in bad.stderr
        denied = _cli("check", "hf://org/repo", env={"HF_ENDPOINT": hub.url, "HF_TOKEN": ""})
        assert denied.returncode == 1 and "Traceback" not in denied.stderr


@pytest.mark.parametrize(("url", "parts"), [
    ("hf://org/repo", ("model", "org/repo", None, "")),
    ("hf://org/repo@v1.0/sub/x.pt", ("model", "org/repo", "v1.0", "sub/x.pt")),
    ("hf://datasets/org/data@refs%2Fpr%2F1/a.bin", ("dataset", "org/data", "refs/pr/1", "a.bin")),
])
def test_hub_paths(url, parts):
    hp = HubPath.parse(url)
    assert (hp.repo_type, hp.repo_id, hp.revision, hp.path) == parts
