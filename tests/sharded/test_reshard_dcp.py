"""Re-sharding a torch.distributed.checkpoint HF-storage set (hf_storage.py, torch 2.13):
safetensors shards whose ``__metadata__`` carries ``DCP_SHARDING_INFO`` — per shard, an entry
for every tensor of that shard, which ``HuggingFaceStorageReader.read_metadata`` looks up for
each key of the file (a missing key is a KeyError). A re-shard rebuilds it per new shard,
into N shards and into one ``model.safetensors``; truth from torch's own reader and dcp.load,
and safetensors. Sets written by torch's own HuggingFaceStorageWriter in this process."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from tests.sharded.test_fix import _run

dcp = pytest.importorskip("torch.distributed.checkpoint")
from torch.distributed.checkpoint import (  # noqa: E402
    HuggingFaceStorageReader,
    HuggingFaceStorageWriter,
)


def _state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    sd = {f"layers.{i}.weight": torch.randn(48, 48, generator=g) for i in range(5)}
    sd["step"] = torch.tensor([7], dtype=torch.int64)
    return sd


def _save(where: Path) -> Path:
    sd = _state()
    mapping = {k: 1 + i % 3 for i, k in enumerate(sd)}  # three shards
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(sd, storage_writer=HuggingFaceStorageWriter(str(where),
                                                             fqn_to_index_mapping=mapping))
    return where


def _dcp_load(folder: Path) -> dict[str, torch.Tensor]:
    """dcp.load through torch's HF storage reader, into tensors of the stored dtypes."""
    md = HuggingFaceStorageReader(str(folder)).read_metadata()
    back = {k: torch.zeros(tuple(v.size), dtype=v.properties.dtype)
            for k, v in md.state_dict_metadata.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(back, storage_reader=HuggingFaceStorageReader(str(folder)))
    return back


def _fix(tmp: Path, folder: str, limit: str) -> dict:
    (tmp / "p.yml").write_text(
        "version: 1\nrules:\n  fp32-payload: {action: fix, cast-to: float16, max-bytes: 1kB}\n"
        f"shards: {{max-shard-size: {limit}}}\n")
    p = _run(tmp, "fix", "--policy", "p.yml", "--format", "json", folder)
    assert p.returncode == 0, p.stdout + p.stderr
    (fr,) = json.loads(p.stdout)["files"]
    assert fr["status"] == "fixed", fr
    return fr


@pytest.mark.parametrize("limit", ["6kB", "5GB"], ids=["into-more-shards", "into-one-file"])
def test_hf_storage_set_reshards_and_torch_still_loads_it(tmp_path: Path, limit: str) -> None:
    d = _save(tmp_path / "hf")
    assert len([n for n in os.listdir(d) if n.endswith(".safetensors")]) == 3
    with safe_open(d / "model-00001-of-00003.safetensors", "pt") as f:
        assert "DCP_SHARDING_INFO" in f.metadata()
    want = {k: v.half() if v.dtype == torch.float32 else v for k, v in _state().items()}
    _fix(tmp_path, "hf", limit)
    files = sorted(n for n in os.listdir(d) if n.endswith(".safetensors"))
    if limit == "5GB":
        assert sorted(os.listdir(d)) == ["model.safetensors"]
    else:
        assert len(files) > 3 and "model.safetensors.index.json" in os.listdir(d)
    for name in files:  # each shard: its own tensors' entries, offsets as torch wrote them
        with safe_open(d / name, "pt") as f:
            info = json.loads(f.metadata()["DCP_SHARDING_INFO"])
            assert sorted(info) == sorted(f.keys())
            assert all(info[k] == {"saved_offsets": [0] * len(want[k].shape)} for k in info)
            assert f.metadata()["DCP_VERSION"] == "1.0"
    got = _dcp_load(d)
    assert got.keys() == want.keys()
    assert all(got[k].dtype == want[k].dtype and torch.equal(got[k], want[k]) for k in want)
