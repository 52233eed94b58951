"""Issue 10: DCP items stored through transforms (``_StorageInfo.transform_descriptors``;
torch/distributed/checkpoint/_extension.py). torch registers one, ``stream.zstd/1``
(``ZStandard``): its items are read through zstd, then ``torch.load``ed as usual. ckpt-guard
decodes zstd (nothing of the file runs) and judges what torch would load; what it cannot read
the same way — a custom transform, a stream with bytes after its frame, no zstandard — fails
closed with a finding that says why. Fixtures are written by torch's own ``FileSystemWriter``
with ``_extensions=[ZStandard()]``."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

from tests.adversarial import pickles as P
from tests.cli.conftest import run_cli

dcp = pytest.importorskip("torch.distributed.checkpoint")
zstandard = pytest.importorskip("zstandard")
from torch.distributed.checkpoint._extension import ZStandard  # noqa: E402

_LOADER = """
import sys, warnings
warnings.simplefilter("ignore")
import torch, torch.distributed.checkpoint as dcp
for d in sys.argv[1:]:
    state = {"w": torch.zeros(3, 4), "step": 0, "extra": None}
    try:
        dcp.load(state, checkpoint_id=d)
        print(d, "loaded", state["step"])
    except BaseException as e:  # dcp's CheckpointException is a BaseException
        print(d, "failed", "unknown-extension" if "Unknown extension" in str(e) else
              type(e).__name__)
"""


class _Payload:
    def __init__(self, cmd: str) -> None:
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def _save(state: dict, where: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dcp.save(state, storage_writer=dcp.FileSystemWriter(str(where),
                                                            _extensions=[ZStandard()]))
    return where


def _files(paths: list[Path]) -> dict[str, dict]:
    proc = run_cli("check", "--format", "json", *map(str, paths))
    return {Path(f["path"]).name: f for f in json.loads(proc.stdout)["files"]}


def test_zstd_items_are_read_through_the_decompressor(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    clean = _save({"w": torch.ones(3, 4), "step": 7, "extra": "note"}, tmp_path / "clean")
    bad = _save({"w": torch.ones(3, 4), "step": 7,
                 "extra": _Payload(P.touch_cmd(str(canary)))}, tmp_path / "bad")
    meta = (clean / ".metadata").read_bytes()
    assert b"stream.zstd/1" in meta
    custom = tmp_path / "custom"  # a transform torch does not register by default
    custom.mkdir()
    for f in os.listdir(clean):
        (custom / f).write_bytes((clean / f).read_bytes())
    (custom / ".metadata").write_bytes(meta.replace(b"stream.zstd/1", b"stream.lz4x/1"))
    proc = subprocess.run([sys.executable, "-c", _LOADER, str(clean), str(bad), str(custom)],
                          capture_output=True, text=True, timeout=300, check=True)
    got = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert got[str(clean)] == "loaded 7"
    assert got[str(custom)] == "failed unknown-extension"
    assert canary.exists()  # torch decompressed the item and ran its pickle
    canary.unlink()

    files = _files([clean, bad, custom])
    fr = files["clean"]
    assert fr["status"] == "pass" and fr["findings"] == [], fr
    assert fr["tensor_bytes"]["total"] == 12 * 4
    [unsafe] = [f for f in files["bad"]["findings"] if f["rule"] == "unsafe-pickle"]
    assert "posix.system" in unsafe["message"]
    assert unsafe["detail"]["globals"][0]["member"].startswith("__0_0.distcp@")
    assert "non-tensor items with torch.load(weights_only=False)" in unsafe["message"]
    unreadable = [f for f in files["custom"]["findings"] if f["rule"] == "unreadable"]
    assert len(unreadable) == 3  # every item, one finding each
    assert all("'stream.lz4x/1'" in f["message"] and "fails closed" in f["message"]
               for f in unreadable)
    assert not canary.exists()


def test_convert_refuses_compressed_items(tmp_path: Path) -> None:
    d = _save({"model": {"w": torch.ones(3, 4)}}, tmp_path / "dcp")
    pol = tmp_path / "p.yml"
    pol.write_text("version: 1\nconvert: safetensors\nrules:\n  optimizer-state: fix\n")
    proc = run_cli("fix", "--policy", str(pol), "--format", "json", str(d))
    assert not list(tmp_path.glob("*.safetensors"))
    assert "stored through stream.zstd/1 (compressed)" in proc.stdout, proc.stdout


def test_bytes_after_the_frame_and_a_truncated_stream_fail_closed() -> None:
    """torch's ZStandard reads through zstandard's stream_reader or pyzstd's
    EndlessZstdDecompressor, whichever is installed: whether a second frame is loaded depends
    on the library and its version (here it is), so such an item fails closed."""
    from ckpt_guard.read.checkpoint import UnreadableError
    from ckpt_guard.read.dcp_transform import decode

    c = zstandard.ZstdCompressor()
    one, two = c.compress(b"first"), c.compress(b"second")
    assert ZStandard().transform_from(io.BytesIO(one + two)).read(-1) == b"firstsecond"
    out, n = decode(io.BytesIO(one), ("stream.zstd/1",), "item")
    assert out.read() == b"first" and n == 5
    with pytest.raises(UnreadableError, match="after the end of its first zstd frame"):
        decode(io.BytesIO(one + two), ("stream.zstd/1",), "item")
    with pytest.raises(UnreadableError, match="truncated"):
        decode(io.BytesIO(one[:-3]), ("stream.zstd/1",), "item")
    with pytest.raises(UnreadableError, match="version"):
        decode(io.BytesIO(one), ("stream.zstd/2",), "item")
    twice = c.compress(one)  # two layers, decoded in the order listed
    assert decode(io.BytesIO(twice), ("stream.zstd/1", "stream.zstd/1"), "item")[0].read() \
        == b"first"


def test_without_zstandard_the_finding_says_what_to_install(tmp_path: Path) -> None:
    d = _save({"w": torch.ones(2)}, tmp_path / "dcp")
    block = tmp_path / "block"
    block.mkdir()
    (block / "zstandard.py").write_text("raise ImportError('blocked for the test')\n")
    env = {"PYTHONPATH": os.pathsep.join([str(block), os.environ.get("PYTHONPATH", "")])}
    proc = run_cli("check", "--format", "json", str(d), env=env)
    [fr] = json.loads(proc.stdout)["files"]
    assert proc.returncode == 1
    [f] = [f for f in fr["findings"] if f["rule"] == "unreadable"]
    assert "zstandard" in f["message"] and "fails closed" in f["message"]
