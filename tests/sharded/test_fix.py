"""fix across a sharded set: every shard cast (verified), total_size updated, the set
replaced as a unit — checked with the real loaders, and with real processes SIGKILLed at every
stage of the swap."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import torch
from huggingface_hub import save_torch_state_dict

from tests.sharded.sets import index_of, load_set, make_set, state_dict

KILLER = Path(__file__).with_name("killer.py")
ROOT = Path(__file__).resolve().parents[2]
POLICY = """version: 1
rules:
  fp32-payload: {action: fix, cast-to: float16, max-bytes: 50kB}
"""


def _expected(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """What the fix must produce: FP32 weights as float16, keep-fp32 and non-float kept."""
    return {k: (v if k.endswith("running_mean") or v.dtype != torch.float32 else v.half())
            for k, v in sd.items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k])
                                        for k in a)


# The kill points are counted on a probe run: the first run of a policy text stores it in
# the policy cache (one more mutation), so no run here may use the cache.
NO_CACHE = {"CKPT_GUARD_NO_CACHE": "1"}


def _env(tmp: Path, kill_at: int) -> dict[str, str]:
    """Each run its own user cache: the originals a fix keeps go there, and pruning a stash
    that other tests filled would add mutations, shifting the kill points between runs."""
    cache = tempfile.mkdtemp(prefix=".user-cache-", dir=tmp)
    return {**os.environ, "KILL_AT": str(kill_at), "PYTHONPATH": str(ROOT / "src") + os.pathsep
            + str(ROOT), "XDG_CACHE_HOME": cache, **NO_CACHE}


def _start(tmp: Path, *args: str, kill_at: int = 0) -> subprocess.Popen:
    env = _env(tmp, kill_at)
    return subprocess.Popen([sys.executable, str(KILLER), *args], cwd=tmp, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run(tmp: Path, *args: str, kill_at: int = 0) -> subprocess.CompletedProcess:
    env = _env(tmp, kill_at)
    return subprocess.run([sys.executable, str(KILLER), *args], cwd=tmp, env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "torch"])
def test_fix_casts_every_shard_and_updates_total_size(tmp_path: Path, safe: bool) -> None:
    (tmp_path / "p.yml").write_text(POLICY)
    index = make_set(tmp_path / "m", safe=safe)
    p = _run(tmp_path, "fix", "--policy", "p.yml", "m")
    assert p.returncode == 0, p.stdout + p.stderr
    got = load_set(index)
    assert _same(got, _expected(state_dict()))
    # total_size as huggingface_hub computes it for the cast state dict
    ref = tmp_path / "ref"
    ref.mkdir()
    save_torch_state_dict(_expected(state_dict()), str(ref), max_shard_size=10**9,
                          safe_serialization=safe)
    want = sum(v.untyped_storage().nbytes() for v in _expected(state_dict()).values())
    assert index_of(index)["metadata"]["total_size"] == want
    assert sorted(os.listdir(index.parent)) == sorted(
        [index.name, *set(index_of(index)["weight_map"].values())])  # no leftovers
    # huggingface_hub's own loader reads the fixed set through its index
    from huggingface_hub import load_torch_model

    model = torch.nn.Module()
    model.layers = torch.nn.ModuleList(torch.nn.Linear(64, 64, bias=False) for _ in range(6))
    model.norm = torch.nn.BatchNorm1d(64)
    model.register_buffer("step", torch.zeros(1, dtype=torch.int64))
    load_torch_model(model, str(index.parent), strict=False, safe=safe)
    sd = model.state_dict()
    assert all(torch.equal(sd[k], v.to(sd[k].dtype)) for k, v in got.items())
    again = _run(tmp_path, "check", "--policy", "p.yml", "--format", "json", "m")
    fr = json.loads(again.stdout)["files"][0]
    assert fr["status"] == "pass" and fr["findings"] == []


def test_max_bytes_applies_to_the_set_not_each_shard(tmp_path: Path) -> None:
    """Each shard holds ~33 kB of FP32, under max-bytes 50kB; the set holds ~98 kB."""
    (tmp_path / "p.yml").write_text(POLICY)
    make_set(tmp_path / "m")
    p = _run(tmp_path, "check", "--policy", "p.yml", "--format", "json", "m")
    findings = json.loads(p.stdout)["files"][0]["findings"]
    assert [f["rule"] for f in findings] == ["fp32-payload"]
    assert findings[0]["detail"]["castable_bytes"] == 6 * 64 * 64 * 4


def test_a_set_whose_index_disagrees_is_not_rewritten(tmp_path: Path) -> None:
    (tmp_path / "p.yml").write_text(POLICY)
    index = make_set(tmp_path / "m")
    data = index_of(index)
    data["metadata"]["total_size"] = 1
    index.write_text(json.dumps(data))
    before = {n: (index.parent / n).read_bytes() for n in os.listdir(index.parent)}
    p = _run(tmp_path, "fix", "--policy", "p.yml", "m")
    assert p.returncode == 1
    assert {n: (index.parent / n).read_bytes() for n in os.listdir(index.parent)} == before


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "torch"])
def test_killed_at_each_stage_the_set_is_all_old_or_all_new(tmp_path: Path,
                                                                 safe: bool) -> None:
    (tmp_path / "p.yml").write_text(POLICY)
    old, new = state_dict(), _expected(state_dict())
    probe = _run(tmp_path, "fix", "--policy", "p.yml", str(make_set(tmp_path / "probe",
                                                                       safe=safe).parent))
    log = probe.stderr.rsplit("LOG=", 1)[1].split()
    commits = [i + 1 for i, m in enumerate(log) if m.startswith("replace:") and
               m.endswith(".index.json")]
    assert len(commits) == 2 and any(m.startswith("link:") for m in log), log
    c1, c2 = commits
    # Kill just before: the first mutation, commit 1 and the one after it, the middle of
    # the relinking, commit 2 and the one after it, the last mutation (cleanup). torch
    # shards go through the same swap: the two points around commit 1 suffice.
    points = ([1, c1, c1 + 1, (c1 + c2) // 2, c2, c2 + 1, len(log)] if safe
              else [c1, c1 + 1])
    # The killed runs go concurrently (independent folders), then the recovering runs.
    folders = {n: tmp_path / f"k{n}" for n in sorted(set(points))}
    indexes = {n: make_set(f, safe=safe) for n, f in folders.items()}
    killed = {n: _start(tmp_path, "fix", "--policy", "p.yml", f.name, kill_at=n)
              for n, f in folders.items()}
    seen = set()
    for n, proc in killed.items():
        assert proc.wait(timeout=120) == -9, (n, proc.stderr.read())
        got = load_set(indexes[n])  # every weight_map entry is found in its shard
        state = "old" if _same(got, old) else "new" if _same(got, new) else "mixed"
        assert state != "mixed", n
        seen.add((n, state))
    assert {s for _n, s in seen} == {"old", "new"}, seen
    # the next fix finishes (or redoes) the job and leaves no temporary behind
    again = {n: _start(tmp_path, "fix", "--policy", "p.yml", f.name) for n, f in folders.items()}
    for n, proc in again.items():
        out = proc.stdout.read()
        assert proc.wait(timeout=120) == 0, (n, out, proc.stderr.read())
        assert _same(load_set(indexes[n]), new), n
        left = [f for f in os.listdir(folders[n]) if f.startswith(".")]
        assert not left, (n, left)
