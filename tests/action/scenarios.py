"""Scenarios shared by the entrypoint and container tests: torch-made checkpoints in real
git repositories shaped like a pull request."""

from __future__ import annotations

import io
from pathlib import Path

import torch

from tests.action.gitrepo import commit, git, init


def ckpt_bytes(obj: object) -> bytes:
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def weights(n: int = 64, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"conv.weight": torch.randn(n, n, generator=g), "conv.bias": torch.randn(n, generator=g)}


def training(n: int = 64) -> dict:
    w = weights(n)
    state = {i: {"step": torch.tensor(10.0), "exp_avg": torch.zeros_like(t),
                 "exp_avg_sq": torch.zeros_like(t)} for i, t in enumerate(w.values())}
    return {"epoch": 3, "model": w,
            "optimizer": {"state": state, "param_groups": [{"lr": 1e-3, "betas": (0.9, 0.999),
                                                            "params": list(range(len(w)))}]}}


def stripped() -> bytes:
    return ckpt_bytes({"model": {k: v.half() for k, v in weights().items()}})


def make_pr_repo(tmp_path: Path) -> dict:
    """origin: main has models/base.pt and docs; feature adds a training checkpoint, renames
    one file, deletes another. The workspace is a depth-1 clone of feature (like
    actions/checkout), so the base commit has to be fetched."""
    origin = init(tmp_path / "origin")
    base = commit(origin, "base", {"models/base.pt": ckpt_bytes({"model": weights(32)}),
                                   "models/old-name.pt": stripped(),
                                   "models/gone.pt": stripped(),
                                   "models/same.pt": stripped(),
                                   "README.md": b"# models\n"})
    git(origin, "checkout", "-q", "-b", "feature")
    (origin / "models" / "new").mkdir()
    git(origin, "mv", "models/old-name.pt", "models/new/renamed.pt")
    head = commit(origin, "add training ckpt", {"models/train.pt": ckpt_bytes(training()),
                                                "models/gone.pt": None,
                                                "models/base.pt": ckpt_bytes(
                                                    {"model": weights(48)}),
                                                "notes.txt": b"not a weight file"})
    ws = tmp_path / "ws"
    git(tmp_path, "clone", "-q", "--depth", "1", "--branch", "feature", f"file://{origin}",
        str(ws))
    return {"origin": origin, "ws": ws, "base": base, "head": head, "tmp": tmp_path}


def make_small_pr(tmp_path: Path, base_files: dict[str, bytes],
                  head_files: dict[str, bytes | None]) -> tuple[Path, str, str]:
    """origin/main with ``models/ok.pt`` + ``base_files``; ``feature`` commits ``head_files``;
    the workspace is a depth-1 clone of feature. Returns (workspace, base SHA, head SHA)."""
    origin = init(tmp_path / "origin")
    base = commit(origin, "base", {"models/ok.pt": stripped(), **base_files})
    git(origin, "checkout", "-q", "-b", "feature")
    head = commit(origin, "pr", head_files)
    ws = tmp_path / "ws"
    git(tmp_path, "clone", "-q", "--depth", "1", "--branch", "feature", f"file://{origin}",
        str(ws))
    return ws, base, head
