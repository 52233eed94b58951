"""`fix` reads its input once and its output once: the post-fix re-check judges the file
verification read back (the bytes renamed into place), it does not read it a third time."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import ckpt_guard.read as read
from ckpt_guard.app.fix import run_fix
from ckpt_guard.policy import load_text
from ckpt_guard.vocab import Status

POLICY = """version: 1
rules:
  optimizer-state: fix
  training-state: fix
  fp32-payload: {action: fix, max-bytes: 0}
"""


def _reads(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    calls: list[str] = []
    original = read.read_path

    def counting(path, *args, **kwargs):
        calls.append(os.path.basename(str(path)))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(read, "read_path", counting)
    return calls


@pytest.mark.parametrize("out", [False, True])
def test_torch_fix_reads_input_once_and_output_once(tmp_path: Path, monkeypatch, out) -> None:
    path = tmp_path / "ckpt.pt"
    w = torch.nn.Linear(8, 8)
    opt = torch.optim.Adam(w.parameters())
    w(torch.ones(1, 8)).sum().backward()
    opt.step()
    torch.save({"model": w.state_dict(), "optimizer": opt.state_dict(), "epoch": 3}, path)
    policy = load_text(POLICY)
    calls = _reads(monkeypatch)
    report = run_fix([str(path)], policy, root=tmp_path,
                     out_dir=str(tmp_path / "out") if out else None)
    (fr,) = report.files
    assert fr.status == Status.FIXED, fr
    assert calls[0] == "ckpt.pt"  # the analysis
    assert len(calls) == 2 and calls[1].startswith(".ckpt.pt"), calls  # verification only
    assert not fr.findings  # the re-check judged the verified output: nothing left to fix
    written = tmp_path / "out" / "ckpt.pt" if out else path
    loaded = torch.load(written, weights_only=True)
    assert loaded["optimizer"] is None and loaded["model"]["weight"].dtype == torch.float16


def test_safetensors_fix_reads_output_once(tmp_path: Path, monkeypatch) -> None:
    from safetensors.torch import load_file, save_file

    path = tmp_path / "m.safetensors"
    save_file({"w": torch.randn(16, 16)}, str(path))
    policy = load_text(POLICY)
    calls = _reads(monkeypatch)
    (fr,) = run_fix([str(path)], policy, root=tmp_path).files
    assert fr.status == Status.FIXED, fr
    assert len(calls) == 2 and calls[0] == "m.safetensors", calls
    assert load_file(str(path))["w"].dtype == torch.float16
