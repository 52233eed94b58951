"""Shapes of real weight files that PyPI packages ship, rebuilt by torch at test time, run
through benchmarks/realworld.py's own comparison with real torch (one subprocess per load).

benchmarks/REALWORLD.md records the run on the real files (pip download --no-deps); these
fixtures keep the shapes that run met and that the rest of the suite does not build:

* resemblyzer's ``pretrained.pt`` (legacy format): an ``nn.LSTM``'s flat weights, 12
  tensors viewing one storage, next to Adam state — tensor count is per tensor, bytes per
  unique storage;
* SevenNet's ``checkpoint_sevennet_0.pth``: numpy arrays in the config
  (``numpy.core.multiarray._reconstruct``/``ndarray``/``dtype``): ``needs-code``, never
  ``unsafe``; ``weights_only=True`` refuses it, ``weights_only=False`` loads it;
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def realworld():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import realworld
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return realworld


def _resemblyzer_like(path: Path) -> None:
    torch.manual_seed(0)
    lstm = torch.nn.LSTM(40, 32, num_layers=3, batch_first=True)
    lin = torch.nn.Linear(32, 16)
    model = torch.nn.ModuleDict({"lstm": lstm, "linear": lin})
    # cuDNN's flatten_parameters (the file was saved on a GPU) puts every LSTM weight in one
    # buffer; on CPU the same sharing is made by hand: each parameter a view of one storage.
    flat = torch.randn(sum(p.numel() for p in lstm.parameters()))
    offset = 0
    for p in lstm.parameters():
        p.data = flat[offset:offset + p.numel()].view_as(p)
        offset += p.numel()
    opt = torch.optim.Adam(model.parameters())
    out = lstm(torch.randn(2, 3, 40))[0]
    lin(out).sum().backward()
    opt.step()
    torch.save({"step": 1, "model_state": model.state_dict(), "optimizer_state":
                opt.state_dict()}, path, _use_new_zipfile_serialization=False)


def _sevennet_like(path: Path) -> None:
    cfg = {"cutoff": 5.0, "shift": np.array([0.1, 0.2], dtype=np.float64),
           "chemical_species": ["H", "O"], "_number_of_species": 2}
    lin = torch.nn.Linear(4, 4)
    opt = torch.optim.Adam(lin.parameters())
    lin(torch.randn(2, 4)).sum().backward()
    opt.step()
    torch.save({"model_state_dict": lin.state_dict(), "optimizer_state_dict": opt.state_dict(),
                "config": cfg, "epoch": 600}, path)


def test_real_shapes_agree_with_torch(realworld, tmp_path: Path) -> None:
    pkg = tmp_path / "files" / "pkg"
    pkg.mkdir(parents=True)
    _resemblyzer_like(pkg / "pretrained.pt")
    _sevennet_like(pkg / "checkpoint_sevennet_0.pth")
    rows = {p.name: realworld.examine("pkg", p) for _, p in
            realworld.weight_files(tmp_path / "files")}
    for name, row in rows.items():
        assert not row["cg_crash"], (name, row["cg_stderr"])
        assert row["disagreements"] == [], (name, row["disagreements"])
        assert not row["cg_unsafe"], name

    lstm = rows["pretrained.pt"]
    assert lstm["torch_wo_ok"] and lstm["cg_all_safe"]
    assert lstm["cg_tensors"] == lstm["torch_tensors"] > lstm["torch_storages"]

    seven = rows["checkpoint_sevennet_0.pth"]
    assert not seven["torch_wo_ok"] and seven["torch_full_ok"]
    not_safe = {n.replace("numpy._core.", "numpy.core.")  # numpy 2 spells it _core
                for n, s in seven["globals"].items() if s != "safe"}
    assert not_safe == {"numpy.core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype"}

