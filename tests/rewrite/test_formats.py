"""on-overflow handling, safetensors in place, legacy in ⇒ zip out."""

from __future__ import annotations

import zipfile

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from tests.rewrite.helpers import fix_rules, run_fix


def _awkward() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {
        "big.weight": torch.randn(64, 8) * 1e5,  # beyond FP16's 65504
        "tiny.weight": torch.randn(64, 8) * 1e-9,  # flushes to zero in FP16
        "ok.weight": torch.randn(64, 8),
        "ok.bias": torch.randn(64),
        "ids": torch.arange(10),
    }


@pytest.mark.parametrize("fmt", ["torch", "safetensors"])
@pytest.mark.parametrize("on_overflow", ["keep", "bfloat16", "fail"])
def test_on_overflow(tmp_path, fmt, on_overflow):
    sd = _awkward()
    path = tmp_path / ("w.pt" if fmt == "torch" else "w.safetensors")
    if fmt == "torch":
        torch.save(sd, path)
    else:
        save_file(sd, str(path))
    before = path.read_bytes()
    result = run_fix(path, fix_rules(fp32_payload={"on-overflow": on_overflow, "keep-fp32": []}))
    if on_overflow == "fail":
        assert result.error and "on-overflow: fail" in result.error
        assert path.read_bytes() == before
        return
    assert result.error is None and result.changed
    fixed = torch.load(path, weights_only=True) if fmt == "torch" else load_file(str(path))
    assert fixed["ok.weight"].dtype == torch.float16
    assert torch.equal(fixed["ok.weight"], sd["ok.weight"].half())
    assert torch.equal(fixed["ids"], sd["ids"])
    kept = dict(result.kept_fp32)
    for name in ("big.weight", "tiny.weight"):
        if on_overflow == "keep":
            assert fixed[name].dtype == torch.float32 and torch.equal(fixed[name], sd[name])
            assert name in kept
        else:
            assert fixed[name].dtype == torch.bfloat16
            assert torch.equal(fixed[name], sd[name].to(torch.bfloat16))
    if on_overflow == "keep":
        assert "FP16 range" in kept["big.weight"] and "flush to zero" in kept["tiny.weight"]


def test_safetensors_cast_keeps_metadata_and_library_layout(tmp_path):
    torch.manual_seed(0)
    sd = {"encoder.weight": torch.randn(16, 8), "encoder.bias": torch.randn(16),
          "norm.weight": torch.ones(16), "norm.bias": torch.zeros(16),
          "embed.weight": torch.randn(10, 8).half(), "step": torch.tensor(7)}
    meta = {"format": "pt", "note": "ünïcode"}
    path = tmp_path / "model.safetensors"
    save_file(sd, str(path), metadata=meta)
    result = run_fix(path)
    assert result.error is None and result.changed and result.size_after < result.size_before
    with safe_open(str(path), "pt") as f:
        assert f.metadata() == meta
    fixed = load_file(str(path))
    assert fixed["encoder.weight"].dtype == torch.float16
    assert fixed["norm.weight"].dtype == torch.float32  # 1-D norm weight kept
    # Laid out as the safetensors library writes the same tensors: same header entries in
    # the same order, same data bytes (the metadata map's order is the library's hash order).
    expected = {k: (v.half() if fixed[k].dtype == torch.float16 and v.dtype == torch.float32
                    else v) for k, v in sd.items()}
    ref = tmp_path / "ref.safetensors"
    save_file(expected, str(ref), metadata=meta)
    ours, theirs = _layout(path), _layout(ref)
    assert ours == theirs


def _layout(path):
    import json
    import struct

    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0
    header = json.loads(raw[8:8 + n], object_pairs_hook=list)
    entries = [(k, v) for k, v in header if k != "__metadata__"]
    return n, entries, raw[8 + n:]


def test_legacy_file_becomes_zip(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.BatchNorm1d(64))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(4, 64)).sum().backward()
    opt.step()
    sd = model.state_dict()
    path = tmp_path / "old.pth"
    torch.save({"model": sd, "tied": sd["0.weight"], "optimizer": opt.state_dict()}, path,
               _use_new_zipfile_serialization=False)
    assert not zipfile.is_zipfile(path)
    result = run_fix(path)
    assert result.error is None and result.changed
    assert "legacy format rewritten as zip" in result.notes
    assert zipfile.is_zipfile(path)
    fixed = torch.load(path, weights_only=True, mmap=True)
    assert fixed["optimizer"] is None
    assert fixed["tied"] is fixed["model"]["0.weight"]
    assert torch.equal(fixed["model"]["0.weight"], sd["0.weight"].half())
    assert torch.equal(fixed["model"]["1.running_var"], sd["1.running_var"])


def test_never_writes_a_larger_file(tmp_path):
    """A small legacy file gains zip headers and alignment padding: bigger than it saves."""
    sd = {f"t{i}": torch.arange(3, dtype=torch.int64) + i for i in range(20)}
    sched = {"last_epoch": 3, "base_lrs": [0.1], "_step_count": 4}
    path = tmp_path / "small.pth"
    torch.save({"sd": sd, "scheduler": sched}, path, _use_new_zipfile_serialization=False)
    before = path.read_bytes()
    result = run_fix(path)
    assert result.error is None and not result.changed
    assert any("would be larger" in n for n in result.notes)
    assert path.read_bytes() == before


def test_convert_state_dict_to_safetensors(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(32, 16), torch.nn.LayerNorm(16))
    sd = model.state_dict()
    path = tmp_path / "model.pt"
    torch.save(sd, path)
    before = path.read_bytes()
    result = run_fix(path, convert="safetensors")
    assert result.error is None and result.changed
    out = tmp_path / "model.safetensors"
    assert path.read_bytes() == before  # the input is kept
    loaded = load_file(str(out))
    with safe_open(str(out), "pt") as f:
        assert f.metadata() == {"format": "pt"}
    assert loaded["0.weight"].dtype == torch.float16
    assert torch.equal(loaded["0.weight"], sd["0.weight"].half())
    assert torch.equal(loaded["1.weight"], sd["1.weight"])  # LayerNorm stays FP32
    assert set(loaded) == set(sd)


def test_convert_refuses_tied_weights(tmp_path):
    w = torch.randn(4, 4)
    path = tmp_path / "tied.pt"
    torch.save({"a": w, "b": w}, path)
    result = run_fix(path, convert="safetensors")
    assert "tied" in " ".join(result.notes)
    assert not (tmp_path / "tied.safetensors").exists()
    # still fixed (issue 9, defect 1), as a torch zip under its own name: the tie is kept
    fixed = torch.load(path, weights_only=True)
    assert fixed["a"].untyped_storage().data_ptr() == fixed["b"].untyped_storage().data_ptr()


def test_tensor_attributes_and_parameter_state_survive_a_cast(tmp_path):
    t = torch.randn(4, 4)
    t.tag = {"x": 1}  # pickled through _rebuild_from_type_v2 with its state
    p = torch.nn.Parameter(torch.randn(3))
    p.note = 2  # _rebuild_parameter_with_state
    path = tmp_path / "attrs.pt"
    torch.save({"t": t, "p": p}, path)
    result = run_fix(path)
    assert result.error is None and result.changed
    fixed = torch.load(path, weights_only=False)
    assert fixed["t"].tag == {"x": 1} and fixed["p"].note == 2
    assert torch.equal(fixed["t"], t.half()) and torch.equal(fixed["p"].data, p.data.half())
