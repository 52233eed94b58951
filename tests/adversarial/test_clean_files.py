"""No false positives: every torch-made fixture family (tests/fixtures) — state dicts,
training checkpoints, legacy, TorchScript, safetensors, full-module ultralytics/yolov5
pickles, RF-DETR/Lightning/timm/detectron2/mmengine layouts, HF Trainer and DeepSpeed
directories — has no ``unsafe`` global. Anything not allowlisted is at worst ``needs-code``."""

from __future__ import annotations

import pytest

from ckpt_guard.analyze import analyze
from ckpt_guard.analyze.model import Analysis, GlobalVerdict
from ckpt_guard.read import read_path
from tests.fixtures import FAMILIES, FULL_MODULE_FAMILIES, FixtureFactory


def _verdicts(a: Analysis) -> list[GlobalVerdict]:
    out = list(a.globals)
    for _rel, child, _hint in a.children:
        if isinstance(child, Analysis):
            out += _verdicts(child)
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_clean_family_has_no_unsafe_global(family: str, ckpt_factory: FixtureFactory) -> None:
    fx = ckpt_factory.get(family)
    verdicts = _verdicts(analyze(read_path(str(fx.path))))
    unsafe = [f"{v.use.qualname} ({v.use.member}): {v.reason}" for v in verdicts
              if v.safety == "unsafe"]
    assert not unsafe, unsafe
    if family in FULL_MODULE_FAMILIES:  # classes from absent packages: needs-code, not safe
        assert any(v.safety == "needs-code" for v in verdicts)
