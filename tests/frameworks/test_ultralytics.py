"""ultralytics' real trainer vs `ckpt-guard fix` (issue 9, "Done when"; defect 13). A tiny
YOLOv8n trains one epoch on CPU on synthetic images; `save_period=1` keeps the training
checkpoint (`epoch0.pt`: `model: None`, the EMA, AdamW state, scaler, stopper) beside the
`last.pt` the trainer itself stripped with its `strip_optimizer` from the same bytes.
`ckpt-guard fix` of `epoch0.pt` must equal `last.pt` key for key and object for object
(the pickled DetectionModel compared module by module), and ultralytics must load both and
predict the same boxes.

Documented differences (README, "What a fix does"): the key order (`strip_optimizer` puts
`date`, `version`, `license`, `docs` first); ckpt-guard fills no missing `train_args`
defaults and adds no missing metadata keys — a trainer's own file has them all, so here the
values are equal. Runs in the venv `scripts/test-frameworks.sh ultralytics` makes
(ultralytics needs torchvision, which does not import beside torch 2.13.0 here)."""

from __future__ import annotations

import importlib.util
import os
import tempfile
from pathlib import Path

import pytest
import torch

from tests.frameworks.compare import (
    POLICIES,
    assert_same,
    assert_same_module,
    fix_copy,
)
from tests.frameworks.data import detection_dataset, sample_image

if importlib.util.find_spec("ultralytics") is None:
    pytest.skip("ultralytics is not installed (it needs torchvision): "
                "bash scripts/test-frameworks.sh yolo", allow_module_level=True)
# Only where it runs (the environment is the whole session's): settings under a temporary
# directory, never the user's, read when ultralytics is imported; no network checks.
os.environ.setdefault("YOLO_CONFIG_DIR", tempfile.mkdtemp(prefix="ckpt-guard-yolo-"))
os.environ.setdefault("YOLO_OFFLINE", "1")
from ultralytics import YOLO  # noqa: E402
from ultralytics.utils.patches import torch_load  # noqa: E402

METADATA_FIRST = ("date", "version", "license", "docs")


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the training checkpoint epoch0.pt, the trainer's own stripped last.pt)."""
    root = tmp_path_factory.mktemp("ultralytics")
    data = detection_dataset(root)
    model = YOLO("yolov8n.yaml")  # built from the packaged config: no download
    model.train(data=str(data), epochs=1, imgsz=64, batch=2, device="cpu", workers=0,
                plots=False, amp=False, val=False, save_period=1, seed=0,
                project=str(root / "runs"), name="train", exist_ok=True, verbose=False)
    weights = root / "runs/train/weights"
    return weights / "epoch0.pt", weights / "last.pt"


def _load(path: Path) -> dict:
    return torch_load(path, map_location="cpu", weights_only=False)


def test_training_checkpoint_is_what_strip_optimizer_strips(trained: tuple[Path, Path]
                                                            ) -> None:
    full, stripped = trained
    ckpt, theirs = _load(full), _load(stripped)
    assert ckpt["model"] is None and ckpt["ema"] is not None and ckpt["optimizer"]
    assert theirs["ema"] is None and theirs["optimizer"] is None and theirs["epoch"] == -1


@pytest.mark.parametrize("policy", sorted(POLICIES))
def test_fix_equals_strip_optimizer(trained: tuple[Path, Path], policy: str,
                                    tmp_path: Path) -> None:
    full, stripped = trained
    fixed = fix_copy(full, POLICIES[policy], tmp_path)
    ours, theirs = _load(fixed), _load(stripped)
    # Same keys; the order differs only by strip_optimizer's metadata-first merge.
    assert set(ours) == set(theirs)
    assert [k for k in theirs if k not in METADATA_FIRST] == \
        [k for k in ours if k not in METADATA_FIRST]
    for key, value in theirs.items():
        if key == "model":
            assert_same_module(ours[key], value)
        else:
            assert_same(ours[key], value, key)
    # ultralytics loads both and predicts the same boxes.
    img = sample_image()
    boxes = []
    for p in (fixed, stripped):
        result = YOLO(str(p)).predict(img, imgsz=64, device="cpu", conf=0.0, verbose=False)
        boxes.append(result[0].boxes.data)
    assert boxes[0].shape == boxes[1].shape and torch.equal(boxes[0], boxes[1])
