"""One shard's URL stands for its set (read/remote_expand.py), over plain HTTP as on the Hub:
the index beside it (``model.safetensors.index.json`` / ``pytorch_model.bin.index.json``, as
transformers names it) is found and the whole set judged as one unit — the same report as the
index checked locally. Without a readable index that names the shard, the shard is checked
alone with a note saying the set was not found (never an error). Real parts: sets written by
huggingface_hub.save_torch_state_dict, a loopback HTTP server, the stand-in Hub."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.remote.servers import FakeHub, FileServer
from tests.remote.test_remote_sets import _check, _cli, _comparable, _served, _set
from tests.sharded.sets import index_of

pytest.importorskip("huggingface_hub")


@pytest.mark.parametrize("safe", [True, False], ids=["safetensors", "torch"])
def test_a_shard_url_is_judged_as_its_whole_set(tmp_path: Path, safe: bool) -> None:
    index = _set(tmp_path / "m", safe=safe)
    shards = sorted(set(index_of(index)["weight_map"].values()))
    local = _check(tmp_path, str(index))[0]
    with FileServer(_served(index)) as srv:
        # two shards of one set named: one unit, checked once
        files = _check(tmp_path, f"{srv.url}/m/{shards[1]}", f"{srv.url}/m/{shards[0]}")
    assert [f.path for f in files] == [f"{srv.url}/m/{index.name}"]
    assert _comparable(files[0]) == _comparable(local)
    assert [r["path"] for r in files[0].shards] == shards
    assert not any("set was not found" in n for n in files[0].notes)


def test_without_its_index_a_shard_url_is_checked_alone_with_a_note(tmp_path: Path) -> None:
    index = _set(tmp_path / "m")
    shards = sorted(set(index_of(index)["weight_map"].values()))
    (tmp_path / "alone").mkdir()
    copy = tmp_path / "alone" / shards[1]  # locally too: no index beside it
    copy.write_bytes((index.parent / shards[1]).read_bytes())
    alone = _check(tmp_path, str(copy))[0]
    served = _served(index)
    del served[f"/m/{index.name}"]
    served["/other/model-00001-of-00009.safetensors"] = index.parent / shards[0]
    served["/other/model.safetensors.index.json"] = index  # names other files only
    served["/bad/model-00001-of-00002.safetensors"] = index.parent / shards[0]
    served["/bad/model.safetensors.index.json"] = b"not json"
    with FileServer(served) as srv:
        fr, foreign, broken = _check(tmp_path, f"{srv.url}/m/{shards[1]}?download=1",
                                     f"{srv.url}/other/model-00001-of-00009.safetensors",
                                     f"{srv.url}/bad/model-00001-of-00002.safetensors")
        asked = [p for _m, p, _h in srv.log.requests]
    assert "/m/model.safetensors.index.json" in asked  # looked for, without the query
    assert fr.path == f"{srv.url}/m/{shards[1]}?download=1"
    assert fr.format == "safetensors" and fr.status == alone.status
    assert fr.tensor_count == alone.tensor_count and not fr.shards
    assert not any(f.rule in ("unreadable", "shard-index") for f in fr.findings)
    assert ("named like a shard, but the set was not found (its index "
            "model.safetensors.index.json is not beside it): checked as a single file") \
        in fr.notes
    assert foreign.format == "safetensors" and any(
        "model.safetensors.index.json does not name it" in n for n in foreign.notes)
    assert broken.format == "safetensors" and any(
        "model.safetensors.index.json cannot be read" in n for n in broken.notes)


def test_hub_shard_without_its_index_is_checked_alone_with_a_note(tmp_path: Path) -> None:
    index = _set(tmp_path / "m")
    shards = sorted(set(index_of(index)["weight_map"].values()))
    files = {p.name: p.read_bytes() for p in index.parent.iterdir() if p != index}
    with FakeHub("org/repo", files) as hub:
        r = _cli("check", "--format", "json", f"hf://org/repo/{shards[0]}",
                 env={"HF_ENDPOINT": hub.url})
    assert r.returncode in (0, 1) and "Traceback" not in r.stderr, r.stderr
    (got,) = json.loads(r.stdout)["files"]
    assert got["path"] == f"hf://org/repo@{hub.sha}/{shards[0]}"
    assert got["format"] == "safetensors"
    assert any("the set was not found (its index model.safetensors.index.json is not beside "
               "it)" in n for n in got["notes"])
