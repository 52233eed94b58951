"""Remote sharded sets read as one unit (read/remote_sharded.py): an index on a loopback HTTP
server, on the stand-in Hub that huggingface_hub itself talks to, and behind an fsspec URL;
shards made by huggingface_hub.save_torch_state_dict; truth from the same set checked locally
and from safetensors/torch on the files."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ckpt_guard.engine import check_paths
from ckpt_guard.policy import builtin_policy
from tests.remote.servers import FakeHub, FileServer
from tests.sharded.sets import index_of, load_set, make_set

pytest.importorskip("huggingface_hub")

BIG = 1_100_000  # bytes per shard: large enough that reading whole files would show


def _sd(n: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {f"layers.{i}.weight": torch.randn(512, 256, generator=g) for i in range(n)}


def _set(folder: Path, *, safe: bool = True) -> Path:
    return make_set(folder, safe=safe, sd=_sd(), max_shard_size=BIG)


def _served(index: Path, prefix: str = "/m") -> dict[str, Path]:
    return {f"{prefix}/{p.name}": p for p in index.parent.iterdir()}


def _comparable(fr) -> dict:  # type: ignore[no-untyped-def]
    d = fr.to_dict()
    return {"format": d["format"], "status": d["status"], "size": d["size_bytes"],
            "tensor_bytes": d["tensor_bytes"], "tensor_count": d["tensor_count"],
            "shards": d["shards"], "rules": sorted(f["rule"] for f in d["findings"])}


def _check(tmp: Path, *paths: str) -> list:
    return check_paths(list(paths), builtin_policy(), root=tmp).files


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "torch"])
def test_https_index_is_one_set_read_by_range_and_agrees_with_the_local_check(
        tmp_path: Path, safe: bool) -> None:
    index = _set(tmp_path / "m", safe=safe)
    shards = sorted(set(index_of(index)["weight_map"].values()))
    assert len(shards) >= 3
    total = sum(p.stat().st_size for p in index.parent.iterdir())
    local = _check(tmp_path, str(index))[0]
    with FileServer(_served(index)) as srv:
        files = _check(tmp_path, f"{srv.url}/m/{index.name}")
        sent = srv.log.bytes_sent
    assert len(files) == 1
    fr = files[0]
    assert fr.path == f"{srv.url}/m/{index.name}"
    assert _comparable(fr) == _comparable(local)
    assert fr.format == ("sharded-safetensors" if safe else "sharded-torch")
    assert [r["path"] for r in fr.shards] == shards
    # metadata only: a block or two per shard, not the shards' data
    assert sent < total / 2, (sent, total)
    assert any(n.startswith("read remotely by range") for n in fr.notes)
    # truth: the set loaded whole, as transformers loads it
    sd = load_set(index)
    assert fr.tensor_count == len(sd)
    assert fr.tensor_bytes_total == sum(t.untyped_storage().nbytes() for t in sd.values())


def test_a_missing_remote_shard_is_a_shard_index_finding_not_a_crash(tmp_path: Path) -> None:
    index = _set(tmp_path / "m")
    shards = sorted(set(index_of(index)["weight_map"].values()))
    served = _served(index)
    del served[f"/m/{shards[1]}"]
    with FileServer(served) as srv:
        fr = _check(tmp_path, f"{srv.url}/m/{index.name}")[0]
    assert fr.status == "fail"
    msgs = [f.message for f in fr.findings if f.rule == "shard-index"]
    assert len(msgs) == 1 and f"shard file {shards[1]} is missing" in msgs[0]
    # the other shards are still read and counted
    assert [r["path"] for r in fr.shards] == [shards[0], *shards[2:]]


def test_fsspec_url_finds_extra_shards_through_its_listing(tmp_path: Path) -> None:
    index = _set(tmp_path / "m")
    n = len(set(index_of(index)["weight_map"].values()))
    stale = index.parent / f"model-{n + 1:05d}-of-{n + 1:05d}.safetensors"
    shutil.copy(index.parent / f"model-00001-of-{n:05d}.safetensors", stale)
    fr = _check(tmp_path, index.as_uri())[0]  # file:// — a real fsspec backend
    assert fr.format == "sharded-safetensors" and fr.status == "fail"
    found = [f.message for f in fr.findings if f.rule == "shard-index"]
    assert found == [f"shard file {stale.name} is not in the index (a stale or foreign shard)"]


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "ckpt_guard", *args], capture_output=True,
                          text=True, env={**os.environ, "HF_HUB_DISABLE_TELEMETRY": "1", **env},
                          timeout=120)


def test_hf_repository_set_is_one_row_and_a_named_shard_stands_for_its_set(
        tmp_path: Path) -> None:
    index = _set(tmp_path / "m")
    shards = sorted(set(index_of(index)["weight_map"].values()))
    torch.save({"model": _sd(1), "optimizer": {"state": {0: {"exp_avg": torch.zeros(10)}},
                                               "param_groups": []}}, tmp_path / "last.pt")
    files = {p.name: p.read_bytes() for p in index.parent.iterdir()}
    files |= {"ckpt/last.pt": (tmp_path / "last.pt").read_bytes(), "README.md": b"# card"}
    local = _check(tmp_path, str(index))[0].to_dict()
    with FakeHub("org/repo", files) as hub:
        env = {"HF_ENDPOINT": hub.url}
        r = _cli("check", "--format", "json", "hf://org/repo", env=env)
        assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
        report = json.loads(r.stdout)
        assert [f["path"] for f in report["files"]] == [
            f"hf://org/repo@{hub.sha}/ckpt/last.pt",
            f"hf://org/repo@{hub.sha}/model.safetensors.index.json"]
        got = report["files"][1]
        assert got["format"] == "sharded-safetensors" and got["status"] == "pass"
        assert [s["path"] for s in got["shards"]] == shards
        assert {k: got[k] for k in ("tensor_bytes", "tensor_count", "size_bytes", "shards")} \
            == {k: local[k] for k in ("tensor_bytes", "tensor_count", "size_bytes", "shards")}
        assert hub.cdn.log.bytes_sent < sum(len(d) for d in files.values()) / 2
        one = _cli("check", "--format", "json", f"hf://org/repo/{shards[1]}", env=env)
        f = json.loads(one.stdout)["files"]
        assert [x["path"] for x in f] == [f"hf://org/repo@{hub.sha}/model.safetensors.index.json"]
        hub.files.pop(shards[0])  # the repository loses a shard: a finding, the run goes on
        gone = _cli("check", "--format", "json",
                    f"hf://org/repo@{hub.sha}/model.safetensors.index.json", env=env)
        assert gone.returncode == 1 and "Traceback" not in gone.stderr
        g = json.loads(gone.stdout)["files"][0]
        assert g["status"] == "fail" and any(
            f"shard file {shards[0]} is missing" in x["message"] for x in g["findings"])
        shown = _cli("inspect", f"hf://org/repo@{hub.sha}/model.safetensors.index.json",
                     env=env)
        assert "sharded-safetensors" in shown.stdout and "Traceback" not in shown.stderr
