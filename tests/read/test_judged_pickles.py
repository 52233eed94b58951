"""``Checkpoint.pickles``: exactly which bytes the verdict covered, pickle by pickle.

Each entry is the span from a pickle's first opcode through its STOP; the spans are checked
against :mod:`pickletools` (CPython's own opcode walker, which executes nothing), so the
differential harness (tests/differential) can match them against what torch unpickles.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import pickletools
import zipfile
from pathlib import Path

import torch

from ckpt_guard.read import read_path
from ckpt_guard.read.checkpoint import JudgedPickle
from tests.cli.conftest import run_cli
from tests.read.test_torch_zip import rewrite_zip, save


def stop_end(data: bytes, start: int = 0) -> int:
    """Offset just past the STOP of the pickle at ``start``, as pickletools walks it."""
    stream = io.BytesIO(data)
    stream.seek(start)
    for _op, _arg, _pos in pickletools.genops(stream):
        pass
    return stream.tell()


def judged(member: str, data: bytes, start: int = 0) -> JudgedPickle:
    end = stop_end(data, start)
    return JudgedPickle(member, start, end - start, hashlib.sha256(data[start:end]).hexdigest())


def test_zip_lists_data_pkl_and_extra_pickles(tmp_path: Path) -> None:
    src = save({"w": torch.ones(3)}, tmp_path / "a.pt")
    extra = pickle.dumps({"note": 1}, protocol=2) + b"trailing bytes are not judged"
    # (an extra pickle that does not parse to a STOP fails the file: test_torch_zip.py)
    dst = rewrite_zip(src, tmp_path / "b.pt", add={"a/extra.pkl": extra})
    data_pkl = zipfile.ZipFile(dst).read("a/data.pkl")
    ckpt = read_path(str(dst))
    assert ckpt.pickles == [judged("a/data.pkl", data_pkl), judged("a/extra.pkl", extra)]
    assert ckpt.pickles[1].length == len(pickle.dumps({"note": 1}, protocol=2))


def test_torchscript_lists_every_archive_pickle(tmp_path: Path) -> None:
    path = tmp_path / "s.pt"
    torch.jit.script(torch.nn.Linear(2, 3)).save(str(path))
    ckpt = read_path(str(path))
    with zipfile.ZipFile(path) as zf:
        want = {n: judged(n, zf.read(n)) for n in zf.namelist()
                if n.endswith((".pkl", ".debug_pkl"))}
    # the debug pickles of code/ too: they start like pickles, so they are scanned
    assert {p.member for p in ckpt.pickles} == set(want)
    for p in ckpt.pickles:
        assert p == want[p.member]


def test_legacy_stream_lists_its_five_pickles_back_to_back(tmp_path: Path) -> None:
    path = tmp_path / "l.pt"
    torch.save({"w": torch.arange(4.0)}, path, _use_new_zipfile_serialization=False)
    raw = path.read_bytes()
    ckpt = read_path(str(path))
    assert [p.member for p in ckpt.pickles] == ["magic number", "protocol version", "sys_info",
                                                "data", "storage keys"]
    pos = 0
    for p in ckpt.pickles:
        assert p == judged(p.member, raw, pos)
        pos = p.offset + p.length
    # what follows the last pickle is the storage: element count, then the data
    assert raw[pos:pos + 8] == (4).to_bytes(8, "little")


def test_bare_pickle_is_listed(tmp_path: Path) -> None:
    path = tmp_path / "state.pkl"
    raw = pickle.dumps({"a": [1, 2]}, protocol=4) + b"\x00" * 7
    path.write_bytes(raw)
    assert read_path(str(path)).pickles == [judged("state.pkl", raw)]


def test_directory_lists_its_members_pickles(tmp_path: Path) -> None:
    d = tmp_path / "checkpoint-5"
    d.mkdir()
    save({"w": torch.ones(2)}, d / "pytorch_model.bin")
    torch.save({"lr": 0.1}, d / "optimizer.pt", _use_new_zipfile_serialization=False)
    (d / "trainer_state.json").write_text("{}")
    ckpt = read_path(str(d))
    assert ckpt.format == "hf-checkpoint-dir"
    members = [p.member for p in ckpt.pickles]
    assert "pytorch_model.bin:pytorch_model/data.pkl" in members
    assert "optimizer.pt:data" in members and len(members) == 6
    child = {rel: c for rel, c, _h in ckpt.children}["optimizer.pt"]
    assert [p.sha256 for p in ckpt.pickles if p.member.startswith("optimizer.pt:")] == [
        p.sha256 for p in child.pickles]


def test_inspect_json_carries_the_pickles(tmp_path: Path) -> None:
    path = save({"w": torch.ones(3)}, tmp_path / "m.pt")
    data_pkl = zipfile.ZipFile(path).read("m/data.pkl")
    p = run_cli("inspect", "--format", "json", str(path))
    assert p.returncode == 0, p.stderr
    pickles = json.loads(p.stdout)["files"][0]["details"]["pickles"]
    assert pickles == [{"member": "m/data.pkl", "offset": 0, "length": len(data_pkl),
                        "sha256": hashlib.sha256(data_pkl).hexdigest()}]
