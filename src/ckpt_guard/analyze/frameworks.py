"""Recognise which framework produced a checkpoint, from its top-level layout and globals.

Order matters: RF-DETR's Lightning-era files are also Lightning files, ultralytics files also
carry ``epoch``/``optimizer`` like yolov5's, DeepSpeed states carry a ``module`` like others.
"""

from __future__ import annotations

from collections.abc import Callable

from ckpt_guard.read.checkpoint import Checkpoint
from ckpt_guard.read.tree import Opaque, as_mapping, attributes
from ckpt_guard.vocab import Format

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any

FRAMEWORKS = ("ultralytics", "yolov5", "lightning", "rfdetr", "timm", "detectron2", "mmengine",
              "deepspeed", "hf-trainer", "dcp", "generic")

# Attributes of RF-DETR's (LW-DETR-derived) argparse options that DETR/Deformable-DETR lack.
_RFDETR_ARGS = frozenset({"projector_scale", "num_windows", "out_feature_indexes",
                          "encoder_only", "pretrain_weights", "dec_n_points"})


def _present(m: dict, key: str) -> bool:
    """A key that is there AND holds something (None/[]/{} do not count)."""
    v = m.get(key)
    return v is not None and not (isinstance(v, (list, tuple, dict)) and not v)


def _modules(ckpt: Checkpoint) -> set[str]:
    return {g.module for g in ckpt.globals}


def _is_rfdetr(m: dict, mods: set[str]) -> bool:
    if "rfdetr_version" in m or any(x.startswith("rfdetr") for x in mods):
        return True
    args = m.get("args")
    if isinstance(args, Opaque) and args.qualname == "argparse.Namespace" and "model" in m:
        attrs = attributes(args) or {}
        return bool(_RFDETR_ARGS & attrs.keys())
    return False


def _is_ultralytics(m: dict, mods: set[str]) -> bool:
    if any(x.startswith("ultralytics") for x in mods):
        return True
    return "train_args" in m or ({"date", "version"} <= m.keys()
                                 and bool({"license", "docs"} & m.keys()))


def _is_yolov5(m: dict, mods: set[str]) -> bool:
    if any(x in ("models.yolo", "models.common", "models.experimental") for x in mods):
        return True
    return ("opt" in m and "best_fitness" in m) or "training_results" in m or "wandb_id" in m


def _is_lightning(m: dict, mods: set[str]) -> bool:
    return "pytorch-lightning_version" in m or ({"loops", "global_step", "state_dict"}
                                                <= m.keys())


def _is_timm(m: dict, mods: set[str]) -> bool:
    if "state_dict_ema" in m:
        return True
    return "arch" in m and "state_dict" in m and (m.get("version") == 2
                                                  or "amp_scaler" in m or "metric" in m)


def _is_detectron2(m: dict, mods: set[str]) -> bool:
    trainer = as_mapping(m.get("trainer"))
    if trainer is not None and "_trainer" in trainer:
        return True
    return "model" in m and "iteration" in m


def _is_mmengine(m: dict, mods: set[str]) -> bool:
    meta = as_mapping(m.get("meta"))
    if meta is None or "state_dict" not in m:
        return False
    return ("message_hub" in m or "param_schedulers" in m or "ema_state_dict" in m
            or any(k in meta for k in ("mmengine_version", "mmengine", "epoch", "iter", "cfg",
                                       "dataset_meta", "seed")))


def _is_deepspeed(m: dict, mods: set[str]) -> bool:
    if "ds_config" in m or "ds_version" in m:
        return "module" in m or "optimizer_state_dict" in m or "buffer_names" in m
    return any(x.startswith("deepspeed") for x in mods)


_ORDER: tuple[tuple[str, Callable[[dict, set[str]], bool]], ...] = (
    ("rfdetr", _is_rfdetr),
    ("ultralytics", _is_ultralytics),
    ("yolov5", _is_yolov5),
    ("deepspeed", _is_deepspeed),
    ("lightning", _is_lightning),
    ("timm", _is_timm),
    ("mmengine", _is_mmengine),
    ("detectron2", _is_detectron2),
)


def detect_framework(ckpt: Checkpoint, root: Any = None) -> str:
    """The producing framework's name (one of :data:`FRAMEWORKS`)."""
    if ckpt.format == Format.HF_CHECKPOINT_DIR:
        return "hf-trainer"
    if ckpt.format == Format.DEEPSPEED_DIR:
        return "deepspeed"
    if ckpt.format == Format.DCP_DIR:
        return "dcp"
    m = as_mapping(ckpt.root if root is None else root)
    mods = _modules(ckpt)
    if m is None:
        if any(x.startswith("ultralytics") for x in mods):
            return "ultralytics"
        if any(x.startswith("models.") for x in mods):
            return "yolov5"
        return "generic"
    for name, test in _ORDER:
        if test(m, mods):
            return name
    return "generic"
