"""Property: any state dict (dtypes, shapes, views sharing storages, nesting) survives a fix
that strips an optimizer and casts nothing — every tensor torch.equal, views still shared."""

from __future__ import annotations

import tempfile
from pathlib import Path

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fixtures.oracle import walk_tensors
from tests.rewrite.helpers import fix_rules, run_fix

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64,
          torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64]
NO_CAST = fix_rules(fp32_payload={"action": "off"}, ema_duplicate={"action": "off"})


@st.composite
def tensors(draw):
    dtype = draw(st.sampled_from(DTYPES))
    shape = tuple(draw(st.lists(st.integers(0, 5), min_size=0, max_size=3)))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 16)))
    base = (torch.randn(shape, generator=g) * 100).to(dtype) if dtype != torch.bool \
        else torch.rand(shape, generator=g) > 0.5
    views = [base]
    if base.dim() >= 2 and draw(st.booleans()):
        views.append(base.transpose(0, 1))  # non-contiguous view of the same storage
    if base.numel() > 1 and draw(st.booleans()):
        views.append(base.flatten()[1:])  # offset view
    if draw(st.booleans()):
        views.append(torch.nn.Parameter(base, requires_grad=False) if base.is_floating_point()
                     else base)
    return views


@st.composite
def state_dicts(draw):
    groups = draw(st.lists(tensors(), min_size=1, max_size=6))
    sd: dict = {}
    for i, views in enumerate(groups):
        for j, v in enumerate(views):
            sd[f"layer{i}.t{j}"] = v
    nested = draw(st.sampled_from(["flat", "list", "dict"]))
    if nested == "list":
        sd["extra"] = [groups[0][0], {"again": groups[0][-1]}]
    elif nested == "dict":
        sd["extra"] = {"meta": {"epoch": draw(st.integers(-5, 5)), "name": "x"},
                       "t": groups[-1][0]}
    return sd


def _optimizer_state(n: int) -> dict:
    return {"state": {i: {"step": torch.tensor(3.0), "exp_avg": torch.randn(4)}
                      for i in range(n)},
            "param_groups": [{"params": list(range(n)), "lr": 1e-3, "betas": (0.9, 0.999)}]}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sd=state_dicts())
def test_strip_only_round_trip_is_exact(sd):
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "ckpt.pt"
        torch.save({"model": sd, "optimizer": _optimizer_state(3)}, path)
        original = torch.load(path, weights_only=True)
        result = run_fix(path, NO_CAST)
        assert result.error is None and result.changed
        assert result.cast_bytes == 0
        fixed = torch.load(path, weights_only=True, mmap=True)
    assert fixed["optimizer"] is None
    before = walk_tensors(original["model"])
    after = walk_tensors(fixed["model"])
    assert [p for p, _ in before] == [p for p, _ in after]
    ptr_before: dict = {}
    ptr_after: dict = {}
    for (p, a), (_, b) in zip(before, after, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape and a.stride() == b.stride(), p
        assert a.storage_offset() == b.storage_offset(), p
        assert type(a) is type(b), p
        assert torch.equal(a, b) or (a.is_floating_point() and torch.equal(
            a.nan_to_num(), b.nan_to_num())), p
        # Storage sharing is preserved exactly: same groups of tensors share.
        if a.untyped_storage().nbytes():  # empty storages have no address to compare
            ptr_before.setdefault(a.untyped_storage().data_ptr(), set()).add(p)
            ptr_after.setdefault(b.untyped_storage().data_ptr(), set()).add(p)
    assert sorted(map(sorted, ptr_before.values())) == sorted(map(sorted, ptr_after.values()))
