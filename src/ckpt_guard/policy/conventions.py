"""What each framework's own strip keeps and drops (shared/notes/frameworks.md): the data the
rules that plan strips follow (:mod:`ckpt_guard.policy.strips` has the functions).

Each entry names the framework's own function it mirrors. Keys are top-level checkpoint keys
unless written with dots.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from ckpt_guard.vocab import Role


@dataclass(frozen=True)
class Convention:
    """``drop_optimizer``/``drop_training``: keys deleted when optimizer-state /
    training-state are fixed. ``none_optimizer``/``none_training``: keys set to None instead
    (the framework keeps the key). ``ema``: (EMA key, weights key) — with ``keep: ema`` the
    EMA copy becomes the weights. ``training_minus_one``: keys set to -1 (ultralytics'
    ``epoch``). ``ema_when_weights_empty``: fixing training-state moves the EMA to the
    weights key when that key is empty (a training file whose only weights are the EMA), as
    the framework's strip does whatever else is set."""

    mirrors: str
    drop_optimizer: tuple[str, ...] = ()
    drop_training: tuple[str, ...] = ()
    none_optimizer: tuple[str, ...] = ()
    none_training: tuple[str, ...] = ()
    training_minus_one: tuple[str, ...] = ()
    ema: tuple[str, str] | None = None
    ema_when_weights_empty: bool = False


# Roles a strip removes, and the rule that governs each.
ROLE_RULE = {Role.OPTIMIZER: "optimizer-state", Role.SCHEDULER: "training-state",
             Role.SCALER: "training-state", Role.RNG: "training-state"}
LIGHTNING_SCALER = re.compile(r"(Precision(Plugin)?|amp_scaling_state)$")
# ultralytics 8.4 `strip_optimizer` keeps only these `train_args` keys (the keys of its
# cfg/default.yaml, DEFAULT_CFG_KEYS); anything else (`save_dir`, local paths) goes.
ULTRALYTICS_CFG_KEYS = frozenset(["agnostic_nms", "amp", "angle", "augment", "auto_augment", "batch", "bgr", "box", "cache", "cfg", "channels_last", "classes", "close_mosaic", "cls", "cls_pw", "cls_remap", "compile", "conf", "copy_paste", "copy_paste_mode", "cos_lr", "cutmix", "data", "degrees", "deterministic", "device", "dfl", "dgrad", "dis", "distill_model", "dlam", "dlog", "dnn", "dropout", "dynamic", "embed", "epochs", "erasing", "exist_ok", "fliplr", "flipud", "format", "fraction", "freeze", "hsv_h", "hsv_s", "hsv_v", "imgsz", "iou", "kobj", "line_width", "lr0", "lrf", "mask_ratio", "max_det", "mixup", "mode", "model", "momentum", "mosaic", "multi_scale", "name", "nbs", "nms", "opset", "optimize", "optimizer", "overlap_mask", "patience", "perspective", "plots", "pose", "pretrained", "profile", "project", "quantize", "rect", "resume", "retina_masks", "rle", "save", "save_conf", "save_crop", "save_frames", "save_json", "save_period", "save_txt", "scale", "seed", "shear", "show", "show_boxes", "show_conf", "show_labels", "simplify", "single_cls", "source", "split", "stream_buffer", "task", "time", "tracker", "translate", "val", "verbose", "vid_stride", "visualize", "warmup_bias_lr", "warmup_epochs", "warmup_momentum", "weight_decay", "workers", "workspace"])
NAMESPACE_GLOBALS = frozenset({"ultralytics.utils.IterableSimpleNamespace",
                                "types.SimpleNamespace"})



CONVENTIONS: dict[str, Convention] = {
    "yolov5": Convention("yolov5/ultralytics strip_optimizer()", none_optimizer=("optimizer",),
                         none_training=("best_fitness", "stopper", "scaler"),
                         training_minus_one=("epoch",), ema=("ema", "model"),
                         ema_when_weights_empty=True),
    # ultralytics 8.4 also trims train_args to ULTRALYTICS_CFG_KEYS, turns model.args into a
    # dict and sets model.criterion to None (see policy/strips.py).
    "ultralytics": Convention("ultralytics 8.4 strip_optimizer()", none_optimizer=("optimizer",),
                              none_training=("best_fitness", "stopper", "scaler"),
                              training_minus_one=("epoch",), ema=("ema", "model"),
                              ema_when_weights_empty=True),
    # Plus every key matching LIGHTNING_SCALER (precision plugin / AMP scaler state).
    "lightning": Convention("Lightning save_weights_only", drop_optimizer=("optimizer_states",),
                            drop_training=("lr_schedulers", "callbacks")),
    # Pre-Lightning checkpoints; Lightning-saved RF-DETR ones also follow "lightning".
    "rfdetr": Convention("RF-DETR strip_checkpoint", drop_optimizer=("optimizer",),
                         drop_training=("lr_scheduler", "epoch"), ema=("ema_model", "model")),
    "timm": Convention("timm clean_checkpoint.py", drop_optimizer=("optimizer",),
                       drop_training=("amp_scaler", "amp"),
                       ema=("state_dict_ema", "state_dict")),
    "mmengine": Convention("mmengine publish_model.py", drop_optimizer=("optimizer",),
                           drop_training=("param_schedulers", "message_hub"),
                           ema=("ema_state_dict", "state_dict")),
    # Plus trainer._trainer.optimizer with optimizer-state.
    "detectron2": Convention("detectron2 checkpointer", drop_optimizer=("optimizer",),
                             drop_training=("scheduler", "trainer")),
}
