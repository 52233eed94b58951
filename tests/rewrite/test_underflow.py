"""The error a cast reports is the true one (issue 9, defect 7): values that flush to zero
(relative error 1.0) or land in FP16's subnormal range are counted and reported, and
``on-overflow`` governs bulk underflow as it governs overflow. Arrays are built
deterministically with numpy; nothing is trained."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from ckpt_guard.rewrite.cast import (
    FP16_MIN_NORMAL,
    FP16_MIN_SUBNORMAL,
    SUBNORMAL_CEIL,
    ScanStats,
    cast_chunk,
    within_rounding,
)
from tests.rewrite.helpers import fix_rules, run_fix

BOUNDARY = np.array([
    0.0, 1.0, 1e-8,                                       # zero, normal, flushed
    FP16_MIN_SUBNORMAL / 2,                               # tie: rounds to (even) zero
    np.nextafter(np.float32(FP16_MIN_SUBNORMAL / 2), np.float32(1)),  # smallest subnormal
    1e-6, 3e-5,                                           # subnormal
    np.nextafter(np.float32(SUBNORMAL_CEIL), np.float32(0)),  # largest subnormal
    SUBNORMAL_CEIL,                                       # tie: rounds up to the normal
    FP16_MIN_NORMAL, -1e-6, -1e-8,
], dtype="<f4")


def test_counts_match_numpy_at_the_boundaries():
    half = BOUNDARY.astype(np.float16)
    nonzero = BOUNDARY != 0
    flushed = int(np.count_nonzero(nonzero & (half == 0)))
    subnormal = int(np.count_nonzero((half != 0) & (np.abs(half) < FP16_MIN_NORMAL)))
    assert (flushed, subnormal) == (3, 5)
    out, stats = cast_chunk(BOUNDARY, "float16")
    assert np.array_equal(out, half.view("<u2"))
    assert (stats.underflow, stats.subnormal, stats.nonzero) == (flushed, subnormal, 11)
    assert stats.max_rel_err == 1.0  # flushed values: the true relative error
    true_rel = np.abs(half.astype(np.float64) - BOUNDARY)[nonzero] / np.abs(BOUNDARY[nonzero])
    assert stats.max_rel_err == pytest.approx(float(true_rel.max()))
    assert within_rounding(stats, "float16")  # ... and still nothing but rounding
    scan = ScanStats()
    scan.add(BOUNDARY)
    assert (scan.underflow, scan.subnormal) == (flushed, subnormal)
    assert "3 would flush to zero and 5 would be subnormal" in stats.problem("float16")
    assert scan.fp16_problem() == stats.problem("float16")


def test_subnormal_results_alone_are_bulk_underflow():
    x = np.full(1000, 1e-6, dtype="<f4")  # all subnormal in FP16: ~3% relative error
    _, stats = cast_chunk(x, "float16")
    assert stats.underflow == 0 and stats.subnormal == 1000
    assert 0.01 < stats.max_rel_err < 0.3
    assert "1000 would be subnormal" in stats.problem("float16")


def _file(tmp_path):
    rng = np.random.default_rng(7)
    ints = rng.integers(-2048, 2048, size=20_000)
    few = (ints / 1024).astype("<f4")  # exact, far from FP16's limits ...
    few[:40] = 1e-9  # ... but 0.2% flush to zero and 0.15% become subnormal: under the
    few[40:70] = 1e-6  # bulk threshold, so cast (and reported)
    many = (rng.integers(64, 1000, size=4000) * 2.0 ** -30).astype("<f4")  # all subnormal
    path = tmp_path / "w.pt"
    torch.save({"few.weight": torch.from_numpy(few), "many.weight": torch.from_numpy(many)},
               path)
    return path, few, many


@pytest.mark.parametrize("on_overflow", ["keep", "bfloat16", "fail"])
def test_on_overflow_governs_underflow(tmp_path, on_overflow):
    path, few, many = _file(tmp_path)
    result = run_fix(path, fix_rules(fp32_payload={"on-overflow": on_overflow}))
    if on_overflow == "fail":
        assert result.error and "many.weight" in result.error and "subnormal" in result.error
        return
    assert result.error is None
    assert result.flushed_to_zero == 40 and result.max_rel_err == 1.0
    fixed = torch.load(path, weights_only=True)
    assert fixed["few.weight"].dtype == torch.float16
    if on_overflow == "keep":
        assert fixed["many.weight"].dtype == torch.float32
        assert dict(result.kept_fp32)["many.weight"].startswith("4000 would be subnormal")
        assert result.subnormal == 30
    else:
        assert fixed["many.weight"].dtype == torch.bfloat16  # BF16 keeps FP32's range
        assert torch.equal(fixed["many.weight"], torch.from_numpy(many).bfloat16())


def test_cli_reports_the_true_error(tmp_path):
    path, _, _ = _file(tmp_path)
    (tmp_path / ".ckpt-guard.yml").write_text(
        "version: 1\nrules:\n  fp32-payload: {action: fix, max-bytes: 0, on-overflow: bfloat16}\n")
    proc = subprocess.run([sys.executable, "-m", "ckpt_guard", "fix", "--format", "json",
                           str(path)], capture_output=True, text=True, cwd=tmp_path, check=False)
    assert proc.returncode == 0, proc.stderr
    fix = json.loads(proc.stdout)["files"][0]["details"]["fix"]
    assert fix["max_rel_err"] == 1.0 and fix["flushed_to_zero"] == 40
    assert fix["subnormal"] == 30
    assert any("1 relative (40 values flushed to zero, 30 values subnormal)" in c
               for c in fix["changes"])
