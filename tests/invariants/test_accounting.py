"""Byte accounting never counts bytes a file does not hold (issue 9, defect 8).

A TorchScript archive's pickles can claim storages whose records hold fewer bytes or none
(torch writes a traced module's example inputs as empty records), and the lite interpreter's
``bytecode.pkl`` references the same ``constants/`` records as constants.pkl: counted per
pickle, a frozen ``.ptl`` reported twice its tensor bytes. The truth is the storage records
the pickles reference, read as torch reads them (:func:`torchscript_records`, torch's own
``show_pickle`` unpickler and the zip directory) — not what ``torch.jit.load`` exposes.

Over every TorchScript fixture (scripted, traced with example inputs, frozen, dynamically
quantized, LSTM, classes mangled as ``___torch_mangle_N``, a lite-interpreter archive), through
the CLI: the bytes by role add up to at most the records' bytes, and the bytes by dtype equal
the records'. Torch zips of every file family: at most their ``data/N`` records.
"""

from __future__ import annotations

import json
import re
import zipfile
from collections import Counter
from pathlib import Path

import pytest

from tests.fixtures import FILE_FAMILIES, TORCHSCRIPT_FAMILIES, FixtureFactory
from tests.fixtures.oracle import torchscript_records
from tests.invariants.harness import cli


def _check(paths: list[Path], cwd: Path) -> list[dict]:
    p = cli(["check", "--format", "json", *map(str, paths)], cwd=cwd)
    assert p.returncode in (0, 1), p.stderr
    files = json.loads(p.stdout)["files"]
    assert len(files) == len(paths)
    return files


@pytest.fixture(scope="module")
def torchscript_reports(ckpt_factory: FixtureFactory,
                        tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    fixtures = [ckpt_factory.get(f) for f in TORCHSCRIPT_FAMILIES]
    reports = _check([fx.path for fx in fixtures], tmp_path_factory.mktemp("accounting"))
    return {fx.family: r for fx, r in zip(fixtures, reports, strict=True)}


@pytest.mark.parametrize("family", TORCHSCRIPT_FAMILIES)
def test_torchscript_bytes_are_the_records(ckpt_factory, torchscript_reports, family):
    fx = ckpt_factory.get(family)
    r = torchscript_reports[family]
    assert r["format"] == "torchscript"
    records = torchscript_records(fx.path)
    assert records, "the archive's pickles reference no storage record"
    held = sum(rec.record_size for rec in records)
    by_role = r["tensor_bytes"]["by_role"]
    assert sum(by_role.values()) <= held, f"{by_role} reported, records hold {held} B"
    assert r["tensor_bytes"]["total"] <= held
    want: Counter = Counter()
    for rec in records:
        want[rec.dtype] += rec.nbytes
    assert {d: b for d, b in r["tensor_bytes"]["by_dtype"].items() if b} == \
        {d: b for d, b in want.items() if b}
    # The oracle the family tests use says the same (it is built from the records too).
    assert sum(by_role.values()) == fx.oracle.total_bytes


def test_the_shapes_that_overcounted_are_covered(ckpt_factory):
    """The fixtures really have what made the accounting wrong: empty traced-input records,
    mangled class names, a bytecode.pkl sharing constants.pkl's records."""
    traced = torchscript_records(ckpt_factory.get("torchscript-traced").path)
    assert any(rec.claimed > rec.record_size == 0 for rec in traced)
    with zipfile.ZipFile(ckpt_factory.get("torchscript-mangled").path) as z:
        assert any("___torch_mangle_" in n for n in z.namelist())
    with zipfile.ZipFile(ckpt_factory.get("torchscript-lite").path) as z:
        names = z.namelist()
    assert any(n.endswith("/bytecode.pkl") for n in names)
    assert not any("/bytecode/" in n for n in names)
    lite = torchscript_records(ckpt_factory.get("torchscript-lite").path)
    assert {rec.archive for rec in lite} == {"constants"}  # bytecode.pkl adds no record


def test_lite_archive_with_tensor_constants_is_not_unsafe(torchscript_reports):
    """bytecode.pkl of a frozen module holds its tensor constants: its operators are read
    (and judged) past them, not reported as unreadable code."""
    r = torchscript_reports["torchscript-lite"]
    assert [f["rule"] for f in r["findings"]] == ["needs-code"], r["findings"]


_DATA_RECORD = re.compile(r"^[^/]+/data/\d+$")


def test_torch_zip_bytes_never_exceed_the_records(ckpt_factory, tmp_path):
    fixtures = [fx for fx in (ckpt_factory.get(f) for f in FILE_FAMILIES)
                if fx.format == "torch-zip"]
    assert fixtures
    over = {}
    for fx, r in zip(fixtures, _check([fx.path for fx in fixtures], tmp_path), strict=True):
        with zipfile.ZipFile(fx.path) as z:
            held = sum(i.file_size for i in z.infolist() if _DATA_RECORD.match(i.filename))
        if max(r["tensor_bytes"]["total"], sum(r["tensor_bytes"]["by_role"].values())) > held:
            over[fx.family] = f"{r['tensor_bytes']} reported, records hold {held} B"
    assert not over, over
