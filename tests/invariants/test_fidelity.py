"""Differential fidelity: ``torch.load(output) == torch.load(input)`` up to the declared cast,
for every fixture family and for hypothesis-generated checkpoints covering the ways torch
rebuilds a tensor, in every output format (torch zip; ``convert: safetensors``, which writes
safetensors only for flat state dicts and otherwise keeps a torch zip with a note).

``fix`` runs through the CLI (in this process for the generated files: they are many and
tiny); torch loads what it wrote.
"""

from __future__ import annotations

import contextlib
import io
import json
import struct
from pathlib import Path

import pytest
import torch
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ckpt_guard.cli import main as cli_main
from tests.fixtures import FILE_FAMILIES, importable
from tests.fixtures.oracle import load_with_torch
from tests.invariants.fidelity import Mismatch, same, sharing

CAST = {"version": 1, "rules": {"fp32-payload": {"action": "fix", "max-bytes": 0}}}
MODES = {"zip": CAST, "safetensors": {**CAST, "convert": "safetensors"}}


def _fix(directory: Path, mode: str, names: list[str]) -> dict:
    """``ckpt-guard fix --out out`` of ``names`` (relative to ``directory``); the report."""
    (directory / "policy.yml").write_text(yaml.safe_dump(MODES[mode]), encoding="utf-8")
    out = io.StringIO()
    with contextlib.chdir(directory), contextlib.redirect_stdout(out):
        code = cli_main(["fix", "--policy", "policy.yml", "--format", "json", "--output",
                         f"{mode}.json", "--out", f"out-{mode}", *names])
    assert code in (0, 1), out.getvalue()
    return json.loads((directory / f"{mode}.json").read_text(encoding="utf-8"))


def _written(directory: Path, mode: str, name: str) -> Path | None:
    """What fix wrote for ``name`` under ``--out``: the torch zip or the converted file."""
    base = directory / f"out-{mode}" / name
    for p in (base.with_suffix(".safetensors"), base):
        if p.exists():
            return p
    return None


def _is_safetensors(p: Path) -> bool:
    data = p.read_bytes()[:9]
    return len(data) == 9 and struct.unpack("<Q", data[:8])[0] > 1 and data[8:9] == b"{"


def _load_output(p: Path, weights_only: bool):
    if p.name.endswith(".safetensors"):
        assert _is_safetensors(p), p
        from safetensors.torch import load_file

        return load_file(str(p))
    assert not _is_safetensors(p), f"{p}: safetensors bytes under a torch name"
    return torch.load(p, weights_only=weights_only, map_location="cpu")


def _compare(original, out_path: Path, *, weights_only: bool) -> list[str]:
    fixed = _load_output(out_path, weights_only)
    if out_path.name.endswith(".safetensors"):
        # A flat state dict converted: the same names, each tensor equal up to the cast (a
        # Parameter comes back as a tensor and requires_grad is not stored: data only).
        # (safetensors stores names sorted: the order is not kept by the format)
        assert isinstance(original, dict) and sorted(original) == sorted(fixed), out_path
        casts: list[str] = []
        for k, t in original.items():
            same(t.detach().clone(memory_format=torch.preserve_format)
                 if type(t) is torch.nn.Parameter else t.detach(), fixed[k], k, casts)
        return casts
    casts = same(original, fixed)
    assert sharing(original) == sharing(fixed), "storage sharing changed"
    return casts


# --------------------------------------------------------------------------- every family

@pytest.fixture(scope="module")
def family_runs(ckpt_factory, tmp_path_factory):
    root = tmp_path_factory.mktemp("fidelity")
    names = {}
    for fam in FILE_FAMILIES:
        fx = ckpt_factory.copy(fam, root / fam)
        names[fam] = fx.path.relative_to(root).as_posix()
    reports = {mode: _fix(root, mode, list(names.values())) for mode in MODES}
    return root, names, reports


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("family", FILE_FAMILIES)
def test_family_output_loads_equal(ckpt_factory, family_runs, family, mode):
    root, names, reports = family_runs
    fx = ckpt_factory.get(family)
    [report] = [f for f in reports[mode]["files"] if f["path"] == names[family]]
    out = _written(root, mode, names[family])
    if report["size_after"] is None:
        assert out is None, f"{family}: {out} written but not reported"
        return
    assert out is not None, f"{family}: reported fixed, nothing written"
    with importable(fx):
        original = load_with_torch(fx.path, fx.format)
        casts = _compare(original, out, weights_only=fx.oracle.weights_only_ok
                         and fx.format != "safetensors")
    if report["details"]["fix"]["cast_bytes"]:
        assert casts, f"{family}: a cast was reported, torch sees none"
    if mode == "safetensors" and not out.name.endswith(".safetensors"):
        assert any("not converted to safetensors" in n for n in report.get("notes", [])), \
            f"{family}: kept a torch zip without saying why"


# ------------------------------------------------------------- every way torch rebuilds

def _values(draw, dtype: torch.dtype, shape: tuple[int, ...]) -> torch.Tensor:
    g = torch.Generator().manual_seed(draw(st.integers(0, 2 ** 16)))
    if dtype == torch.bool:
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_complex:
        return torch.randn(shape, generator=g, dtype=dtype)
    scale = draw(st.sampled_from([1.0, 1e-6, 1e5]))  # normal, underflowing, overflowing FP16
    t = torch.randn(shape, generator=g) * scale
    if not dtype.is_floating_point:
        info = torch.iinfo(dtype)
        t = (t * 100).clamp(info.min, info.max)
    return t.to(dtype)


DENSE = [torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.int8,
         torch.uint8, torch.bool, torch.complex64]
V3 = [torch.uint16, torch.uint32, torch.float8_e4m3fn, torch.float8_e5m2]  # _rebuild_tensor_v3
KINDS = ["dense", "view", "transposed", "requires-grad", "parameter", "parameter-state",
         "tensor-state", "conj", "neg", "v3", "coo", "coo-uncoalesced", "csr", "csc", "bsr",
         "bsc", "q-tensor", "q-channel", "q-float-qparams", "nested", "meta", "shared"]


@st.composite
def rebuilt(draw, kind: str | None = None) -> tuple[str, torch.Tensor | list]:
    kind = kind or draw(st.sampled_from(KINDS))
    shape = tuple(draw(st.lists(st.integers(0 if kind == "dense" else 2, 4), min_size=0
                                if kind == "dense" else 2, max_size=3)))
    dtype = draw(st.sampled_from(DENSE))
    f32 = _values(draw, torch.float32, (4, 6))
    if kind == "dense":
        return kind, _values(draw, dtype, shape)
    if kind == "view":  # _rebuild_tensor_v2: storage_offset, size, stride
        return kind, _values(draw, dtype, (5, 6))[1:, 2:5]
    if kind == "transposed":
        return kind, _values(draw, dtype, shape).transpose(0, 1)
    if kind == "requires-grad":
        return kind, f32.clone().requires_grad_(True)
    if kind == "parameter":  # _rebuild_parameter
        return kind, torch.nn.Parameter(f32, requires_grad=draw(st.booleans()))
    if kind == "parameter-state":  # _rebuild_parameter_with_state
        p = torch.nn.Parameter(f32, requires_grad=False)
        p.tag = "kept"
        return kind, p
    if kind == "tensor-state":  # _rebuild_from_type_v2 with a plain tensor's __dict__
        t = _values(draw, dtype, shape)
        t.note = {"epoch": 3}
        return kind, t
    if kind == "conj":  # _rebuild_tensor_v2 metadata: the conj bit
        return kind, _values(draw, torch.complex64, shape).conj()
    if kind == "neg":
        return kind, _values(draw, torch.complex64, shape).conj().imag
    if kind == "v3":
        base = _values(draw, torch.float32, shape)
        v3 = draw(st.sampled_from(V3))
        return kind, (base.abs() * 10).to(torch.int64).to(v3) if not v3.is_floating_point \
            else base.to(v3)
    if kind in ("coo", "coo-uncoalesced"):  # _rebuild_sparse_tensor (COO)
        i = torch.tensor([[0, 1, 1, 0], [2, 0, 2, 2]])
        t = torch.sparse_coo_tensor(i, f32[0, :4], (2, 3))
        return kind, t.coalesce() if kind == "coo" else t
    if kind in ("csr", "csc", "bsr", "bsc"):  # _rebuild_sparse_tensor (compressed)
        dense = f32 * (f32 > 0)
        if kind == "csr":
            return kind, dense.to_sparse_csr()
        if kind == "csc":
            return kind, dense.to_sparse_csc()
        return kind, dense.to_sparse_bsr((2, 2)) if kind == "bsr" \
            else dense.to_sparse_bsc((2, 2))
    if kind == "q-tensor":  # _rebuild_qtensor, per tensor
        qd = draw(st.sampled_from([torch.quint8, torch.qint8, torch.qint32]))
        return kind, torch.quantize_per_tensor(f32, 0.05, 3 if qd == torch.quint8 else 0, qd)
    if kind == "q-channel":
        return kind, torch.quantize_per_channel(f32, torch.rand(4, dtype=torch.float64) + 0.01,
                                                torch.zeros(4, dtype=torch.int64), 0,
                                                torch.qint8)
    if kind == "q-float-qparams":
        return kind, torch.quantize_per_channel(f32, torch.rand(4) + 0.01, torch.rand(4), 0,
                                                torch.quint8)
    if kind == "nested":  # _rebuild_nested_tensor
        return kind, torch.nested.nested_tensor([f32[0, :3], f32[1, :5]])
    if kind == "meta":  # _rebuild_meta_tensor_no_storage
        return kind, torch.empty(shape, dtype=dtype, device="meta")
    base = _values(draw, torch.float32, (3, 4))  # two views of one storage
    return kind, [base, base[1:].t()]


@st.composite
def checkpoints(draw) -> dict:
    sd: dict = {}
    for i, (kind, t) in enumerate(draw(st.lists(rebuilt(), min_size=1, max_size=4))):
        sd[f"t{i}.{kind}"] = t
    if draw(st.booleans()):
        return sd  # flat: what convert: safetensors may write
    return {"model": sd, "epoch": draw(st.integers(0, 9)), "lr": 1e-3, "tags": ("a", None)}


def _check_generated(tmp: Path, ckpt: dict) -> None:
    src = tmp / "in.pt"
    torch.save(ckpt, src)
    original = torch.load(src, weights_only=True)
    for mode in MODES:
        report = _fix(tmp, mode, ["in.pt"])
        [fr] = report["files"]
        out = _written(tmp, mode, "in.pt")
        if fr["size_after"] is None:
            assert out is None
            continue
        assert out is not None
        try:
            _compare(original, out, weights_only=True)
        except Mismatch as e:
            raise AssertionError(f"{mode}: {e}\n{json.dumps(fr, indent=1)[:3000]}") from e
        if mode == "safetensors" and not out.name.endswith(".safetensors"):
            assert any("not converted to safetensors" in n for n in fr.get("notes", []))


@settings(max_examples=12, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture,
                                 HealthCheck.too_slow])
@given(ckpt=checkpoints())
def test_generated_checkpoints_load_equal(tmp_path_factory, ckpt):
    _check_generated(tmp_path_factory.mktemp("gen"), ckpt)


@pytest.mark.parametrize("kind", KINDS)
def test_each_rebuild_kind(tmp_path, kind):
    """Every kind at least once, whatever hypothesis draws."""

    @settings(max_examples=2, deadline=None, derandomize=True, database=None)
    @given(item=rebuilt(kind), flat=st.booleans())
    def one(item, flat):
        _, t = item
        sd = {f"x.{kind}": t, "w": torch.ones(3, 2)}
        d = tmp_path / f"{kind}-{int(flat)}"
        d.mkdir(exist_ok=True)
        _check_generated(d, sd if flat else {"model": sd, "step": 1})

    one()
