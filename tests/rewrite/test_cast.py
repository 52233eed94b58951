"""numpy casts agree bit for bit with torch's, and report what they damage."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ckpt_guard.rewrite.cast import (
    REL_BOUND,
    ScanStats,
    cast_chunk,
    f32_to_bf16_bits,
    within_rounding,
)

EDGES = [0.0, -0.0, 1.0, -1.0, 65504.0, 65519.0, 65520.0, 1e-8, 3e-8, 6e-8, 5.96e-8,
         2.0 ** -24, 2.0 ** -25, 6.1e-5, 3.4e38, -3.4e38, 1.00390625, 1.01171875,
         float("inf"), float("-inf")]


def _values() -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    wide = torch.randn(200_000, generator=g) * torch.exp(torch.randn(200_000, generator=g) * 8)
    return torch.cat([torch.tensor(EDGES), wide, torch.randn(10_000, generator=g)])


def test_bfloat16_bits_match_torch_round_to_nearest_even():
    x = _values()
    ours = f32_to_bf16_bits(x.numpy())
    theirs = x.to(torch.bfloat16).view(torch.int16).numpy().view("<u2")
    assert np.array_equal(ours, theirs)


def test_bfloat16_keeps_nan():
    x = np.array([np.nan, -np.nan], dtype="<f4")
    back = torch.from_numpy(f32_to_bf16_bits(x).view("<i2").copy()).view(torch.bfloat16)
    assert back.isnan().all()


@pytest.mark.parametrize("target", ["float16", "bfloat16"])
def test_cast_chunk_matches_torch_and_measures_error(target):
    x = _values()
    finite = x[x.abs() < 60000]
    out, stats = cast_chunk(finite.numpy(), target)
    tdtype = getattr(torch, target)
    theirs = finite.to(tdtype).view(torch.int16).numpy().view("<u2")
    assert np.array_equal(out.view("<u2"), theirs)
    err = (finite.to(tdtype).float() - finite).abs()
    assert stats.max_abs_err == pytest.approx(float(err.max()), rel=1e-6)
    assert stats.overflow == 0
    assert within_rounding(stats, target)
    assert stats.rounding_rel_err <= REL_BOUND[target] * 1.001
    # The reported relative error is the true one over every non-zero input.
    f64 = finite.double()
    nz = f64 != 0
    rel = ((finite.to(tdtype).double() - f64).abs()[nz] / f64.abs()[nz]).max()
    assert stats.max_rel_err == pytest.approx(float(rel), rel=1e-5)
    assert stats.underflow == int(((finite.to(tdtype) == 0) & nz).sum())


def test_overflow_and_underflow_are_detected():
    out, stats = cast_chunk(np.array([1.0, 7e4, -1e5], dtype="<f4"), "float16")
    assert stats.overflow == 2 and stats.problem("float16")
    assert not within_rounding(stats, "float16")
    tiny = np.full(1000, 1e-9, dtype="<f4")
    _, stats = cast_chunk(tiny, "float16")
    assert stats.underflow == 1000 and "flush to zero" in stats.problem("float16")
    scan = ScanStats()
    scan.add(np.array([1.0, 7e4], dtype="<f4"))
    assert "beyond FP16 range" in scan.fp16_problem()
    scan = ScanStats()
    scan.add(tiny)
    assert "flush to zero" in scan.fp16_problem()
    _, stats = cast_chunk(np.array([7e4, 1e-9, 1.0], dtype="<f4"), "bfloat16")
    assert stats.problem("bfloat16") is None


def test_fp16_bits_match_numpy_and_torch_on_random_bit_patterns():
    """Every kind of FP32 value — normals, subnormals, zeros, infinities, NaN payloads."""
    from ckpt_guard.rewrite.cast import f32_to_f16

    rng = np.random.default_rng(0)
    bits = rng.integers(0, 2 ** 32, 1_000_000, dtype=np.uint64).astype(np.uint32)
    near = np.arange(0x33000000, 0x39000000, 97, dtype=np.uint32)  # subnormal boundary
    x = np.concatenate([bits, near, np.array(EDGES, dtype="<f4").view("<u4")]).view("<f4")
    ours, _ = f32_to_f16(x)
    with np.errstate(over="ignore", invalid="ignore"):
        assert np.array_equal(ours, x.astype("<f2").view("<u2"))
    finite = np.isfinite(x)
    theirs = torch.from_numpy(x[finite]).half().view(torch.int16).numpy().view("<u2")
    assert np.array_equal(ours[finite], theirs)


def test_numpy_fast_path_is_the_integer_cast_bit_for_bit() -> None:
    """f32_to_f16 takes numpy's cast for chunks without overflow/inf/NaN: same bits and same
    error stats as the integer arithmetic, over every exponent's rounding edge and a sweep
    of bit patterns (the integer cast is compared with torch elsewhere in this file)."""
    import numpy as np

    from ckpt_guard.rewrite.cast import _F16_OVERFLOW, f32_to_f16, f32_to_f16_int

    rng = np.random.default_rng(3)
    exps = np.arange(0, 0x8F, dtype=np.uint32) << np.uint32(23)
    mants = np.array([0, 1, 0xFFF, 0x1000, 0x1001, 0x2000, 0x3000, 0x6000, 0x7FF000,
                      0x7FFFFF], dtype=np.uint32)
    edges = (exps[:, None] | mants[None, :]).ravel()
    sweeps = [edges, rng.integers(0, _F16_OVERFLOW, 1 << 16, dtype=np.uint32),
              np.arange(0x387F0000, 0x38810000, dtype=np.uint32),  # around FP16 min normal
              np.arange(0x33000000 - 4096, 0x33000000 + 4096, dtype=np.uint32)]  # 2**-25
    for u in sweeps:
        u = u[u < _F16_OVERFLOW]
        for signed in (u, u | np.uint32(0x80000000)):
            x = signed.view("<f4")
            fast, fs = f32_to_f16(x)
            ref, rs = f32_to_f16_int(x)
            assert np.array_equal(fast, ref)
            assert fs == rs


def test_crc32_implementations_agree() -> None:
    import zlib

    from ckpt_guard.rewrite import crc

    data = bytes(range(256)) * 1000
    assert crc.crc32(data) == zlib.crc32(data)
    assert crc.crc32(memoryview(data)[3:], 12345) == zlib.crc32(memoryview(data)[3:], 12345)
    assert crc.crc32(b"") == 0
    pytest.importorskip("isal")
    assert crc.IMPLEMENTATION == "isal"


def test_crc32_falls_back_to_zlib_without_isal(monkeypatch) -> None:
    import sys
    import zlib

    from ckpt_guard.rewrite import crc

    monkeypatch.setitem(sys.modules, "isal.isal_zlib", None)  # import fails
    fn, name = crc._pick()
    assert (fn, name) == (zlib.crc32, "zlib")
