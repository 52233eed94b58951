"""keep-FP32 from structure, not substrings or shapes (issue 9, defect 6): name tokens,
BatchNorm statistics, the module class a full-module pickle names; user globs keep their
documented glob semantics."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ckpt_guard.analyze import analyze
from ckpt_guard.policy.keep_fp32 import KeepFP32, is_norm_name, name_tokens
from ckpt_guard.read import read_path


@pytest.mark.parametrize("name, norm", [
    ("bn1", True), ("bn", True), ("LayerNorm", True), ("ln_f", True), ("ln_2", True),
    ("attention_norm", True), ("final_layernorm", True), ("norm", True), ("RMSNorm", True),
    ("GroupNorm", True), ("BatchNorm2d", True), ("FrozenBatchNorm2d", True),
    ("InstanceNorm3d", True), ("gn2", True), ("layer_norm", True), ("q_norm", True),
    ("normal_layers", False), ("denormalize", False), ("conv", False), ("linear", False),
    ("enorm", False), ("lnx", False), ("bnb", False), ("tp", False),
])
def test_norm_names_by_token(name, norm):
    assert is_norm_name(name) is norm, name_tokens(name)


def test_state_dict_names_and_siblings(tmp_path):
    sd = {
        "decoder.normal_layers.0.conv.weight": torch.ones(8, 4, 3, 3),  # not a norm layer
        "decoder.normal_layers.0.conv.bias": torch.ones(8),
        "e3nn.layers.0.tp.weight": torch.ones(96),  # flattened equivariant weights: 1-D
        "e3nn.layers.0.linear.weight": torch.ones(40),
        "encoder.norm1.weight": torch.ones(8), "encoder.norm1.bias": torch.ones(8),
        "transformer.ln_f.weight": torch.ones(8),
        "blocks.0.norms.1.weight": torch.ones(8),  # a ModuleList of norms
        "model.1.weight": torch.ones(8), "model.1.bias": torch.ones(8),  # BatchNorm by index
        "model.1.running_mean": torch.zeros(8), "model.1.running_var": torch.ones(8),
        "model.1.num_batches_tracked": torch.tensor(3),
        "head.weight": torch.ones(2, 8),
    }
    path = tmp_path / "sd.pt"
    torch.save(sd, path)
    a = analyze(read_path(str(path)))
    keep = KeepFP32({}, ((t.path, t.ref) for t in a.tensors), a.checkpoint.root)
    kept = {t.path for t in a.tensors if keep.reason(t.path)}
    assert kept == {"encoder.norm1.weight", "encoder.norm1.bias", "transformer.ln_f.weight",
                    "blocks.0.norms.1.weight", "model.1.weight", "model.1.bias",
                    "model.1.running_mean", "model.1.running_var",
                    "model.1.num_batches_tracked"}
    # A user's list says exactly what stays, with glob semantics (substrings included).
    user = KeepFP32({"keep-fp32": ["*norm*"]}, ((t.path, t.ref) for t in a.tensors))
    assert user.reason("decoder.normal_layers.0.conv.weight") == "keep-fp32 '*norm*'"
    assert user.reason("model.1.weight") is None


def test_full_module_pickle_class_names_the_layer(tmp_path):
    # LayerNorm at an index, no name and no statistics: only its pickled class says so.
    model = nn.Sequential(nn.Linear(4, 4), nn.LayerNorm(4), nn.Sequential(nn.GroupNorm(2, 4)),
                          nn.Linear(4, 2))
    path = tmp_path / "full.pt"
    torch.save({"model": model}, path)
    a = analyze(read_path(str(path)))
    keep = KeepFP32({}, ((t.path, t.ref) for t in a.tensors), a.checkpoint.root)
    kept = {t.path for t in a.tensors if keep.reason(t.path)}
    assert kept == {"model.1.weight", "model.1.bias", "model.2.0.weight", "model.2.0.bias"}
