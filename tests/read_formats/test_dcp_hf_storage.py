"""Issue 10: torch.distributed.checkpoint's HF storage (torch/distributed/checkpoint/
hf_storage.py, torch 2.13). ``HuggingFaceStorageWriter`` writes safetensors shards (their
``__metadata__`` carries DCP_SHARDING_INFO and DCP_VERSION) and ``model.safetensors.index.json``;
``HuggingFaceStorageReader`` reads every ``*.safetensors`` by key — nothing is pickled. The set
is read as the sharded-safetensors set it is, framework ``dcp``, with DCP's optimizer FQNs
(``optim.state.<param>.<slot>``) as optimizer state. Fixtures are torch's own writer's, in this
single process; truth from torch's own reader."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from tests.cli.conftest import run_cli

dcp = pytest.importorskip("torch.distributed.checkpoint")
from torch.distributed.checkpoint import (  # noqa: E402
    HuggingFaceStorageReader,
    HuggingFaceStorageWriter,
)
from torch.distributed.checkpoint.state_dict import get_state_dict  # noqa: E402


def _trained() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Linear(16, 4)).to(torch.bfloat16)
    m[1].float()
    opt = torch.optim.Adam(m.parameters())
    m[1](m[0](torch.ones(2, 8, dtype=torch.bfloat16)).float()).sum().backward()
    opt.step()
    return m, opt


def _save(state: dict, where: Path, mapping: dict[str, int] | None = None) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, storage_writer=HuggingFaceStorageWriter(
            str(where), fqn_to_index_mapping=mapping))
    return where


def test_an_hf_storage_set_with_optimizer_state(tmp_path: Path) -> None:
    m, opt = _trained()
    msd, osd = get_state_dict(m, opt)
    # Only tensors: the writer's SAFETENSORS format cannot hold param_groups (below).
    state = {"model": msd, "optim": {"state": osd["state"]}}
    fqns = {f"model.{k}": 1 for k in msd} | {
        f"optim.state.{p}.{s}": 2 for p, slots in osd["state"].items() for s in slots}
    d = _save(state, tmp_path / "hf", fqns)
    assert sorted(p.name for p in d.iterdir()) == [
        "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors",
        "model.safetensors.index.json"]
    md = HuggingFaceStorageReader(str(d)).read_metadata()  # torch's own view
    size = {k: v.size.numel() * v.properties.dtype.itemsize
            for k, v in md.state_dict_metadata.items()}
    dtypes = {str(v.properties.dtype).removeprefix("torch.")
              for v in md.state_dict_metadata.values()}
    back = {k: torch.zeros(tuple(v.size), dtype=v.properties.dtype)
            for k, v in md.state_dict_metadata.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(back, storage_reader=HuggingFaceStorageReader(str(d)))
    assert torch.equal(back["model.0.weight"], msd["0.weight"])

    proc = run_cli("check", "--format", "json", str(d))
    [fr] = json.loads(proc.stdout)["files"]
    assert proc.returncode == 1, fr
    assert fr["format"] == "sharded-safetensors" and fr["framework"] == "dcp"
    assert fr["tensor_bytes"]["total"] == sum(size.values())
    optim = sum(b for k, b in size.items() if k.startswith("optim."))
    assert fr["tensor_bytes"]["by_role"]["optimizer"] == optim
    assert fr["tensor_bytes"]["by_role"]["weights"] == sum(size.values()) - optim
    assert set(fr["tensor_bytes"]["by_dtype"]) == dtypes == {"bfloat16", "float32"}
    [f] = [f for f in fr["findings"] if f["rule"] == "optimizer-state"]
    assert f["bytes"] == optim and "optim.state.<param>.<slot>" in f["message"]
    assert fr["bytes_removable"] == 0  # fix takes no entry out of the set, and says so

    fixp = tmp_path / "p.yml"
    fixp.write_text("version: 1\nrules:\n  optimizer-state: {action: fix}\n")
    proc = run_cli("check", "--policy", str(fixp), "--format", "json", str(d))
    [f] = [f for f in json.loads(proc.stdout)["files"][0]["findings"]
           if f["rule"] == "optimizer-state"]
    assert f["fixable"] is False and "HuggingFaceStorageWriter" in f["message"]


def test_non_tensor_items_break_the_writers_shard_and_fail(tmp_path: Path) -> None:
    """With SAFETENSORS serialization, FileSystemWriter writes non-tensor items' torch.save
    bytes before the safetensors data (filesystem.py _write_files_from_queue): torch's own
    reader then cannot open the shard. ckpt-guard does not pass it either."""
    m, opt = _trained()
    msd, osd = get_state_dict(m, opt)
    d = _save({"model": msd, "optim": osd}, tmp_path / "hf")  # param_groups: non-tensors
    with pytest.raises(BaseException, match="header"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        HuggingFaceStorageReader(str(d)).read_metadata()
    proc = run_cli("check", "--format", "json", str(d))
    [fr] = json.loads(proc.stdout)["files"]
    assert proc.returncode == 1 and fr["status"] in ("fail", "error"), fr
    assert {"shard-index", "unreadable"} & {f["rule"] for f in fr["findings"]}
