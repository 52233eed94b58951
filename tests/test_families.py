"""End to end, for every checkpoint family: what ckpt-guard reads equals what torch loads.

The oracle (tests/fixtures/oracle.py) comes from ``torch.load`` of the same file with its
classes importable; ckpt-guard reads it with those classes gone and torch never imported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
from collections import Counter
from pathlib import Path

import pytest

from ckpt_guard.analyze import analyze
from ckpt_guard.analyze.model import Analysis
from ckpt_guard.read import read_path
from tests.fixtures import (
    DIRECTORY_FAMILIES,
    FAMILIES,
    FULL_MODULE_FAMILIES,
    TRAINING_FAMILIES,
    FixtureFactory,
    importable,
)
from tests.fixtures.checkpoints import _REGISTRY
from tests.fixtures.packages import PACKAGES, loaded
from tests.fixtures.spec import FORMATS, FRAMEWORKS

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def analyses(ckpt_factory: FixtureFactory) -> dict[str, Analysis]:
    """Each family read and analysed once (in this process, stand-ins not importable)."""
    return {}


def _analysis(ckpt_factory: FixtureFactory, cache: dict[str, Analysis], family: str) -> Analysis:
    if family not in cache:
        fx = ckpt_factory.get(family)
        cache[family] = analyze(read_path(str(fx.path)))
    return cache[family]


def _nonzero(d: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in d.items() if v}


def _all_globals(a: Analysis) -> list:
    out = list(a.globals)
    for _, child, _ in a.children:
        if isinstance(child, Analysis):
            out.extend(_all_globals(child))
    return out


# ------------------------------------------------------------------ the oracle comparisons

@pytest.mark.parametrize("family", FAMILIES)
def test_format(ckpt_factory, analyses, family):
    fx = ckpt_factory.get(family)
    a = _analysis(ckpt_factory, analyses, family)
    assert a.checkpoint.format == fx.format


@pytest.mark.parametrize("family", FAMILIES)
def test_framework(ckpt_factory, analyses, family):
    fx = ckpt_factory.get(family)
    a = _analysis(ckpt_factory, analyses, family)
    assert a.framework in fx.frameworks_ok, f"expected {fx.framework}, got {a.framework}"


@pytest.mark.parametrize("family", FAMILIES)
def test_bytes_by_dtype_equal_unique_storages(ckpt_factory, analyses, family):
    fx = ckpt_factory.get(family)
    a = _analysis(ckpt_factory, analyses, family)
    assert _nonzero(a.bytes_by_dtype) == dict(fx.oracle.bytes_by_dtype)
    assert a.tensor_bytes_total == fx.oracle.total_bytes


@pytest.mark.parametrize("family", FAMILIES)
def test_tensor_dtypes_and_shapes(ckpt_factory, analyses, family):
    fx = ckpt_factory.get(family)
    a = _analysis(ckpt_factory, analyses, family)
    got = Counter((t.dtype, tuple(t.shape)) for t in a.tensors)
    want = fx.oracle.dtype_shapes()
    assert got == want, f"missing {want - got}, extra {got - want}"


@pytest.mark.parametrize("family", FAMILIES)
def test_tensor_paths(ckpt_factory, analyses, family):
    """Paths as state_dict() names them (module internals collapsed); the rewriter's keep-fp32
    globs and the reports rely on them."""
    fx = ckpt_factory.get(family)
    a = _analysis(ckpt_factory, analyses, family)
    got = Counter((t.path, t.dtype, tuple(t.shape)) for t in a.tensors)
    want = Counter((t.path, t.dtype, t.shape) for t in fx.oracle.tensors)
    assert got == want, f"missing {sorted(want - got)[:5]}, extra {sorted(got - want)[:5]}"


@pytest.mark.parametrize("family", FAMILIES)
def test_role_of_each_tensor(ckpt_factory, analyses, family):
    fx = ckpt_factory.get(family)
    a = _analysis(ckpt_factory, analyses, family)
    got = {(t.path, t.role) for t in a.tensors}
    want = {(t.path, t.role) for t in fx.oracle.tensors}
    assert got == want, f"expected {sorted(want - got)[:5]}, got {sorted(got - want)[:5]}"


@pytest.mark.parametrize("family", FAMILIES)
def test_bytes_by_role(ckpt_factory, analyses, family):
    fx = ckpt_factory.get(family)
    a = _analysis(ckpt_factory, analyses, family)
    assert _nonzero(a.bytes_by_role) == fx.oracle.roles_nonzero()


@pytest.mark.parametrize("family", FAMILIES)
def test_needs_code_agrees_with_weights_only_load(ckpt_factory, analyses, family):
    """A file torch refuses with weights_only=True references a global ckpt-guard does not
    call safe, and vice versa (TorchScript is refused for its format, not its globals)."""
    fx = ckpt_factory.get(family)
    if fx.format == "torchscript":
        pytest.skip("torch.load refuses TorchScript archives whatever their globals")
    a = _analysis(ckpt_factory, analyses, family)
    not_safe = sorted({g.use.qualname for g in _all_globals(a) if g.safety != "safe"})
    assert (not not_safe) == fx.oracle.weights_only_ok, \
        f"torch weights_only_ok={fx.oracle.weights_only_ok}, globals not safe: {not_safe}"


@pytest.mark.parametrize("family", FAMILIES)
def test_no_global_of_a_clean_checkpoint_is_unsafe(ckpt_factory, analyses, family):
    """Every family is a legitimate checkpoint: an `unsafe` verdict is a false positive."""
    a = _analysis(ckpt_factory, analyses, family)
    unsafe = sorted({g.use.qualname for g in _all_globals(a) if g.safety == "unsafe"})
    assert unsafe == []


@pytest.mark.parametrize("family", FAMILIES)
def test_reading_imports_no_stand_in_module(ckpt_factory, family):
    fx = ckpt_factory.get(family)
    assert loaded(PACKAGES) == []
    read_path(str(fx.path))
    assert loaded(PACKAGES) == []
    for pkg in fx.packages:
        assert importlib.util.find_spec(pkg) is None, f"{pkg} must not be importable"


_PROBE = textwrap.dedent("""
    import json, sys
    import ckpt_guard.read, ckpt_guard.analyze
    stand_ins = set(sys.argv[1].split(","))
    out = {}
    for family, path in json.loads(sys.stdin.read()).items():
        try:
            ckpt_guard.analyze.analyze(ckpt_guard.read.read_path(path))
            err = None
        except Exception as e:  # reported per family by the test
            err = f"{type(e).__name__}: {e}"
        out[family] = {"error": err, "torch": "torch" in sys.modules,
                       "stand_ins": sorted(m for m in sys.modules
                                           if m.split(".")[0] in stand_ins)}
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def subprocess_reads(ckpt_factory: FixtureFactory) -> dict:
    """Read every family in a fresh interpreter where the stand-in packages ARE importable:
    reading must still import neither them nor torch."""
    paths = {f: str(ckpt_factory.get(f).path) for f in FAMILIES}
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ckpt_factory.pkg_root), str(REPO / "src"), env.get("PYTHONPATH", "")])
    proc = subprocess.run([sys.executable, "-c", _PROBE, ",".join(PACKAGES)],
                          input=json.dumps(paths), capture_output=True, text=True,
                          env=env, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("family", FAMILIES)
def test_torch_and_stand_ins_never_imported(subprocess_reads, family):
    r = subprocess_reads[family]
    assert r["error"] is None
    assert not r["torch"], "reading imported torch"
    assert r["stand_ins"] == [], f"reading imported {r['stand_ins']}"


# ------------------------------------------------------------------ the factory itself

def test_registry_matches_builders():
    for module in set(_REGISTRY.values()):
        builders = importlib.import_module(f"tests.fixtures.{module}").BUILDERS
        assert set(builders) == {f for f, m in _REGISTRY.items() if m == module}
    assert set(DIRECTORY_FAMILIES) <= set(FAMILIES)
    assert set(TRAINING_FAMILIES) <= set(FAMILIES)


@pytest.mark.parametrize("family", FAMILIES)
def test_fixture_record_is_consistent(ckpt_factory, family):
    fx = ckpt_factory.get(family)
    o = fx.oracle
    assert fx.framework in FRAMEWORKS and fx.format in FORMATS
    assert fx.path.exists() and fx.path.is_dir() == (family in DIRECTORY_FAMILIES)
    assert sum(o.bytes_by_role.values()) == o.total_bytes == sum(o.bytes_by_dtype.values())
    assert o.tensors and o.total_bytes > 0
    assert (o.bytes_by_role["optimizer"] > 0) == (family in TRAINING_FAMILIES)
    size = sum(p.stat().st_size for p in fx.path.rglob("*")) if fx.is_dir else \
        fx.path.stat().st_size
    assert o.total_bytes < size < 200_000  # KBs, not MBs


@pytest.mark.parametrize("family", FULL_MODULE_FAMILIES)
def test_importable_brings_classes_back_and_the_model_runs(ckpt_factory, family):
    torch = pytest.importorskip("torch")
    fx = ckpt_factory.get(family)
    with pytest.raises(ModuleNotFoundError):
        torch.load(fx.path, weights_only=False)
    with importable(fx):
        ckpt = torch.load(fx.path, weights_only=False)
        model = (ckpt.get("ema") or ckpt["model"]).float().eval()
        assert type(model).__module__ in {"ultralytics.nn.tasks", "models.yolo"}
        with torch.no_grad():
            outputs = model(torch.randn(1, 3, 16, 16))
        assert outputs[0].shape[0] == 1
    assert loaded(PACKAGES) == []
    assert importlib.util.find_spec(fx.packages[0]) is None


def test_copy_is_private_and_keeps_the_oracle(ckpt_factory, tmp_path):
    fx = ckpt_factory.get("hf-trainer-dir")
    cp = ckpt_factory.copy("hf-trainer-dir", tmp_path)
    assert cp.path != fx.path and cp.oracle is fx.oracle
    assert sorted(p.name for p in cp.path.iterdir()) == sorted(p.name for p in fx.path.iterdir())


def test_build_is_deterministic_and_scales(ckpt_factory, tmp_path):
    a = ckpt_factory.build("ultralytics-train", tmp_path / "a")
    b = ckpt_factory.build("ultralytics-train", tmp_path / "b")
    assert a.path.read_bytes() == b.path.read_bytes()
    big = ckpt_factory.build("train-adam", tmp_path / "big", width=32)
    assert big.oracle.total_bytes > 8 * ckpt_factory.get("train-adam").oracle.total_bytes


# ------------------------------------------------------------------ examples/ (README's first command)

EXAMPLES = {  # relative path -> (framework, optimizer bytes expected > 0)
    "training/yolo-last.pt": ("ultralytics", True),
    "training/lightning-epoch3.ckpt": ("lightning", True),
    "release/resnet-tiny.pt": ("generic", False),
    "release/tiny-fp16.safetensors": ("generic", False),
}


@pytest.fixture(scope="module")
def regenerated_examples(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("examples")
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "make_examples.py"), str(out)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


def _example_contents(path: Path, pkg_root: Path) -> tuple[list, dict]:
    """What torch loads from an example: its top-level keys, and every tensor by path."""
    import warnings

    import torch

    from tests.fixtures.oracle import walk_tensors
    from tests.fixtures.packages import packages_importable

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        obj = load_file(str(path))
    else:
        with packages_importable(PACKAGES, pkg_root), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=False)
    return list(obj), dict(walk_tensors(obj))


def test_examples_are_reproducible_and_small(regenerated_examples, ckpt_factory):
    """The committed examples are what make_examples.py makes — compared by what is stable
    on every CPU (keys, tensor paths, dtypes, shapes, sizes, values within tolerance), never
    by float bytes; their values are pinned multiples of 1/256 so regeneration is
    byte-for-byte anyway (issue 9: a byte comparison failed on Intel)."""
    import torch

    total = 0
    for rel in EXAMPLES:
        shipped, fresh = REPO / "examples" / rel, regenerated_examples / rel
        size = shipped.stat().st_size
        assert size == fresh.stat().st_size, f"{rel} drifted: run python examples/make_examples.py"
        keys, tensors = _example_contents(shipped, ckpt_factory.pkg_root)
        keys2, tensors2 = _example_contents(fresh, ckpt_factory.pkg_root)
        assert keys == keys2 and list(tensors) == list(tensors2), rel
        for name, t in tensors.items():
            u = tensors2[name]
            assert (t.dtype, t.shape) == (u.dtype, u.shape), (rel, name)
            if t.is_floating_point():
                assert torch.allclose(t.float(), u.float(), rtol=1e-5, atol=1e-6), (rel, name)
                if t.dim():  # pinned: exact in FP16, the same on every CPU
                    scaled = t.double() * 256
                    assert torch.equal(scaled, scaled.round()), (rel, name)
                    assert scaled.abs().max() <= 129, (rel, name)
            else:
                assert torch.equal(t, u), (rel, name)
        assert size < 100_000
        total += size
    assert total < 400_000


@pytest.mark.parametrize("rel", sorted(EXAMPLES))
def test_examples_read_as_torch_loads_them(ckpt_factory, rel):
    from tests.fixtures.oracle import oracle_for_file
    from tests.fixtures.packages import packages_importable

    path = REPO / "examples" / rel
    fmt = "safetensors" if rel.endswith(".safetensors") else "torch-zip"
    with packages_importable(PACKAGES, ckpt_factory.pkg_root):
        oracle = oracle_for_file(path, fmt, {})
    a = analyze(read_path(str(path)))
    framework, training = EXAMPLES[rel]
    assert a.checkpoint.format == fmt
    assert a.framework == framework
    assert _nonzero(a.bytes_by_dtype) == dict(oracle.bytes_by_dtype)
    assert Counter((t.dtype, tuple(t.shape)) for t in a.tensors) == oracle.dtype_shapes()
    assert (a.bytes_by_role.get("optimizer", 0) > 0) == training
    if not training:
        assert _nonzero(a.bytes_by_role) == {"weights": oracle.total_bytes}
