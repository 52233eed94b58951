"""The reports of the committed examples, byte for byte: every output format of ``check``,
``fix --dry-run`` and ``inspect``, against golden files written before the str-enums of
:mod:`ckpt_guard.vocab` replaced the bare strings in read/, analyze/ and report/ (their values
are the JSON contract's strings: adopting them must change no byte).

An intended change of the output regenerates them:
``CKPT_GUARD_REGEN_GOLDEN=1 PYTHONPATH=src python -m pytest tests/report/test_golden_examples.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).parent / "golden"
EXAMPLES = ["examples/release", "examples/training"]
FIX_POLICY = ["--policy", "tests/report/golden/fix-policy.yml"]
CASES = {
    "check.json": ["check", "--format", "json", *EXAMPLES],
    "check.md": ["check", "--format", "markdown", *EXAMPLES],
    "check.sarif": ["check", "--format", "sarif", *EXAMPLES],
    "check.txt": ["check", "--format", "text", *EXAMPLES],
    "check-fix-policy.json": ["check", *FIX_POLICY, "--format", "json", *EXAMPLES],
    "check-fix-policy.md": ["check", *FIX_POLICY, "--format", "markdown", *EXAMPLES],
    "check-fix-policy.sarif": ["check", *FIX_POLICY, "--format", "sarif", *EXAMPLES],
    "dry-run.json": ["fix", "--dry-run", *FIX_POLICY, "--format", "json", *EXAMPLES],
    "dry-run.md": ["fix", "--dry-run", *FIX_POLICY, "--format", "markdown", *EXAMPLES],
    "dry-run.txt": ["fix", "--dry-run", *FIX_POLICY, "--format", "text", *EXAMPLES],
    "inspect.json": ["inspect", "--format", "json", "examples/training/yolo-last.pt",
                     "examples/training/lightning-epoch3.ckpt",
                     "examples/release/tiny-fp16.safetensors"],
    "inspect.txt": ["inspect", "--format", "text", "examples/training/yolo-last.pt",
                    "examples/release/resnet-tiny.pt"],
}


# A real fix (of copies, written next to them with --out: no stash, nothing in place).
FIX_CASES = {
    "fix.json": ["--format", "json"],
    "fix.md": ["--format", "markdown"],
    "fix.txt": ["--format", "text"],
}


def _run(args: list[str], cwd: Path = REPO) -> str:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "FORCE_COLOR")}
    env["PYTHONIOENCODING"] = "utf-8"
    p = subprocess.run([sys.executable, "-m", "ckpt_guard", *args], cwd=cwd, env=env,
                       capture_output=True, text=True, encoding="utf-8", timeout=300,
                       check=False)
    assert p.returncode in (0, 1), p.stderr
    return p.stdout


def _compare(name: str, got: str) -> None:
    path = GOLDEN / name
    if os.environ.get("CKPT_GUARD_REGEN_GOLDEN"):
        with open(path, "w", encoding="utf-8", newline="") as fh:
            fh.write(got)
    with open(path, encoding="utf-8", newline="") as fh:
        assert got == fh.read()


@pytest.mark.parametrize("name", sorted(CASES))
def test_example_reports_are_unchanged(name: str) -> None:
    _compare(name, _run(CASES[name]))


@pytest.mark.parametrize("name", sorted(FIX_CASES))
def test_example_fix_reports_are_unchanged(name: str, tmp_path: Path) -> None:
    for d in EXAMPLES:
        shutil.copytree(REPO / d, tmp_path / Path(d).name)
    shutil.copy(GOLDEN / "fix-policy.yml", tmp_path / "policy.yml")
    got = _run(["fix", "--policy", "policy.yml", *FIX_CASES[name], "--out", "out",
                "release", "training"], cwd=tmp_path)
    _compare(name, got)
