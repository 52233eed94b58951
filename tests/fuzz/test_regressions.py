"""Crashes found by fuzzing (fuzz/RESULTS.md), each rebuilt deterministically."""

from __future__ import annotations

import contextlib
from pathlib import Path

import pytest

from ckpt_guard.analyze import analyze
from ckpt_guard.read import UnreadableError, read_path
from tests.adversarial import containers as Z
from tests.fuzz.seeds import seeds


def _read(path: Path) -> None:
    with contextlib.suppress(UnreadableError):
        analyze(read_path(str(path)))


def test_training_checkpoint_with_unknown_rebuild_function(tmp_path: Path) -> None:
    """fuzz crash-1ee24af4398f (random engine): one byte of ``_rebuild_tensor_v2`` flipped in a
    training checkpoint (model + optimizer + ema) turned every tensor into an opaque object;
    analysis then crashed with ``KeyError: 'ema?'`` in accounting.by_role."""
    original = seeds()["training.pt"]
    data_pkl = next(d for n, d in Z.read_members(original) if n.endswith("/data.pkl"))
    mutated = data_pkl.replace(b"_rebuild_tensor_v2", b"_rebuild_tensoX_v2", 1)
    assert mutated != data_pkl
    path = tmp_path / "mutated.pt"
    path.write_bytes(Z.torch_zip_with(base=original, replace={"data.pkl": mutated}))
    _read(path)  # must return or raise UnreadableError


CRASHES = Path(__file__).parent / "crashes"


@pytest.mark.parametrize("name", sorted(p.name for p in CRASHES.glob("*.bin")))
def test_saved_fuzz_crash_inputs(name: str, tmp_path: Path) -> None:
    """The raw inputs the long runs saved (fuzz/RESULTS.md lists where each came from)."""
    path = tmp_path / "input.pt"
    path.write_bytes((CRASHES / name).read_bytes())
    _read(path)
