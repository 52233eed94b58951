"""Every shared fixture family (tests/fixtures, real torch): our reading and analysis agree with
torch's oracle on bytes by dtype and by role, tensor shapes/dtypes, format and framework."""

from __future__ import annotations

from collections import Counter

import pytest

from ckpt_guard.analyze import analyze
from ckpt_guard.read import read_path
from tests.fixtures import FAMILIES


def _nonzero(d) -> dict[str, int]:
    return {k: v for k, v in d.items() if v}


@pytest.mark.parametrize("family", FAMILIES)
def test_family_matches_oracle(ckpt_factory, family):
    fx = ckpt_factory.get(family)
    a = analyze(read_path(str(fx.path)))
    oracle = fx.oracle
    assert a.checkpoint.format == fx.format
    assert a.framework in {fx.framework, *fx.frameworks_ok}
    assert a.tensor_bytes_total == oracle.total_bytes
    assert _nonzero(a.bytes_by_dtype) == _nonzero(oracle.bytes_by_dtype)
    assert _nonzero(a.bytes_by_role) == oracle.roles_nonzero()
    ours = Counter((t.dtype, tuple(t.shape)) for t in a.tensors)
    assert ours == oracle.dtype_shapes()
