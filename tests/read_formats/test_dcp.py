"""Issue 8, class 11: torch.distributed.checkpoint directories (``.metadata`` +
``__0_0.distcp``). torch's FileSystemReader unpickles ``.metadata`` with plain
``pickle.load`` and ``torch.load(weights_only=False)``s every non-tensor item's byte range of
a ``.distcp`` (DefaultLoadPlanner.load_bytes): both are judged. Real directories written by
``torch.distributed.checkpoint.save`` in this single process."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import pytest
import torch

from tests.adversarial import pickles as P
from tests.cli.conftest import run_cli

dcp = pytest.importorskip("torch.distributed.checkpoint")


class _Payload:
    """What a pickled object that runs a command looks like (never loaded here)."""

    def __reduce__(self):
        return (os.system, ("true",))


def _save(state: dict, where: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "assuming the intent is to save in a single process"
        dcp.save(state, checkpoint_id=str(where))
    return where


def _state() -> dict:
    return {"w": torch.ones(3, 4), "b": torch.zeros(2, dtype=torch.float16), "step": 3,
            "nested": {"t": torch.arange(5)}}


def _check(path: Path) -> tuple[int, dict]:
    proc = run_cli("check", "--format", "json", str(path))
    return proc.returncode, json.loads(proc.stdout)["files"][0]


def test_a_clean_dcp_checkpoint_passes_the_safety_check(tmp_path: Path) -> None:
    d = _save(_state(), tmp_path / "dcp")
    assert sorted(os.listdir(d)) == [".metadata", "__0_0.distcp"]
    code, fr = _check(d)
    assert code == 0, fr
    assert fr["format"] == "dcp-dir"
    assert fr["findings"] == []  # its PosixPath in .metadata is a value (test_dcp_metadata)
    # 12 float32 + 2 float16 + 5 int64 elements, from the slices the metadata names
    assert fr["tensor_bytes"]["total"] == 12 * 4 + 2 * 2 + 5 * 8


def test_a_dcp_directory_is_found_by_a_directory_walk(tmp_path: Path) -> None:
    _save(_state(), tmp_path / "ckpts" / "step-10")
    proc = run_cli("check", "--format", "json", str(tmp_path / "ckpts"))
    files = json.loads(proc.stdout)["files"]
    assert [(Path(f["path"]).name, f["format"]) for f in files] == [("step-10", "dcp-dir")]


def test_a_metadata_pickle_with_a_payload_fails(tmp_path: Path) -> None:
    d = _save(_state(), tmp_path / "dcp")
    (d / ".metadata").write_bytes(P.wrap_dict(P.system_call("true"), key="storage_data"))
    code, fr = _check(d)
    assert code == 1
    [unsafe] = [f for f in fr["findings"] if f["rule"] == "unsafe-pickle"]
    assert [g["member"] for g in unsafe["detail"]["globals"]] == [".metadata"]
    assert "posix.system" in unsafe["message"]


def test_a_non_tensor_item_is_judged_as_torch_load_would_run_it(tmp_path: Path) -> None:
    """A value that is not a tensor is written with torch.save and read back with
    torch.load(weights_only=False): a pickled payload in it is unsafe."""
    d = _save({"w": torch.ones(2), "extra": _Payload()}, tmp_path / "dcp")
    code, fr = _check(d)
    assert code == 1
    unsafe = [f for f in fr["findings"] if f["rule"] == "unsafe-pickle"]
    assert unsafe and "system" in unsafe[0]["message"]
    assert unsafe[0]["detail"]["globals"][0]["member"].startswith("__0_0.distcp@")


def test_a_storage_item_outside_the_directory_is_unreadable(tmp_path: Path) -> None:
    d = _save(_state(), tmp_path / "dcp")
    meta = (d / ".metadata").read_bytes()
    (d / ".metadata").write_bytes(meta.replace(b"__0_0.distcp", b"../_0.distcp"))
    code, fr = _check(d)
    assert code == 1 and any(f["rule"] == "unreadable" for f in fr["findings"])


def test_a_repository_check_finds_a_dcp_directory(tmp_path: Path) -> None:
    import subprocess

    repo = tmp_path / "repo"
    _save(_state(), repo / "ckpt" / "dcp")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    proc = run_cli("check", "--format", "json", cwd=repo)
    files = json.loads(proc.stdout)["files"]
    assert [(f["path"], f["format"]) for f in files] == [("ckpt/dcp", "dcp-dir")], proc.stderr
