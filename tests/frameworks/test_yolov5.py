"""yolov5's real trainer (the `yolov5` package) vs `ckpt-guard fix` (issue 9, "Done when").
A tiny YOLOv5n trains one epoch on CPU on synthetic images; `save_period=1` keeps the training
checkpoint (`epoch0.pt`: the FP16 model, its FP16 EMA, SGD state, `opt`). yolov5's own
`strip_optimizer` strips a copy; `ckpt-guard fix` with `ema-duplicate: {action: fix, keep:
ema}` (the EMA becomes the weights, as the strip does) must equal it key for key and object
for object, and yolov5 must load both and infer identically.

yolov5 7.0.14's `strip_optimizer` and `attempt_load` call `torch.load` without
`weights_only`, which torch ≥ 2.6 turns into a refusal of its own files (yolov5 #13513): they
run here with torch's documented `TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`. Runs in the venv
`scripts/test-frameworks.sh yolo` makes (yolov5 needs torchvision, which does not import
beside torch 2.13.0 here)."""

from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from tests.frameworks.compare import EMA_POLICIES, assert_same, assert_same_module, fix_copy
from tests.frameworks.data import detection_dataset

if importlib.util.find_spec("yolov5") is None:
    pytest.skip("yolov5 is not installed (it needs torchvision): "
                "bash scripts/test-frameworks.sh yolo", allow_module_level=True)
# Only where it runs: yolov5 reads its config dir at import, and its trainer downloads a font
# into it unless one is there.
os.environ.setdefault("YOLOV5_CONFIG_DIR", tempfile.mkdtemp(prefix="ckpt-guard-yolov5-"))
import yolov5  # noqa: E402


@pytest.fixture(scope="module")
def legacy_load():
    """torch.load as yolov5 7.0.14 was written for (weights_only defaulting to False)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
        yield


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, legacy_load: None) -> tuple[Path, Path]:
    """(the training checkpoint epoch0.pt, a copy stripped by yolov5's strip_optimizer)."""
    import matplotlib
    from yolov5 import train
    from yolov5.utils.general import strip_optimizer

    font = Path(os.environ["YOLOV5_CONFIG_DIR"]) / "Arial.ttf"
    if not font.exists():  # any TrueType font: the trainer only needs one for its plots
        shutil.copy(Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf", font)
    root = tmp_path_factory.mktemp("yolov5")
    data = detection_dataset(root)
    cfg = Path(yolov5.__file__).parent / "models/yolov5n.yaml"
    train.run(data=str(data), weights="", cfg=str(cfg), epochs=1, imgsz=64, batch_size=2,
              device="cpu", workers=0, noplots=True, save_period=1, project=str(root / "runs"),
              name="train", exist_ok=True)
    full = root / "runs/train/weights/epoch0.pt"
    stripped = root / "stripped.pt"
    strip_optimizer(str(full), str(stripped))
    return full, stripped


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)


def test_training_checkpoint_holds_model_ema_and_optimizer(trained: tuple[Path, Path]) -> None:
    ckpt = _load(trained[0])
    assert ckpt["model"] is not None and ckpt["ema"] is not None and ckpt["optimizer"]


@pytest.mark.parametrize("policy", sorted(EMA_POLICIES))
def test_fix_equals_strip_optimizer(trained: tuple[Path, Path], policy: str, tmp_path: Path,
                                    legacy_load: None) -> None:
    from yolov5.models.experimental import attempt_load

    full, stripped = trained
    fixed = fix_copy(full, EMA_POLICIES[policy], tmp_path)
    ours, theirs = _load(fixed), _load(stripped)
    assert list(ours) == list(theirs)
    for key, value in theirs.items():
        if key == "model":
            assert_same_module(ours[key], value)
        else:
            assert_same(ours[key], value, key)
    # yolov5 loads both (its attempt_load: EMA or model, float, fused) and infers identically.
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    outs = []
    for p in (fixed, stripped):
        model = attempt_load(str(p), device="cpu")
        with torch.no_grad():
            outs.append(model(x)[0])
    assert torch.equal(outs[0], outs[1])
