"""The "kept FP32" note stays one readable line when many tensors are kept for their values,
each with its own figures (a real RF-DETR file kept ~70 such tensors: 70 groups before)."""

from __future__ import annotations

import json
import subprocess
import sys

import torch


def test_tensors_kept_for_underflow_are_one_group(tmp_path):
    # Eight tensors whose values all flush to zero in FP16, each a different count.
    sd = {f"layer{i}.weight": torch.full((64 + i,), 1e-9) for i in range(8)}
    sd["head.weight"] = torch.linspace(-1, 1, 4096)  # cast normally
    torch.save(sd, tmp_path / "m.pt")
    (tmp_path / "p.yml").write_text(
        "version: 1\nrules:\n  fp32-payload: {action: fix, max-bytes: 0}\n")
    # the figures per tensor are in the JSON report (dry run first: it writes nothing)
    j = subprocess.run([sys.executable, "-m", "ckpt_guard", "fix", "--dry-run", "--format",
                        "json", "--policy", "p.yml", "m.pt"], cwd=tmp_path,
                       capture_output=True, text=True)
    kept = json.loads(j.stdout)["files"][0]["details"]["fix"]["kept_fp32"]
    assert len(kept) == 8 and all("flush to zero" in why for _, why in kept), kept
    p = subprocess.run([sys.executable, "-m", "ckpt_guard", "fix", "--no-stash", "--policy",
                        "p.yml", "m.pt"], cwd=tmp_path, capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    notes = [ln for ln in p.stdout.splitlines() if "kept FP32" in ln]
    assert len(notes) == 1, p.stdout
    assert "8 tensors (too many values would flush to zero or be subnormal)" in notes[0], notes[0]
    assert "--format json" in notes[0]
    out = torch.load(tmp_path / "m.pt", weights_only=True)
    assert out["layer3.weight"].dtype == torch.float32
    assert out["head.weight"].dtype == torch.float16
