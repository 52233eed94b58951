"""torch's legacy (pre-1.6) format: five pickles, then raw storages; torch as oracle."""

from __future__ import annotations

import io
import os
import pickle
import tarfile
from pathlib import Path

import pytest
import torch

from ckpt_guard.read import read_path
from ckpt_guard.read.checkpoint import Checkpoint, UnreadableError
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.torch_legacy import read_torch_legacy
from tests.read.test_torch_zip import DTYPES, assert_matches_torch, dtype_name

LIMITS = Limits()


def read_legacy(path: Path, limits: Limits = LIMITS) -> Checkpoint:
    with open(path, "rb") as fh:
        return read_torch_legacy(str(path), fh, os.path.getsize(path), limits)


def save_legacy(obj, path: Path) -> Path:
    torch.save(obj, path, _use_new_zipfile_serialization=False)
    return path


LEGACY_DTYPES = [d for d in DTYPES if d not in (torch.uint16, torch.uint32, torch.uint64,
                                                torch.float8_e4m3fn, torch.float8_e5m2)]


@pytest.mark.parametrize("dtype", LEGACY_DTYPES, ids=dtype_name)
def test_legacy_state_dict_in_every_dtype(tmp_path: Path, dtype: torch.dtype) -> None:
    w = torch.arange(24, dtype=torch.float32).reshape(4, 6).to(dtype)
    path = save_legacy({"w": w, "row": w[1], "other": torch.ones(5).to(dtype)},
                       tmp_path / "legacy.pt")
    ckpt = read_legacy(path)
    assert ckpt.format == "torch-legacy" and ckpt.pickle_protocol == 2
    assert len(ckpt.storages) == 2
    assert ckpt.metadata["sys_info"]["protocol_version"] == 1001
    assert_matches_torch(ckpt, path)


def test_legacy_training_checkpoint_with_parameters(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.randn(5, 3)).sum().backward()
    opt.step()
    obj = {"model": model.state_dict(), "opt": opt.state_dict(),
           "p": torch.nn.Parameter(torch.ones(2)), "tied": [model[0].weight] * 2}
    path = save_legacy(obj, tmp_path / "train.pt")
    ckpt = read_legacy(path)
    assert_matches_torch(ckpt, path)
    assert ckpt.root["tied"][0] is ckpt.root["tied"][1]
    # storages are laid out back to back after the pickles: offsets strictly increase
    offs = sorted((s.offset, s.nbytes) for s in ckpt.storages.values())
    for (o1, n1), (o2, _) in zip(offs, offs[1:], strict=False):
        assert o2 == o1 + n1 + 8


def test_legacy_full_module_and_globals(tmp_path: Path) -> None:
    model = torch.nn.Linear(2, 2)
    path = save_legacy(model, tmp_path / "module.pt")
    ckpt = read_legacy(path)
    assert ckpt.root.qualname == "torch.nn.modules.linear.Linear"
    assert {g.member for g in ckpt.globals} >= {"data"}
    assert "torch.nn.modules.linear.Linear" in {g.qualname for g in ckpt.globals}


def test_legacy_damage_is_one_line_unreadable(tmp_path: Path) -> None:
    path = save_legacy({"w": torch.ones(100)}, tmp_path / "ok.pt")
    raw = path.read_bytes()
    cases = {
        "truncated data": raw[:-10],
        "truncated pickle": raw[:40],
        "bad magic": pickle.dumps(1234, protocol=2) + raw[20:],
        "not torch": pickle.dumps({"a": 1}, protocol=2),
    }
    for label, data in cases.items():
        p = tmp_path / f"{label.replace(' ', '_')}.pt"
        p.write_bytes(data)
        with pytest.raises(UnreadableError) as ei:
            read_legacy(p)
        assert "\n" not in str(ei.value), label
    # numel header disagreeing with the pickle
    ckpt = read_legacy(path)
    st = next(iter(ckpt.storages.values()))
    bad = bytearray(raw)
    bad[st.offset - 8:st.offset] = (99).to_bytes(8, "little")
    (tmp_path / "numel.pt").write_bytes(bytes(bad))
    with pytest.raises(UnreadableError, match="holds 99 elements"):
        read_legacy(tmp_path / "numel.pt")


def test_old_tar_format_torch_cannot_load_is_unreadable(tmp_path: Path) -> None:
    """A PyTorch <= 0.3 tar is what torch.load tries first (tests/read/test_torch_tar.py):
    its pickles are judged; this one lacks the members torch needs next, so torch stops."""
    path = tmp_path / "old.pt"
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("storages")
        data = pickle.dumps(0, protocol=2)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(UnreadableError, match="tar checkpoint that torch.load cannot load"):
        read_path(str(path))


class CountingReader(io.RawIOBase):
    """A file without fileno(): readers fall back to seek/read, which we count."""

    def __init__(self, path: Path) -> None:
        self.f = open(path, "rb")  # noqa: SIM115 - closed by close()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self.f.seek(offset, whence)

    def tell(self) -> int:
        return self.f.tell()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        self.f.close()
        super().close()


def test_only_headers_are_read(tmp_path: Path) -> None:
    path = save_legacy({"big": torch.zeros(2_000_000), "b2": torch.ones(1_000_000)},
                       tmp_path / "big.pt")
    fh = CountingReader(path)
    try:
        ckpt = read_torch_legacy(str(path), fh, os.path.getsize(path), LIMITS)
    finally:
        fh.close()
    assert fh.bytes_read < 100_000 < os.path.getsize(path) // 100
    last = max(ckpt.storages.values(), key=lambda s: s.offset)
    assert last.offset + last.nbytes == os.path.getsize(path)
