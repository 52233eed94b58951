"""The torch side of benchmarks/realworld_fix.py: compare a fixed file with its input.

    python benchmarks/realworld_fix_torch.py INPUT OUTPUT exact|subset

Loads both with ``torch.load(weights_only=True)`` (``.safetensors``: safetensors' own loader);
an input torch will not load that way is skipped (it is never loaded with weights_only=False
here). ``exact``: the output equals the input up to an exact FP32 → FP16/BF16 cast
(tests/invariants/fidelity.py). ``subset``: every tensor in the output equals a tensor of the
input, bit for bit or as torch's own cast of it (stripping removes tensors and may move the EMA
into the weights' place). Prints one JSON line: ``{"ok", "error", "cast", "skipped"}``.
"""

from __future__ import annotations

import hashlib
import json
import sys
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _load(p: str):
    if p.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(p)
    import torch

    return torch.load(p, weights_only=True, map_location="cpu")


def _tensors(obj, out: list, seen: set) -> None:
    import torch

    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif isinstance(obj, dict):
        for v in obj.values():
            _tensors(v, out, seen)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            _tensors(v, out, seen)


def _key(t) -> tuple:
    import torch

    t = t.detach()
    if t.layout != torch.strided or t.is_quantized:
        return (str(t.layout), tuple(t.shape), str(t.dtype))
    flat = t.resolve_conj().resolve_neg().contiguous().reshape(-1)
    data = flat.to(torch.uint8) if t.dtype == torch.bool else (
        flat.view(torch.uint8) if flat.numel() else flat)
    return (tuple(t.shape), str(t.dtype), hashlib.sha256(data.numpy().tobytes()).hexdigest())


def main() -> int:
    src, out, mode = sys.argv[1:4]
    warnings.simplefilter("ignore")
    try:
        a = _load(src)
    except Exception as e:  # the input is not one weights_only/safetensors reads
        print(json.dumps({"ok": True, "skipped": f"input not loadable weights_only: "
                                                 f"{type(e).__name__}"}))
        return 0
    try:
        b = _load(out)
    except Exception as e:
        print(json.dumps({"ok": False, "error": f"output does not load: {type(e).__name__}: "
                                                f"{str(e)[:200]}"}))
        return 0
    import torch

    try:
        if mode == "exact" and not out.endswith(".safetensors"):
            from tests.invariants.fidelity import same

            casts = same(a, b)
            print(json.dumps({"ok": True, "cast": len(casts)}))
            return 0
        ins: list = []
        _tensors(a, ins, set())
        known = set()
        for t in ins:
            known.add(_key(t))
            if t.dtype == torch.float32 and t.layout == torch.strided and not t.is_quantized:
                for d in (torch.float16, torch.bfloat16):
                    known.add(_key(t.detach().to(d)))
        outs: list = []
        _tensors(b, outs, set())
        cast = sum(1 for t in outs if t.dtype in (torch.float16, torch.bfloat16))
        missing = [tuple(t.shape) for t in outs if _key(t) not in known]
        if missing:
            print(json.dumps({"ok": False, "error": f"{len(missing)} output tensors equal no "
                                                    f"input tensor (shapes {missing[:3]})"}))
        else:
            print(json.dumps({"ok": True, "cast": cast, "tensors": len(outs)}))
    except AssertionError as e:
        print(json.dumps({"ok": False, "error": str(e)[:300]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
