"""Regressions for issue 9's defects the fixture families do not hold as such."""

from __future__ import annotations

import json
import subprocess
import sys

import torch
import yaml

from tests.invariants.harness import cli


def _policy(tmp_path, rules: dict, **extra) -> None:
    (tmp_path / "p.yml").write_text(yaml.safe_dump({"version": 1, "rules": rules, **extra}))


def _check(tmp_path, *names: str) -> list[dict]:
    p = cli(["check", "--policy", "p.yml", "--format", "json", *names], cwd=tmp_path)
    assert p.returncode in (0, 1), p.stderr
    return json.loads(p.stdout)["files"]


def test_generic_model_ema_dict_keep_ema_is_fixed(tmp_path):
    """Defect 2: ema-duplicate keep: ema on a generic {"model", "ema"} dict was fixable in
    check and never fixed by fix (a fix-hook loop)."""
    sd = {"conv.weight": torch.randn(16, 3, 3, 3), "fc.weight": torch.randn(10, 16)}
    ema = {k: v + 1 for k, v in sd.items()}
    torch.save({"model": sd, "ema": ema, "epoch": 3}, tmp_path / "gen.pt")
    _policy(tmp_path, {"ema-duplicate": {"action": "fix", "keep": "ema"}})
    [before] = _check(tmp_path, "gen.pt")
    assert [f["fixable"] for f in before["findings"] if f["rule"] == "ema-duplicate"] == [True]
    p = cli(["fix", "--policy", "p.yml", "gen.pt"], cwd=tmp_path)
    assert p.returncode == 0 and "Fixing gen.pt" in p.stdout, p.stdout + p.stderr
    [after] = _check(tmp_path, "gen.pt")
    assert not [f for f in after["findings"] if f["fixable"]]
    loaded = torch.load(tmp_path / "gen.pt", weights_only=True)
    assert loaded["ema"] is None and loaded["epoch"] == 3
    for k, v in ema.items():
        assert torch.equal(loaded["model"][k], v)


def test_convert_with_out_never_writes_safetensors_under_a_torch_name(tmp_path):
    """Defect 1: with --out, convert: safetensors wrote safetensors bytes as `x.pth`; a
    non-flat file was not fixed at all."""
    sd = {"w": torch.randn(8, 8), "b": torch.randn(8)}
    torch.save(sd, tmp_path / "flat.pth")
    torch.save({"state_dict": sd, "optimizer": {"state": {0: {"exp_avg": torch.randn(8, 8)}},
                                                "param_groups": [{"params": [0]}]}},
               tmp_path / "resume.pth")
    _policy(tmp_path, {"optimizer-state": "fix"}, convert="safetensors")
    p = cli(["fix", "--policy", "p.yml", "--out", "out", "flat.pth", "resume.pth"],
            cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert not (tmp_path / "out" / "flat.pth").exists()
    from safetensors.torch import load_file

    assert sorted(load_file(tmp_path / "out" / "flat.safetensors")) == ["b", "w"]
    resume = torch.load(tmp_path / "out" / "resume.pth", weights_only=True)  # a torch zip
    assert resume["optimizer"] is None and torch.equal(resume["state_dict"]["w"], sd["w"])
    assert "not converted to safetensors" in p.stdout


def test_lightning_callbacks_tensors_are_counted_as_training_state(tmp_path):
    """RF-DETR saves its EMA weights in a Lightning callback (RFDETREMACallback's
    average_model_state_dict): a training-state fix drops `callbacks` as Lightning's
    save_weights_only does, so check must count those bytes — it promised 240 MB on a real
    480 MB RF-DETR file while fix removed 360 MB."""
    w = {f"l{i}.weight": torch.randn(64, 64) for i in range(4)}
    opt = {"state": {i: {"exp_avg": torch.zeros(64, 64), "exp_avg_sq": torch.zeros(64, 64),
                         "step": torch.tensor(2.0)} for i in range(4)},
           "param_groups": [{"lr": 1e-3, "params": [0, 1, 2, 3]}]}
    torch.save({"epoch": 1, "global_step": 2, "pytorch-lightning_version": "2.5.0",
                "state_dict": w, "loops": {}, "optimizer_states": [opt],
                "lr_schedulers": [{"last_epoch": 2}], "hyper_parameters": {"lr": 1e-3},
                "callbacks": {"RFDETREMACallback": {
                    "average_model_state_dict": {k: v.clone() for k, v in w.items()}}}},
               tmp_path / "checkpoint_0.ckpt")
    _policy(tmp_path, {"optimizer-state": "fix", "training-state": "fix"})
    before = _check(tmp_path, "checkpoint_0.ckpt")[0]
    training = next(f for f in before["findings"] if f["rule"] == "training-state")
    assert training["fixable"] and training["bytes"] == 4 * 64 * 64 * 4, training
    assert "callbacks" in training["message"]
    subprocess.run([sys.executable, "-m", "ckpt_guard", "fix", "--no-stash", "--policy",
                    "p.yml", "checkpoint_0.ckpt"], cwd=tmp_path, check=True,
                   capture_output=True)
    after = _check(tmp_path, "checkpoint_0.ckpt")[0]
    removed = before["tensor_bytes"]["total"] - after["tensor_bytes"]["total"]
    assert removed == before["bytes_removable"], (removed, before["bytes_removable"])
    assert "callbacks" not in torch.load(tmp_path / "checkpoint_0.ckpt", weights_only=True)


def test_tiny_legacy_file_kept_fp32_for_its_values_is_not_called_fixable(tmp_path):
    """lpips ships 6 kB legacy files whose cast would keep tensors FP32 for their values (FP16
    flushes them) and record it: the zip grows (7,881 vs 6,009 bytes), so fix refuses — and
    check, which scans a small legacy file's values for that projection, agrees."""
    sd = {f"lin{i}.model.1.weight": torch.full((1, 64 * (i + 1), 1, 1), 1e-9) for i in range(4)}
    sd["lin4.model.1.weight"] = torch.linspace(-1, 1, 256).reshape(1, 256, 1, 1)
    torch.save(sd, tmp_path / "alex.pth", _use_new_zipfile_serialization=False)
    _policy(tmp_path, {"fp32-payload": {"action": "fix", "max-bytes": 0}})
    before = (tmp_path / "alex.pth").read_bytes()
    found = _check(tmp_path, "alex.pth")[0]["findings"]
    fp32 = next(f for f in found if f["rule"] == "fp32-payload")
    assert not fp32["fixable"] and "larger than the input" in fp32["message"], fp32
    for args in (["--dry-run"], ["--no-stash"]):
        p = cli(["fix", *args, "--policy", "p.yml", "--format", "json", "alex.pth"],
                cwd=tmp_path)
        f = json.loads(p.stdout)["files"][0]
        assert f["status"] == "fail" and f["size_after"] is None, f
    assert (tmp_path / "alex.pth").read_bytes() == before

    # Converted, the file is written anew as safetensors (the input stays): nothing grows.
    _policy(tmp_path, {"fp32-payload": {"action": "fix", "max-bytes": 0}},
            convert="safetensors")
    fp32 = next(f for f in _check(tmp_path, "alex.pth")[0]["findings"]
                if f["rule"] == "fp32-payload")
    assert fp32["fixable"], fp32
    p = cli(["fix", "--no-stash", "--policy", "p.yml", "--format", "json", "alex.pth"],
            cwd=tmp_path)
    assert json.loads(p.stdout)["files"][0]["status"] == "fixed", p.stdout
    assert (tmp_path / "alex.safetensors").exists()
