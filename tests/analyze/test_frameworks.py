"""Framework-shaped checkpoints made by real torch (keys and None/[] conventions as the
frameworks' savers write them, see shared notes frameworks.md): roles, bytes, framework."""

from __future__ import annotations

import argparse
import copy
import random

import numpy as np
import pytest
import torch

from tests.analyze.helpers import (
    save_and_analyze,
    storage_bytes,
    subtree_roles,
    temp_package,
    trained,
)

ULTRALYTICS = {
    "ultralytics/__init__.py": "",
    "ultralytics/nn/__init__.py": "",
    "ultralytics/nn/tasks.py": """
        import torch
        from torch import nn

        class Conv(nn.Module):
            def __init__(self, c1, c2):
                super().__init__()
                self.conv = nn.Conv2d(c1, c2, 3, bias=False)
                self.bn = nn.BatchNorm2d(c2)
                self.act = nn.SiLU()

            def forward(self, x):
                return self.act(self.bn(self.conv(x)))

        class DetectionModel(nn.Module):
            def __init__(self, width=8):
                super().__init__()
                self.model = nn.Sequential(Conv(3, width), Conv(width, width))
                self.stride = torch.tensor([8.0, 16.0, 32.0])
                self.names = {0: "cat"}
                self.yaml = {"nc": 1}
                self.args = {"imgsz": 640}
    """,
}

YOLOV5 = {
    "models/__init__.py": "",
    "models/common.py": """
        from torch import nn

        class Conv(nn.Module):
            def __init__(self, c1, c2):
                super().__init__()
                self.conv = nn.Conv2d(c1, c2, 3, bias=False)
                self.bn = nn.BatchNorm2d(c2)

            def forward(self, x):
                return self.bn(self.conv(x))
    """,
    "models/yolo.py": """
        from torch import nn
        from models.common import Conv

        class Model(nn.Module):
            def __init__(self, width=8):
                super().__init__()
                self.model = nn.Sequential(Conv(3, width), Conv(width, width))
    """,
}


def _fp16_optimizer(sd: dict) -> dict:
    """ultralytics' convert_optimizer_state_dict_to_fp16: state tensors half, except step."""
    sd = copy.deepcopy(sd)
    for state in sd["state"].values():
        for k, v in state.items():
            if k != "step" and isinstance(v, torch.Tensor) and v.dtype == torch.float32:
                state[k] = v.half()
    return sd


def _train_module(model: torch.nn.Module, opt_cls=torch.optim.AdamW, **kw):
    opt = opt_cls(model.parameters(), lr=0.01, **kw)
    x = torch.randn(2, 3, 7, 7)
    y = model.model(x).sum()
    y.backward()
    opt.step()
    return opt


def _ultralytics(tmp_path, *, stripped: bool):
    with temp_package(tmp_path / "pkg", ULTRALYTICS):
        from ultralytics.nn.tasks import DetectionModel

        model = DetectionModel()
        opt = _train_module(model)
        ema = copy.deepcopy(model).half()
        optimizer = _fp16_optimizer(opt.state_dict())
        scaler = torch.amp.GradScaler("cpu", enabled=True).state_dict()
        ckpt = {
            "epoch": 4, "best_fitness": 0.5, "model": None, "ema": ema, "updates": 40,
            "optimizer": optimizer, "scaler": scaler,
            "train_args": {"epochs": 10, "batch": 16}, "train_metrics": {"metrics/mAP50(B)": 0.1},
            "train_results": {"epoch": [1, 2]}, "date": "2025-01-01T00:00:00",
            "version": "8.3.40", "license": "AGPL-3.0 License (https://ultralytics.com/license)",
            "docs": "https://docs.ultralytics.com", "git": {"root": None, "branch": None},
        }
        if stripped:  # strip_optimizer(): set to None, not deleted
            ckpt.update(model=ema, ema=None, optimizer=None, best_fitness=None, updates=None,
                        scaler=None, epoch=-1)
        a = save_and_analyze(ckpt, tmp_path / "last.pt")
    return a, ema, optimizer


def test_ultralytics_training(tmp_path):
    a, ema, optimizer = _ultralytics(tmp_path, stripped=False)
    assert a.framework == "ultralytics"
    roles = subtree_roles(a)
    assert roles["ema"] == "weights"  # model is None: the EMA is the only weights copy
    assert roles["optimizer"] == "optimizer"
    assert roles["scaler"] == "scaler"
    assert a.bytes_by_role["weights"] == storage_bytes(ema)
    assert a.bytes_by_role["optimizer"] == storage_bytes(optimizer)
    assert a.bytes_by_role["ema"] == 0
    assert a.tensor_bytes_total == storage_bytes(ema, optimizer)
    paths = {t.path for t in a.tensors}
    assert "ema.model.0.conv.weight" in paths and "ema.model.1.bn.running_var" in paths
    assert a.bytes_by_dtype["float16"] > 0
    verdicts = {g.use.qualname: g.safety for g in a.globals}
    assert verdicts["ultralytics.nn.tasks.DetectionModel"] != "safe"
    top = {t.key: t for t in a.top_level}
    assert top["model"].kind == "None" and top["optimizer"].role == "optimizer"
    assert top["ema"].kind == "Opaque ultralytics.nn.tasks.DetectionModel"


def test_ultralytics_stripped_has_no_training_state(tmp_path):
    a, ema, _ = _ultralytics(tmp_path, stripped=True)
    assert a.framework == "ultralytics"
    assert set(subtree_roles(a).values()) == {"weights"}
    assert a.bytes_by_role["optimizer"] == a.bytes_by_role["ema"] == 0
    assert a.bytes_by_role["weights"] == a.tensor_bytes_total == storage_bytes(ema)


def test_yolov5_training(tmp_path):
    with temp_package(tmp_path / "pkg", YOLOV5):
        from models.yolo import Model

        model = Model()
        opt = _train_module(model, torch.optim.SGD, momentum=0.937, nesterov=True)
        ema = copy.deepcopy(model)
        ckpt = {"epoch": 3, "best_fitness": np.array([0.4]), "model": copy.deepcopy(model).half(),
                "ema": copy.deepcopy(ema).half(), "updates": 30, "optimizer": opt.state_dict(),
                "opt": {"epochs": 300, "batch_size": 16}, "git": {"commit": "abc"},
                "date": "2024-01-01", "training_results": "results"}
        a = save_and_analyze(ckpt, tmp_path / "last.pt")
        expect_w, expect_e = storage_bytes(ckpt["model"]), storage_bytes(ckpt["ema"])
        expect_o = storage_bytes(ckpt["optimizer"])
    assert a.framework == "yolov5"
    assert subtree_roles(a)["ema"] == "ema"
    assert a.bytes_by_role["weights"] == expect_w
    assert a.bytes_by_role["ema"] == expect_e
    assert a.bytes_by_role["optimizer"] == expect_o
    assert any("momentum_buffer" in s.what for s in a.subtrees if s.role == "optimizer")


def test_lightning(tmp_path):
    model, opt = trained()
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, 10)
    sd = {f"model.{k}": v for k, v in model.state_dict().items()}
    scaler = torch.amp.GradScaler("cpu").state_dict()
    ckpt = {"epoch": 2, "global_step": 200, "pytorch-lightning_version": "2.4.0", "state_dict": sd,
            "loops": {"fit_loop": {"state_dict": {}, "epoch_progress": {"total": {"ready": 2}}}},
            "callbacks": {"ModelCheckpoint{'monitor': 'val_loss'}": {
                "best_model_score": torch.tensor(0.25), "best_k_models": {}}},
            "optimizer_states": [opt.state_dict()], "lr_schedulers": [sched.state_dict()],
            "MixedPrecision": scaler, "hparams_name": "kwargs",
            "hyper_parameters": {"lr": 0.01}}
    a = save_and_analyze(ckpt, tmp_path / "epoch=2.ckpt")
    assert a.framework == "lightning"
    roles = subtree_roles(a)
    assert roles["optimizer_states.0"] == "optimizer"
    assert roles["lr_schedulers.0"] == "scheduler"
    assert roles["MixedPrecision"] == "scaler"
    assert a.bytes_by_role["weights"] == storage_bytes(sd)
    assert a.bytes_by_role["optimizer"] == storage_bytes(ckpt["optimizer_states"])
    assert a.bytes_by_role["other"] == 4  # the callback's best_model_score


def test_lightning_weights_only_save(tmp_path):
    model, _ = trained()
    ckpt = {"epoch": 2, "global_step": 200, "pytorch-lightning_version": "2.4.0",
            "state_dict": model.state_dict(), "loops": {}}
    a = save_and_analyze(ckpt, tmp_path / "w.ckpt")
    assert a.framework == "lightning"
    assert {s.role for s in a.subtrees} == {"weights"}


def _rfdetr_args() -> argparse.Namespace:
    return argparse.Namespace(encoder="dinov2_windowed_small", projector_scale=["P4"],
                              num_windows=2, lr=1e-4, out_feature_indexes=[2, 5, 8, 11])


def test_rfdetr_training(tmp_path):
    model, opt = trained(torch.optim.AdamW)
    sched = torch.optim.lr_scheduler.StepLR(opt, 5)
    ema = {k: v.clone() for k, v in model.state_dict().items()}
    ckpt = {"model": model.state_dict(), "optimizer": opt.state_dict(),
            "lr_scheduler": sched.state_dict(), "epoch": 10, "args": _rfdetr_args(),
            "ema_model": ema}
    a = save_and_analyze(ckpt, tmp_path / "checkpoint.pth")
    assert a.framework == "rfdetr"
    assert subtree_roles(a) == {"optimizer": "optimizer", "lr_scheduler": "scheduler",
                                "ema_model": "ema", "model": "weights"}
    assert a.bytes_by_role["ema"] == storage_bytes(ema)
    assert any(g.use.qualname == "argparse.Namespace" for g in a.globals)


def test_rfdetr_lightning_era_best_file(tmp_path):
    model, _ = trained()
    sd = model.state_dict()
    ckpt = {"model": sd, "args": _rfdetr_args(), "epoch": 9,
            "state_dict": {f"model.{k}": v for k, v in sd.items()}, "global_step": 900,
            "pytorch-lightning_version": "2.5.0", "loops": {}, "optimizer_states": [],
            "lr_schedulers": [], "model_name": "RFDETRBase", "rfdetr_version": "1.6.0"}
    a = save_and_analyze(ckpt, tmp_path / "checkpoint_best_total.pth")
    assert a.framework == "rfdetr"  # not lightning, though it carries Lightning's keys
    assert {s.role for s in a.subtrees} == {"weights"}  # optimizer_states: [] is nothing
    assert a.bytes_by_role["weights"] == storage_bytes(sd)  # shared storages count once


def test_timm(tmp_path):
    model, opt = trained(torch.optim.SGD, momentum=0.9)
    ema = {k: v.clone() for k, v in model.state_dict().items()}
    ckpt = {"epoch": 5, "arch": "resnet18", "state_dict": model.state_dict(),
            "optimizer": opt.state_dict(), "version": 2, "args": _rfdetr_args(),
            "amp_scaler": torch.amp.GradScaler("cpu").state_dict(),
            "state_dict_ema": ema, "metric": 0.7}
    a = save_and_analyze(ckpt, tmp_path / "last.pth.tar")
    assert a.framework == "timm"
    roles = subtree_roles(a)
    assert roles["state_dict_ema"] == "ema" and roles["amp_scaler"] == "scaler"
    assert a.bytes_by_role["ema"] == storage_bytes(ema)


def test_detectron2(tmp_path):
    model, opt = trained(torch.optim.SGD, momentum=0.9)
    sched = torch.optim.lr_scheduler.MultiStepLR(opt, [10])
    ckpt = {"model": model.state_dict(), "iteration": 99,
            "trainer": {"iteration": 99, "hooks": {"LRScheduler": sched.state_dict()},
                        "_trainer": {"iteration": 99, "optimizer": opt.state_dict(),
                                     "grad_scaler": torch.amp.GradScaler("cpu").state_dict()}}}
    a = save_and_analyze(ckpt, tmp_path / "model_0000099.pth")
    assert a.framework == "detectron2"
    roles = subtree_roles(a)
    assert roles["trainer._trainer.optimizer"] == "optimizer"
    assert roles["trainer.hooks.LRScheduler"] == "scheduler"
    assert roles["trainer._trainer.grad_scaler"] == "scaler"
    assert a.bytes_by_role["optimizer"] == storage_bytes(opt.state_dict())
    top = {t.key: t.role for t in a.top_level}
    assert top == {"model": "weights", "iteration": "other", "trainer": "optimizer"}


def test_mmengine(tmp_path):
    model, opt = trained(torch.optim.SGD, momentum=0.9)
    ema = {"steps": torch.tensor(1000)}
    ema.update({f"module.{k}": v.clone() for k, v in model.state_dict().items()})
    ckpt = {"meta": {"epoch": 12, "iter": 1000, "cfg": "model = dict()", "seed": 0,
                     "mmengine_version": "0.10.4", "dataset_meta": {"classes": ["a"]}},
            "state_dict": model.state_dict(),
            "message_hub": {"log_scalars": {}, "runtime_info": {"epoch": 12}},
            "optimizer": opt.state_dict(),
            "param_schedulers": [{"begin": 0, "end": 1000, "last_step": 1000, "by_epoch": False,
                                  "base_values": [0.01], "param_name": "lr"}],
            "ema_state_dict": ema}
    a = save_and_analyze(ckpt, tmp_path / "epoch_12.pth")
    assert a.framework == "mmengine"
    roles = subtree_roles(a)
    assert roles["param_schedulers.0"] == "scheduler" and roles["ema_state_dict"] == "ema"
    assert a.bytes_by_role["ema"] == storage_bytes(ema)
    assert a.bytes_by_role["optimizer"] == storage_bytes(opt.state_dict())


def test_deepspeed_model_states(tmp_path):
    model, opt = trained()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    sd = sched.state_dict()
    sd.pop("lr_lambdas")
    ckpt = {"module": model.state_dict(), "buffer_names": ["bn.running_mean"], "optimizer": None,
            "lr_scheduler": sd, "sparse_tensor_module_names": set(), "skipped_steps": 0,
            "global_steps": 100, "global_samples": 800, "dp_world_size": 1, "mp_world_size": 1,
            "ds_config": {"zero_optimization": {"stage": 2}}, "ds_version": "0.14.0"}
    a = save_and_analyze(ckpt, tmp_path / "mp_rank_00_model_states.pt")
    assert a.framework == "deepspeed"
    assert subtree_roles(a) == {"lr_scheduler": "scheduler", "module": "weights"}


def test_generic_training_checkpoint_and_rng(tmp_path):
    model, opt = trained()
    rng = {"python": random.getstate(), "numpy": np.random.get_state(),
           "cpu": torch.get_rng_state()}
    ckpt = {"net": model.state_dict(), "extra": {"opt": [opt.state_dict()]}, "rng": rng,
            "torch_rng": torch.get_rng_state(), "rng_state": {"seed": 1}, "note": None}
    a = save_and_analyze(ckpt, tmp_path / "ckpt.pt")
    assert a.framework == "generic"
    roles = subtree_roles(a)
    assert roles["extra.opt.0"] == "optimizer"
    assert roles["rng"] == "rng" and roles["torch_rng"] == "rng" and roles["rng_state"] == "rng"
    assert a.bytes_by_role["rng"] == 2 * 5056
    assert a.bytes_by_role["weights"] == storage_bytes(model.state_dict())


def test_plain_state_dict_and_full_module(tmp_path):
    model, _ = trained()
    a = save_and_analyze(model.state_dict(), tmp_path / "sd.pt")
    assert subtree_roles(a) == {"": "weights"}
    assert a.tensor_bytes_total == a.bytes_by_role["weights"] == storage_bytes(model)
    assert {t.key for t in a.top_level} == {"conv.*", "bn.*", "fc.*"}
    b = save_and_analyze(model, tmp_path / "full.pt")
    assert sorted(t.path for t in b.tensors) == sorted(model.state_dict())
    assert b.tensor_bytes_total == storage_bytes(model)
    assert [t.key for t in b.top_level] == ["conv", "bn", "fc"]


def test_tied_and_views_count_once(tmp_path):
    w = torch.randn(16, 4)
    sd = {"embed.weight": w, "head.weight": w, "slice": w[2:4], "t": w.t()}
    a = save_and_analyze(sd, tmp_path / "tied.pt")
    assert a.tensor_bytes_total == w.untyped_storage().nbytes()
    assert a.tensor_count == 4


@pytest.mark.parametrize("legacy", [False, True])
def test_optimizer_only_file(tmp_path, legacy):
    if legacy:
        pytest.importorskip("ckpt_guard.read.torch_legacy")
    _, opt = trained()
    a = save_and_analyze(opt.state_dict(), tmp_path / "optimizer.pt",
                         _use_new_zipfile_serialization=not legacy)
    assert subtree_roles(a) == {"": "optimizer"}
    assert a.bytes_by_role["optimizer"] == a.tensor_bytes_total == storage_bytes(opt.state_dict())
