"""Each framework's strip, checked key by key against what the framework's own strip function
does (ultralytics 8.4 ``strip_optimizer``, Lightning ``dump_checkpoint(weights_only=True)``,
RF-DETR ``strip_checkpoint``), on trees built here, plus the differences the README documents."""

from __future__ import annotations

from dataclasses import replace

from ckpt_guard.policy.plan_types import Change
from ckpt_guard.policy.rules.base import PlanContext
from ckpt_guard.policy.rules.registry import PLAN_ORDER
from ckpt_guard.policy.strips import rule_view
from ckpt_guard.read.tree import GlobalRef, Opaque
from tests.policy.build import analysis
from tests.rewrite.helpers import fix_rules, run_fix


def _strip(framework: str, tree: dict, rules: dict | None = None) -> list[Change]:
    """The strip rules' plans, in plan order, on ``tree`` itself (edited in place)."""
    a = replace(analysis(root=tree), framework=framework)
    ctx = PlanContext(rules=fix_rules() if rules is None else rules, tree=tree)
    changes: list[Change] = []
    for rule in PLAN_ORDER[:-1]:  # the strips; fp32-payload casts
        view = rule_view(ctx.rules, rule.id)
        if view.fixes:  # fix plans the rules set to fix only
            changes.extend(rule.plan(a, view, ctx).changes)
    return changes


def test_ultralytics_sets_stopper_to_none_and_trims_train_args():
    ns = Opaque(GlobalRef("ultralytics.utils", "IterableSimpleNamespace"), "reduce",
                state={"task": "detect", "save_dir": "/home/me/runs/train"})
    loss = Opaque(GlobalRef("ultralytics.utils.loss", "v8DetectionLoss"), "newobj", state={})
    model = Opaque(GlobalRef("ultralytics.nn.tasks", "DetectionModel"), "newobj",
                   state={"args": ns, "training": False, "criterion": loss})
    tree = {"epoch": 7, "model": None, "ema": model, "updates": 5, "optimizer": {"x": 1},
            "stopper": {"best_epoch": 3}, "best_fitness": 0.5, "scaler": {"scale": 1.0},
            "train_args": {"task": "detect", "lr0": 0.01, "save_dir": "/home/me/runs/train",
                           "my_local_flag": True}}
    changes = _strip("ultralytics", tree)
    assert tree["stopper"] is None and tree["epoch"] == -1 and tree["ema"] is None
    assert tree["train_args"] == {"task": "detect", "lr0": 0.01}
    assert tree["model"] is model and model.state["args"] == ns.state
    assert type(model.state["args"]) is dict and model.state["criterion"] is None
    assert "stopper → None" in changes and "model.args → a dict" in changes


def test_yolov5_keeps_its_opt_untouched():
    tree = {"epoch": 3, "model": {"w": 1}, "ema": {"w": 2}, "updates": 1, "optimizer": {},
            "opt": {"save_dir": "runs/train/exp"}, "best_fitness": 0.1}
    _strip("yolov5", tree)
    assert tree["opt"] == {"save_dir": "runs/train/exp"} and tree["model"] == {"w": 2}


def test_lightning_drops_callbacks_like_save_weights_only():
    tree = {"epoch": 2, "global_step": 30, "pytorch-lightning_version": "2.5.1",
            "state_dict": {}, "loops": {}, "callbacks": {"ModelCheckpoint{}": {}},
            "optimizer_states": [], "lr_schedulers": [], "MixedPrecision": {"scale": 1.0},
            "hparams_name": "kwargs", "hyper_parameters": {"lr": 1}}
    _strip("lightning", tree)
    # Lightning 2.x dump_checkpoint(weights_only=True): epoch, global_step, version,
    # state_dict, loops, then the hyper-parameters.
    assert set(tree) == {"epoch", "global_step", "pytorch-lightning_version", "state_dict",
                         "loops", "hparams_name", "hyper_parameters"}


def test_rfdetr_says_plainly_that_the_kept_weights_change(ckpt_factory, tmp_path):
    fx = ckpt_factory.copy("rfdetr-checkpoint", tmp_path)
    result = run_fix(fx.path)
    assert "ema_model → model" in result.changes
    assert any(n.startswith("the weights change: model now holds the EMA weights from "
                            "ema_model") for n in result.notes), result.notes


def test_ultralytics_ema_only_training_file_moves_the_ema_to_model():
    # A trainer's epochN.pt / last.pt before strip_optimizer: model None, the EMA the only
    # weights. Fixing training-state moves it as strip_optimizer does, even with
    # ema-duplicate off (there is no duplicate); compared with the real trainer in
    # tests/frameworks/test_ultralytics.py.
    ns = Opaque(GlobalRef("ultralytics.utils", "IterableSimpleNamespace"), "reduce",
                state={"task": "detect"})
    model = Opaque(GlobalRef("ultralytics.nn.tasks", "DetectionModel"), "newobj",
                   state={"args": ns, "training": False})
    tree = {"epoch": 0, "best_fitness": None, "model": None, "ema": model, "updates": 4,
            "optimizer": {"state": {}}, "train_args": {"task": "detect"}}
    changes = _strip("ultralytics", tree, fix_rules(ema_duplicate={"action": "off"}))
    assert tree["model"] is model and tree["ema"] is None and tree["updates"] is None
    assert type(model.state["args"]) is dict
    assert "ema → model" in changes


def test_ema_only_file_keeps_its_layout_when_training_state_is_not_fixed():
    tree = {"epoch": 0, "model": None, "ema": {"w": 1}, "updates": 4, "optimizer": {}}
    rules = fix_rules(ema_duplicate={"action": "off"}, training_state={"action": "warn"})
    _strip("ultralytics", tree, rules)
    assert tree["model"] is None and tree["ema"] == {"w": 1} and tree["optimizer"] is None


def test_rfdetr_lightning_era_drops_epoch_and_the_resume_keys():
    # RF-DETR 1.11 strip_checkpoint drops `epoch` in both eras; it keeps callbacks/
    # optimizer_states/lr_schedulers for resuming, which ckpt-guard drops on purpose (README).
    tree = {"model": {}, "epoch": 1, "state_dict": {}, "global_step": 5,
            "pytorch-lightning_version": "2.6.6", "loops": {}, "callbacks": {"X": {}},
            "optimizer_states": [], "lr_schedulers": [], "args": {}, "model_name": "RFDETRNano"}
    _strip("rfdetr", tree)
    assert set(tree) == {"model", "state_dict", "global_step", "pytorch-lightning_version",
                         "loops", "args", "model_name"}


def test_module_attribute_tensors_are_not_cast(tmp_path):
    # Module.half() casts parameters and buffers only; a tensor held as a plain attribute
    # (ultralytics/yolov5 DetectionModel.stride) stays FP32 in their strips, and in ours.
    import torch

    lin = torch.nn.Linear(8, 8)
    lin.stride = torch.tensor([8.0, 16.0, 32.0])
    path = tmp_path / "m.pt"
    torch.save({"model": lin}, path)
    result = run_fix(path)
    out = torch.load(path, weights_only=False)["model"]
    assert out.weight.dtype == torch.float16 and out.stride.dtype == torch.float32
    assert torch.equal(out.stride, lin.stride), result.notes
