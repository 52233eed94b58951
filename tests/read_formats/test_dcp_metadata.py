"""Issue 10: what a DCP ``.metadata`` may hold. torch's ``FileSystemReader.read_metadata``
(torch/distributed/checkpoint/filesystem.py, torch 2.13) runs plain ``pickle.load`` on it at
every ``dcp.load`` — no weights_only step — so its globals are judged as values torch
executes: what DCP's writer stores (its dataclasses, the checkpoint's ``pathlib`` path) is
clean, anything else fails closed. Real directories from ``torch.distributed.checkpoint.save``;
the malicious variants are byte edits of a real ``.metadata`` (the StorageMeta.checkpoint_id
``PosixPath(...)`` call spliced out, memo indices kept), each proven to run (canary) or load
under torch's own read path in a subprocess before ckpt-guard judges it."""

from __future__ import annotations

import json
import os
import pickle
import pickletools
import subprocess
import sys
import warnings
from pathlib import Path, PurePosixPath

import pytest
import torch

from tests.adversarial import pickles as P
from tests.cli.conftest import run_cli

dcp = pytest.importorskip("torch.distributed.checkpoint")
_LOADER = """
import sys, warnings
warnings.simplefilter("ignore")
import torch, torch.distributed.checkpoint as dcp
for d in sys.argv[1:]:
    try:
        md = dcp.FileSystemReader(d).read_metadata()
        print(d, "loaded", type(md.storage_meta.checkpoint_id).__name__)
    except Exception as e:
        print(d, "failed", type(e).__name__)
"""


def _save(state: dict, where: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save(state, checkpoint_id=str(where))
    return where


def _check(path: Path) -> tuple[int, dict]:
    proc = run_cli("check", "--format", "json", str(path))
    return proc.returncode, json.loads(proc.stdout)["files"][0]


def _splice_checkpoint_id(meta: bytes, value: bytes) -> bytes:
    """``meta`` with the ``pathlib.PosixPath(*parts)`` call torch wrote for
    StorageMeta.checkpoint_id replaced by ``value`` (ops pushing one object), followed by as
    many MEMOIZE as the call had so every later BINGET still finds its object."""
    ops = list(pickletools.genops(meta))
    start = next(i for i, (op, arg, _p) in enumerate(ops) if arg == "pathlib")
    end = next(i for i in range(start, len(ops)) if ops[i][0].name == "REDUCE")
    if ops[end + 1][0].name == "MEMOIZE":
        end += 1
    memos = sum(op.name == "MEMOIZE" for op, _a, _p in ops[start:end + 1])
    a, b = ops[start][2], ops[end + 1][2]
    new = value + P.MEMOIZE * memos
    # protocol 4 frames: the FRAME holding the call declares its length; adjust it
    frame = max(p for op, _a, p in ops if op.name == "FRAME" and p < a)
    length = int.from_bytes(meta[frame + 1:frame + 9], "little") + len(new) - (b - a)
    return (meta[:frame + 1] + length.to_bytes(8, "little") + meta[frame + 9:a] + new
            + meta[b:])


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save({"w": torch.ones(3, 4), "step": 3, "nested": {"t": torch.arange(5)}},
                 tmp_path_factory.mktemp("dcp") / "ckpt")


def test_a_real_dcp_directory_is_clean(saved: Path) -> None:
    """torch itself puts a PosixPath in .metadata (StorageMeta.checkpoint_id) and reads it
    with plain pickle: a value, no finding."""
    md = dcp.FileSystemReader(str(saved)).read_metadata()
    assert isinstance(md.storage_meta.checkpoint_id, PurePosixPath)
    assert b"pathlib" in (saved / ".metadata").read_bytes()
    code, fr = _check(saved)
    assert code == 0 and fr["status"] == "pass", fr
    assert fr["findings"] == []
    assert any("plain pickle.load" in n for n in fr["notes"])


def test_byte_edited_metadata_variants_run_under_torch_and_fail(saved: Path,
                                                               tmp_path: Path) -> None:
    site = tmp_path / "site"
    (site / "corp_dcp").mkdir(parents=True)
    import_canary = tmp_path / "import-canary"
    (site / "corp_dcp" / "__init__.py").write_text(
        f"open({str(import_canary)!r}, 'w').close()\n\nclass Planner:\n"
        "    def __init__(self, *a):\n        pass\n")
    system_canary = tmp_path / "system-canary"
    variants = {
        # os.system as pickle.dumps writes it, called with a command
        "system": P.system_call(P.touch_cmd(str(system_canary))),
        # a class torch's writer never stores: importing its package runs that package
        "class": P.call(P.global_("corp_dcp", "Planner"), P.binunicode("x")),
        # a function only stored as a value (elsewhere needs-code): foreign to .metadata
        "stored": P.global_("torch", "relu"),
    }
    meta = (saved / ".metadata").read_bytes()
    dirs = {}
    for name, value in variants.items():
        d = tmp_path / name
        d.mkdir()
        for f in os.listdir(saved):
            (d / f).write_bytes((saved / f).read_bytes())
        (d / ".metadata").write_bytes(_splice_checkpoint_id(meta, value))
        dirs[name] = d
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), os.environ.get(
        "PYTHONPATH", "")])}
    proc = subprocess.run([sys.executable, "-c", _LOADER, *map(str, dirs.values())], env=env,
                          capture_output=True, text=True, timeout=300, check=True)
    got = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    # torch's own read path ran each (the variants keep the rest of .metadata intact)
    assert got[str(dirs["system"])] == "loaded int" and system_canary.exists()
    assert got[str(dirs["class"])] == "loaded Planner" and import_canary.exists()
    assert got[str(dirs["stored"])] == "loaded builtin_function_or_method"
    system_canary.unlink()
    import_canary.unlink()
    proc = run_cli("check", "--format", "json", *map(str, dirs.values()))
    assert proc.returncode == 1
    files = {f["path"]: f for f in json.loads(proc.stdout)["files"]}
    for name in dirs:
        [fr] = [f for p, f in files.items() if Path(p).name == name]
        [unsafe] = [f for f in fr["findings"] if f["rule"] == "unsafe-pickle"]
        assert "dcp.load unpickles .metadata with plain pickle.load" in unsafe["message"]
        assert {g["member"] for g in unsafe["detail"]["globals"]} == {".metadata"}
        assert "weights_only=True" not in json.dumps(fr["findings"])
        if name != "system":
            [g] = unsafe["detail"]["globals"]
            assert "not what torch.distributed.checkpoint writes in .metadata" in g["reason"]
    assert not system_canary.exists() and not import_canary.exists()  # check ran nothing


def test_metadata_is_read_as_pickle_load_reads_it(saved: Path, tmp_path: Path) -> None:
    """One pickle from offset 0, whatever follows it; no persistent ids (pickle.load has no
    persistent_load: torch fails there, so does the check)."""
    d = tmp_path / "trail"
    d.mkdir()
    for f in os.listdir(saved):
        (d / f).write_bytes((saved / f).read_bytes())
    (d / ".metadata").write_bytes((saved / ".metadata").read_bytes() + b"PK\x03\x04junk")
    assert _check(d)[0] == 0
    (d / ".metadata").write_bytes(b"\x80\x04P0\n.")
    with pytest.raises(pickle.UnpicklingError):
        dcp.FileSystemReader(str(d)).read_metadata()
    code, fr = _check(d)
    assert code == 1 and [f["rule"] for f in fr["findings"]] == ["unreadable"]


def test_a_path_in_a_non_tensor_item_is_needs_code_worded_as_dcp_loads_it(
        tmp_path: Path) -> None:
    """Outside .metadata a PosixPath is what it is anywhere: a value weights_only refuses.
    DCP reads non-tensor items with torch.load(weights_only=False), and the message says so."""
    d = _save({"w": torch.ones(2), "out": Path("/data/run1")}, tmp_path / "dcp")
    back = {"w": torch.zeros(2), "out": None}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.load(back, checkpoint_id=str(d))
    assert back["out"] == Path("/data/run1")
    code, fr = _check(d)
    assert code == 0 and fr["status"] == "warn", fr
    [nc] = [f for f in fr["findings"] if f["rule"] == "needs-code"]
    assert nc["detail"]["classes"] == ["pathlib.PosixPath"]
    assert "dcp.load reads those items with torch.load(weights_only=False)" in nc["message"]


def test_dcp_classes_outside_a_metadata_file_are_known_but_not_weights_only(
        tmp_path: Path) -> None:
    from torch.distributed.checkpoint.metadata import Metadata

    f = tmp_path / "meta.pt"
    torch.save({"m": Metadata(state_dict_metadata={})}, f)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(f, weights_only=True)
    code, fr = _check(f)
    [nc] = [x for x in fr["findings"] if x["rule"] == "needs-code"]
    assert "torch.distributed.checkpoint.metadata.Metadata" in nc["detail"]["classes"]
    assert not any(x["rule"] == "unsafe-pickle" for x in fr["findings"])
