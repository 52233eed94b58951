"""The pickle writer re-emits what our reader read so that a real unpickler builds the same
objects; the zip writer lays records out the way torch does (aligned, ZIP64 when needed)."""

from __future__ import annotations

import io
import pickle
import zipfile
from collections import OrderedDict

import numpy as np
import pytest
import torch

from ckpt_guard.read.limits import Limits
from ckpt_guard.read.pickle_vm import load
from ckpt_guard.read.tree import GlobalRef, Opaque, Storage, TensorRef
from ckpt_guard.rewrite.pickle_writer import OutStorage, dumps
from ckpt_guard.rewrite.zip_writer import TorchZipWriter


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return type(other) is type(self) and vars(self) == vars(other)


class Slotted:
    __slots__ = ("a", "b")

    def __init__(self, a=0, b=0):
        self.a, self.b = a, b

    def __eq__(self, other):
        return type(other) is type(self) and (self.a, self.b) == (other.a, other.b)


class KwOnly:
    def __new__(cls, *, size):
        obj = super().__new__(cls)
        obj.size = size
        return obj

    def __getnewargs_ex__(self):
        return (), {"size": self.size}

    def __eq__(self, other):
        return type(other) is type(self) and vars(self) == vars(other)


class MyList(list):
    pass


class MyDict(dict):
    pass


def _same_storage(st: Storage) -> OutStorage:
    return OutStorage(st.key, st.dtype, st.numel, st.location, st.storage_type)


def _roundtrip(data: bytes) -> bytes:
    root, _ = load(data, persistent_load=None, limits=Limits())
    out, storages = dumps(root, _same_storage)
    assert storages == []
    return out


def _objects():
    shared = [1, 2, 3]
    cyclic: list = []
    cyclic.append(cyclic)
    od = OrderedDict(a=1, b=[2.5, None])
    od.extra = "attribute"  # BUILD state on an OrderedDict, like state_dict()._metadata
    return {
        "scalars": [0, 1, 255, 256, 65535, 65536, -1, 2 ** 31, -(2 ** 31) - 1, 2 ** 100,
                    -(2 ** 700), 1.5, float("inf"), True, False, None, "", "ünïcode\U0001f600",
                    b"", b"\x00\xff raw", bytearray(b"ba")],
        "containers": {"t": (), "t1": (1,), "t3": (1, 2, 3), "t5": (1, 2, 3, 4, 5),
                       "set": {1, 2}, "fs": frozenset({3}), "big": list(range(2500)),
                       "bigd": {i: str(i) for i in range(1500)}},
        "shared": [shared, shared, {"again": shared}],
        "cyclic": cyclic,
        "objects": [Point(1, [2]), Slotted(3, 4), KwOnly(size=5), MyList([1, 2]),
                    MyDict(a=1), od, complex(1, 2)],
    }


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_objects_round_trip_through_reader_and_writer(protocol):
    obj = _objects()
    if protocol < 4:  # KwOnly needs functools.partial(cls.__new__, ...): see the next test
        obj["objects"][2] = Point(5, 6)
    out = _roundtrip(pickle.dumps(obj, protocol=protocol))
    back = pickle.loads(out)
    assert back["scalars"] == obj["scalars"]
    assert back["containers"] == obj["containers"]
    assert back["objects"][:6] == obj["objects"][:6] and back["objects"][6] == complex(1, 2)
    assert back["objects"][5].extra == "attribute"
    assert back["shared"][0] is back["shared"][1] is back["shared"][2]["again"]
    assert back["cyclic"][0] is back["cyclic"]


def test_computed_callables_are_refused_not_mangled():
    from ckpt_guard.rewrite.pickle_writer import PickleWriteError

    data = pickle.dumps(KwOnly(size=1), protocol=2)  # REDUCE of functools.partial(...)
    with pytest.raises(PickleWriteError, match="computed callable"):
        _roundtrip(data)


def test_inst_and_obj_opcodes_are_kept():
    mod = __name__
    inst = (b"(I1\nI2\ni" + mod.encode() + b"\nPoint\n.")
    obj = (b"\x80\x02(c" + mod.encode() + b"\nPoint\nK\x03K\x04o}X\x01\x00\x00\x00zK\x05sb.")
    for data in (inst, obj):
        out = _roundtrip(data)
        assert pickle.loads(out) == pickle.loads(data)


def _state_dict_tree():
    od = lambda: Opaque(GlobalRef("collections", "OrderedDict"), "reduce")  # noqa: E731
    v2 = GlobalRef("torch._utils", "_rebuild_tensor_v2")
    s0 = Storage("0", "float32", 12, storage_type="torch.FloatStorage")
    s1 = Storage("1", "int64", 5, storage_type="torch.LongStorage")
    a = TensorRef(s0, "float32", (3, 4), (4, 1), 0, func=v2, args=(s0, 0, (3, 4), (4, 1), False, od()))
    b = TensorRef(s0, "float32", (4,), (1,), 4, func=v2, args=(s0, 4, (4,), (1,), False, od()))
    c = TensorRef(s1, "int64", (5,), (1,), func=v2, args=(s1, 0, (5,), (1,), False, od()))
    inner = TensorRef(s0, "float32", (2,), (1,), func=v2, args=(s0, 0, (2,), (1,), False, od()))
    p = TensorRef(s0, "float32", (2,), (1,), requires_grad=True, kind="parameter",
                  func=GlobalRef("torch._utils", "_rebuild_parameter"), args=(inner, True, od()))
    sd = Opaque(GlobalRef("collections", "OrderedDict"), "reduce",
                dictitems={"a": a, "b": b, "c": c, "p": p, "tied": a})
    return {"sd": sd, "epoch": 3}, s0, s1


def _write_archive(path, tree, outs, data, *, force_zip64=False):
    pkl, storages = dumps(tree, lambda st: outs[id(st)])
    with open(path, "wb") as fh:
        w = TorchZipWriter(fh, "archive", force_zip64=force_zip64)
        w.write_bytes("data.pkl", pkl)
        w.write_bytes("byteorder", b"little")
        for st, out in storages:
            raw = data[st.key](out)
            w.write_record(f"data/{out.key}", [raw], len(raw))
            assert w.data_offset(f"data/{out.key}") % 64 == 0
        w.write_bytes("version", b"3\n")
        w.close()


@pytest.mark.parametrize("force_zip64", [False, True])
def test_archive_loads_in_torch_with_shared_storages_and_cast(tmp_path, force_zip64):
    tree, s0, s1 = _state_dict_tree()
    outs = {id(s0): OutStorage("0", "float16", 12, storage_type="torch.HalfStorage"),
            id(s1): OutStorage("1", "int64", 5, storage_type="torch.LongStorage")}
    data = {"0": lambda o: np.arange(12, dtype="<f2").tobytes(),
            "1": lambda o: np.arange(5, dtype="<i8").tobytes()}
    path = tmp_path / "x.pt"
    _write_archive(path, tree, outs, data, force_zip64=force_zip64)
    assert zipfile.ZipFile(path).testzip() is None
    for kw in ({"weights_only": True}, {"weights_only": True, "mmap": True}):
        sd = torch.load(path, **kw)["sd"]
        assert isinstance(sd, OrderedDict) and sd["a"].dtype == torch.float16
        assert torch.equal(sd["b"], torch.arange(4, 8, dtype=torch.float16))
        assert sd["a"].untyped_storage().data_ptr() == sd["b"].untyped_storage().data_ptr()
        assert sd["tied"] is sd["a"]
        assert isinstance(sd["p"], torch.nn.Parameter) and sd["p"].requires_grad
        assert torch.equal(sd["c"], torch.arange(5))


def test_torch_saved_pickle_round_trips_byte_for_byte_semantics(tmp_path):
    """A real torch.save'd data.pkl → our reader → our writer → torch.load: same tensors."""
    from ckpt_guard.read import read_path

    m = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))
    obj = {"model": m.state_dict(), "meta": {"names": ("a", "b"), "lr": 1e-3}}
    src = tmp_path / "src.pt"
    torch.save(obj, src)
    ck = read_path(str(src))
    outs = {id(st): OutStorage(st.key, st.dtype, st.numel, st.location, st.storage_type)
            for st in ck.storages.values()}
    raw = src.read_bytes()
    data = {st.key: (lambda o, st=st: raw[st.offset:st.offset + st.nbytes])
            for st in ck.storages.values()}
    out = tmp_path / "out.pt"
    _write_archive(out, ck.root, outs, data)
    back = torch.load(out, weights_only=True)
    assert back["meta"] == obj["meta"]
    assert back["model"]._metadata == obj["model"]._metadata
    for k, v in obj["model"].items():
        assert torch.equal(back["model"][k], v)


def test_zip_writer_pads_with_fb_extra_like_torch():
    buf = io.BytesIO()
    w = TorchZipWriter(buf, "archive")
    w.write_bytes("data.pkl", b"x" * 10)
    w.write_record("data/0", [b"a" * 100], 100)
    w.close()
    z = zipfile.ZipFile(buf)
    for info in z.infolist():
        assert info.compress_type == zipfile.ZIP_STORED
    assert z.read("archive/data/0") == b"a" * 100
    assert w.data_offset("data/0") % 64 == 0
    assert b"FB" in buf.getvalue()[:200]
