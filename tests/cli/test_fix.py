"""`ckpt-guard fix` end to end through the real console entry; torch loads what it wrote."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from tests.cli.conftest import run_cli
from tests.cli.test_check import training_checkpoint

FIX_POLICY = ("version: 1\nrules:\n  optimizer-state: fix\n  training-state: fix\n"
              "  fp32-payload: {action: fix, max-bytes: 0}\n")


def test_fix_in_place_strips_and_casts(tmp_path: Path) -> None:
    (tmp_path / ".ckpt-guard.yml").write_text(FIX_POLICY)
    path = training_checkpoint(tmp_path / "last.pt")
    before = torch.load(path, weights_only=True)
    p = run_cli("fix", "--format", "json", "last.pt", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    f = json.loads(p.stdout)["files"][0]
    assert f["status"] == "fixed"
    assert f["size_after"] == path.stat().st_size < f["size_bytes"]
    after = torch.load(path, weights_only=True, mmap=True)
    assert after["optimizer"] is None and after["epoch"] == 3  # generic: only state goes
    for k, v in before["model"].items():
        w = after["model"][k]
        if v.dtype == torch.float32 and w.dtype == torch.float16:
            assert torch.equal(w, v.half()), k  # exactly torch's own cast
        else:
            assert torch.equal(w, v), k
    # BatchNorm stays FP32 (it is where half precision bites).
    assert after["model"]["1.running_var"].dtype == torch.float32
    # Fixed means clean: check now passes.
    assert run_cli("check", "last.pt", cwd=tmp_path).returncode == 0


def test_dry_run_writes_nothing_and_projects_the_size(tmp_path: Path) -> None:
    (tmp_path / ".ckpt-guard.yml").write_text(FIX_POLICY)
    path = training_checkpoint(tmp_path / "last.pt")
    original = path.read_bytes()
    p = run_cli("fix", "--dry-run", "--format", "json", "last.pt", cwd=tmp_path)
    assert p.returncode == 0
    projected = json.loads(p.stdout)["files"][0]["size_after"]
    assert path.read_bytes() == original
    run_cli("fix", "last.pt", cwd=tmp_path)
    assert path.stat().st_size == projected


def test_out_dir_mirrors_paths_and_keeps_the_original(tmp_path: Path) -> None:
    (tmp_path / ".ckpt-guard.yml").write_text(FIX_POLICY)
    (tmp_path / "models").mkdir()
    path = training_checkpoint(tmp_path / "models" / "last.pt")
    original = path.read_bytes()
    p = run_cli("fix", "--out", "dist", "models/last.pt", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert path.read_bytes() == original
    fixed = torch.load(tmp_path / "dist" / "models" / "last.pt", weights_only=True)
    assert fixed["optimizer"] is None


def test_exit_non_zero_on_fix_and_fixing_lines(tmp_path: Path) -> None:
    (tmp_path / ".ckpt-guard.yml").write_text(FIX_POLICY)
    training_checkpoint(tmp_path / "a.pt")
    p = run_cli("fix", "--exit-non-zero-on-fix", "a.pt", cwd=tmp_path)
    assert p.returncode == 1
    assert p.stdout.splitlines()[0] == "Fixing a.pt"
    again = run_cli("fix", "--exit-non-zero-on-fix", "a.pt", cwd=tmp_path)
    assert again.returncode == 0 and "Fixing" not in again.stdout


def test_unfixable_violation_still_fails(tmp_path: Path) -> None:
    # optimizer-state stays `fail` (not `fix`): fix cannot remove it, so the run fails.
    (tmp_path / ".ckpt-guard.yml").write_text("version: 1\nrules:\n  fp32-payload: "
                                              "{action: fix, max-bytes: 0}\n")
    training_checkpoint(tmp_path / "last.pt")
    p = run_cli("fix", "--format", "json", "last.pt", cwd=tmp_path)
    assert p.returncode == 1
    f = json.loads(p.stdout)["files"][0]
    assert [x["rule"] for x in f["findings"] if x["action"] == "fail"] == ["optimizer-state"]


def test_convert_to_safetensors(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    (tmp_path / ".ckpt-guard.yml").write_text("version: 1\nconvert: safetensors\n")
    torch.manual_seed(0)
    sd = {"conv.weight": torch.randn(4, 3, 3, 3), "fc.bias": torch.randn(4).half()}
    torch.save(sd, tmp_path / "model.pt")
    p = run_cli("fix", "model.pt", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    assert (tmp_path / "model.pt").exists()  # the original is kept
    out = load_file(tmp_path / "model.safetensors")
    assert set(out) == set(sd)
    for k, v in sd.items():
        assert torch.equal(out[k], v), k


def test_bad_convert_value_is_a_policy_error(tmp_path: Path) -> None:
    (tmp_path / ".ckpt-guard.yml").write_text("version: 1\nconvert: onnx\n")
    p = run_cli("fix", "x.pt", cwd=tmp_path)
    assert p.returncode == 2
    assert ".ckpt-guard.yml:2:" in p.stderr
