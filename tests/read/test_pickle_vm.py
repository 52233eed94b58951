"""The pickle interpreter: every opcode, trusted data round trips, hostile constructs are
recorded and never executed, limits hold."""

from __future__ import annotations

import pickle
import pickletools
import struct
import sys
import time
from collections import OrderedDict

import pytest

from ckpt_guard.read import pickle_vm
from ckpt_guard.read.checkpoint import LimitExceeded, UnreadableError
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.tree import GlobalRef, Opaque, attributes

LIMITS = Limits()
FAKE = "ckg_fake_module_never_importable"


def load(data: bytes, limits: Limits = LIMITS, **kw):
    return pickle_vm.load(data, persistent_load=kw.pop("persistent_load", None), limits=limits,
                          **kw)


def plain(node):
    """Our tree → Python values, interpreting the few builtins plain data pickles through
    (trusted test data only: ``set``/``frozenset``/``bytearray``/``_codecs.encode``)."""
    if isinstance(node, Opaque):
        args = tuple(plain(a) for a in node.args)
        q = node.qualname
        if q == "builtins.set":
            return set(*args)
        if q == "builtins.frozenset":
            return frozenset(*args)
        if q == "builtins.bytearray":
            return bytearray(*args)
        if q == "_codecs.encode":
            return args[0].encode(args[1])
        if q == "builtins.bytes" and not args:
            return b""
        if q == "collections.OrderedDict":
            return OrderedDict((plain(k), plain(v)) for k, v in (node.dictitems or {}).items())
        raise AssertionError(f"unexpected {q}")
    if isinstance(node, dict):
        return {plain(k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    if isinstance(node, tuple):
        return tuple(plain(v) for v in node)
    if isinstance(node, (set, frozenset)):
        return type(node)(plain(v) for v in node)
    return node


SAMPLE = {
    "ints": [0, 1, -1, 255, 256, 65535, 65536, -(2**31), 2**31 - 1, 2**31, 2**64, -(2**200)],
    "floats": [0.0, -1.5, 1e300, float("inf")],
    "strs": ["", "a", "ü€😀", "x" * 300, "line\nbreak", "quote'\""],
    "bytes": [b"", b"\x00\xff", b"y" * 300],
    "bytearray": bytearray(b"abc"),
    "consts": [None, True, False],
    "tuples": [(), (1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)],
    "nested": {"a": [{"b": ({"c": [1, (2, 3)]},)}]},
    "sets": [set(), {1, 2, "x"}, frozenset({3, (4, 5)})],
    "tuple_key": {(1, "a"): "v", 3: "int key", None: "none key"},
    "ordered": OrderedDict([("z", 1), ("a", 2)]),
}


@pytest.mark.parametrize("protocol", range(6))
def test_trusted_data_round_trips_at_every_protocol(protocol: int) -> None:
    data = pickle.dumps(SAMPLE, protocol=protocol)
    root, uses = load(data)
    assert plain(root) == pickle.loads(data)
    assert {u.qualname for u in uses} <= {"builtins.set", "builtins.frozenset",
                                          "builtins.bytearray", "_codecs.encode",
                                          "collections.OrderedDict", "builtins.bytes"}


def test_shared_references_and_cycles_are_kept() -> None:
    inner = [1, 2]
    cyc: list = []
    cyc.append(cyc)
    root, _ = load(pickle.dumps({"a": inner, "b": inner, "c": cyc}, protocol=2))
    assert root["a"] is root["b"]
    assert root["c"][0] is root["c"]


def test_every_opcode_of_pickletools_is_handled() -> None:
    assert set(pickle_vm.OPCODE_NAMES.values()) == {op.name for op in pickletools.opcodes}
    for op in pickletools.opcodes:
        assert pickle_vm.OPCODE_NAMES[ord(op.code.encode("latin-1"))] == op.name


def test_protocol0_text_opcodes() -> None:
    # INT/LONG/FLOAT/STRING/UNICODE/GET/PUT/LIST/DICT/TUPLE/APPEND/SETITEM/POP/DUP/POP_MARK
    data = (b"(lp0\nI00\naI01\naI-7\naL12345678901234567890L\naF2.5\naS'esc\\x41'\na"
            b"Vuni\\u00e9\nag0\na(dp2\nS'k'\np3\nI1\nsaI5\na20(I9\n1(I1\nI2\ntp4\na.")
    root, uses = load(data)
    expected = pickle.loads(data)  # builtins-only data: safe to compare with the real thing
    assert root[:7] == expected[:7] and root[8:] == expected[8:]
    assert root[7] is root and not uses


def test_binary_string_and_bytes_opcodes() -> None:
    data = (b"\x80\x04(U\x03abcT\x02\x00\x00\x00deC\x02\x01\x02B\x01\x00\x00\x00\x03"
            b"\x8e\x01\x00\x00\x00\x00\x00\x00\x00\x04\x96\x02\x00\x00\x00\x00\x00\x00\x00xy"
            b"\x8d\x01\x00\x00\x00\x00\x00\x00\x00z\x8a\x02\x00\x01\x8b\x01\x00\x00\x00\xff"
            b"M\x10\x00J\xfe\xff\xff\xffG?\xf0\x00\x00\x00\x00\x00\x00l.")
    root, _ = load(data)
    assert root == pickle.loads(data)


def test_frames_memoize_and_stack_global_from_memo() -> None:
    # STACK_GLOBAL whose names come from the memo (a classic scanner bypass)
    data = (b"\x80\x04\x95\x30\x00\x00\x00\x00\x00\x00\x00"
            b"\x8c\x05" + b"posix" + b"\x94\x8c\x06system\x94h\x00h\x01\x93\x94"
            b"\x8c\x0btouch canar\x85R.")
    root, uses = load(data)
    assert isinstance(root, Opaque) and root.qualname == "posix.system"
    assert root.args == ("touch canar",)
    assert [(u.module, u.name, u.opcode) for u in uses] == [("posix", "system", "STACK_GLOBAL")]


def test_hostile_constructions_are_recorded_and_never_executed(tmp_path) -> None:
    canary = tmp_path / "canary"
    cmd = f"touch {canary}".encode()
    before = set(sys.modules)
    cases = {
        # GLOBAL + REDUCE
        "reduce": b"cos\nsystem\n(S'" + cmd + b"'\ntR.",
        # INST
        "inst": b"(S'" + cmd + b"'\nios\nsystem\n.",
        # OBJ
        "obj": b"(cos\nsystem\nS'" + cmd + b"'\no.",
        # NEWOBJ / NEWOBJ_EX on a fake class, then BUILD with state
        "newobj": b"\x80\x02c" + FAKE.encode() + b"\nKls\n)\x81}S'x'\nK\x01sb.",
        "newobj_ex": b"\x80\x04\x8c" + bytes([len(FAKE)]) + FAKE.encode()
                     + b"\x8c\x03Kls\x93)}\x92.",
    }
    for label, data in cases.items():
        root, uses = load(data)
        assert isinstance(root, Opaque), label
        assert uses, label
    root, uses = load(cases["inst"])
    assert (uses[0].module, uses[0].name, uses[0].opcode) == ("os", "system", "INST")
    root, uses = load(cases["obj"])
    assert [u.opcode for u in uses] == ["GLOBAL", "OBJ"]
    root, _ = load(cases["newobj"])
    assert root.how == "newobj" and root.state == {"x": 1}
    root, _ = load(cases["newobj_ex"])
    assert root.how == "newobj_ex" and root.kwargs == {}
    assert not canary.exists()
    assert FAKE not in sys.modules
    assert set(sys.modules) - before == set()


@pytest.mark.parametrize("code,opname", [(b"\x82\x05", "EXT1"), (b"\x83\x05\x01", "EXT2"),
                                         (b"\x84\x05\x01\x00\x00", "EXT4")])
def test_extension_codes_are_reported_never_resolved(code: bytes, opname: str) -> None:
    root, uses = load(b"\x80\x02" + code + b")R.")
    assert isinstance(root, Opaque) and root.module == "<extension>"
    assert uses[0].module == "<extension>" and uses[0].opcode == opname


def test_indirect_calls_and_mutations_leave_a_trace() -> None:
    # REDUCE on the result of a call (getattr(...)(...) chains)
    chained = b"cbuiltins\ngetattr\n(cos\nS'system'\ntR(S'id'\ntR."
    root, uses = load(chained)
    assert root.module == "<call>"
    assert ("<call>", "REDUCE") in {(u.module, u.opcode) for u in uses}
    # SETITEM on a global (e.g. os.environ[...] = ...), BUILD and APPEND on globals
    for data, opname in [(b"cos\nenviron\nS'K'\nS'V'\ns.", "SETITEM"),
                         (b"ctorch\nfloat16\n}b.", "BUILD"),
                         (b"\x80\x02cx\ny\n]\x86K\x01a0.", None)]:
        if opname is None:
            continue
        _, uses = load(data)
        assert any(u.module == "<mutate>" and u.opcode == opname for u in uses)
    # STACK_GLOBAL with computed (non-str) operands
    root, uses = load(b"\x80\x04cos\nsystem\n)R\x8c\x01x\x93.")
    assert root.module == "<computed>" and uses[-1].module == "<computed>"


def test_malformed_pickles_are_unreadable_not_crashes() -> None:
    bad = {
        "unknown opcode": b"\x80\x02\xff.",
        "stack underflow": b"\x80\x02R.",
        "memo miss": b"\x80\x02h\x07.",
        "unhashable key": b"\x80\x02}]K\x01s.",
        "setitem on int": b"\x80\x02K\x01K\x02K\x03s.",
        "build on list": b"\x80\x02]}b.",
        "reduce args not tuple": b"\x80\x02cx\ny\nK\x01R.",
        "persid without loader": b"\x80\x02K\x01Q.",
        "next buffer": b"\x80\x05\x97.",
        "bad protocol": b"\x80\x09N.",
        "truncated": b"\x80\x02X\x10\x00\x00\x00abc",
        "no stop": b"\x80\x02N",
    }
    for label, data in bad.items():
        with pytest.raises(UnreadableError) as ei:
            load(data)
        assert "\n" not in str(ei.value), label


def test_partial_globals_survive_a_failure() -> None:
    with pytest.raises(UnreadableError) as ei:
        load(b"cos\nsystem\n(S'id'\ntR\xff")
    assert [u.qualname for u in ei.value.partial_globals] == ["os.system"]


def test_persistent_ids_go_through_the_loader() -> None:
    seen = []

    def persistent_load(pid):
        seen.append(pid)
        return "loaded"

    root, _ = load(b"\x80\x02(X\x01\x00\x00\x00aK\x01tQ.", persistent_load=persistent_load)
    assert root == "loaded" and seen == [("a", 1)]
    root, _ = load(b"Pkey\n.", persistent_load=persistent_load)
    assert seen[-1] == "key"


def test_run_reports_end_and_protocol_for_back_to_back_pickles() -> None:
    blob = pickle.dumps(1, protocol=2) + pickle.dumps("two", protocol=4)
    first = pickle_vm.run(blob, 0, persistent_load=None, limits=LIMITS)
    second = pickle_vm.run(blob, first.end, persistent_load=None, limits=LIMITS)
    assert (first.root, first.protocol, second.root, second.protocol) == (1, 2, "two", 4)
    assert second.end == len(blob)


# ---------------------------------------------------------------------------------- limits

def _quick(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def test_huge_declared_lengths_are_refused_before_allocating() -> None:
    for data in [b"\x80\x04\x8e" + struct.pack("<Q", 4 << 30) + b"x",       # BINBYTES8 4 GiB
                 b"\x80\x04\x8d" + struct.pack("<Q", 1 << 62) + b"x",       # BINUNICODE8
                 b"\x80\x04\x96" + struct.pack("<Q", 1 << 40) + b"x",       # BYTEARRAY8
                 b"\x80\x02X" + struct.pack("<I", 0xFFFFFFFF) + b"x"]:     # BINUNICODE
        with pytest.raises(LimitExceeded):
            load(data)
    with pytest.raises(LimitExceeded):
        load(b"\x80\x02\x8b" + struct.pack("<i", 1 << 30) + b"x")          # LONG4
    small = Limits(max_string=10)
    with pytest.raises(LimitExceeded):
        load(b"\x80\x02X\x0b\x00\x00\x00hello world.", small)
    with pytest.raises(PicklePrefixError := pickle_vm.PickleTruncated):
        load(b"\x80\x02X\x05\x00\x00\x00abc")
    assert issubclass(PicklePrefixError, UnreadableError)


def test_memo_flood_is_limited() -> None:
    data = b"\x80\x04N" + b"\x94" * 5000 + b"."
    with pytest.raises(LimitExceeded, match="memo"):
        load(data, Limits(max_memo=1000))
    assert load(data)[0] is None


def test_opcode_and_stack_limits() -> None:
    data = b"\x80\x02" + b"N" * 5000 + b"."
    with pytest.raises(LimitExceeded, match="opcodes"):
        load(data, Limits(max_opcodes=3000))
    with pytest.raises(LimitExceeded, match="stack"):
        load(data, Limits(max_stack=1000))


def test_deep_nesting_is_refused_quickly_without_recursion() -> None:
    depth = 100_000
    lists = b"\x80\x02" + b"]" * depth + b"a" * (depth - 1) + b"."
    marks = b"\x80\x02" + b"(" * depth + b"l" * depth + b"."
    tuples = b"\x80\x02)" + b"\x85" * depth + b"."
    for data in (lists, marks, tuples):
        with pytest.raises(LimitExceeded, match="deeper"):
            assert _quick(lambda d=data: load(d)) < 5
    # nested tuple as a dict key: hash() would recurse through it
    key = b"\x80\x02}" + b")" + b"\x85" * 5000 + b"Ns."
    with pytest.raises(LimitExceeded):
        load(key)
    # just under the limit is fine
    ok = b"\x80\x02" + b"]" * 500 + b"a" * 499 + b"."
    root, _ = load(ok)
    assert isinstance(root, list)


def test_colliding_dict_keys_are_budgeted() -> None:
    p = (1 << 61) - 1  # ints k and k + p hash alike: quadratic dict building
    items = b"".join(b"\x8a\x0a" + (p * i).to_bytes(10, "little", signed=True) + b"N"
                     for i in range(1, 30_000))
    data = b"\x80\x02}(" + items + b"u."
    t = time.perf_counter()
    with pytest.raises(LimitExceeded, match="colliding"):
        load(data)
    assert time.perf_counter() - t < 10


def test_ordered_dict_with_metadata_reads_as_items_and_state() -> None:
    od = OrderedDict([("w", 1)])
    od._metadata = OrderedDict([("", {"version": 1})])  # what state_dict() attaches
    root, _ = load(pickle.dumps(od, protocol=2))
    assert isinstance(root, Opaque) and root.qualname == "collections.OrderedDict"
    assert root.dictitems == {"w": 1}
    meta = attributes(root)["_metadata"]
    assert meta.dictitems == {"": {"version": 1}}


def test_global_refs_are_plain_data() -> None:
    root, uses = load(b"\x80\x02ctorch\nfloat16\n.")
    assert isinstance(root, GlobalRef) and root.qualname == "torch.float16"
    # protocol < 3 maps Python 2 names the way a real unpickler would import them
    root, uses = load(b"c__builtin__\neval\n.")
    assert root.qualname == "builtins.eval" and uses[0].module == "builtins"


def test_storage_type_table_round_trips() -> None:
    from ckpt_guard.read.rebuild import DTYPE_STORAGE_TYPES, STORAGE_DTYPES

    for dtype, name in DTYPE_STORAGE_TYPES.items():
        assert STORAGE_DTYPES[name] == dtype
    assert DTYPE_STORAGE_TYPES["float16"] == "HalfStorage"
    assert "uint8" in DTYPE_STORAGE_TYPES and DTYPE_STORAGE_TYPES["uint8"] == "ByteStorage"


def test_appends_onto_a_bytearray_as_cpython_does():
    """CPython's APPENDS/APPEND call bytearray.extend/append (class 13: constructs CPython
    accepts must not stop the analysis — globals after them would be missed)."""
    import pickle

    from ckpt_guard.read.limits import Limits
    from ckpt_guard.read.pickle_vm import run

    data = b"\x80\x02c__builtin__\nbytearray\n)R(K\x01K\x02eK\x03a."  # bytearray([1, 2, 3])
    assert pickle.loads(data) == bytearray(b"\x01\x02\x03")
    res = run(data, persistent_load=None, limits=Limits())
    assert res.root == bytearray(b"\x01\x02\x03")
    # a global after the APPENDS is still seen
    data2 = (b"\x80\x02(c__builtin__\nbytearray\n)R(K\x01e"
             b"cposix\nsystem\ntq\x00.")
    res2 = run(data2, persistent_load=None, limits=Limits())
    assert [g.qualname for g in res2.globals] == ["builtins.bytearray", "posix.system"]
