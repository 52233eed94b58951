"""Cost bombs (issue 8, class 7): small files that stay under every per-pickle limit but
ask for a lot of work or memory from the reader and the analysis. Each builder returns the
bytes of a torch-shaped zip whose data.pkl is deflated (a 15 kB file can hold millions of
opcodes). ``python -m tests.limits.bombs DIR NAME`` checks one with the real CLI in this
process and prints its wall time and peak RSS as JSON (the test runs it in a subprocess).
"""

from __future__ import annotations

import json
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.adversarial import containers as Z
from tests.adversarial import pickles as P

N = 4_900_000  # just under the 5,000,000-opcode limit


def _zip(pkl: bytes, storages: dict[str, bytes] | None = None) -> bytes:
    members = [Z.Member("archive/data.pkl", pkl, deflate=True),
               Z.Member("archive/byteorder", b"little")]
    for key, data in (storages or {}).items():
        members.append(Z.Member(f"archive/data/{key}", data))
    members.append(Z.Member("archive/version", b"3\n"))
    return Z.zip_bytes(members)


def _appends(item: bytes, n: int) -> bytes:
    """``n`` copies of ``item`` appended to the list on the stack, 1,000 per APPENDS as
    pickle writes them (the stack limit is 1,000,000)."""
    batch = P.MARK + item * 1000 + b"e"
    return batch * (n // 1000) + P.MARK + item * (n % 1000) + b"e"


def _list_of(item: bytes, n: int) -> bytes:
    """``{'w': [item, item, …]}``."""
    return (P.proto(2) + P.EMPTY_DICT + P.binunicode("w") + P.EMPTY_LIST + _appends(item, n)
            + P.SETITEM + P.STOP)


UNDER = 990_000  # just under Limits.max_objects


def empty_sets_5m() -> bytes:
    """~5 million empty sets (the issue's 15 kB / 70 s / 2.7 GB sample)."""
    return _zip(_list_of(b"\x8f", N))


def empty_sets() -> bytes:
    """As many empty sets as the object limit allows (a set counts 4)."""
    return _zip(_list_of(b"\x8f", UNDER // 4))


def empty_dicts() -> bytes:
    return _zip(_list_of(P.EMPTY_DICT, UNDER))


def small_tuples() -> bytes:
    """``(0,)``: two opcodes per one-item tuple."""
    return _zip(_list_of(P.binint1(0) + b"\x85", UNDER))


def opaque_objects() -> bytes:
    """``collections.OrderedDict()`` called ~1 million times: an opaque object each."""
    od = P.global_("collections", "OrderedDict") + P.binput(1) + P.POP
    return _zip(P.proto(2) + od + P.EMPTY_DICT + P.binunicode("w") + P.EMPTY_LIST
                + _appends(P.binget(1) + P.EMPTY_TUPLE + P.REDUCE, UNDER - 10)
                + P.SETITEM + P.STOP)


def shared_dict_fan_out() -> bytes:
    """One dict holding a 1,000-key subtree, referenced ~2.4 million times from the memo."""
    inner = P.EMPTY_DICT + P.MARK + b"".join(P.binunicode(f"k{i}") + P.binint1(1)
                                             for i in range(1000)) + b"u"
    pkl = (P.proto(2) + P.EMPTY_DICT + P.binunicode("w") + inner + P.binput(1) + P.POP
           + P.EMPTY_LIST + _appends(P.binget(1), N // 2) + P.SETITEM + P.STOP)
    return _zip(pkl)


def shared_tensor_fan_out() -> bytes:
    """One tensor referenced ~2.4 million times: every reference is a tensor path."""
    t = P.rebuild_tensor(P.persid_storage("FloatStorage", "0", 6), (2, 3), (3, 1))
    pkl = (P.proto(2) + P.EMPTY_DICT + P.binunicode("w") + t + P.binput(1) + P.POP
           + P.EMPTY_LIST + _appends(P.binget(1), N // 2) + P.SETITEM + P.STOP)
    return _zip(pkl, {"0": bytes(24)})


def deep_path_many_tensors() -> bytes:
    """990 nested dicts with 64 kB keys, then ~1 million references to one tensor at the
    bottom: tensor paths of 990 components × 64 kB each, unless paths are bounded."""
    key = P.binunicode("k" * 65536) + P.binput(2)
    t = P.rebuild_tensor(P.persid_storage("FloatStorage", "0", 6), (2, 3), (3, 1))
    depth = 990
    pkl = (P.proto(2) + t + P.binput(1) + P.POP + P.EMPTY_DICT + key + P.POP
           + (P.EMPTY_DICT + P.binget(2)) * depth
           + P.EMPTY_LIST + _appends(P.binget(1), 1_000_000)
           + P.SETITEM * depth + P.STOP)
    return _zip(pkl, {"0": bytes(24)})


def long_strings_repeated() -> bytes:
    """A 32 MiB string (with one astral character: 4 bytes per character in CPython) stored
    once and referenced as key and value ~2 million times."""
    s = "a" * (32 << 20) + "\U0001F600"
    pkl = (P.proto(2) + P.binunicode(s) + P.binput(1) + P.POP + P.EMPTY_DICT + P.binunicode("w")
           + P.EMPTY_LIST + _appends(P.binget(1), 2_000_000) + P.SETITEM + P.STOP)
    return _zip(pkl)


def distinct_strings() -> bytes:
    """~4.9 million distinct short strings (each a new object)."""
    items = [P.short_binunicode(f"{i:07d}") for i in range(N // 2)]
    body = b"".join(P.MARK + b"".join(items[i:i + 1000]) + b"e"
                    for i in range(0, len(items), 1000))
    return _zip(P.proto(2) + P.EMPTY_DICT + P.binunicode("w") + P.EMPTY_LIST + body
                + P.SETITEM + P.STOP)


def many_storages() -> bytes:
    """~150,000 tensors, each with its own (missing) storage: every tensor is real work."""
    n = 150_000
    parts = [P.proto(2), P.EMPTY_DICT, P.MARK]
    for i in range(n):
        parts.append(P.binunicode(f"t{i}"))
        parts.append(P.rebuild_tensor(P.persid_storage("FloatStorage", str(i), 1), (1,), (1,)))
    parts += [b"u", P.STOP]
    return _zip(b"".join(parts), {str(i): bytes(4) for i in range(0)})


BOMBS: dict[str, Callable[[], bytes]] = {
    "empty_sets_5m": empty_sets_5m,
    "empty_sets": empty_sets,
    "opaque_objects": opaque_objects,
    "empty_dicts": empty_dicts,
    "small_tuples": small_tuples,
    "shared_dict_fan_out": shared_dict_fan_out,
    "shared_tensor_fan_out": shared_tensor_fan_out,
    "deep_path_many_tensors": deep_path_many_tensors,
    "long_strings_repeated": long_strings_repeated,
    "distinct_strings": distinct_strings,
    "many_storages": many_storages,
}


def _peak_rss_mib() -> float:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1 << 20) if sys.platform == "darwin" else peak / 1024


def main(directory: str, names: list[str]) -> None:
    """Check each already written ``DIR/NAME.pt`` with the engine, in this process; print
    one JSON line: outcomes, total wall time and this process' peak RSS."""
    from ckpt_guard.app.check import check_target, discover
    from ckpt_guard.policy import builtin_policy

    policy = builtin_policy()
    outcomes: dict[str, dict] = {}
    start = time.perf_counter()
    for name in names:
        path = Path(directory) / f"{name}.pt"
        t0 = time.perf_counter()
        [target] = discover([str(path)], policy, root=Path(directory))
        fr = check_target(target, policy)
        outcomes[name] = {"status": fr.status, "wall_s": round(time.perf_counter() - t0, 2),
                          "findings": [f.message[:120] for f in fr.findings]}
    print(json.dumps({"outcomes": outcomes, "wall_s": round(time.perf_counter() - start, 2),
                      "peak_rss_mib": round(_peak_rss_mib(), 1)}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
