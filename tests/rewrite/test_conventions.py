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


def _strip(framework: str, tree: dict) -> list[Change]:
    """The strip rules' plans, in plan order, on ``tree`` itself (edited in place)."""
    a = replace(analysis(root=tree), framework=framework)
    ctx = PlanContext(rules=fix_rules(), tree=tree)
    changes: list[Change] = []
    for rule in PLAN_ORDER[:-1]:  # the strips; fp32-payload casts
        changes.extend(rule.plan(a, rule_view(ctx.rules, rule.id), ctx).changes)
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
