"""Re-sharding to one shard gives one file with no index, as huggingface_hub saves a state
dict that fits in one shard (``split_torch_state_dict_into_shards`` → ``model.safetensors``,
``save_torch_state_dict`` writes no index): checked against huggingface_hub itself, loaded by
safetensors, huggingface_hub.load_torch_model and transformers' lookup order; the swap with
real processes SIGKILLed at each step (every state loads whole, either way a loader looks),
and stash/restore with the real CLI (rewrite/set_single.py)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from huggingface_hub import load_torch_model, save_torch_state_dict
from safetensors import safe_open
from safetensors.torch import load_file

from tests.sharded.sets import load_set, make_set, state_dict
from tests.sharded.test_fix import _expected, _run, _same
from tests.sharded.test_reshard import _json, _killed_states, _listing, _policy
from tests.sharded.test_stash_set import cache  # noqa: F401 (fixture)

ONE = "5GB"


def _transformers_way(folder: Path) -> dict[str, torch.Tensor]:
    """transformers' _get_resolved_checkpoint_files: model.safetensors first, else the index."""
    single = folder / "model.safetensors"
    return load_file(single) if single.exists() else load_set(folder / "model.safetensors.index.json")


@pytest.mark.parametrize("cast", [True, False], ids=["cast", "layout-only"])
def test_reshard_to_one_shard_is_one_file_with_no_index(tmp_path: Path, cast: bool) -> None:
    _policy(tmp_path, cast=cast, limit=ONE)
    index = make_set(tmp_path / "m")
    assert len(set(json.loads(index.read_text())["weight_map"].values())) == 3
    dry = _json(tmp_path, "fix", "--dry-run", "m")
    assert len(_listing(index.parent)) == 4  # the dry run wrote nothing
    real = _json(tmp_path, "fix", "m")
    fr = real["files"][0]
    assert fr["status"] == "fixed", fr
    assert dry["files"][0]["size_after"] == fr["size_after"]
    assert _listing(index.parent) == ["model.safetensors"]
    assert fr["size_after"] == os.path.getsize(index.parent / "model.safetensors")
    assert any("written as one file model.safetensors with no index" in n for n in fr["notes"])
    want = _expected(state_dict()) if cast else state_dict()
    assert _same(load_file(index.parent / "model.safetensors"), want)
    assert _same(_transformers_way(index.parent), want)
    # huggingface_hub's own load of the folder, and its own save of the same state dict
    m = torch.nn.Module()
    for k, v in want.items():
        parent = m
        *path, leaf = k.split(".")
        for p in path:
            if not hasattr(parent, p):
                parent.add_module(p, torch.nn.Module())
            parent = getattr(parent, p)
        parent.register_buffer(leaf, torch.zeros_like(v))
    load_torch_model(m, str(index.parent))
    assert _same(dict(m.state_dict()), want)
    (tmp_path / "hf").mkdir()
    save_torch_state_dict(want, str(tmp_path / "hf"), max_shard_size=ONE)
    assert _listing(tmp_path / "hf") == ["model.safetensors"]
    with safe_open(index.parent / "model.safetensors", "pt") as f:
        assert f.metadata().get("format") == "pt"
    check = _json(tmp_path, "check", "m")["files"]
    assert [(c["path"], c["status"]) for c in check] == [("m/model.safetensors", "pass")]
    again = _json(tmp_path, "fix", "m")["files"][0]  # nothing left to do
    assert again["status"] == "pass" and _listing(index.parent) == ["model.safetensors"]


def test_one_file_to_out_dir_and_from_a_bin_set(tmp_path: Path) -> None:
    _policy(tmp_path, limit=ONE)
    index = make_set(tmp_path / "m")
    before = {n: (index.parent / n).read_bytes() for n in _listing(index.parent)}
    p = _run(tmp_path, "fix", "--policy", "p.yml", "--out", "o", "m")
    assert p.returncode == 0, p.stdout + p.stderr
    assert {n: (index.parent / n).read_bytes() for n in _listing(index.parent)} == before
    assert _listing(tmp_path / "o" / "m") == ["model.safetensors"]
    assert _same(load_file(tmp_path / "o" / "m" / "model.safetensors"), _expected(state_dict()))
    # a .bin set converted with a limit it fits under: model.safetensors, the .bin set kept
    _policy(tmp_path, limit=ONE, convert=True)
    bindex = make_set(tmp_path / "b", safe=False)
    kept = {n: (bindex.parent / n).read_bytes() for n in _listing(bindex.parent)}
    fr = _json(tmp_path, "fix", "b")["files"][0]
    assert fr["status"] == "fixed", fr
    assert _listing(bindex.parent) == sorted([*kept, "model.safetensors"])
    assert {n: (bindex.parent / n).read_bytes() for n in kept} == kept
    assert _same(load_file(bindex.parent / "model.safetensors"), _expected(state_dict()))
    # a file of that name is never overwritten
    _policy(tmp_path, limit=ONE)
    index2 = make_set(tmp_path / "c")
    (index2.parent / "model.safetensors").write_bytes(b"someone's file")
    fr = _json(tmp_path, "fix", "c")["files"]
    notes = [n for f in fr for n in f.get("notes", [])]
    assert any("not re-sharded into one file: model.safetensors exists" in n for n in notes)
    assert (index2.parent / "model.safetensors").read_bytes() == b"someone's file"


def test_one_file_swap_killed_at_each_step_loads_whole_and_recovers(
        tmp_path: Path, cache: Path) -> None:  # noqa: F811 (its own stash: counts stay put)
    _policy(tmp_path, limit=ONE)
    old, new = state_dict(), _expected(state_dict())

    def points(log: list[str]) -> list[int]:
        link = [i + 1 for i, m in enumerate(log) if m == "link:model.safetensors"]
        commit2 = [i + 1 for i, m in enumerate(log)
                   if m == "replace:model.safetensors.index.json"]
        gone = [i + 1 for i, m in enumerate(log) if m.startswith("unlink:model-")]
        idx = [i + 1 for i, m in enumerate(log) if m == "unlink:model.safetensors.index.json"]
        assert len(link) == len(commit2) == len(idx) == 1 and len(gone) == 3, log
        assert link[0] < commit2[0] < gone[0] and gone[-1] < idx[0], log
        # before/after commit 1 (the link), after commit 2, half-way through the removals,
        # before the index goes, before the journal goes
        return [link[0], link[0] + 1, commit2[0] + 1, gone[1], idx[0], idx[0] + 1]

    def read(folder: Path) -> str:
        a = _transformers_way(folder)
        idx = folder / "model.safetensors.index.json"
        b = load_set(idx) if idx.exists() else load_file(folder / "model.safetensors")
        states = {"old" if _same(x, old) else "new" if _same(x, new) else "mixed"
                  for x in (a, b)}
        return "/".join(sorted(states))

    states = _killed_states(tmp_path, lambda f: make_set(f).parent, points, (), read)
    assert {s for _f, s in states.values()} <= {"old", "new", "new/old"}, states
    assert "mixed" not in str(states)
    for n, (f, _s) in states.items():
        p = _run(tmp_path, "fix", "--policy", "p.yml", f.name)
        assert p.returncode == 0, (n, p.stdout, p.stderr)
        assert _listing(f) == ["model.safetensors"], (n, _listing(f))
        assert _same(load_file(f / "model.safetensors"), new), n


def test_one_file_stash_and_restore(tmp_path: Path, cache: Path) -> None:  # noqa: F811
    from tests.rewrite.test_stash import _run as cli

    root = tmp_path / "r"
    root.mkdir()
    (root / ".ckpt-guard.yml").write_text(
        "version: 1\nrules:\n  fp32-payload: {action: fix, cast-to: float16, "
        f"max-bytes: 50kB}}\nshards: {{max-shard-size: {ONE}}}\n")
    index = make_set(root / "m")
    before = {n: (index.parent / n).read_bytes() for n in _listing(index.parent)}
    p = cli("fix", "m", "--format", "json", cwd=root)
    assert p.returncode == 0, p.stdout + p.stderr
    kept = json.loads(p.stdout)["files"][0]["details"]["fix"]["stash"]
    assert sorted(kept["files"]) == sorted(before)
    assert _listing(index.parent) == ["model.safetensors"]
    p = cli("restore", "m/model.safetensors.index.json", cwd=root)
    assert p.returncode == 0 and "restored the sharded set" in p.stdout, p.stdout + p.stderr
    assert {n: (index.parent / n).read_bytes() for n in _listing(index.parent)} == before
