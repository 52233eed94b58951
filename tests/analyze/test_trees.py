"""The analysis on hand-built reader trees: shapes torch cannot easily produce (cycles,
very deep nesting, bare storages) and the structural rules themselves."""

from __future__ import annotations

from ckpt_guard.analyze import analyze
from ckpt_guard.read.checkpoint import Checkpoint, GlobalUse
from ckpt_guard.read.tree import NO_STATE, GlobalRef, Opaque, Storage, TensorRef


def t(*shape: int, dtype: str = "float32", key: str | None = None,
      storage: Storage | None = None) -> TensorRef:
    t.n = getattr(t, "n", 0) + 1
    numel = 1
    for d in shape:
        numel *= d
    st = storage or Storage(key=key or f"s{t.n}", dtype=dtype, numel=numel)
    return TensorRef(storage=st, dtype=dtype, shape=tuple(shape))


def ck(root, globals_=()) -> Checkpoint:
    return Checkpoint(path="x.pt", format="torch-zip", size_bytes=0, root=root,
                      globals=list(globals_))


def odict(items: dict) -> Opaque:
    return Opaque(GlobalRef("collections", "OrderedDict"), "reduce", dictitems=dict(items))


def module(qualname: str, params=None, buffers=None, modules=None, **attrs) -> Opaque:
    mod, name = qualname.rsplit(".", 1)
    state = {"training": False, "_parameters": odict(params or {}),
             "_buffers": odict(buffers or {}), "_modules": odict(modules or {}), **attrs}
    return Opaque(GlobalRef(mod, name), "newobj", state=state)


def test_cycles_terminate():
    loop: list = []
    loop.append(loop)
    d: dict = {"w": t(4)}
    d["self"] = d
    a = analyze(ck({"loop": loop, "d": d}))
    assert [e.path for e in a.tensors] == ["d.w"]
    assert a.tensor_bytes_total == 16


def test_deep_nesting_is_iterative():
    node: object = t(2)
    for _ in range(50_000):
        node = [node]
    a = analyze(ck({"deep": node}))
    assert a.tensor_count == 1 and a.tensor_bytes_total == 8


def test_shared_dict_under_two_keys_counts_once():
    shared = {"w": t(10)}
    a = analyze(ck({"a": shared, "b": shared}))
    assert a.tensor_bytes_total == 40
    top = {k.key: k.bytes for k in a.top_level}
    assert top["a"] == 40


def test_module_internals_collapse_and_tied_parameter():
    w = t(6, 3)
    lin1 = module("torch.nn.modules.linear.Linear", params={"weight": w, "bias": None})
    lin2 = module("torch.nn.modules.linear.Linear", params={"weight": w})
    net = module("pkg.Net", modules={"enc": lin1, "dec": lin2},
                 buffers={"mask": t(3, dtype="bool")})
    a = analyze(ck({"model": net}))
    assert sorted(e.path for e in a.tensors) == ["model.dec.weight", "model.enc.weight",
                                                 "model.mask"]
    assert a.tensor_bytes_total == 72 + 3
    assert a.bytes_by_dtype == {"float32": 72, "bool": 3}


def test_precedence_weights_over_optimizer():
    # A pickled optimizer object whose param_groups hold the model's own parameters.
    p = t(5)
    opt = Opaque(GlobalRef("torch.optim.adam", "Adam"), "newobj",
                 state={"state": {}, "param_groups": [{"params": [p], "lr": 0.1}],
                        "defaults": {}})
    a = analyze(ck({"optimizer": opt, "model": {"p": p}}))
    assert a.bytes_by_role["weights"] == 20 and a.bytes_by_role["optimizer"] == 0
    assert {s.path: s.role for s in a.subtrees}["optimizer"] == "optimizer"


def test_none_and_empty_are_not_training_state():
    a = analyze(ck({"model": {"w": t(4)}, "optimizer": None, "optimizer_states": [],
                    "lr_schedulers": [], "ema": None, "scaler": {}, "rng_state": None}))
    assert [s.role for s in a.subtrees] == ["weights"]


def test_empty_optimizer_state_is_still_optimizer():
    sd = {"state": {}, "param_groups": [{"params": [0, 1], "lr": 0.1, "momentum": 0}]}
    a = analyze(ck({"w": t(2), "opt": sd}))
    assert {s.path: (s.role, s.bytes) for s in a.subtrees}["opt"] == ("optimizer", 0)


def test_flat_state_dict_with_ema_prefix():
    sd = {"conv.weight": t(4, 3), "fc.weight": t(2, 4),
          "model_ema.conv.weight": t(4, 3), "model_ema.fc.weight": t(2, 4)}
    a = analyze(ck(sd))
    roles = {e.path: e.role for e in a.tensors}
    assert roles["model_ema.conv.weight"] == "ema" and roles["conv.weight"] == "weights"
    assert a.bytes_by_role == {**a.bytes_by_role, "weights": 80, "ema": 80}
    assert {k.key for k in a.top_level} == {"conv.*", "fc.*", "model_ema.*"}
    assert {s.path: s.role for s in a.subtrees} == {"model_ema.*": "ema", "": "weights"}


def test_swa_averaged_model_is_ema():
    swa = {"n_averaged": t(dtype="int64"), "module.w": t(8)}
    a = analyze(ck({"state_dict": {"w": t(8)}, "swa_state": swa}))
    assert {s.path: s.role for s in a.subtrees}["swa_state"] == "ema"


def test_ema_only_tree_plays_weights():
    a = analyze(ck({"model": None, "model_ema": {"w": t(8)}}))
    assert a.bytes_by_role["weights"] == 32 and a.bytes_by_role["ema"] == 0


def test_bare_storage_and_sparse_components():
    bare = Storage(key="9", dtype="float16", numel=10)
    idx, val = t(2, 3, dtype="int64"), t(3)
    sparse = TensorRef(storage=None, dtype="float32", shape=(4, 4), kind="sparse",
                       components=(idx, val))
    a = analyze(ck({"s": bare, "sp": sparse}))
    assert a.bytes_by_dtype == {"int64": 48, "float32": 12, "float16": 20}
    assert a.bytes_by_role["weights"] == 60 and a.bytes_by_role["other"] == 20


def test_globals_are_classified_once_each():
    uses = [GlobalUse("torch._utils", "_rebuild_tensor_v2", "GLOBAL"),
            GlobalUse("posix", "system", "STACK_GLOBAL"),
            GlobalUse("torch._utils", "_rebuild_tensor_v2", "GLOBAL")]
    a = analyze(ck({}, uses))
    assert [(g.use.qualname, g.safety) for g in a.globals] == [
        ("torch._utils._rebuild_tensor_v2", "safe"), ("posix.system", "unsafe")]


def test_opaque_without_state():
    op = Opaque(GlobalRef("pkg", "Thing"), "reduce", args=(t(3),), state=NO_STATE)
    a = analyze(ck({"thing": op}))
    assert [e.path for e in a.tensors] == ["thing.0"]


def test_torchtitan_loop_state_is_not_weights():
    """torchtitan DCP: model FQNs at the top level beside ``train_state``/``dataloader``; a 0-d
    ``step`` there is loop state, never weights (a consolidation must not write it)."""
    root = {"tok_embeddings.weight": t(8, 4), "train_state": {"step": t(dtype="int64")},
            "dataloader": {"rank_0": t(2, dtype="int64")}}
    a = analyze(ck(root))
    assert a.bytes_by_role.get("weights") == 8 * 4 * 4
    assert {s.path: s.role for s in a.subtrees}.get("train_state") in (None, "other")
