"""torch zip checkpoints and TorchScript archives read from metadata only, torch as oracle."""

from __future__ import annotations

import importlib.util
import os
import pickle
import sys
import zipfile
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from ckpt_guard.read import read_path
from ckpt_guard.read.checkpoint import Checkpoint, LimitExceeded, UnreadableError
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.torch_zip import read_torch_zip
from ckpt_guard.read.tree import Opaque, TensorRef, as_mapping, attributes

LIMITS = Limits()


def read_zip(path: Path, limits: Limits = LIMITS) -> Checkpoint:
    with open(path, "rb") as fh:
        return read_torch_zip(str(path), fh, os.path.getsize(path), limits)


# ------------------------------------------------------------------ comparing with torch.load

def our_tensors(node, path: str = ""):
    """(path, TensorRef) pairs of our tree, walking dicts, OrderedDicts, lists, tuples."""
    if isinstance(node, TensorRef):
        yield path, node
        return
    mapping = as_mapping(node)
    if mapping is not None:
        for k, v in mapping.items():
            yield from our_tensors(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, (list, tuple)):
        for i, v in enumerate(node):
            yield from our_tensors(v, f"{path}.{i}" if path else str(i))


def torch_tensors(node, path: str = ""):
    if isinstance(node, torch.Tensor):
        yield path, node
        return
    if isinstance(node, dict):
        for k, v in node.items():
            yield from torch_tensors(v, f"{path}.{k}" if path else str(k))
    elif isinstance(node, (list, tuple)) and not isinstance(node, torch.Size):
        for i, v in enumerate(node):
            yield from torch_tensors(v, f"{path}.{i}" if path else str(i))


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def storage_bytes(t: torch.Tensor) -> bytes:
    st = t.untyped_storage()
    return torch.empty(0, dtype=torch.uint8).set_(st).numpy().tobytes()


def assert_matches_torch(ckpt: Checkpoint, path: Path, loaded=None) -> None:
    """Every tensor: shape/dtype/stride/offset/requires_grad as torch.load says; every storage:
    nbytes as torch says and its file offset pointing at exactly the tensor's bytes."""
    if loaded is None:
        loaded = torch.load(path, weights_only=False)
    ours = dict(our_tensors(ckpt.root))
    theirs = dict(torch_tensors(loaded))
    assert ours.keys() == theirs.keys()
    raw = path.read_bytes()
    for name, t in theirs.items():
        ref = ours[name]
        assert ref.shape == tuple(t.shape), name
        assert ref.dtype == dtype_name(t.dtype), name
        assert ref.requires_grad == t.requires_grad, name
        if t.is_sparse:
            assert ref.kind == "sparse"
            assert [c.shape for c in ref.components] == [tuple(t._indices().shape),
                                                         tuple(t._values().shape)]
            continue
        if t.is_meta:
            assert ref.kind == "meta" and ref.storage is None
            assert ref.stride == t.stride()
            continue
        assert ref.kind == ("parameter" if isinstance(t, torch.nn.Parameter)
                            else "quantized" if t.is_quantized else "tensor"), name
        assert ref.stride == t.stride(), name
        assert ref.storage_offset == t.storage_offset(), name
        st = ref.storage
        assert st is not None and st.nbytes == t.untyped_storage().nbytes(), name
        assert ckpt.storages[st.key] is st
        assert raw[st.offset:st.offset + st.nbytes] == storage_bytes(t), name


def save(obj, path: Path, **kw) -> Path:
    torch.save(obj, path, **kw)
    return path


DTYPES = [torch.float64, torch.float32, torch.float16, torch.bfloat16, torch.int8,
          torch.int16, torch.int32, torch.int64, torch.uint8, torch.bool, torch.complex64,
          torch.complex128, torch.float8_e4m3fn, torch.float8_e5m2, torch.uint16,
          torch.uint32, torch.uint64]


@pytest.mark.parametrize("dtype", DTYPES, ids=dtype_name)
def test_state_dict_in_every_dtype(tmp_path: Path, dtype: torch.dtype) -> None:
    base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
    w = base.to(dtype)
    sd = {"w": w, "row": w[1], "col": w[:, 2], "scalar": torch.tensor(3).to(dtype)}
    path = save(sd, tmp_path / "sd.pt")
    ckpt = read_zip(path)
    assert ckpt.format == "torch-zip" and ckpt.archive_prefix == "sd"
    assert ckpt.pickle_protocol == 2 and ckpt.byteorder == "little"
    assert len(ckpt.storages) == 2  # views share their base's storage
    assert_matches_torch(ckpt, path)


def test_tied_weights_and_views_share_one_storage(tmp_path: Path) -> None:
    x = torch.arange(40, dtype=torch.float32)
    m = x.view(5, 8)
    sd = {"x": x, "slice": x[5:15], "t": m.t(), "strided": m[:, ::2], "tied_a": m, "tied_b": m,
          "other": torch.ones(3)}
    path = save(sd, tmp_path / "tied.pt")
    ckpt = read_zip(path)
    assert len(ckpt.storages) == 2
    assert ckpt.root["tied_a"] is ckpt.root["tied_b"]
    assert ckpt.root["slice"].storage is ckpt.root["x"].storage
    assert_matches_torch(ckpt, path)


def test_parameters_sparse_quantized_meta_and_nesting(tmp_path: Path) -> None:
    i = torch.tensor([[0, 1, 1], [2, 0, 2]])
    obj = {
        "param": torch.nn.Parameter(torch.randn(3, 2)),
        "frozen": torch.nn.Parameter(torch.randn(2), requires_grad=False),
        "grad_tensor": torch.randn(2, requires_grad=True),
        "sparse": torch.sparse_coo_tensor(i, torch.tensor([3.0, 4.0, 5.0]), (2, 3)),
        "q": torch.quantize_per_tensor(torch.rand(4), 0.1, 10, torch.quint8),
        "qc": torch.quantize_per_channel(torch.rand(3, 2), torch.tensor([0.1, 0.2, 0.3]),
                                         torch.tensor([0, 1, 2]), 0, torch.qint8),
        "meta": torch.empty(3, 4, device="meta"),
        "nested": {"list": [torch.ones(2), (torch.zeros(1), {"deep": torch.eye(2)})]},
        "plain": {"epoch": 3, "lr": 0.1, "name": "run", "none": None},
    }
    path = save(obj, tmp_path / "mixed.pt")
    ckpt = read_zip(path)
    assert ckpt.root["plain"] == obj["plain"]
    # per-channel scales/zero points are tensors inside the quantizer params
    qc = ckpt.root["qc"]
    assert qc.kind == "quantized" and qc.dtype == "qint8"
    assert_matches_torch(ckpt, path)


def test_module_state_dict_keeps_metadata(tmp_path: Path) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    path = save(model.state_dict(), tmp_path / "model.pt")
    ckpt = read_zip(path)
    root = ckpt.root
    assert isinstance(root, Opaque) and root.qualname == "collections.OrderedDict"
    assert list(root.dictitems) == list(model.state_dict())
    meta = as_mapping(attributes(root)["_metadata"])
    assert meta is not None and set(meta) == {"", "0", "1"}
    assert_matches_torch(ckpt, path)


def test_optimizer_state_and_storage_offsets(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.Adam(model.parameters())
    model(torch.randn(2, 4)).sum().backward()
    opt.step()
    path = save({"model": model.state_dict(), "optimizer": opt.state_dict(), "epoch": 1},
                tmp_path / "train.pt")
    ckpt = read_zip(path)
    assert_matches_torch(ckpt, path)
    state = as_mapping(ckpt.root["optimizer"])["state"]
    assert set(state) == {0, 1} and set(state[0]) == {"step", "exp_avg", "exp_avg_sq"}
    offsets = sorted(s.offset for s in ckpt.storages.values())
    assert all(o % 64 == 0 for o in offsets)  # torch aligns records to 64 bytes


def test_full_module_pickle_reads_without_importing(tmp_path: Path) -> None:
    mod_name = "ckg_tmp_models_7d1"
    mod_dir = tmp_path / "pkg"
    mod_dir.mkdir()
    (mod_dir / f"{mod_name}.py").write_text(
        "import torch\n"
        "class Net(torch.nn.Module):\n"
        "    def __init__(self):\n"
        "        super().__init__()\n"
        "        self.fc = torch.nn.Linear(3, 2)\n"
        "        self.tag = 'v1'\n")
    sys.path.insert(0, str(mod_dir))
    try:
        module = __import__(mod_name)
        model = module.Net()
        path = save({"model": model, "epoch": 5}, tmp_path / "full.pt")
    finally:
        sys.path.remove(str(mod_dir))
        sys.modules.pop(mod_name, None)
    (mod_dir / f"{mod_name}.py").unlink()
    assert importlib.util.find_spec(mod_name) is None

    ckpt = read_zip(path)
    net = ckpt.root["model"]
    assert isinstance(net, Opaque) and (net.module, net.name) == (mod_name, "Net")
    attrs = attributes(net)
    assert attrs["tag"] == "v1"
    fc = as_mapping(attrs["_modules"])["fc"]
    assert fc.qualname == "torch.nn.modules.linear.Linear"
    params = as_mapping(attributes(fc)["_parameters"])
    assert params["weight"].kind == "parameter" and params["weight"].shape == (2, 3)
    assert (mod_name, "Net") in {(g.module, g.name) for g in ckpt.globals}
    assert mod_name not in sys.modules


def test_torchscript_archive(tmp_path: Path) -> None:
    model = torch.jit.script(torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.ReLU()))
    path = tmp_path / "scripted.pt"
    model.save(str(path))
    ckpt = read_zip(path)
    assert ckpt.format == "torchscript"
    assert any("TorchScript" in n for n in ckpt.notes)
    assert set(ckpt.root) == {"data", "constants"}
    # the module tree is Opaque __torch__ objects whose BUILD state holds the tensors
    tensors = {}
    todo = [ckpt.root["data"]]
    while todo:
        node = todo.pop()
        if isinstance(node, TensorRef):
            tensors[id(node)] = node
        elif isinstance(node, Opaque):
            todo.extend((attributes(node) or {}).values())
            assert node.module.startswith("__torch__")
    assert sorted(t.shape for t in tensors.values()) == [(3,), (3, 2)]
    raw = path.read_bytes()
    sd = model.state_dict()
    for t in tensors.values():
        match = [v for v in sd.values() if tuple(v.shape) == t.shape][0]
        assert raw[t.storage.offset:t.storage.offset + t.storage.nbytes] == storage_bytes(match)


# ---------------------------------------------------------------------- damaged and hostile

def rewrite_zip(src: Path, dst: Path, *, drop=(), replace=None, add=None,
                compress=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w", compress) as zout:
        for info in zin.infolist():
            if info.filename in drop:
                continue
            data = (replace or {}).get(info.filename, zin.read(info.filename))
            zout.writestr(info.filename, data)
        for name, data in (add or {}).items():
            zout.writestr(name, data)
    return dst


def test_deflated_data_pkl_is_read(tmp_path: Path) -> None:
    src = save({"w": torch.ones(3)}, tmp_path / "a.pt")
    dst = rewrite_zip(src, tmp_path / "deflated.pt", compress=zipfile.ZIP_DEFLATED)
    ckpt = read_zip(dst)
    assert ckpt.root["w"].shape == (3,)
    assert ckpt.root["w"].storage.offset is None  # a compressed record has no byte range


def test_bad_inputs_are_one_line_unreadable(tmp_path: Path) -> None:
    src = save({"w": torch.ones(300)}, tmp_path / "a.pt")
    raw = src.read_bytes()
    cases = {
        "not a zip": b"hello world" * 10,
        "truncated": raw[: len(raw) // 2],
        "empty": b"",
    }
    for label, data in cases.items():
        p = tmp_path / f"{label.replace(' ', '_')}.pt"
        p.write_bytes(data)
        with pytest.raises(UnreadableError) as ei:
            read_zip(p)
        assert "\n" not in str(ei.value), label
    no_pkl = rewrite_zip(src, tmp_path / "nopkl.pt", drop={"a/data.pkl"})
    with pytest.raises(UnreadableError, match="data.pkl"):
        read_zip(no_pkl)
    no_record = rewrite_zip(src, tmp_path / "norecord.pt", drop={"a/data/0"})
    with pytest.raises(UnreadableError, match="no record"):
        read_zip(no_record)
    short = rewrite_zip(src, tmp_path / "short.pt", replace={"a/data/0": b"\0" * 16})
    with pytest.raises(UnreadableError, match="claims 1200 bytes"):
        read_zip(short)
    flat = tmp_path / "flat.pt"
    with zipfile.ZipFile(flat, "w") as z:
        z.writestr("data.pkl", pickle.dumps(1))
    with pytest.raises(UnreadableError, match="folder"):
        read_zip(flat)


def test_lying_deflate_bomb_is_bounded(tmp_path: Path) -> None:
    src = save({"w": torch.ones(3)}, tmp_path / "a.pt")
    bomb = rewrite_zip(src, tmp_path / "bomb.pt", compress=zipfile.ZIP_DEFLATED,
                       replace={"a/data.pkl": zipfile.ZipFile(src).read("a/data.pkl")
                                + b"\0" * 5_000_000})
    with pytest.raises(LimitExceeded):
        read_zip(bomb, Limits(max_pickle_bytes=1_000_000))


def test_extra_pickles_are_scanned_under_any_name(tmp_path: Path) -> None:
    src = save({"w": torch.ones(3)}, tmp_path / "a.pt")
    evil = b"cos\nsystem\n(S'echo pwned'\ntR."
    dst = rewrite_zip(src, tmp_path / "evil.pt",
                      add={"a/extra.pkl": evil, "a/readme.txt": b"\x80\x02" + evil,
                           "a/data/99": b"\x80\x02" + evil})
    ckpt = read_zip(dst)
    hits = [(g.member, g.qualname) for g in ckpt.globals if g.qualname == "os.system"]
    assert sorted(m for m, _ in hits) == ["a/data/99", "a/extra.pkl", "a/readme.txt"]
    assert ckpt.root["w"].shape == (3,)


def test_an_extra_pickle_that_does_not_parse_fails_and_keeps_its_globals(
        tmp_path: Path) -> None:
    """Issue 8 class 5: an extra pickle member that fails to parse used to be a note; now the
    file fails, and every global seen (in it and in the members before) is carried."""
    src = save({"w": torch.ones(3)}, tmp_path / "a.pt")
    evil = b"cos\nsystem\n(S'echo pwned'\ntR."
    dst = rewrite_zip(src, tmp_path / "evil.pt",
                      add={"a/extra.pkl": evil, "a/broken.pkl": evil[:-6]})
    with pytest.raises(UnreadableError) as info:
        read_path(str(dst))
    assert "broken.pkl" in str(info.value)
    members = sorted(g.member for g in info.value.partial_globals if g.qualname == "os.system")
    assert members == ["a/broken.pkl", "a/extra.pkl"]


def test_any_top_folder_name_and_missing_byteorder(tmp_path: Path) -> None:
    src = save(OrderedDict(w=torch.arange(4.0)), tmp_path / "orig.pt")
    dst = tmp_path / "renamed.pt"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            if info.filename.endswith("/byteorder"):
                continue
            zout.writestr("weird name/" + info.filename.split("/", 1)[1],
                          zin.read(info.filename))
    ckpt = read_zip(dst)
    assert ckpt.archive_prefix == "weird name" and ckpt.byteorder == "little"
    assert_matches_torch(ckpt, dst, loaded=torch.load(src))


def test_only_metadata_is_read(tmp_path: Path) -> None:
    from tests.read.test_torch_legacy import CountingReader

    path = save({"big": torch.zeros(2_000_000), "b2": torch.ones(1_000_000)},
                tmp_path / "big.pt")
    fh = CountingReader(path)
    try:
        ckpt = read_torch_zip(str(path), fh, os.path.getsize(path), LIMITS)
    finally:
        fh.close()
    assert fh.bytes_read < 100_000 < os.path.getsize(path) // 100
    assert_matches_torch(ckpt, path)


class _Traced(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def test_traced_torchscript_keeps_each_archive(tmp_path: Path) -> None:
    traced = torch.jit.trace(_Traced().eval(), torch.randn(2, 8))
    path = tmp_path / "traced.pt"
    traced.save(str(path))
    ckpt = read_zip(path)
    assert ckpt.format == "torchscript"
    assert {"data", "constants", "traced_inputs"} <= set(ckpt.root)
    # torch.jit._pickle.restore_type_tag(...) reads as the value it tags
    example = ckpt.root["traced_inputs"]["forward"][0]
    assert isinstance(example, TensorRef) and example.shape == (2, 8)
    assert example.storage.key == "traced_inputs/0"
    # torch writes traced inputs' records empty: noted, not fatal
    assert any("traced_inputs/0" in n for n in ckpt.notes)


def test_tensors_with_python_state(tmp_path: Path) -> None:
    t = torch.arange(6.0).reshape(2, 3)
    t.note = "hello"  # Tensor with __dict__: _rebuild_from_type_v2
    p = torch.nn.Parameter(torch.ones(2))
    p.tag = 7  # Parameter with __dict__: _rebuild_parameter_with_state
    path = save({"t": t, "p": p}, tmp_path / "state.pt")
    ckpt = read_zip(path)
    rt, rp = ckpt.root["t"], ckpt.root["p"]
    assert rt.func.qualname == "torch._tensor._rebuild_from_type_v2"
    assert rt.state == {"note": "hello"} and rt.shape == (2, 3)
    assert rp.kind == "parameter" and rp.state == {"tag": 7}
    assert_matches_torch(ckpt, path)


def test_member_names_match_as_torch_matches_them_case_insensitively(tmp_path: Path) -> None:
    # torch's miniz looks records up with ASCII case folding: with both archive/data.pkl and
    # archive/DATA.PKL present its sort decides (here: the upper-case, protocol 0 one). We
    # read the one torch reads, and the archive is ambiguous: it fails as unsafe.
    src = save({"w": torch.ones(3)}, tmp_path / "a.pt")
    sneaky = b"(dp0\nS'cwd'\np1\ncos\ngetcwd\np2\n(tRp3\ns."  # protocol 0: no PROTO byte
    dst = rewrite_zip(src, tmp_path / "case.pt", add={"a/DATA.PKL": sneaky})
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert torch.load(dst, weights_only=False) == {"cwd": os.getcwd()}
    ckpt = read_zip(dst)
    assert [(g.member, g.qualname) for g in ckpt.globals if g.module == "os"] == [
        ("a/DATA.PKL", "os.getcwd")]
    assert set(ckpt.root) == {"cwd"}  # the tree torch builds
    assert ckpt.globals[0].module == "<ambiguous-archive>"
    assert "duplicate entry name" in ckpt.notes[0]


def test_archive_behind_other_bytes_is_read_as_torch_reads_it(tmp_path: Path) -> None:
    # zipfile shifts every offset by the bytes found before the archive; torch's miniz reads
    # the offsets as written. Here they point into the first archive's entries, where miniz
    # finds no central directory: torch cannot load the file, and neither do we.
    evil = save({"evil": torch.ones(3)}, tmp_path / "evil.pt").read_bytes()
    good = save({"good": torch.zeros(2)}, tmp_path / "good.pt").read_bytes()
    poly = tmp_path / "poly.pt"
    poly.write_bytes(evil[:zipfile.ZipFile(tmp_path / "evil.pt").start_dir] + good)
    assert zipfile.ZipFile(poly).namelist()[0] == "good/data.pkl"  # zipfile's view
    with pytest.raises(RuntimeError, match="PytorchStreamReader failed reading zip archive"):
        torch.load(poly, weights_only=False)
    with pytest.raises(UnreadableError, match="torch's zip reader refuses it"):
        read_zip(poly)
