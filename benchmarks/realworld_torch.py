"""The torch side of benchmarks/realworld.py: one file, one subprocess, one JSON line.

    python benchmarks/realworld_torch.py MODE PATH

MODE is ``weights_only`` (``torch.load(weights_only=True)``; safetensors files through
``safetensors.torch.load_file``), ``full`` (``torch.load(weights_only=False)``) or ``jit``
(``torch.jit.load``). realworld.py asks for ``full`` only when ckpt-guard found no unsafe
global and for ``jit`` only when it found no unsafe code: this script runs whatever it is
given, so it is never pointed at a file ckpt-guard calls unsafe.

Prints ``{"ok": bool, "error": str, "tensors": n, "storages": n, "by_dtype": {...}}``:
tensors reachable from the loaded object, counted once per storage (views share one),
bytes by dtype of those storages.
"""

from __future__ import annotations

import json
import sys
import warnings

_DTYPE = {"float": "float32", "double": "float64", "half": "float16", "long": "int64",
          "int": "int32", "short": "int16", "bool": "bool"}


def _walk(obj: object, seen: set[int], found: dict[int, tuple[str, int]], depth: int = 0) -> int:
    """Collect tensors under ``obj`` into ``found`` (storage key -> (dtype, bytes));
    return how many tensor objects were met."""
    import torch

    if depth > 60 or id(obj) in seen:
        return 0
    seen.add(id(obj))
    if isinstance(obj, torch.Tensor):
        if obj.is_sparse or obj.layout != torch.strided:
            return 1
        st = obj.untyped_storage()
        key = st.data_ptr() if st.nbytes() else -id(st)
        dtype = str(obj.dtype).removeprefix("torch.")
        found.setdefault(key, (_DTYPE.get(dtype, dtype), st.nbytes()))
        return 1
    n = 0
    if isinstance(obj, torch.nn.Module):
        for t in list(obj.state_dict(keep_vars=True).values()):
            n += _walk(t, seen, found, depth + 1)
        # constants and non-registered tensors live in the instance dict
        for v in vars(obj).values() if hasattr(obj, "__dict__") else ():
            n += _walk(v, seen, found, depth + 1)
        return n
    if isinstance(obj, dict):
        for k, v in list(obj.items()):
            n += _walk(k, seen, found, depth + 1) + _walk(v, seen, found, depth + 1)
        return n
    if isinstance(obj, (list, tuple, set, frozenset)):
        for v in list(obj):
            n += _walk(v, seen, found, depth + 1)
        return n
    if isinstance(obj, (str, bytes, int, float, complex, type(None), type)):
        return 0
    if hasattr(obj, "__dict__") and not callable(obj):
        n += _walk(vars(obj), seen, found, depth + 1)
    return n


def main() -> int:
    mode, path = sys.argv[1], sys.argv[2]
    warnings.simplefilter("ignore")
    import torch

    out: dict[str, object] = {"ok": False, "error": ""}
    try:
        if mode == "jit":
            obj = torch.jit.load(path, map_location="cpu")
        elif path.endswith(".safetensors"):
            from safetensors.torch import load_file

            obj = load_file(path)
        else:
            obj = torch.load(path, map_location="cpu", weights_only=(mode == "weights_only"))
        out["ok"] = True
    except Exception as e:  # noqa: BLE001 - every failure is the answer
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        out["error"] = f"{type(e).__name__}: {first}"
        print(json.dumps(out))
        return 0
    found: dict[int, tuple[str, int]] = {}
    if isinstance(obj, torch.jit.ScriptModule):
        seen: set[int] = set()
        n = 0
        for t in obj.state_dict(keep_vars=True).values():
            n += _walk(t, seen, found)
        out["kind"] = "torchscript"
    else:
        n = _walk(obj, set(), found)
        out["kind"] = type(obj).__module__ + "." + type(obj).__qualname__
    by_dtype: dict[str, int] = {}
    for dtype, nbytes in found.values():
        by_dtype[dtype] = by_dtype.get(dtype, 0) + nbytes
    out.update(tensors=n, storages=len(found), by_dtype=by_dtype)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
