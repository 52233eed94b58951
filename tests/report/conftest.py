"""Reports of real fixture checkpoints, checked by the real engine."""

from __future__ import annotations

from pathlib import Path

import pytest

from ckpt_guard.app.check import check_paths
from ckpt_guard.policy import builtin_policy, load_text
from ckpt_guard.report.model import Report

FIX_ALL = """version: 1
rules:
  optimizer-state: {action: fix, remove-training-files: true}
  training-state: {action: fix, remove-training-files: true}
  ema-duplicate: fix
  fp32-payload: {action: fix, max-bytes: 0}
"""
FAMILIES = ("train-adam", "ultralytics-train", "timm-train", "hf-trainer-dir", "dtypes",
            "torchscript")


@pytest.fixture
def fixture_paths(ckpt_factory, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Paths as a user in the fixtures' directory types them (``train-adam/checkpoint.pt``)."""
    monkeypatch.chdir(ckpt_factory.root)
    return {fam: str(ckpt_factory.get(fam).path.relative_to(ckpt_factory.root))
            for fam in FAMILIES}


def run(paths: list[str], policy_text: str | None = None, *, details: bool = False) -> Report:
    policy = load_text(policy_text, "p.yml") if policy_text else builtin_policy()
    return check_paths(paths, policy, root=Path.cwd(), details=details, jobs=1)
