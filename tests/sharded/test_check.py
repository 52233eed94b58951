"""Checking sharded sets: one unit wherever a set is named, totals over the set, and the
shard-index rule (one finding per problem), against sets the real writers produced."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ckpt_guard.engine import check_paths
from ckpt_guard.policy import builtin_policy
from tests.sharded.sets import index_of, make_set, state_dict


def _check(tmp: Path, *paths: str) -> list:
    return check_paths(list(paths), builtin_policy(), root=tmp).files


def _truth(sd: dict[str, torch.Tensor]) -> tuple[int, dict[str, int]]:
    by: dict[str, int] = {}
    for t in sd.values():
        name = str(t.dtype).removeprefix("torch.")
        by[name] = by.get(name, 0) + t.untyped_storage().nbytes()
    return sum(by.values()), by


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "torch"])
def test_clean_set_is_one_unit_with_totals_over_the_set(tmp_path: Path, safe: bool) -> None:
    index = make_set(tmp_path / "m", safe=safe)
    shards = sorted(set(index_of(index)["weight_map"].values()))
    assert len(shards) == 3
    for named in ([str(tmp_path / "m")], [str(index)], [str(tmp_path / "m" / shards[1])],
                  [str(tmp_path / "m" / s) for s in shards] + [str(index)]):
        files = _check(tmp_path, *named)
        assert len(files) == 1, named
        fr = files[0]
        assert fr.path.endswith(index.name)
        assert fr.format == ("sharded-safetensors" if safe else "sharded-torch")
        assert fr.status == "pass" and fr.findings == []
        total, by_dtype = _truth(state_dict())
        assert fr.tensor_bytes_total == total == index_of(index)["metadata"]["total_size"]
        assert fr.by_dtype == by_dtype and fr.tensor_count == len(state_dict())
        assert [r["path"] for r in fr.shards] == shards
        d = fr.to_dict()
        assert d["shards"][0]["tensor_count"] >= 1 and d["format"] == fr.format


def test_tied_weights_total_size_counts_shared_storage_once(tmp_path: Path) -> None:
    sd = state_dict()
    sd["lm_head.weight"] = sd["layers.0.weight"]  # tied: save_torch_state_dict drops the alias
    index = make_set(tmp_path / "m", sd=sd)
    fr = _check(tmp_path, str(index))[0]
    assert fr.status == "pass", [f.message for f in fr.findings]


def _problems(fr) -> list[tuple[str, str]]:
    return [(f.detail.get("kind"), f.message) for f in fr.findings if f.rule == "shard-index"]


def test_each_problem_is_one_finding_naming_it(tmp_path: Path) -> None:
    index = make_set(tmp_path / "m")
    folder = index.parent
    data = index_of(index)
    wm = data["weight_map"]
    shards = sorted(set(wm.values()))
    wm["ghost.weight"] = shards[0]  # an entry its shard does not hold
    del wm["layers.2.weight"]  # a shard tensor the index does not name
    data["metadata"]["total_size"] += 8  # disagrees with the shards
    index.write_text(json.dumps(data))
    # a tensor in two shards: shard 3 rewritten with a copy of shard 1's first tensor
    from safetensors.torch import load_file, save_file

    first = load_file(str(folder / shards[0]))
    third = load_file(str(folder / shards[2]))
    dup = next(iter(first))
    save_file({**third, dup: first[dup]}, str(folder / shards[2]), metadata={"format": "pt"})
    # an extra shard file beside the set
    (folder / "model-00004-of-00004.safetensors").write_bytes((folder / shards[0]).read_bytes())
    fr = _check(tmp_path, str(index))[0]
    kinds = sorted(k for k, _ in _problems(fr))
    assert kinds == ["duplicate-tensor", "extra-shard", "missing-tensor", "total-size",
                     "unindexed-tensor"], _problems(fr)
    text = " | ".join(m for _, m in _problems(fr))
    for name in ("ghost.weight", "layers.2.weight", dup, "model-00004-of-00004.safetensors",
                 "total_size"):
        assert name in text
    assert fr.status == "fail" and all(f.action == "fail" for f in fr.findings)


def test_missing_shard_and_lfs_pointer_shard(tmp_path: Path) -> None:
    index = make_set(tmp_path / "m", safe=False)
    shards = sorted(set(index_of(index)["weight_map"].values()))
    os.unlink(index.parent / shards[0])
    (index.parent / shards[1]).write_text(
        "version https://git-lfs.github.com/spec/v1\noid sha256:" + "ab" * 32 + "\nsize 35000\n")
    fr = _check(tmp_path, str(index.parent / shards[2]))[0]  # named by its last shard
    got = dict((k, m) for k, m in _problems(fr))
    assert set(got) == {"missing-shard", "lfs-pointer-shard"}
    assert shards[0] in got["missing-shard"] and shards[1] in got["lfs-pointer-shard"]
    assert fr.status == "fail"


def test_staged_shard_checks_the_set_in_a_git_repository(tmp_path: Path) -> None:
    """The hook receives only the staged shards: the set is still checked as one unit; a
    repository walk finds the set once."""
    index = make_set(tmp_path / "m")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    shard = sorted(set(index_of(index)["weight_map"].values()))[0]
    p = subprocess.run([sys.executable, "-m", "ckpt_guard", "check", "--format", "json",
                        f"m/{shard}"], cwd=tmp_path, capture_output=True, text=True)
    files = json.loads(p.stdout)["files"]
    assert [f["path"] for f in files] == ["m/model.safetensors.index.json"], p.stderr
    assert len(files[0]["shards"]) == 3
    p = subprocess.run([sys.executable, "-m", "ckpt_guard", "check", "--format", "json"],
                       cwd=tmp_path, capture_output=True, text=True)
    assert [f["path"] for f in json.loads(p.stdout)["files"]] == ["m/model.safetensors.index.json"]


def test_markdown_shows_a_set_as_one_row_with_its_shards(tmp_path: Path) -> None:
    from ckpt_guard.report.markdown import render_markdown
    from ckpt_guard.report.model import Report

    make_set(tmp_path / "m")
    report = Report(files=_check(tmp_path, str(tmp_path / "m")))
    md = render_markdown(report)
    rows = [line for line in md.splitlines() if line.startswith("| <code>")]
    assert sum("index.json" in r for r in rows) == 1
    assert md.count("| <code>model-0000") == 3  # the shard table in the details


def test_a_local_shard_without_its_set_is_checked_alone_with_a_note(tmp_path: Path) -> None:
    """As for a shard's URL (tests/remote/test_remote_shard_url.py): a file named like a
    shard that no index beside it claims is checked on its own, and the report says why."""
    index = make_set(tmp_path / "m")
    shards = sorted(set(index_of(index)["weight_map"].values()))
    cases = {"alone": None, "other": b"", "bad": b"not json"}
    for folder, index_text in cases.items():
        (tmp_path / folder).mkdir()
        (tmp_path / folder / shards[0]).write_bytes((index.parent / shards[0]).read_bytes())
        if index_text is not None:
            other = {**index_of(index), "weight_map": {"w": "model-00009-of-00009.safetensors"}}
            (tmp_path / folder / index.name).write_bytes(index_text or json.dumps(other).encode())
    alone, other, bad = _check(tmp_path, *(str(tmp_path / f / shards[0]) for f in cases))
    for fr in (alone, other, bad):
        assert fr.format == "safetensors" and not fr.shards
    assert ("named like a shard, but the set was not found (its index "
            "model.safetensors.index.json is not beside it): checked as a single file") \
        in alone.notes
    assert any("model.safetensors.index.json does not name it" in n for n in other.notes)
    assert any("model.safetensors.index.json cannot be read" in n for n in bad.notes)
    # A shard of a set it belongs to says nothing of the kind.
    (member,) = _check(tmp_path, str(index.parent / shards[0]))
    assert member.shards and not any("set was not found" in n for n in member.notes)
