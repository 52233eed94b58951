"""Issue 8, class 10: call arguments are values at call time.

``collections.OrderedDict(D)`` copies ``D``; a pickle can fetch ``D`` back from the memo and
change it afterwards (SETITEM/SETITEMS/APPEND(S)/ADDITEMS/BUILD). Technique: *mutate after
use* — the unpickler's memo hands out references, so the scanner must evaluate each call
with its arguments as they were at that moment, as CPython and the real callee do, or the
scanner reports (and a rewrite re-emits) values torch never builds.

Every pickle here is written opcode by opcode. The differential part asks torch itself
(``torch.load(weights_only=False)`` in a subprocess, on our own payload-free pickles) what it
builds, and what it builds from ``fix``'s output.
"""

from __future__ import annotations

import json
import pickle
import struct
import subprocess
import sys
import textwrap
from collections import Counter, OrderedDict, defaultdict
from pathlib import Path

import pytest
import torch

from ckpt_guard.analyze import analyze
from ckpt_guard.read import read_path
from ckpt_guard.read.checkpoint import LimitExceeded
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.pickle_vm import load
from ckpt_guard.read.tree import Opaque, TensorRef, as_mapping
from tests.adversarial import pickles as P
from tests.adversarial.containers import torch_zip, torch_zip_with
from tests.rewrite.helpers import run_fix

APPENDS = b"e"
BINFLOAT = b"G"
EMPTY_SET = b"\x8f"
ADDITEMS = b"\x90"
K = P.binint1


def s(text: str) -> bytes:
    return P.binunicode(text)


def tensor(key: str, shape: tuple[int, ...] = (2, 3), stride: tuple[int, ...] = (3, 1)) -> bytes:
    return P.rebuild_tensor(P.persid_storage("FloatStorage", key, 6), shape, stride)


def od(*args: bytes) -> bytes:
    return P.call(P.global_("collections", "OrderedDict"), *args)


def adam_state(memo_state: int | None = None) -> bytes:
    """``{'state': {0: {'step': 1, 'exp_avg': T1, 'exp_avg_sq': T2}}, 'param_groups': [...]}``"""
    per_param = (P.EMPTY_DICT + P.MARK + s("step") + K(1) + s("exp_avg") + tensor("1")
                 + s("exp_avg_sq") + tensor("2") + P.SETITEMS)
    state = P.EMPTY_DICT + (P.binput(memo_state) if memo_state is not None else b"")
    group = (P.EMPTY_DICT + P.MARK + s("lr") + BINFLOAT + struct.pack(">d", 1e-3)
             + s("params") + P.EMPTY_LIST + K(0) + P.APPEND + P.SETITEMS)
    return (P.EMPTY_DICT + P.MARK + s("state") + state + K(0) + per_param + P.SETITEM
            + s("param_groups") + P.EMPTY_LIST + group + P.APPEND + P.SETITEMS)


def as_zip(pkl: bytes) -> bytes:
    base = torch_zip({"a": torch.arange(6.0), "b": torch.ones(6), "c": torch.full((6,), 2.0)})
    return torch_zip_with(replace={"data.pkl": pkl}, base=base)


# Memo slots: 0 root, 1.. the object the pickle changes later.
def emptied_adam_state() -> bytes:
    """optimizer = OrderedDict(D); then D['state'] = {} — torch keeps the copy's state."""
    return (P.proto(2) + P.EMPTY_DICT + P.binput(0)
            + s("model") + P.EMPTY_DICT + s("w") + tensor("0") + P.SETITEM + P.SETITEM
            + s("optimizer") + od(adam_state()[:1] + P.binput(1) + adam_state()[1:]) + P.SETITEM
            + P.binget(1) + s("state") + P.EMPTY_DICT + P.SETITEM + P.POP + P.STOP)


def wrapped_state_dict(wrapper: bytes) -> bytes:
    """model = wrapper(SD); then SD['w'] = another tensor and SD['extra'] = a tensor."""
    sd = P.EMPTY_DICT + P.binput(1) + s("w") + tensor("0") + P.SETITEM
    return (P.proto(2) + P.EMPTY_DICT + P.binput(0)
            + s("model") + P.call(wrapper, sd) + P.SETITEM
            + s("optimizer") + adam_state() + P.SETITEM
            + P.binget(1) + P.MARK + s("w") + tensor("2", (6,), (1,)) + s("extra") + tensor("1")
            + P.SETITEMS + P.POP + P.STOP)


def size_list_mutated_after_rebuild() -> bytes:
    """_rebuild_tensor_v2(storage, 0, L=[6], S=[1], ...); then L and S grow: torch read them
    at call time, the tensor has shape (6,)."""
    rebuild = (P.global_("torch._utils", "_rebuild_tensor_v2") + P.MARK
               + P.persid_storage("FloatStorage", "0", 6) + K(0)
               + P.EMPTY_LIST + P.binput(1) + K(6) + P.APPEND
               + P.EMPTY_LIST + P.binput(2) + K(1) + P.APPEND
               + b"\x89" + od() + P.TUPLE + P.REDUCE)
    return (P.proto(2) + P.EMPTY_DICT + P.binput(0)
            + s("model") + P.EMPTY_DICT + s("w") + rebuild + P.SETITEM + P.SETITEM
            + s("optimizer") + adam_state() + P.SETITEM
            + P.binget(1) + K(1) + P.APPEND + P.POP + P.binget(2) + K(1) + P.APPEND + P.POP
            + P.STOP)


def size_object_of_a_mutated_list() -> bytes:
    """torch.Size(L=[2]) copies L; L then becomes [2, 3] before the rebuild reads the Size:
    the tensor is (2,) with stride (3,) (elements 0 and 3)."""
    size = P.call(P.global_("torch", "Size"), P.EMPTY_LIST + P.binput(1) + K(2) + P.APPEND)
    rebuild = (P.global_("torch._utils", "_rebuild_tensor_v2") + P.MARK
               + P.persid_storage("FloatStorage", "0", 6) + K(0) + size
               + P.binget(1) + K(3) + P.APPEND + P.POP  # L grows inside the argument tuple
               + K(3) + P.TUPLE1 + b"\x89" + od() + P.TUPLE + P.REDUCE)
    return (P.proto(2) + P.EMPTY_DICT + s("model") + P.EMPTY_DICT + s("w") + rebuild
            + P.SETITEM + P.SETITEM + s("optimizer") + adam_state() + P.SETITEM + P.STOP)


def size_list_item_replaced_after_rebuild() -> bytes:
    """_rebuild_tensor_v2(storage, 0, L=[6], (1,), ...); then L[0] = 3 (SETITEM on a list,
    which CPython's unpickler accepts): the tensor still has shape (6,)."""
    rebuild = (P.global_("torch._utils", "_rebuild_tensor_v2") + P.MARK
               + P.persid_storage("FloatStorage", "0", 6) + K(0)
               + P.EMPTY_LIST + P.binput(1) + K(6) + P.APPEND + K(1) + P.TUPLE1
               + b"\x89" + od() + P.TUPLE + P.REDUCE)
    return (P.proto(2) + P.EMPTY_DICT
            + s("model") + P.EMPTY_DICT + s("w") + rebuild + P.SETITEM + P.SETITEM
            + s("optimizer") + adam_state() + P.SETITEM
            + P.binget(1) + K(0) + K(3) + P.SETITEM + P.POP + P.STOP)


CASES = {
    "emptied-adam-state": emptied_adam_state(),
    "ordereddict-of-mutated-state-dict": wrapped_state_dict(P.global_("collections",
                                                                      "OrderedDict")),
    "dict-of-mutated-state-dict": wrapped_state_dict(P.global_("builtins", "dict")),
    "size-list-mutated-after-rebuild": size_list_mutated_after_rebuild(),
    "size-object-of-mutated-list": size_object_of_a_mutated_list(),
    "size-list-item-replaced-after-rebuild": size_list_item_replaced_after_rebuild(),
}

_TORCH_VIEW = textwrap.dedent("""
    import json, sys, torch
    def flat(o, path, out):
        if isinstance(o, torch.Tensor):
            out[path] = list(o.shape)
        elif isinstance(o, dict):
            if not o:
                out[path] = "{}"
            for k, v in o.items():
                flat(v, f"{path}.{k}" if path else str(k), out)
        elif isinstance(o, (list, tuple)):
            if not o:
                out[path] = "[]"
            for i, v in enumerate(o):
                flat(v, f"{path}.{i}" if path else str(i), out)
        else:
            out[path] = repr(o)
    def same(a, b):
        if isinstance(a, torch.Tensor):
            if not isinstance(b, torch.Tensor) or a.stride() != b.stride():
                return False
            if a.dtype == torch.float32 and b.dtype in (torch.float16, torch.bfloat16):
                a = a.to(b.dtype)  # the declared cast (fp32-payload)
            return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)
        if isinstance(a, dict):
            return (isinstance(b, dict) and type(a) is type(b) and list(a) == list(b)
                    and all(same(a[k], b[k]) for k in a))
        if isinstance(a, (list, tuple)):
            return (type(a) is type(b) and len(a) == len(b)
                    and all(same(x, y) for x, y in zip(a, b)))
        return type(a) is type(b) and a == b
    out = {}
    for name, inp, fixed in json.loads(sys.argv[1]):
        a = torch.load(inp, weights_only=False)
        view = {}
        flat(a, "", view)
        entry = {"view": view}
        if fixed:
            b = torch.load(fixed, weights_only=False)
            a.pop("optimizer", None)   # what the fix strips
            b.pop("optimizer", None)
            entry["equal"] = same(a, b)
        out[name] = entry
    print(json.dumps(out))
""")


def torch_view(jobs: list[tuple[str, str, str | None]]) -> dict:
    """What torch builds from each input (paths → shapes), and whether it builds the same
    from the fix output (optimizer left aside: the fix strips it)."""
    proc = subprocess.run([sys.executable, "-c", _TORCH_VIEW, json.dumps(jobs)],
                          capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def differential(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("callvalues")
    jobs, ours = [], {}
    for name, pkl in CASES.items():
        path = root / f"{name}.pt"
        path.write_bytes(as_zip(pkl))
        analysis = analyze(read_path(str(path)))
        out = root / f"{name}.fixed.pt"
        result = run_fix(path, out_path=str(out))
        ours[name] = (analysis, result)
        jobs.append((name, str(path), str(out) if result.error is None else None))
    return {"torch": torch_view(jobs), "ours": ours}


@pytest.mark.parametrize("name", sorted(CASES))
def test_ckpt_guard_sees_what_torch_builds(differential: dict, name: str) -> None:
    view = differential["torch"][name]["view"]
    analysis, _ = differential["ours"][name]
    ours = {e.path: list(e.shape) for e in analysis.tensors}
    theirs = {p: v for p, v in view.items() if isinstance(v, list)}
    assert ours == theirs


@pytest.mark.parametrize("name", sorted(CASES))
def test_fix_output_loads_the_input_values(differential: dict, name: str) -> None:
    _, result = differential["ours"][name]
    assert result.error is None, result.error
    assert differential["torch"][name]["equal"] is True


def test_emptied_adam_state_is_still_optimizer_state(differential: dict) -> None:
    analysis, result = differential["ours"]["emptied-adam-state"]
    assert analysis.bytes_by_role.get("optimizer", 0) == 2 * 24
    assert "optimizer.state.0.exp_avg" in differential["torch"]["emptied-adam-state"]["view"]
    assert any("optimizer" in c for c in result.changes)


# ---- objects we never run: arguments kept as passed; fix refuses to guess --------------

def opaque_with_list_changed_later(inside: str) -> bytes:
    """``Config(L)`` under ``inside`` (top-level ``config``, or the optimizer dict); then L grows."""
    obj = P.call(P.global_("ckg_fake_module", "Config"),
                 P.EMPTY_LIST + P.binput(1) + P.MARK + K(1) + K(2) + APPENDS)
    return (P.proto(2) + P.EMPTY_DICT + P.binput(0)
            + s("model") + P.EMPTY_DICT + s("w") + tensor("0") + P.SETITEM + P.SETITEM
            + (s("config") + obj + P.SETITEM + s("optimizer") + adam_state() if inside == "config"
               else s("optimizer") + adam_state() + s("cfg") + obj + P.SETITEM) + P.SETITEM
            + P.binget(1) + K(3) + P.APPEND + P.POP + P.STOP)


def test_opaque_call_keeps_its_arguments_as_passed(tmp_path: Path) -> None:
    path = tmp_path / "cfg.pt"
    path.write_bytes(as_zip(opaque_with_list_changed_later("config")))
    ckpt = read_path(str(path))
    cfg = ckpt.root["config"]
    assert isinstance(cfg, Opaque) and cfg.args == ([1, 2],)
    assert "changes a list after passing it to ckg_fake_module.Config" in cfg.unmodelled
    result = run_fix(path, out_path=str(tmp_path / "out.pt"))
    assert result.error is not None and "\n" not in result.error
    assert "ckg_fake_module.Config" in result.error
    assert not (tmp_path / "out.pt").exists()


def test_opaque_that_the_fix_strips_does_not_block_it(tmp_path: Path) -> None:
    path = tmp_path / "cfg.pt"
    path.write_bytes(as_zip(opaque_with_list_changed_later("optimizer")))
    result = run_fix(path, out_path=str(tmp_path / "out.pt"))
    assert result.error is None and result.changed


def test_second_build_of_an_object_is_not_rewritten(tmp_path: Path) -> None:
    obj = (P.global_("ckg_fake_module", "Thing") + P.EMPTY_TUPLE + P.NEWOBJ
           + P.EMPTY_DICT + s("a") + K(1) + P.SETITEM + P.BUILD
           + P.EMPTY_DICT + s("b") + K(2) + P.SETITEM + P.BUILD)
    pkl = (P.proto(2) + P.EMPTY_DICT + s("model") + P.EMPTY_DICT + s("w") + tensor("0")
           + P.SETITEM + P.SETITEM + s("thing") + obj + P.SETITEM
           + s("optimizer") + adam_state() + P.SETITEM + P.STOP)
    path = tmp_path / "thing.pt"
    path.write_bytes(as_zip(pkl))
    result = run_fix(path, out_path=str(tmp_path / "out.pt"))
    assert result.error is not None and "BUILDs ckg_fake_module.Thing twice" in result.error


def test_build_state_changed_later_is_kept_as_built(tmp_path: Path) -> None:
    obj = (P.global_("ckg_fake_module", "Thing") + P.EMPTY_TUPLE + P.NEWOBJ
           + P.EMPTY_DICT + P.binput(1) + s("a") + K(1) + P.SETITEM + P.BUILD)
    pkl = (P.proto(2) + P.EMPTY_DICT + s("thing") + obj + P.SETITEM
           + P.binget(1) + s("a") + K(9) + P.SETITEM + P.POP + P.STOP)
    root, _ = load(pkl, persistent_load=None, limits=Limits())
    assert root["thing"].state == {"a": 1}
    assert root["thing"].unmodelled


# ---- the copying builtins against CPython itself (only builtins: pickle.loads is safe) --

def _mutate_after(call: bytes, arg: bytes, change: bytes) -> bytes:
    """``[call(arg), arg]`` where ``arg`` (memo 1) gets ``change`` applied after the call."""
    return (P.proto(2) + P.EMPTY_LIST + P.binput(0) + P.call(call, arg) + P.APPEND
            + P.binget(1) + change + P.POP + P.binget(1) + P.APPEND + P.STOP)


_D = P.EMPTY_DICT + P.binput(1) + P.MARK + s("a") + K(1) + s("b") + P.EMPTY_LIST + P.SETITEMS
_D_CHANGE = P.MARK + s("a") + K(7) + s("c") + K(3) + P.SETITEMS
_L = P.EMPTY_LIST + P.binput(1) + P.MARK + K(1) + K(2) + K(2) + APPENDS
_L_CHANGE = P.MARK + K(5) + K(6) + APPENDS
_PAIRS = (P.EMPTY_LIST + P.binput(1) + P.MARK + s("x") + K(1) + P.TUPLE2 + s("y") + K(2)
          + P.TUPLE2 + APPENDS)
_PAIRS_CHANGE = s("z") + K(3) + P.TUPLE2 + P.APPEND
_S = EMPTY_SET + P.binput(1) + P.MARK + K(1) + K(2) + ADDITEMS
_S_CHANGE = P.MARK + K(9) + ADDITEMS

BUILTIN_CASES = {
    "OrderedDict(dict)": (P.global_("collections", "OrderedDict"), _D, _D_CHANGE),
    "OrderedDict(pairs)": (P.global_("collections", "OrderedDict"), _PAIRS, _PAIRS_CHANGE),
    "dict(dict)": (P.global_("builtins", "dict"), _D, _D_CHANGE),
    "dict(pairs)": (P.global_("builtins", "dict"), _PAIRS, _PAIRS_CHANGE),
    "Counter(dict)": (P.global_("collections", "Counter"), _D, _D_CHANGE),
    "Counter(list)": (P.global_("collections", "Counter"), _L, _L_CHANGE),
    "list(list)": (P.global_("builtins", "list"), _L, _L_CHANGE),
    "list(dict)": (P.global_("builtins", "list"), _D, _D_CHANGE),
    "tuple(list)": (P.global_("builtins", "tuple"), _L, _L_CHANGE),
    "set(list)": (P.global_("builtins", "set"), _L, _L_CHANGE),
    "frozenset(set)": (P.global_("builtins", "frozenset"), _S, _S_CHANGE),
    "bytearray(list)": (P.global_("builtins", "bytearray"), _L, _L_CHANGE),
}


def plain(node: object) -> object:
    if isinstance(node, Opaque):
        m = as_mapping(node)
        if node.qualname == "collections.OrderedDict":
            return OrderedDict((plain(k), plain(v)) for k, v in m.items())
        if node.qualname == "collections.Counter":
            return Counter({plain(k): plain(v) for k, v in m.items()})
        if node.qualname == "collections.defaultdict":
            return defaultdict(None, {plain(k): plain(v) for k, v in m.items()})
        raise AssertionError(node)
    if isinstance(node, dict):
        return {plain(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    if isinstance(node, tuple):
        return tuple(plain(v) for v in node)
    return node


@pytest.mark.parametrize("name", sorted(BUILTIN_CASES))
def test_copying_builtins_build_what_cpython_builds(name: str) -> None:
    func, arg, change = BUILTIN_CASES[name]
    data = _mutate_after(func, arg, change)
    root, _ = load(data, persistent_load=None, limits=Limits())
    expected = pickle.loads(data)
    got = plain(root)
    assert got == expected and type(got[0]) is type(expected[0])


@pytest.mark.parametrize("cls", ["dict", "list", "set", "bytearray"])
def test_newobj_of_a_builtin_container_ignores_its_arguments(cls: str) -> None:
    data = (P.proto(2) + P.global_("builtins", cls) + _L + P.TUPLE1 + P.NEWOBJ + P.STOP)
    root, _ = load(data, persistent_load=None, limits=Limits())
    assert root == pickle.loads(data) and type(root) is type(pickle.loads(data))


def test_copies_are_bounded() -> None:
    """A loop of OrderedDict(D) / change D must not make reading quadratic."""
    big = P.EMPTY_DICT + P.binput(1) + P.MARK + b"".join(K(i) + K(i) for i in range(200)) \
        + P.SETITEMS
    body = b"".join(od(P.binget(1)) + P.POP + P.binget(1) + K(0) + K(1) + P.SETITEM + P.POP
                    for _ in range(20))
    data = P.proto(2) + big + P.POP + body + P.NONE + P.STOP
    load(data, persistent_load=None, limits=Limits())  # within the default budget
    with pytest.raises(LimitExceeded, match="copy more than"):
        load(data, persistent_load=None, limits=Limits(max_container=1000))


def test_torch_save_pickles_copy_nothing(tmp_path: Path) -> None:
    """The pickles torch.save writes pass no container to a call that is later changed:
    nothing is snapshotted, no object is marked."""
    path = tmp_path / "n.pt"
    path.write_bytes(torch_zip({"sd": torch.nn.Linear(2, 2).state_dict(), "n": Counter("aab")}))
    root = read_path(str(path)).root
    assert isinstance(root["n"], Opaque) and as_mapping(root["n"]) == {"a": 2, "b": 1}
    sd = as_mapping(root["sd"])
    assert sd is not None and set(sd) == {"weight", "bias"}
    assert not any(isinstance(v, TensorRef) and v.unmodelled for v in sd.values())


# ---- verification that does not rely on the reader's modelling --------------------------

def test_call_time_check_finds_a_change_after_the_call() -> None:
    from ckpt_guard.rewrite.call_time import CallTimeError, check_call_time

    for name in ("OrderedDict(dict)", "list(list)", "set(list)"):
        func, arg, change = BUILTIN_CASES[name]
        with pytest.raises(CallTimeError, match="changes an argument"):
            check_call_time(_mutate_after(func, arg, change))
    for pkl in CASES.values():  # the inputs: each changes something after a call
        with pytest.raises(CallTimeError):
            check_call_time(pkl)
    # what torch.save writes (and so what our writer writes) passes
    from tests.adversarial.containers import read_members

    data = torch_zip({"sd": torch.nn.Linear(2, 2).state_dict(), "n": Counter("ab"),
                      "p": torch.nn.Parameter(torch.ones(2))})
    check_call_time(next(d for n, d in read_members(data) if n.endswith("/data.pkl")))


def test_container_inside_a_tuple_argument_changed_later_is_marked() -> None:
    lst = P.EMPTY_LIST + P.binput(1) + K(1) + P.APPEND
    obj = P.call(P.global_("ckg_fake_module", "Config"), lst + P.TUPLE1)
    pkl = (P.proto(2) + P.EMPTY_DICT + s("cfg") + obj + P.SETITEM
           + P.binget(1) + K(2) + P.APPEND + P.POP + P.STOP)
    root, _ = load(pkl, persistent_load=None, limits=Limits())
    assert "changes a list after passing it to ckg_fake_module.Config" in root["cfg"].unmodelled
