"""Issue 8, classes 5, 8 and 13: a failure never loses a verdict, one bad file never stops a
run.

* Class 5: a pickle that names ``os.system`` and then hits a limit or a parse error used to be
  only ``unreadable`` (the globals already seen were dropped); members of a checkpoint
  directory named as training files skipped ``unreadable``. Now every global seen before a
  failure is judged: such a file is both ``unsafe-pickle`` and ``unreadable``.
* Class 13: a bare pickle that fails mid-way used to pass; ``pickle.load`` runs it up to the
  failure, so it fails.
* Class 8: an int dict key of more than 4,300 digits (``sys.int_info``'s str limit) made
  ``str(key)`` raise and killed the whole run; now that file is an ``error`` and the others
  are checked. Real CLI subprocesses.

Every file is built byte by byte (tests/adversarial/pickles.py, containers.py).
"""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from tests.adversarial import containers as Z
from tests.adversarial import pickles as P
from tests.cli.conftest import run_cli

MARK, STOP = b"(", b"."


def _payload_then(tail: bytes) -> bytes:
    """``posix.system('true')`` called (as pickle.load would) and then ``tail``."""
    return P.proto(2) + P.system_call("true") + tail


def _check(*paths: Path) -> tuple[int, dict]:
    proc = run_cli("check", "--format", "json", *map(str, paths))
    return proc.returncode, json.loads(proc.stdout)


def _rules(fr: dict) -> dict[str, dict]:
    return {f["rule"]: f for f in fr["findings"]}


CASES = {
    # A limit after the payload: 1001 MARKs (max_depth is 1000).
    "mark-limit": lambda: Z.torch_zip_with(replace={"data.pkl": _payload_then(MARK * 1001)}),
    # A parse error after the payload: an unknown opcode.
    "bad-opcode": lambda: Z.torch_zip_with(replace={"data.pkl": _payload_then(b"\xff" + STOP)}),
    # Truncated after the payload (deflated, so a short member is no zip error).
    "truncated": lambda: Z.torch_zip_with(replace={"data.pkl": _payload_then(P.binunicode("x")
                                                                             [:-1])}),
    # Bare pickle (class 13), cut mid-way after the call.
    "bare": lambda: _payload_then(P.binunicode("abc")[:3]),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_globals_seen_before_a_failure_are_judged(name: str, tmp_path: Path) -> None:
    path = tmp_path / f"{name}.pt"
    path.write_bytes(CASES[name]())
    code, report = _check(path)
    [fr] = report["files"]
    rules = _rules(fr)
    assert code == 1 and fr["status"] == "error", fr
    assert rules["unreadable"]["action"] == "fail"
    assert rules["unsafe-pickle"]["action"] == "fail", fr
    assert "posix.system" in rules["unsafe-pickle"]["message"]
    assert "before it stops parsing" in rules["unsafe-pickle"]["message"]


def test_legacy_file_failing_after_its_object_pickle_keeps_its_globals(tmp_path: Path) -> None:
    """The legacy stream: the object pickle names the payload, then the storage-key list is
    broken. The globals of the earlier pickles survive the later failure."""
    pickles, _tail = Z.legacy_pickles()
    obj = P.proto(2) + P.EMPTY_DICT + P.binunicode("x") + P.system_call("true") + P.SETITEM + STOP
    path = tmp_path / "legacy.pt"
    path.write_bytes(b"".join(pickles[:3]) + obj + b"\xff")
    code, report = _check(path)
    rules = _rules(report["files"][0])
    assert code == 1 and {"unreadable", "unsafe-pickle"} <= rules.keys(), report


def _hf_dir(root: Path, members: dict[str, bytes]) -> Path:
    d = root / "checkpoint-10"
    d.mkdir()
    (d / "trainer_state.json").write_text("{}")
    (d / "model.safetensors").write_bytes(_safetensors())
    for name, data in members.items():
        (d / name).write_bytes(data)
    return d


def _safetensors() -> bytes:
    header = json.dumps({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    return struct.pack("<Q", len(header)) + header + bytes(8)


def test_training_files_of_a_directory_are_judged_like_any_pickle(tmp_path: Path) -> None:
    """rng_state.pth / scheduler.pt are torch.load-ed by the Trainer on resume: one that is
    broken after a payload is unreadable AND unsafe-pickle (it used to be neither)."""
    broken = Z.torch_zip_with(replace={"data.pkl": _payload_then(MARK * 1001)})
    d = _hf_dir(tmp_path, {"rng_state.pth": broken, "scheduler.pt": b"\x80\x02}q\x00(X"})
    code, report = _check(d)
    [fr] = report["files"]
    found = {(f["rule"], f["detail"].get("member")) for f in fr["findings"]}
    assert code == 1 and fr["status"] == "error"
    assert {("unreadable", "rng_state.pth"), ("unsafe-pickle", "rng_state.pth"),
            ("unreadable", "scheduler.pt")} <= found, fr["findings"]


# ---- class 8: one bad file never crashes the run ---------------------------------------------

def _long4(n: int) -> bytes:
    data = n.to_bytes((n.bit_length() + 8) // 8, "little", signed=True)
    return b"\x8b" + struct.pack("<I", len(data)) + data


def _with_key(key: bytes) -> bytes:
    """A real torch zip whose top dict gets one more item ``key: 1``."""
    base = Z.torch_zip()
    [pkl] = [d for n, d in Z.read_members(base) if n.endswith("/data.pkl")]
    return Z.torch_zip_with(replace={"data.pkl": pkl[:-1] + key + P.binint1(1) + P.SETITEM
                                     + STOP}, base=base)


def _huge_int_key_zip() -> bytes:
    """``{10**5000: 1, …}``: a valid pickle int (LONG4) that str() refuses to print
    (sys.int_info.default_max_str_digits): it used to kill the whole run."""
    return _with_key(_long4(10 ** 5000))


def _surrogate_key_zip() -> bytes:
    """A key holding a lone surrogate (BINUNICODE decodes with surrogatepass, as CPython's
    unpickler does): it cannot be written to a UTF-8 report; ``inspect`` used to crash."""
    return _with_key(b"X" + struct.pack("<I", 3) + b"\xed\xa0\x80")


def _models(tmp_path: Path, bad: dict[str, bytes], n_good: int = 2) -> Path:
    d = tmp_path / "models"
    d.mkdir()
    for i in range(n_good):
        (d / f"m{i:03d}.safetensors").write_bytes(_safetensors())
    (d / "good.pt").write_bytes(Z.torch_zip())
    for name, data in bad.items():
        (d / name).write_bytes(data)
    return d


@pytest.mark.parametrize("fmt", ["json", "text", "markdown", "sarif"])
def test_a_huge_int_key_is_judged_not_fatal(tmp_path: Path, fmt: str) -> None:
    d = _models(tmp_path, {"huge-key.pt": _huge_int_key_zip()})
    proc = run_cli("check", "--format", fmt, str(d))  # run_cli asserts: no traceback
    assert proc.returncode == 0, proc.stderr
    assert fmt == "sarif" or "huge-key.pt" in proc.stdout  # SARIF lists findings only
    proc = run_cli("inspect", str(d / "huge-key.pt"))
    assert proc.returncode == 0 and "<int of 16610 bits>" in proc.stdout


def test_a_file_that_cannot_be_rendered_is_that_files_error(tmp_path: Path) -> None:
    d = _models(tmp_path, {"surrogate.pt": _surrogate_key_zip()})
    proc = run_cli("inspect", "--format", "json", str(d))
    assert proc.returncode == 1, proc.stderr
    files = {Path(f["path"]).name: f for f in json.loads(proc.stdout)["files"]}
    assert files.pop("surrogate.pt")["status"] == "error"
    assert {f["status"] for f in files.values()} == {"pass"} and len(files) == 3
    proc = run_cli("inspect", str(d))  # text, to a pipe
    assert proc.returncode == 1 and "surrogate.pt" in proc.stdout and "good.pt" in proc.stdout


def test_the_process_pool_path_isolates_a_bad_file(tmp_path: Path) -> None:
    """Above PARALLEL_THRESHOLD files the engine fans out to worker processes."""
    from ckpt_guard.app.check import PARALLEL_THRESHOLD

    d = _models(tmp_path, {"m050-bad.pt": _surrogate_key_zip()}, n_good=PARALLEL_THRESHOLD)
    proc = run_cli("inspect", "--format", "json", str(d))
    statuses = {Path(f["path"]).name: f["status"] for f in json.loads(proc.stdout)["files"]}
    assert proc.returncode == 1 and statuses.pop("m050-bad.pt") == "error"
    assert set(statuses.values()) == {"pass"} and len(statuses) == PARALLEL_THRESHOLD + 1


@pytest.mark.parametrize("fmt", ["json", "sarif"])  # text/markdown write the name's bytes
def test_a_file_name_that_is_not_utf8_never_stops_the_report(tmp_path: Path, fmt: str) -> None:
    import os

    d = _models(tmp_path, {})
    with open(os.fsencode(d) + b"/\xffname.pt", "wb") as fh:
        fh.write(Z.torch_zip())
    proc = run_cli("check", "--format", fmt, str(d))
    assert proc.returncode == 0, proc.stderr
