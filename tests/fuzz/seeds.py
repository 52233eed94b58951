"""Seed files for mutation fuzzing: real torch-made checkpoints of every format plus the
adversarial corpus. torch is imported only here (it is the oracle that makes real files)."""

from __future__ import annotations

import io
from functools import cache
from pathlib import Path

from tests.adversarial.corpus import CASES


def _torch_seeds() -> dict[str, bytes]:
    import torch
    from safetensors.torch import save as st_save

    sd = {"conv.weight": torch.randn(4, 3, 3, 3), "conv.bias": torch.zeros(4),
          "bn.running_mean": torch.zeros(4), "bn.num_batches_tracked": torch.tensor(3),
          "fc.weight": torch.randn(2, 4).half()}
    sd["tied"] = sd["conv.weight"][0]  # a view sharing a storage
    opt = torch.optim.Adam([torch.nn.Parameter(torch.randn(3))])
    opt.state[opt.param_groups[0]["params"][0]] = {"step": torch.tensor(1.0),
                                                   "exp_avg": torch.zeros(3)}
    out: dict[str, bytes] = {}

    def save(name: str, obj: object, **kw: object) -> None:
        buf = io.BytesIO()
        torch.save(obj, buf, **kw)
        out[name] = buf.getvalue()

    save("state_dict.pt", sd)
    save("training.pt", {"model": sd, "optimizer": opt.state_dict(), "epoch": 3,
                         "ema": {k: v.clone() for k, v in sd.items()}})
    save("legacy.pt", sd, _use_new_zipfile_serialization=False)
    save("param_module.pt", torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.ReLU()))
    buf = io.BytesIO()
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), buf)
    out["script.pt"] = buf.getvalue()
    out["weights.safetensors"] = st_save({k: v.contiguous() for k, v in sd.items()
                                          if k != "tied"})
    return out


@cache
def seeds(canary_dir: str = "/nonexistent-canary-dir") -> dict[str, bytes]:
    """name -> bytes. Corpus cases aim their canaries into ``canary_dir``."""
    out = _torch_seeds()
    for case in CASES:
        out[f"adv_{case.id}"] = case.make(str(Path(canary_dir) / f"canary-{case.id}"))
    return out


def write_seeds(directory: Path, canary_dir: str = "/nonexistent-canary-dir") -> int:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in seeds(canary_dir).items():
        (directory / name).write_bytes(data)
    return len(seeds(canary_dir))
