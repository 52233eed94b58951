"""safetensors: files written by the `safetensors` library, and hand-corrupted headers."""

from __future__ import annotations

import json
import struct

import pytest
import torch
from safetensors.torch import load_file, save_file

from ckpt_guard.read import read_path
from ckpt_guard.read.checkpoint import LimitExceeded, UnreadableError
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.sniff import NotAWeightFile

ALL_DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int64,
              torch.int32, torch.int16, torch.int8, torch.uint8, torch.bool, torch.complex64,
              torch.float8_e4m3fn, torch.float8_e5m2, torch.uint16, torch.uint32, torch.uint64]


def _tensors() -> dict[str, torch.Tensor]:
    out = {}
    for i, dt in enumerate(ALL_DTYPES):
        out[f"layer{i}.{str(dt).removeprefix('torch.')}"] = torch.zeros(3, i + 1).to(dt)
    out["scalar"] = torch.tensor(1.5)
    out["empty"] = torch.zeros(0, 4)
    return out


def test_library_file_matches_torch(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file(_tensors(), str(path), metadata={"format": "pt", "note": "x"})
    ckpt = read_path(str(path))
    oracle = load_file(str(path))
    assert ckpt.format == "safetensors"
    assert ckpt.size_bytes == path.stat().st_size
    assert ckpt.metadata["__metadata__"] == {"format": "pt", "note": "x"}
    assert set(ckpt.root) == set(oracle)
    raw = path.read_bytes()
    for name, tensor in oracle.items():
        ref = ckpt.root[name]
        assert ref.dtype == str(tensor.dtype).removeprefix("torch.")
        assert ref.shape == tuple(tensor.shape)
        assert ref.storage.nbytes == tensor.untyped_storage().nbytes()
        # The storage offset is absolute in the file: the bytes there are the tensor's.
        start = ref.storage.offset
        got = raw[start:start + ref.storage.nbytes]
        assert got == tensor.reshape(-1).view(torch.uint8).numpy().tobytes()
    assert sum(s.nbytes for s in ckpt.storages.values()) == sum(
        t.untyped_storage().nbytes() for t in oracle.values())


def test_no_metadata(tmp_path):
    path = tmp_path / "w.safetensors"
    save_file({"a": torch.ones(2, 2)}, str(path))
    assert read_path(str(path)).metadata["__metadata__"] is None


def _write(path, header: bytes | dict, buffer: bytes = b"", n: int | None = None) -> str:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw) if n is None else n) + raw + buffer)
    return str(path)


def _f32(name="a", shape=(2,), offsets=(0, 8)):
    return {name: {"dtype": "F32", "shape": list(shape), "data_offsets": list(offsets)}}


def test_hand_written_valid(tmp_path):
    header = {**_f32("a", (2,), (0, 8)), **_f32("b", (1,), (8, 12)),
              "__metadata__": {"k": "v"}}
    ckpt = read_path(_write(tmp_path / "ok", header, b"\0" * 12))
    assert [ckpt.root[k].shape for k in ("a", "b")] == [(2,), (1,)]
    assert ckpt.root["b"].storage.offset == 8 + ckpt.metadata["header_len"] + 8


BAD_HEADERS = [
    ("duplicate", b'{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},'
                  b'"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}', 4, "duplicate"),
    ("not json", b"{not json", 0, "not JSON"),
    ("not object", b'{"a": 1}', 0, "not an object"),
    ("metadata not str", {"__metadata__": {"k": 1}}, 0, "__metadata__"),
    ("unknown dtype", {"a": {"dtype": "F31", "shape": [1], "data_offsets": [0, 4]}}, 4,
     "unknown dtype"),
    ("negative shape", _f32(shape=(-2,)), 8, "invalid shape"),
    ("float shape", {"a": {"dtype": "F32", "shape": [2.0], "data_offsets": [0, 8]}}, 8,
     "invalid shape"),
    ("bool shape", {"a": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, 4,
     "invalid shape"),
    ("offsets wrong size", _f32(shape=(3,), offsets=(0, 8)), 8, "expected 12"),
    ("offsets reversed", _f32(offsets=(8, 0)), 8, "ends before"),
    ("hole", {**_f32("a", (1,), (0, 4)), **_f32("b", (1,), (8, 12))}, 12, "hole"),
    ("overlap", {**_f32("a", (2,), (0, 8)), **_f32("b", (1,), (4, 8))}, 8, "overlaps"),
    ("buffer too long", _f32(), 16, "data buffer holds 16"),
    ("buffer too short", _f32(), 4, "data buffer holds 4"),
    ("missing offsets", {"a": {"dtype": "F32", "shape": [1]}}, 4, "data_offsets"),
    ("not utf8", b'{"\xff": 1}', 0, "UTF-8"),
]


@pytest.mark.parametrize("name,header,buflen,message", BAD_HEADERS, ids=[c[0] for c in BAD_HEADERS])
def test_corrupt_headers(tmp_path, name, header, buflen, message):
    path = _write(tmp_path / "bad.safetensors", header, b"\0" * buflen)
    with pytest.raises(UnreadableError, match=message) as info:
        read_path(path)
    assert "\n" not in str(info.value)


def test_header_length_beyond_file(tmp_path):
    # A header claiming more than the file holds is not sniffed as safetensors at all.
    path = _write(tmp_path / "trunc", _f32(), b"\0" * 8, n=10_000)
    with pytest.raises(NotAWeightFile):
        read_path(path)


def test_header_over_limit(tmp_path):
    path = _write(tmp_path / "big", _f32(), b"\0" * 8)
    with pytest.raises(LimitExceeded):
        read_path(path, Limits(max_safetensors_header=16))


def test_truncated_library_file(tmp_path):
    path = tmp_path / "model.safetensors"
    save_file({"a": torch.ones(16), "b": torch.ones(4)}, str(path))
    data = path.read_bytes()
    for cut in (len(data) - 1, len(data) - 20, 9, 5):
        path.write_bytes(data[:cut])
        with pytest.raises(UnreadableError):
            read_path(str(path))
