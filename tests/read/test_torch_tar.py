"""Files that do not start with ``PK\\x03\\x04``, judged as torch 2.13's ``_legacy_load`` reads
them (issue 8 classes 2, 4, 9): ``tarfile`` first, then the pickle stream compared by value,
frames honoured — differentially against torch itself.

The oracle: ``torch.load(path, weights_only=False, pickle_module=<recorder>)`` in a subprocess
records the exact bytes every ``pickle.load``/``Unpickler.load`` consumed. ckpt-guard must have
judged each of those byte strings (``Checkpoint.pickles``), or fail the file.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from ckpt_guard.analyze import analyze
from ckpt_guard.read import UnreadableError, read_path
from tests.adversarial import nonzip as N
from tests.adversarial import pickles as P

ROOT = Path(__file__).resolve().parents[2]

# Records (sha256 of consumed bytes) for every pickle torch unpickles; a canary file tells
# whether a payload ran. Runs with cwd = the files' directory.
_RECORD = textwrap.dedent("""
    import hashlib, json, pickle, sys, types, warnings
    import torch
    warnings.simplefilter("ignore")
    out = {}
    for path in json.loads(sys.argv[1]):
        seen = []
        def _span(f, p0):
            p1 = f.tell()
            f.seek(p0)
            seen.append(hashlib.sha256(f.read(p1 - p0)).hexdigest())
            f.seek(p1)
        class Unpickler(pickle.Unpickler):
            def __init__(self, f, **kw):
                super().__init__(f, **kw)
                self._f = f
            def load(self):
                p0 = self._f.tell()
                try:
                    return super().load()
                finally:
                    _span(self._f, p0)
        def load(f, **kw):
            return Unpickler(f, **kw).load()
        shim = types.ModuleType("recording_pickle")
        shim.Unpickler, shim.load = Unpickler, load
        shim.UnpicklingError = pickle.UnpicklingError
        try:
            torch.load(path, weights_only=False, pickle_module=shim)
            ok = True
        except BaseException:
            ok = False
        out[path] = {"pickles": seen, "loaded": ok}
    print(json.dumps(out))
""")


def torch_record(paths: list[Path]) -> dict[str, dict]:
    proc = subprocess.run([sys.executable, "-c", _RECORD, json.dumps([str(p) for p in paths])],
                          cwd=paths[0].parent, capture_output=True, text=True, timeout=300,
                          check=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _legit_legacy(c: str) -> bytes:
    from tests.adversarial import containers as Z

    pickles, tail = Z.legacy_pickles()
    return b"".join(pickles) + tail


def _bare_dict(c: str) -> bytes:
    return pickle.dumps({"w": [1, 2, 3]}, protocol=4)


def _bad_protocol(c: str) -> bytes:
    return (pickle.dumps(N.MAGIC, protocol=2) + pickle.dumps(1000, protocol=2)
            + pickle.dumps({}, protocol=2))


def _checksum_only_tar(c: str) -> bytes:
    """A header with a valid checksum but a size field tarfile refuses (InvalidHeaderError at
    offset 0): torch falls back to the pickle stream. Another Python's tarfile might not."""
    h = bytearray(N.tar_header("x", 0))
    h[124:136] = b"zzzzzzzzzzz\0"
    h[148:156] = b" " * 8
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h) + b"\0" * 1024


def _truncated_member_fallback(c: str) -> bytes:
    """A tar whose 'storages' data runs past the end of the file: extract() raises ReadError,
    a TarError, so torch starts over and unpickles the file from offset 0 — where the first
    header's name field opens a BINUNICODE that swallows the header, and the first member's
    data carries the payload."""
    payload = P.POP + P.system_call(P.touch_cmd(c)) + P.STOP
    first = bytearray(N.tar_member("placeholder", payload))
    swallow = 512 - 7  # PROTO 2, X, 4-byte length: the string ends at the header's end
    first[0:100] = (P.proto(2) + b"X" + struct.pack("<I", swallow)).ljust(100, b"\0")
    first[148:156] = b" " * 8
    first[148:156] = b"%06o\0 " % sum(first[:512])
    storages = N.tar_header("storages", 4096)
    return bytes(first) + storages + b"\0" * 100


def _symlink_member(c: str) -> bytes:
    members = N.old_tar_members(None)
    return (N.tar_member("storages", members["storages"])
            + N.tar_header("tensors", 0, typeflag=b"2")  # symlink: its target is outside
            + N.tar_member("pickle", members["pickle"]) + N.tar_end())


BUILDERS: dict[str, Callable[[str], bytes]] = {
    "legit_v7_tar": lambda c: N.old_tar(None),
    "legit_ustar_tar": lambda c: N.old_tar(None, magic=b"ustar\x0000"),
    "legit_legacy": _legit_legacy,
    "bare_dict": _bare_dict,
    "bad_protocol_version": _bad_protocol,
    "tar_payload_storage_args": lambda c: N.old_tar(c, "storage_args"),
    "tar_payload_tensor_args": lambda c: N.old_tar(c, "tensor_args"),
    "tar_named_like_legacy": N.tar_named_like_legacy,
    "safetensors_also_tar": N.safetensors_also_tar,
    "magic_text_long": N.magic_text_long,
    "magic_long4": N.magic_long4,
    "frame_decoy_5000": N.frame_decoy(5000),
    "frame_decoy_200000": N.frame_decoy(200_000),
    "checksum_only_tar": _checksum_only_tar,
    "truncated_member_fallback": _truncated_member_fallback,
    "symlink_member": _symlink_member,
}


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, dict, bool]]:
    d = tmp_path_factory.mktemp("nonzip")
    paths = {}
    for name, build in BUILDERS.items():
        path = d / f"{name}.bin"
        path.write_bytes(build(str(d / f"canary-{name}")))
        paths[name] = path
    rec = torch_record(list(paths.values()))
    return {n: (p, rec[str(p)], (d / f"canary-{n}").exists()) for n, p in paths.items()}


@pytest.mark.parametrize("name", list(BUILDERS))
def test_every_pickle_torch_unpickles_was_judged_or_the_file_fails(
        name: str, recorded: dict[str, tuple[Path, dict, bool]]) -> None:
    path, rec, fired = recorded[name]
    try:
        ckpt = read_path(str(path))
    except UnreadableError:
        assert not rec["loaded"], f"{name}: torch loads what we call unreadable"
        return  # unreadable fails the file (and torch.load raised too)
    analysis = analyze(ckpt)
    ours = [p.sha256 for p in ckpt.pickles]
    missing = [h for h in rec["pickles"] if h not in ours]
    unsafe = [v.use.qualname for v in analysis.globals if v.safety == "unsafe"]
    if missing:
        assert unsafe, f"{name}: torch unpickled {len(missing)} pickle(s) never judged, and " \
                       f"the file does not fail ({ckpt.notes})"
    if fired:
        assert unsafe, f"{name}: the payload ran under torch but nothing is unsafe"


UNREADABLE = ["bad_protocol_version"]
AMBIGUOUS = ["frame_decoy_5000", "frame_decoy_200000", "checksum_only_tar",
             "truncated_member_fallback", "symlink_member"]
FIRES = {"tar_payload_storage_args", "tar_payload_tensor_args", "tar_named_like_legacy",
         "safetensors_also_tar", "magic_text_long", "magic_long4", "frame_decoy_5000",
         "frame_decoy_200000", "truncated_member_fallback"}


def test_the_payloads_really_run_under_torch(
        recorded: dict[str, tuple[Path, dict, bool]]) -> None:
    assert {n for n, (_, _, fired) in recorded.items() if fired} == FIRES


@pytest.mark.parametrize("name", [n for n in BUILDERS if n not in AMBIGUOUS + UNREADABLE])
def test_judged_pickles_are_byte_for_byte_what_torch_unpickles(
        name: str, recorded: dict[str, tuple[Path, dict, bool]]) -> None:
    path, rec, fired = recorded[name]
    ckpt = read_path(str(path))
    assert [p.sha256 for p in ckpt.pickles] == rec["pickles"]
    unsafe = [v for v in analyze(ckpt).globals if v.safety == "unsafe"]
    assert bool(unsafe) == fired, (name, unsafe)


@pytest.mark.parametrize("name", AMBIGUOUS)
def test_ambiguous_files_fail_closed(name: str,
                                     recorded: dict[str, tuple[Path, dict, bool]]) -> None:
    path, _, _ = recorded[name]
    ckpt = read_path(str(path))
    assert any(g.module == "<container>" for g in ckpt.globals), ckpt.notes
    assert any(v.safety == "unsafe" for v in analyze(ckpt).globals)


def test_legit_tars_load_under_torch(recorded: dict[str, tuple[Path, dict, bool]]) -> None:
    for name in ("legit_v7_tar", "legit_ustar_tar"):
        path, rec, _ = recorded[name]
        assert rec["loaded"], name
        assert len(rec["pickles"]) == 6  # count, args, views; count, args; pickle
        ckpt = read_path(str(path))
        assert ckpt.format == "unknown" and "tar checkpoint" in ckpt.notes[-1]


def test_safetensors_also_tar_is_valid_safetensors_and_judged_as_tar(tmp_path: Path) -> None:
    from safetensors.torch import load_file

    data = N.safetensors_also_tar(str(tmp_path / "canary"))
    assert N.safetensors_also_tar_valid(data)
    path = tmp_path / "model.safetensors"
    path.write_bytes(data)
    assert set(load_file(str(path))) == {"x"}
    ckpt = read_path(str(path))
    assert ckpt.format == "safetensors"
    assert "posix.system" in {g.qualname for g in ckpt.globals}


@pytest.mark.parametrize("frame_len", [100, 4000, 5000, 9000, 131071, 131072, 200000])
@pytest.mark.parametrize("prefix_pickles", [0, 300])
def test_cpython_reads_a_frame_past_stop_depending_on_buffering(
        tmp_path: Path, frame_len: int, prefix_pickles: int) -> None:
    """The fact class 9 rests on, checked with real pickle.load on open(path, 'rb') (what
    torch.load(path) hands the unpickler): after a STOP inside a FRAME the next load starts
    either right after the STOP or at the frame's end, depending on the frame's size and on
    what the BufferedReader holds — so ckpt-guard refuses such streams rather than guess."""
    body = b"K\x01." + b"N" * (frame_len - 3)
    framed = P.proto(4) + P.frame(frame_len) + body
    prefix = pickle.dumps(N.MAGIC, protocol=2) * prefix_pickles
    path = tmp_path / "f.bin"
    path.write_bytes(prefix + framed + pickle.dumps(2, protocol=2))
    with open(path, "rb") as f:
        for _ in range(prefix_pickles):
            pickle.load(f)
        assert pickle.load(f) == 1
        where = f.tell() - len(prefix)
    stop_end, frame_end = 2 + 9 + 3, len(framed)
    if frame_len >= 128 * 1024:
        assert where == frame_end  # PREFETCH: a frame this large is always read whole
    assert where in (stop_end, frame_end)
    res_end = {100: stop_end}.get(frame_len) if prefix_pickles == 0 else None
    if res_end is not None:
        assert where == res_end  # a small frame already in the buffer: exact consumption


def test_magic_number_spellings_all_lead_torch_on(tmp_path: Path) -> None:
    """torch compares the first pickle by value: every spelling of the magic number (and
    protocol version) reads as a legacy stream for torch and for us."""
    for build in (N.magic_text_long, N.magic_text_int, N.magic_long1_no_proto, N.magic_long4,
                  N.magic_protocol_5_framed):
        path = tmp_path / f"{build.__name__}.pt"
        path.write_bytes(build(str(tmp_path / "canary")))
        ckpt = read_path(str(path))
        assert ckpt.format == "torch-legacy", build.__name__
        assert len(ckpt.pickles) == 5 and ckpt.storages


def test_old_tar_without_pickle_member_is_unreadable_with_what_ran(tmp_path: Path) -> None:
    """torch raises KeyError for a missing member: nothing after runs; the globals of what
    ran are kept on the error."""
    path = tmp_path / "old.pt"
    members = N.old_tar_members(str(tmp_path / "c"), "count")
    path.write_bytes(N.tar_member("storages", members["storages"]) + N.tar_end())
    with pytest.raises(UnreadableError, match="no 'tensors' member") as e:
        read_path(str(path))
    assert "posix.system" in {g.qualname for g in e.value.partial_globals}  # type: ignore


def test_bad_protocol_version_is_unreadable_with_what_ran(tmp_path: Path) -> None:
    path = tmp_path / "p.pt"
    path.write_bytes(pickle.dumps(N.MAGIC, protocol=2)
                     + P.proto(2) + P.system_call("true") + P.POP + P.binint(1000) + P.STOP)
    with pytest.raises(UnreadableError, match="protocol version 1000") as e:
        read_path(str(path))
    assert "posix.system" in {g.qualname for g in e.value.partial_globals}  # type: ignore


def test_bare_pickle_built_by_a_call_stays_a_bare_pickle(tmp_path: Path) -> None:
    """A pickle.dump'd OrderedDict is a value torch compares with its magic number by running
    __eq__: with nothing after it, it is a bare pickle; junk after it is read on, not failed."""
    import collections

    path = tmp_path / "od.pkl"
    path.write_bytes(pickle.dumps(collections.OrderedDict(a=[1, 2]), protocol=4))
    ckpt = read_path(str(path))
    assert ckpt.format == "unknown" and len(ckpt.pickles) == 1
    path.write_bytes(path.read_bytes() + b"cjunk\nnames here\n(")
    ckpt = read_path(str(path))
    assert not [v for v in analyze(ckpt).globals if v.safety == "unsafe"]


def test_large_tar_storages_are_skipped_not_loaded(tmp_path: Path) -> None:
    members = N.old_tar_members(None)
    numel = 400_000
    big = members["storages"].replace(struct.pack("<q", 3) + struct.pack("<3f", 1, 2, 3),
                                      struct.pack("<q", numel) + b"\0" * (4 * numel))
    path = tmp_path / "big.pt"
    path.write_bytes(N.tar_member("storages", big) + N.tar_member("tensors", members["tensors"])
                     + N.tar_member("pickle", members["pickle"]) + N.tar_end())
    ckpt = read_path(str(path))
    assert len(ckpt.pickles) == 6
    assert [p.member for p in ckpt.pickles] == ["storages"] * 3 + ["tensors"] * 2 + ["pickle"]
    assert ckpt.pickles[2].offset > 4 * numel


def test_frame_past_stop_in_a_tar_member_fails_closed(tmp_path: Path) -> None:
    """torch reads 'storages' unbuffered: a FRAME read whole moves the next pickle.load to
    the frame's end, past a decoy — refused like in the legacy stream."""
    members = N.old_tar_members(None)
    count = P.proto(4) + P.frame(4000) + (P.binint1(0) + P.STOP).ljust(4000, b"N")
    path = tmp_path / "f.pt"
    path.write_bytes(N.tar_member("storages", count + members["storages"][4:])
                     + N.tar_member("tensors", members["tensors"])
                     + N.tar_member("pickle", members["pickle"]) + N.tar_end())
    ckpt = read_path(str(path))
    assert any(g.module == "<container>" for g in ckpt.globals)
    assert "frame" in ckpt.notes[-1]
