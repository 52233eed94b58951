"""Fixed weights still run: a real conv + BatchNorm + linear network, and an ultralytics-shaped
full-module checkpoint fixed while its classes are NOT importable, then loaded and run with
them importable."""

from __future__ import annotations

import importlib
import sys

import torch
from torch import nn

from tests.fixtures.packages import PACKAGES, loaded, packages_importable
from tests.rewrite.helpers import run_fix


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(256, 64), nn.LayerNorm(64),
        nn.ReLU(), nn.Linear(64, 10))


def _train(model: nn.Module, steps: int = 3) -> torch.optim.Optimizer:
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(steps):
        opt.zero_grad()
        model(torch.randn(8, 3, 16, 16)).square().mean().backward()
        opt.step()
    return opt


def test_forward_pass_matches_after_strip_and_cast(tmp_path):
    torch.manual_seed(0)
    model = _net()
    opt = _train(model)
    sched = torch.optim.lr_scheduler.StepLR(opt, 5)
    path = tmp_path / "ckpt.pt"
    torch.save({"epoch": 3, "model": model.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict()}, path)
    result = run_fix(path)
    assert result.error is None and result.changed
    assert result.removed["optimizer"] > 0
    assert 0 < result.max_rel_err <= 1  # the true error: small weights become subnormal
    kept = {p for p, _ in result.kept_fp32}
    assert {"model.1.weight", "model.1.running_var"} <= kept  # BN, by its statistics
    # LayerNorm at index 9 of a bare state dict: nothing but its 1-D shape would say it is a
    # norm layer, and shape alone is no evidence (issue 9): it is cast like the others.
    assert "model.9.weight" not in kept

    fixed = torch.load(path, weights_only=True, mmap=True)
    assert fixed["optimizer"] is None and fixed["scheduler"] is None
    sd = fixed["model"]
    assert sd["0.weight"].dtype == torch.float16 and sd["1.running_var"].dtype == torch.float32
    clone = _net()
    clone.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    model.eval()
    clone.eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert (model(x) - clone(x)).abs().max() < 1e-2


def test_bfloat16_cast_forward_pass(tmp_path):
    from tests.rewrite.helpers import fix_rules

    torch.manual_seed(1)
    model = _net()
    _train(model)
    path = tmp_path / "w.pt"
    torch.save(model.state_dict(), path)
    result = run_fix(path, fix_rules(fp32_payload={"cast-to": "bfloat16"}))
    assert result.cast_to == "bfloat16"
    sd = torch.load(path, weights_only=True)
    assert sd["0.weight"].dtype == torch.bfloat16
    clone = _net()
    clone.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in sd.items()})
    model.eval()
    clone.eval()
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert (model(x) - clone(x)).abs().max() < 5e-2


def test_full_module_checkpoint_fixed_without_its_classes(ckpt_factory, tmp_path):
    root = ckpt_factory.pkg_root
    with packages_importable(("ultralytics",), root):
        tasks = importlib.import_module("ultralytics.nn.tasks")
        torch.manual_seed(2)
        model = tasks.DetectionModel(nc=4, width=8)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        model(torch.randn(2, 3, 32, 32))[0].square().mean().backward()
        opt.step()
        model.eval()
        x = torch.randn(1, 3, 32, 32)
        with torch.no_grad():
            expected = model(x)[0]
        path = tmp_path / "last.pt"
        torch.save({"epoch": 5, "best_fitness": 0.3, "model": None, "ema": model,
                    "updates": 12, "optimizer": opt.state_dict(),
                    "train_args": {"imgsz": 32}, "date": "2026-01-01T00:00:00",
                    "version": "8.3.40", "license": "AGPL-3.0", "docs": "https://x"}, path)
    assert loaded(PACKAGES) == [] and "ultralytics" not in sys.modules

    result = run_fix(path)  # the classes are nowhere to be imported
    assert result.error is None and result.changed
    assert "ema → model" in result.changes and result.cast_bytes > 0
    assert "ultralytics" not in sys.modules

    with packages_importable(("ultralytics",), root):
        ckpt = torch.load(path, weights_only=False)
        assert ckpt["ema"] is None and ckpt["optimizer"] is None and ckpt["epoch"] == -1
        fixed = ckpt["model"]
        assert type(fixed).__name__ == "DetectionModel"
        assert fixed.model[0].conv.weight.dtype == torch.float16
        assert fixed.model[0].bn.weight.dtype == torch.float32  # norm layers stay FP32
        assert fixed.model[-1].stride is fixed.stride  # shared tensor still shared
        fixed = fixed.float().eval()  # what ultralytics' loaders do
        with torch.no_grad():
            got = fixed(x)[0]
    assert (got - expected).abs().max() < 1e-2
