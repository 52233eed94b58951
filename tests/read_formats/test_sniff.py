"""read_path: format by content, and one-line errors for everything that is not a weight file."""

from __future__ import annotations

import os
import pickle
import threading

import pytest
import torch
from safetensors.torch import save_file

from ckpt_guard.analyze import analyze
from ckpt_guard.read import read_path
from ckpt_guard.read.checkpoint import UnreadableError
from ckpt_guard.read.sniff import NotAWeightFile, sniff


def _one_line_error(path: str, match: str) -> None:
    with pytest.raises(UnreadableError, match=match) as info:
        read_path(path)
    assert "\n" not in str(info.value)


def test_extension_is_ignored(tmp_path):
    path = tmp_path / "weights.pt"  # a safetensors file under a torch extension
    save_file({"w": torch.ones(2)}, str(path))
    assert read_path(str(path)).format == "safetensors"


@pytest.mark.parametrize("content,match", [
    (b"", "empty file"),
    (b"hello world\n", "text content"),
    (b'{"model_type": "bert"}', "JSON"),
    (bytes(range(256)) * 4, "binary"),
])
def test_not_weight_files(tmp_path, content, match):
    path = tmp_path / "x.bin"
    path.write_bytes(content)
    with pytest.raises(NotAWeightFile, match=match):
        read_path(str(path))


def test_missing_file(tmp_path):
    _one_line_error(str(tmp_path / "nope.pt"), "no such file")


def test_broken_symlink(tmp_path):
    link = tmp_path / "link.pt"
    link.symlink_to(tmp_path / "gone.pt")
    _one_line_error(str(link), "broken symlink")


def test_symlink_loop(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.symlink_to(b)
    b.symlink_to(a)
    _one_line_error(str(a), "symlink loop")


def test_symlink_to_file_is_followed(tmp_path):
    target = tmp_path / "real.safetensors"
    save_file({"w": torch.ones(2)}, str(target))
    link = tmp_path / "link.safetensors"
    link.symlink_to(target)
    assert read_path(str(link)).format == "safetensors"


def test_fifo_never_blocks(tmp_path):
    fifo = tmp_path / "pipe.pt"
    os.mkfifo(fifo)
    errors: list[Exception] = []

    def target() -> None:
        try:
            read_path(str(fifo))
        except UnreadableError as e:
            errors.append(e)

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(5)
    assert not t.is_alive(), "read_path blocked on a FIFO"
    assert errors and "FIFO" in str(errors[0])


def test_device(tmp_path):
    _one_line_error("/dev/null", "not a regular file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_permission_denied(tmp_path):
    path = tmp_path / "secret.pt"
    path.write_bytes(b"PK\x03\x04")
    path.chmod(0)
    _one_line_error(str(path), "permission denied")


def test_plain_directory(tmp_path):
    (tmp_path / "readme.txt").write_text("hi")
    _one_line_error(str(tmp_path), "not a checkpoint directory")


def test_sniff_table(tmp_path):
    legacy = tmp_path / "legacy.pt"
    torch.save({"a": torch.ones(1)}, str(legacy), _use_new_zipfile_serialization=False)
    zipped = tmp_path / "zip.pt"
    torch.save({"a": torch.ones(1)}, str(zipped))
    legacy4 = tmp_path / "legacy4.pt"
    torch.save({"a": torch.ones(1)}, str(legacy4), _use_new_zipfile_serialization=False,
               pickle_protocol=4)
    for path, kind in [(legacy, "torch-legacy"), (legacy4, "torch-legacy"), (zipped, "zip")]:
        data = path.read_bytes()
        assert sniff(data[:1024], len(data)) == kind
    raw = pickle.dumps({"a": 1}, protocol=4)
    assert sniff(raw, len(raw)) == "pickle"
    assert sniff(b"cos\nsystem\n(S'echo'\ntR.", 22) == "pickle"
    pointer = b"version https://git-lfs.github.com/spec/v1\noid sha256:" + b"a" * 64 + b"\n"
    assert sniff(pointer, len(pointer)) == "lfs-pointer"


def test_bare_pickle_reports_globals(tmp_path):
    # torch.load on a bare pickle unpickles it: its globals must be visible to the checker.
    path = tmp_path / "model.pt"
    path.write_bytes(b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00echo\x85R.")
    ckpt = read_path(str(path))
    assert ckpt.format == "unknown"
    assert [g.qualname for g in ckpt.globals] == ["posix.system"]
    verdicts = analyze(ckpt).globals
    assert [(v.use.qualname, v.safety) for v in verdicts] == [("posix.system", "unsafe")]


def test_symlink_leaving_root_is_refused(tmp_path):
    outside = tmp_path / "outside.safetensors"
    save_file({"w": torch.ones(2)}, str(outside))
    repo = tmp_path / "repo"
    repo.mkdir()
    link = repo / "model.safetensors"
    link.symlink_to(outside)
    with pytest.raises(UnreadableError, match="outside the repository"):
        read_path(str(link), root=str(repo))
    inside = repo / "real.safetensors"
    save_file({"w": torch.ones(2)}, str(inside))
    (repo / "alias.safetensors").symlink_to(inside)
    assert read_path(str(repo / "alias.safetensors"), root=str(repo)).format == "safetensors"


@pytest.mark.parametrize("payload,expected", [
    (b"(S'echo'\nios\nsystem\n.", ["os.system"]),  # protocol 0 INST
    (b"\x80\x01(cos\nsystem\nX\x04\x00\x00\x00echoo.", ["os.system"]),  # PROTO 1 + OBJ
])
def test_bare_pickles_any_protocol(tmp_path, payload, expected):
    path = tmp_path / "weights.bin"
    path.write_bytes(payload)
    ckpt = read_path(str(path))
    assert ckpt.format == "unknown"
    assert sorted({g.qualname for g in ckpt.globals}) == expected


def test_a_bare_pickle_that_fails_mid_way_fails_with_its_globals(tmp_path):
    """Issue 8 class 13: torch.load runs a bare pickle up to where it breaks; it used to
    pass (a note); now the file is unreadable and the globals seen are carried."""
    path = tmp_path / "weights.bin"
    path.write_bytes(b"\x80\x02cposix\nsystem\nX\x04\x00\x00\x00ec")  # truncated
    with pytest.raises(UnreadableError, match="does not parse to the end") as info:
        read_path(str(path))
    assert {g.qualname for g in info.value.partial_globals} == {"posix.system"}


@pytest.mark.parametrize("content", [
    b"config = 1\nother = 2\n",  # starts with GLOBAL's opcode, names are not identifiers
    b"GGUF" + b"\x03\x00\x00\x00" + bytes(200_000),  # starts with BINFLOAT's opcode
    b"Introduction\n",
])
def test_text_and_binary_that_start_like_opcodes(tmp_path, content):
    path = tmp_path / "x.bin"
    path.write_bytes(content)
    with pytest.raises(NotAWeightFile):
        read_path(str(path))
