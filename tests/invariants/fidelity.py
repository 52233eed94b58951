"""``torch.load(output)`` equals ``torch.load(input)`` up to the declared cast: the comparison.

Equal means: the same containers (types, keys in order), the same non-tensor values, and for
every tensor the same class (Parameter or not), attributes, ``requires_grad``, layout, shape,
strides, storage offset, conj/neg bits, quantization parameters and bits — except that an FP32
tensor may come back as FP16/BF16 holding exactly ``torch``'s own ``.to(dtype)`` of the input.
Views that shared a storage still share one.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch

CAST_TARGETS = (torch.float16, torch.bfloat16)


class Mismatch(AssertionError):
    pass


def _bits(t: torch.Tensor) -> torch.Tensor:
    t = t.resolve_conj().resolve_neg().contiguous().reshape(-1)
    if t.dtype == torch.bool:
        return t.to(torch.uint8)
    return t.view(torch.uint8) if t.numel() else t


def _same_bits(a: torch.Tensor, b: torch.Tensor, path: str) -> None:
    if not torch.equal(_bits(a), _bits(b)):
        raise Mismatch(f"{path}: values differ")


def _dense(a: torch.Tensor, b: torch.Tensor, path: str, casts: list[str]) -> None:
    for what, va, vb in (("shape", tuple(a.shape), tuple(b.shape)),
                         ("stride", a.stride(), b.stride()),
                         ("storage_offset", a.storage_offset(), b.storage_offset())):
        if va != vb:
            raise Mismatch(f"{path}: {what} {va} != {vb}")
    if a.is_conj() != b.is_conj() or a.is_neg() != b.is_neg():
        raise Mismatch(f"{path}: conj/neg bits differ")
    if a.dtype == b.dtype:
        _same_bits(a, b, path)
    elif a.dtype == torch.float32 and b.dtype in CAST_TARGETS:
        _same_bits(a.to(b.dtype), b, path)  # torch's own rounding, bit for bit
        casts.append(path)
    else:
        raise Mismatch(f"{path}: dtype {a.dtype} became {b.dtype}")


def _tensor(a: torch.Tensor, b: torch.Tensor, path: str, casts: list[str]) -> None:
    if type(a) is not type(b):
        raise Mismatch(f"{path}: {type(a).__name__} became {type(b).__name__}")
    if a.requires_grad != b.requires_grad:
        raise Mismatch(f"{path}: requires_grad {a.requires_grad} != {b.requires_grad}")
    if a.layout != b.layout or a.device != b.device or a.is_nested != b.is_nested:
        raise Mismatch(f"{path}: layout/device {a.layout}/{a.device} != {b.layout}/{b.device}")
    same(vars(a) if hasattr(a, "__dict__") else {}, vars(b) if hasattr(b, "__dict__") else {},
         f"{path}.__dict__", casts)
    if a.device.type == "meta":
        if (a.dtype, a.shape, a.stride()) != (b.dtype, b.shape, b.stride()):
            raise Mismatch(f"{path}: meta tensor differs")
        return
    if a.is_nested:
        ua, ub = a.unbind(), b.unbind()
        if len(ua) != len(ub):
            raise Mismatch(f"{path}: nested lengths differ")
        for i, (x, y) in enumerate(zip(ua, ub, strict=True)):
            _dense(x, y, f"{path}[{i}]", casts)
        return
    if a.is_quantized:
        if a.qscheme() != b.qscheme() or a.dtype != b.dtype or a.shape != b.shape:
            raise Mismatch(f"{path}: quantization differs")
        if a.qscheme() in (torch.per_tensor_affine, torch.per_tensor_symmetric):
            if (a.q_scale(), a.q_zero_point()) != (b.q_scale(), b.q_zero_point()):
                raise Mismatch(f"{path}: q_scale/q_zero_point differ")
        else:
            _same_bits(a.q_per_channel_scales(), b.q_per_channel_scales(), path + ".scales")
            _same_bits(a.q_per_channel_zero_points(), b.q_per_channel_zero_points(),
                       path + ".zero_points")
            if a.q_per_channel_axis() != b.q_per_channel_axis():
                raise Mismatch(f"{path}: axis differs")
        _same_bits(a.int_repr(), b.int_repr(), path)
        return
    if a.layout == torch.sparse_coo:
        if a.is_coalesced() != b.is_coalesced():
            raise Mismatch(f"{path}: coalesced flag differs")
        _dense(a._indices(), b._indices(), path + ".indices", casts)
        _dense(a._values(), b._values(), path + ".values", casts)
        return
    if a.layout in (torch.sparse_csr, torch.sparse_bsr):
        _dense(a.crow_indices(), b.crow_indices(), path + ".crow", casts)
        _dense(a.col_indices(), b.col_indices(), path + ".col", casts)
        _dense(a.values(), b.values(), path + ".values", casts)
        return
    if a.layout in (torch.sparse_csc, torch.sparse_bsc):
        _dense(a.ccol_indices(), b.ccol_indices(), path + ".ccol", casts)
        _dense(a.row_indices(), b.row_indices(), path + ".row", casts)
        _dense(a.values(), b.values(), path + ".values", casts)
        return
    _dense(a, b, path, casts)


def same(a: Any, b: Any, path: str = "", casts: list[str] | None = None) -> list[str]:
    """Raise :class:`Mismatch` where ``b`` (loaded output) differs from ``a`` (loaded input)
    beyond a declared FP32 → FP16/BF16 cast; returns the paths that were cast."""
    casts = [] if casts is None else casts
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
            raise Mismatch(f"{path}: {type(a).__name__} became {type(b).__name__}")
        _tensor(a, b, path, casts)
        return casts
    if type(a) is not type(b):
        raise Mismatch(f"{path}: {type(a).__name__} became {type(b).__name__}")
    if type(a).__module__ == "numpy":
        import numpy as np

        if getattr(a, "dtype", None) != getattr(b, "dtype", None) or not np.array_equal(
                a, b, equal_nan=a.dtype.kind in "fc"):
            raise Mismatch(f"{path}: numpy value differs")
        return casts
    if isinstance(a, Mapping):
        if list(a.keys()) != list(b.keys()):
            raise Mismatch(f"{path}: keys {list(a)} != {list(b)}")
        for k in a:
            same(a[k], b[k], f"{path}.{k}" if path else str(k), casts)
    elif isinstance(a, (list, tuple)):
        if len(a) != len(b):
            raise Mismatch(f"{path}: length {len(a)} != {len(b)}")
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            same(x, y, f"{path}.{i}", casts)
    elif isinstance(a, float):
        if not (a == b or (math.isnan(a) and math.isnan(b))):
            raise Mismatch(f"{path}: {a!r} != {b!r}")
    elif isinstance(a, (str, bytes, int, bool, complex, type(None), torch.dtype,
                        torch.device, torch.Size, set, frozenset)):
        if a != b:
            raise Mismatch(f"{path}: {a!r} != {b!r}")
    elif hasattr(a, "__dict__"):
        same(vars(a), vars(b), path, casts)
    elif a != b:
        raise Mismatch(f"{path}: {a!r} != {b!r}")
    return casts


def sharing(obj: Any) -> list[list[str]]:
    """Groups of dense tensor paths viewing one storage (more than one per group)."""
    from tests.fixtures.oracle import walk_tensors

    groups: dict[tuple, list[str]] = {}
    for path, t in walk_tensors(obj):
        if t.layout != torch.strided or t.is_quantized or t.is_nested or t.device.type == "meta":
            continue
        try:
            key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        except (RuntimeError, NotImplementedError):
            continue
        if key[0] and key[1]:
            groups.setdefault(key, []).append(path)
    return sorted(sorted(g) for g in groups.values() if len(g) > 1)
