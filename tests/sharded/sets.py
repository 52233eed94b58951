"""Sharded sets built by the real writers (huggingface_hub.save_torch_state_dict, torch for
``.bin`` shards), and a loader that reads a set the way transformers does."""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from huggingface_hub import save_torch_state_dict

SHARD = 40_000  # bytes: 6 × 16 kB tensors → 3 shards


def state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    sd = {f"layers.{i}.weight": torch.randn(64, 64, generator=g) for i in range(6)}
    sd["norm.running_mean"] = torch.randn(64, generator=g)
    sd["step"] = torch.tensor([3], dtype=torch.int64)
    return sd


def make_set(folder: Path, *, safe: bool = True, sd: dict | None = None,
             max_shard_size: int = SHARD) -> Path:
    """Write a set; returns its index path."""
    folder.mkdir(parents=True, exist_ok=True)
    save_torch_state_dict(sd if sd is not None else state_dict(), str(folder),
                          max_shard_size=max_shard_size, safe_serialization=safe)
    name = "model.safetensors.index.json" if safe else "pytorch_model.bin.index.json"
    return folder / name


def index_of(index: Path) -> dict:
    return json.loads(index.read_text())


def load_set(index: Path) -> dict[str, torch.Tensor]:
    """transformers' get_checkpoint_shard_files + load: fetch sorted(set(weight_map
    values)), every weight_map entry must be found in its shard."""
    wm = index_of(index)["weight_map"]
    out: dict[str, torch.Tensor] = {}
    for shard in sorted(set(wm.values())):
        path = os.path.join(index.parent, shard)
        if shard.endswith(".safetensors"):  # transformers: by the shard's extension
            from safetensors.torch import load_file

            tensors = load_file(path)
        else:
            tensors = torch.load(path, weights_only=True)
        for k, v in tensors.items():
            if wm.get(k) == shard:
                out[k] = v
    missing = set(wm) - set(out)
    assert not missing, f"entries not found in their shards: {sorted(missing)}"
    return out
