"""Issue 10, DCP directories: what ``.metadata`` and the ``.distcp`` layout say (per-FQN
dtype, size, chunks; optimizer state nested or flattened, as ``get_state_dict`` writes it),
and ``fix`` with ``convert: safetensors`` consolidating the model weights without torch —
compared with torch's own consolidation (``dcp_to_torch_save``) on the same directories.
Fixtures are written by ``torch.distributed.checkpoint`` in this process (``no_dist``)."""

from __future__ import annotations

import json
import os
import pickle
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

from tests.cli.conftest import run_cli

dcp = pytest.importorskip("torch.distributed.checkpoint")
from torch.distributed.checkpoint import metadata as md  # noqa: E402
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save  # noqa: E402
from torch.distributed.checkpoint.state_dict import (  # noqa: E402
    StateDictOptions,
    get_state_dict,
)
from torch.distributed.checkpoint.state_dict_saver import save  # noqa: E402

safetensors_torch = pytest.importorskip("safetensors.torch")


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(6, 8)
        self.norm = nn.LayerNorm(8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.norm(self.fc1(x)))


def _save(state: dict, where: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        save(state, checkpoint_id=str(where), no_dist=True)
    return where


def _trained(flat: bool) -> tuple[dict, dict]:
    torch.manual_seed(0)
    net = _Net()
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    net(torch.randn(4, 6)).sum().backward()
    opt.step()
    return get_state_dict(net, opt, options=StateDictOptions(flatten_optimizer_state_dict=flat))


def _param_bytes(msd: dict) -> int:
    return sum(t.numel() * t.element_size() for t in msd.values())


def _check(path: Path, *args: str) -> dict:
    proc = run_cli("check", "--format", "json", *args, str(path))
    return json.loads(proc.stdout)["files"][0]


def _torch_consolidated(d: Path, tmp: Path) -> dict:
    out = tmp / f"{d.name}-torch.pt"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp_to_torch_save(str(d), str(out))
    return torch.load(out, weights_only=False)


@pytest.mark.parametrize("layout", ["nested", "flattened", "torchtitan"])
def test_roles_and_bytes_from_the_metadata(tmp_path: Path, layout: str) -> None:
    msd, osd = _trained(flat=layout != "nested")
    if layout == "torchtitan":  # model FQNs at the top level, optimizer flattened
        sched = {"base_lrs": [1e-3], "last_epoch": 3, "_step_count": 4, "_last_lr": [1e-3]}
        state = {**msd, "optimizer": osd, "lr_scheduler": sched,
                 "train_state": {"step": 3}}
    else:
        state = {"model": msd, "optim": osd, "step": 3}
    d = _save(state, tmp_path / layout)
    fr = _check(d)
    assert (fr["format"], fr["framework"]) == ("dcp-dir", "dcp")
    weights = _param_bytes(msd)
    n_params = len(msd)
    # AdamW: exp_avg and exp_avg_sq like each parameter, plus a float32 step per parameter
    optim = 2 * weights + 4 * n_params
    assert fr["tensor_bytes"]["by_role"] == {"weights": weights, "optimizer": optim}
    assert fr["tensor_bytes"]["by_dtype"] == {"float32": weights + optim}
    assert fr["tensor_count"] == 4 * n_params
    [opt] = [f for f in fr["findings"] if f["rule"] == "optimizer-state"]
    assert opt["bytes"] == optim and opt["action"] == "fail"
    assert f"Adam-style state (exp_avg, exp_avg_sq) for {n_params} params" in opt["message"]
    if layout == "torchtitan":
        [train] = [f for f in fr["findings"] if f["rule"] == "training-state"]
        assert "LR scheduler at 'lr_scheduler'" in train["message"]


def _policy(tmp_path: Path, extra: str = "") -> Path:
    p = tmp_path / "policy.yml"
    p.write_text("version: 1\nconvert: safetensors\nrules:\n  optimizer-state: fix\n" + extra)
    return p


@pytest.mark.parametrize("flat", [False, True])
def test_convert_writes_the_model_as_torch_consolidates_it(tmp_path: Path, flat: bool) -> None:
    msd, osd = _trained(flat)
    d = _save({"model": msd, "optim": osd, "step": 3}, tmp_path / "ckpt")
    before = {p.name: p.read_bytes() for p in d.iterdir()}
    proc = run_cli("fix", "--policy", str(_policy(tmp_path)), "--format", "json", str(d))
    fr = json.loads(proc.stdout)["files"][0]
    assert fr["status"] == "fixed", fr
    out = tmp_path / "ckpt.safetensors"
    assert {p.name: p.read_bytes() for p in d.iterdir()} == before  # left as it is
    ours = safetensors_torch.load_file(str(out))
    ref = _torch_consolidated(d, tmp_path)["model"]
    assert sorted(ours) == sorted(ref)
    for k, v in ref.items():
        assert ours[k].dtype == v.dtype and torch.equal(ours[k], v), k
    # a weights-only file: torch loads it with weights_only=True too, nothing else in it
    assert _check(out)["findings"] == []


def test_convert_casts_per_fp32_payload_and_keeps_normalization(tmp_path: Path) -> None:
    msd, osd = _trained(flat=True)
    d = _save({"model": msd, "optim": osd}, tmp_path / "ckpt")
    pol = _policy(tmp_path, "  fp32-payload: {action: fix, max-bytes: 0, cast-to: float16}\n")
    dry = run_cli("fix", "--dry-run", "--policy", str(pol), str(d))
    assert dry.returncode == 0 and not (tmp_path / "ckpt.safetensors").exists()
    run_cli("fix", "--policy", str(pol), str(d))
    ours = safetensors_torch.load_file(str(tmp_path / "ckpt.safetensors"))
    ref = _torch_consolidated(d, tmp_path)["model"]
    for k, v in ref.items():
        if k.startswith("norm."):  # a LayerNorm stays float32
            assert ours[k].dtype == torch.float32 and torch.equal(ours[k], v), k
        else:  # round to nearest even, as torch's own cast
            assert ours[k].dtype == torch.float16 and torch.equal(ours[k], v.half()), k


def _shard(d: Path, fqn: str, full: torch.Tensor, dim: int, cuts: list[int]) -> None:
    """Re-describe pieces saved as separate FQNs ``<fqn>__<i>`` as the chunks of one
    sharded tensor, with torch's own metadata classes (what a multi-rank save writes)."""
    meta = pickle.loads((d / ".metadata").read_bytes())
    chunks = []
    for i, (a, b) in enumerate(zip([0, *cuts], [*cuts, full.shape[dim]], strict=True)):
        piece = f"{fqn}__{i}"
        pm = meta.state_dict_metadata.pop(piece)
        offsets = [0] * full.dim()
        offsets[dim] = a
        sizes = list(full.shape)
        sizes[dim] = b - a
        assert list(pm.size) == sizes
        chunks.append(md.ChunkStorageMetadata(torch.Size(offsets), torch.Size(sizes)))
        [(old, info)] = [(k, v) for k, v in meta.storage_data.items() if k.fqn == piece]
        del meta.storage_data[old]
        meta.storage_data[md.MetadataIndex(fqn, torch.Size(offsets), i)] = info
        meta.planner_data.pop(piece, None)
    meta.state_dict_metadata[fqn] = md.TensorStorageMetadata(pm.properties, full.shape, chunks)
    meta.planner_data[fqn] = tuple(fqn.split(".", 1))
    (d / ".metadata").write_bytes(pickle.dumps(meta))


def test_sharded_tensors_are_tiled_from_their_chunks(tmp_path: Path) -> None:
    torch.manual_seed(1)
    rows = torch.randn(10, 7)  # sharded along dim 0 (FSDP), uneven
    cols = torch.randn(5, 9)  # along dim 1: each row gathered from three chunks
    pieces = {"model.rows__0": rows[:4], "model.rows__1": rows[4:],
              "model.cols__0": cols[:, :2].clone(), "model.cols__1": cols[:, 2:6].clone(),
              "model.cols__2": cols[:, 6:].t().contiguous().t()}  # saved non-contiguous
    d = _save(pieces, tmp_path / "sharded")
    _shard(d, "model.rows", rows, 0, [4])
    _shard(d, "model.cols", cols, 1, [2, 6])
    ref = _torch_consolidated(d, tmp_path)["model"]
    assert torch.equal(ref["rows"], rows) and torch.equal(ref["cols"], cols)
    fr = _check(d)
    assert fr["tensor_bytes"]["by_role"] == {"weights": (70 + 45) * 4}
    assert fr["tensor_count"] == 2
    run_cli("fix", "--policy", str(_policy(tmp_path)), str(d))
    ours = safetensors_torch.load_file(str(tmp_path / "sharded.safetensors"))
    assert sorted(ours) == ["cols", "rows"]
    assert torch.equal(ours["rows"], rows) and torch.equal(ours["cols"], cols)


def test_chunks_that_do_not_tile_or_do_not_match_their_item_are_unreadable(
        tmp_path: Path) -> None:
    d = _save({"model.w__0": torch.ones(3, 2), "model.w__1": torch.ones(3, 2)},
              tmp_path / "bad")
    _shard(d, "model.w", torch.ones(6, 2), 0, [3])
    meta = pickle.loads((d / ".metadata").read_bytes())
    meta.state_dict_metadata["model.w"].chunks[1].offsets = torch.Size([2, 0])  # overlap
    meta.state_dict_metadata["model.w"].chunks[1].sizes = torch.Size([3, 2])
    (d / ".metadata").write_bytes(pickle.dumps(meta))
    fr = _check(d)
    assert fr["status"] == "error"
    assert any(f["rule"] == "unreadable" and "overlap" in f["message"] for f in fr["findings"])

    d2 = _save({"w": torch.ones(4)}, tmp_path / "mismatch")
    meta = pickle.loads((d2 / ".metadata").read_bytes())
    meta.state_dict_metadata["w"].properties.dtype = torch.float16
    (d2 / ".metadata").write_bytes(pickle.dumps(meta))
    fr = _check(d2)
    assert any(f["rule"] == "unreadable" and "metadata says float16" in f["message"]
               for f in fr["findings"]), fr["findings"]
    proc = run_cli("fix", "--policy", str(_policy(tmp_path)), str(d2))
    assert proc.returncode == 1 and not (tmp_path / "mismatch.safetensors").exists()


def test_an_unsafe_item_is_never_converted(tmp_path: Path) -> None:
    class _Payload:
        def __reduce__(self):
            return (os.system, ("true",))

    d = _save({"model": {"w": torch.ones(2)}, "extra": _Payload()}, tmp_path / "evil")
    proc = run_cli("fix", "--policy", str(_policy(tmp_path)), "--format", "json", str(d))
    fr = json.loads(proc.stdout)["files"][0]
    assert fr["status"] != "fixed" and not (tmp_path / "evil.safetensors").exists()
    assert any(f["rule"] == "unsafe-pickle" for f in fr["findings"])


def test_blocks_smaller_than_a_row_still_tile(tmp_path: Path, monkeypatch) -> None:
    """Tiny output blocks (a few elements) exercise the split below the first dimension:
    the same bytes as torch's consolidation, in-process through the rewrite API."""
    from ckpt_guard.analyze import analyze
    from ckpt_guard.read import read_path
    from ckpt_guard.rewrite import dcp_convert, fix_file

    torch.manual_seed(2)
    full = torch.randn(3, 4, 5)
    d = _save({"model": {"t__0": full[:, :1].clone(), "t__1": full[:, 1:].clone(),
                         "s": torch.tensor(2.5)}}, tmp_path / "blocks")
    _shard(d, "model.t", full, 1, [1])
    monkeypatch.setattr(dcp_convert, "CHUNK", 12)  # three float32 values per block
    out = tmp_path / "out"
    res = fix_file(str(d), analyze(read_path(str(d))), {}, convert="safetensors",
                   out_path=str(out))
    assert res.error is None and res.out_path == f"{out}.safetensors"
    ours = safetensors_torch.load_file(res.out_path)
    ref = _torch_consolidated(d, tmp_path)["model"]
    assert torch.equal(ours["t"], ref["t"]) and torch.equal(ours["s"], ref["s"])
