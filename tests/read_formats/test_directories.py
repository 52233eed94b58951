"""Hugging Face Trainer and DeepSpeed checkpoint directories, made with real torch."""

from __future__ import annotations

import argparse
import json

import pytest
import torch
from safetensors.torch import save_file

from ckpt_guard.analyze import analyze
from ckpt_guard.read import read_path
from ckpt_guard.read.checkpoint import LimitExceeded, UnreadableError
from ckpt_guard.read.directories import directory_format, hint_for
from ckpt_guard.read.limits import Limits
from tests.analyze.helpers import storage_bytes, trained


@pytest.mark.parametrize("name,hint", [
    ("optimizer.pt", "optimizer"), ("optimizer.bin", "optimizer"),
    ("global_step10/zero_pp_rank_0_mp_rank_00_optim_states.pt", "optimizer"),
    ("global_step10/bf16_zero_pp_rank_1_mp_rank_00_optim_states.pt", "optimizer"),
    ("scheduler.pt", "scheduler"), ("scaler.pt", "scaler"), ("rng_state.pth", "rng"),
    ("rng_state_3.pth", "rng"), ("training_args.bin", "training"),
    ("trainer_state.json", "training"), ("model.safetensors", "weights"),
    ("model-00001-of-00002.safetensors", "weights"), ("pytorch_model.bin", "weights"),
    ("global_step10/mp_rank_00_model_states.pt", "weights"), ("config.json", ""),
])
def test_hints(name, hint):
    assert hint_for(name) == hint


def _hf_checkpoint(root, *, with_training: bool = True):
    d = root / "checkpoint-500"
    d.mkdir()
    model, opt = trained()
    sched = torch.optim.lr_scheduler.LinearLR(opt)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()},
              str(d / "model.safetensors"), metadata={"format": "pt"})
    (d / "config.json").write_text(json.dumps({"model_type": "net"}))
    (d / "trainer_state.json").write_text(json.dumps({"global_step": 500}))
    torch.save(argparse.Namespace(output_dir="out", learning_rate=0.01),
               d / "training_args.bin")
    if with_training:
        torch.save(opt.state_dict(), d / "optimizer.pt")
        torch.save(sched.state_dict(), d / "scheduler.pt")
        torch.save(torch.amp.GradScaler("cpu").state_dict(), d / "scaler.pt")
        torch.save({"python": (3, tuple(range(625)), None), "cpu": torch.get_rng_state()},
                   d / "rng_state.pth")
    return d, model, opt


def test_hf_trainer_directory(tmp_path):
    d, model, opt = _hf_checkpoint(tmp_path)
    ckpt = read_path(str(d))
    assert ckpt.format == "hf-checkpoint-dir"
    assert ckpt.size_bytes == sum(p.stat().st_size for p in d.iterdir())
    kids = {rel: (c, hint) for rel, c, hint in ckpt.children}
    assert set(kids) == {"model.safetensors", "optimizer.pt", "scheduler.pt", "scaler.pt",
                         "rng_state.pth", "training_args.bin"}
    assert kids["optimizer.pt"][1] == "optimizer"
    assert kids["model.safetensors"][0].format == "safetensors"
    assert "trainer_state.json" in ckpt.metadata["other_files"]
    assert "optimizer.pt" in ckpt.metadata["training_files"]
    a = analyze(ckpt)
    assert a.framework == "hf-trainer"
    assert a.bytes_by_role["weights"] == storage_bytes(model.state_dict())
    assert a.bytes_by_role["optimizer"] == storage_bytes(opt.state_dict())
    assert a.bytes_by_role["rng"] == 5056
    assert a.tensor_bytes_total == sum(a.bytes_by_role.values())
    assert a.tensor_bytes_total == sum(
        sub.tensor_bytes_total for _r, sub, _h in a.children)
    top = {t.key: (t.kind, t.role) for t in a.top_level}
    assert top["optimizer.pt"] == ("torch-zip", "optimizer")
    assert top["model.safetensors"] == ("safetensors", "weights")
    assert any(s.path == "optimizer.pt" and s.role == "optimizer" for s in a.subtrees)
    assert any(t.path == "model.safetensors:conv.weight" for t in a.tensors)
    assert any(g.use.qualname == "argparse.Namespace" for g in a.globals)


def test_hf_save_only_model(tmp_path):
    d, model, _ = _hf_checkpoint(tmp_path, with_training=False)
    a = analyze(read_path(str(d)))
    assert a.framework == "hf-trainer"
    assert a.bytes_by_role["optimizer"] == 0
    assert a.bytes_by_role["weights"] == a.tensor_bytes_total == storage_bytes(model)


def test_corrupt_member_is_reported_not_raised(tmp_path):
    d, _, _ = _hf_checkpoint(tmp_path)
    data = (d / "optimizer.pt").read_bytes()
    (d / "optimizer.pt").write_bytes(data[: len(data) // 2])
    ckpt = read_path(str(d))
    kids = {rel: c for rel, c, _h in ckpt.children}
    assert isinstance(kids["optimizer.pt"], UnreadableError)
    a = analyze(ckpt)
    assert any(isinstance(c, UnreadableError) for _r, c, _h in a.children)
    top = {t.key: (t.kind, t.role) for t in a.top_level}
    assert top["optimizer.pt"] == ("unreadable", "optimizer")
    assert a.bytes_by_role["optimizer"] == 0 and a.bytes_by_role["weights"] > 0


def _deepspeed(root):
    d = root / "ds_ckpt"
    tag = d / "global_step100"
    tag.mkdir(parents=True)
    (d / "latest").write_text("global_step100")
    model, opt = trained()
    torch.save({"module": model.state_dict(), "optimizer": None, "global_steps": 100,
                "ds_config": {"zero_optimization": {"stage": 2}}, "ds_version": "0.14.0"},
               tag / "mp_rank_00_model_states.pt")
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    optim = {"optimizer_state_dict": {"zero_stage": 2, "loss_scaler": None,
                                      "base_optimizer_state": opt.state_dict(),
                                      "single_partition_of_fp32_groups": [flat]},
             "ds_config": {}, "ds_version": "0.14.0"}
    torch.save(optim, tag / "zero_pp_rank_0_mp_rank_00_optim_states.pt")
    return d, model, optim


def test_deepspeed_directory(tmp_path):
    d, model, optim = _deepspeed(tmp_path)
    assert directory_format(str(d)) == "deepspeed-dir"
    assert directory_format(str(d / "global_step100")) == "deepspeed-dir"
    ckpt = read_path(str(d))
    assert ckpt.format == "deepspeed-dir"
    assert [rel for rel, _c, _h in ckpt.children] == [
        "global_step100/mp_rank_00_model_states.pt",
        "global_step100/zero_pp_rank_0_mp_rank_00_optim_states.pt"]
    a = analyze(ckpt)
    assert a.framework == "deepspeed"
    assert a.bytes_by_role["weights"] == storage_bytes(model.state_dict())
    assert a.bytes_by_role["optimizer"] == storage_bytes(optim)


def test_hf_with_deepspeed_global_step(tmp_path):
    d, _, _ = _hf_checkpoint(tmp_path)
    ds, _, optim = _deepspeed(tmp_path)
    (ds / "global_step100").rename(d / "global_step100")
    a = analyze(read_path(str(d)))
    assert a.framework == "hf-trainer"
    kids = {rel: hint for rel, _c, hint in a.children}
    assert kids["global_step100/zero_pp_rank_0_mp_rank_00_optim_states.pt"] == "optimizer"


def test_not_a_checkpoint_directory(tmp_path):
    (tmp_path / "a.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    with pytest.raises(UnreadableError, match="not a checkpoint directory"):
        read_path(str(tmp_path))


def test_directory_file_limit(tmp_path):
    d, _, _ = _hf_checkpoint(tmp_path)
    with pytest.raises(LimitExceeded):
        read_path(str(d), Limits(max_dir_files=3))


def test_loose_training_files_are_not_a_trainer_checkpoint(tmp_path) -> None:
    """Only Trainer-written markers make a directory one checkpoint: a folder that merely
    holds rng_state.pth / optimizer.pt is walked file by file, so a directory fix with
    remove-training-files can never empty an arbitrary folder."""
    import torch

    from ckpt_guard.read.directories import directory_format

    d = tmp_path / "runs"
    d.mkdir()
    torch.save({"python": 1, "torch": torch.get_rng_state()}, d / "rng_state.pth")
    assert directory_format(str(d)) is None
    torch.save({"state": {}, "param_groups": []}, d / "optimizer.pt")
    assert directory_format(str(d)) is None
    (d / "trainer_state.json").write_text("{}")
    assert directory_format(str(d)) == "hf-checkpoint-dir"
