"""Hostile-but-not-malicious inputs: files built to exhaust time or memory, and truncations.

Every builder returns the file's bytes. Shared by test_limits.py and the resource-bound
subprocess (``python -m tests.limits.hostile DIR`` writes them all and reads them back).
"""

from __future__ import annotations

import json
import struct
import sys
import time
import zlib
from collections.abc import Callable
from pathlib import Path

from tests.adversarial import containers as Z
from tests.adversarial import pickles as P

GiB = 1 << 30


def in_torch_zip(pkl: bytes, *, storages: dict[str, bytes] | None = None) -> bytes:
    """A torch-shaped zip around ``pkl`` (no torch needed)."""
    members = [Z.Member("archive/data.pkl", pkl), Z.Member("archive/byteorder", b"little")]
    for key, data in (storages or {"0": bytes(24)}).items():
        members.append(Z.Member(f"archive/data/{key}", data))
    members.append(Z.Member("archive/version", b"3\n"))
    return Z.zip_bytes(members)


def storage_claims_1e12() -> bytes:
    """A FloatStorage claiming 10**12 elements backed by a 24-byte record."""
    t = P.rebuild_tensor(P.persid_storage("FloatStorage", "0", 10**12), (10**12,), (1,))
    return in_torch_zip(P.wrap_dict(t, key="w"))


def tensor_claims_1e12() -> bytes:
    """An honest 6-element storage viewed as a 10**6 x 10**6 tensor."""
    t = P.rebuild_tensor(P.persid_storage("FloatStorage", "0", 6), (10**6, 10**6), (10**6, 1))
    return in_torch_zip(P.wrap_dict(t, key="w"))


def deflate_bomb(size: int = 600 << 20, declared: int | None = None) -> bytes:
    """data.pkl deflating to ``size`` bytes (a pickle that opens a huge BINBYTES8 of zeros);
    ``declared`` is the uncompressed size the directory claims (default: the truth)."""
    head = P.proto(4) + b"\x8e" + struct.pack("<Q", size - 11)  # BINBYTES8 header
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    parts = [comp.compress(head)]
    chunk = bytes(1 << 20)
    left = size - len(head)
    while left > 0:
        parts.append(comp.compress(chunk[:min(left, len(chunk))]))
        left -= len(chunk)
    parts.append(comp.flush())
    raw = b"".join(parts)
    return _raw_deflated_zip("archive/data.pkl", raw, size if declared is None else declared)


def _raw_deflated_zip(name: str, raw: bytes, usize: int) -> bytes:
    n = name.encode()
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0x21, 0, len(raw), usize,
                        len(n), 0) + n
    central = struct.pack("<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0x21, 0,
                          len(raw), usize, len(n), 0, 0, 0, 0, 0, 0) + n
    body = local + raw
    return body + central + struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, len(central),
                                        len(body), 0)


def deep_lists(depth: int = 100_000) -> bytes:
    return P.proto(2) + P.EMPTY_LIST * depth + P.APPEND * (depth - 1) + P.STOP


def deep_tuples(depth: int = 100_000) -> bytes:
    return P.proto(2) + P.MARK * depth + P.TUPLE * depth + P.STOP


def deep_dicts(depth: int = 100_000) -> bytes:
    return (P.proto(2) + (P.EMPTY_DICT + P.short_binunicode("k")) * depth + P.EMPTY_DICT
            + P.SETITEM * depth + P.STOP)


def deep_opaque(depth: int = 100_000) -> bytes:
    """OrderedDict(OrderedDict(...)) — nesting through REDUCE arguments."""
    od = P.global_("collections", "OrderedDict")
    return P.proto(2) + (od + P.MARK) * depth + P.NONE + (P.TUPLE + P.REDUCE) * depth + P.STOP


def memo_flood(n: int = 2_000_000) -> bytes:
    return P.proto(4) + P.NONE + P.MEMOIZE * n + P.STOP


def memo_far_index() -> bytes:
    """LONG_BINPUT at index 2**32-1: a list-backed memo would allocate 32 GiB."""
    return P.proto(2) + P.NONE + P.long_binput(0xFFFFFFFF) + P.long_binget(0xFFFFFFFF) + P.STOP


def huge_declared(opcode: bytes, fmt: str, n: int) -> bytes:
    """A length-prefixed opcode declaring ``n`` bytes with only a few present."""
    return P.proto(4) + opcode + struct.pack(fmt, n) + b"abc"


def huge_strings() -> dict[str, bytes]:
    return {
        "binunicode8_2e62": huge_declared(b"\x8d", "<Q", 1 << 62),
        "binbytes8_2e62": huge_declared(b"\x8e", "<Q", 1 << 62),
        "bytearray8_2e62": huge_declared(b"\x96", "<Q", 1 << 62),
        "binunicode_4g": huge_declared(b"X", "<I", 0xFFFFFFFF),
        "long4_2g": huge_declared(b"\x8b", "<i", 0x7FFFFFFF),
        "frame_2e62": huge_declared(b"\x95", "<Q", 1 << 62),
        "binstring_neg": huge_declared(b"T", "<i", -5),
        "long4_neg": huge_declared(b"\x8b", "<i", -1),
        "text_line_no_newline": P.proto(0) + b"V" + b"x" * (1 << 20),
    }


def safetensors(header: dict | bytes, data: bytes = b"", *, n: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    return struct.pack("<Q", len(raw) if n is None else n) + raw + data


def lying_safetensors() -> dict[str, bytes]:
    t = {"dtype": "F32", "shape": [2, 2], "data_offsets": [0, 16]}
    return {
        "offsets_past_end": safetensors({"a": {**t, "data_offsets": [0, 1 << 40]}}, bytes(16)),
        "size_mismatch": safetensors({"a": {**t, "shape": [1000, 1000]}}, bytes(16)),
        "overlap": safetensors({"a": t, "b": t}, bytes(16)),
        "hole": safetensors({"a": {**t, "data_offsets": [8, 24]}}, bytes(24)),
        "reversed": safetensors({"a": {**t, "data_offsets": [16, 0]}}, bytes(16)),
        "negative_shape": safetensors({"a": {**t, "shape": [-4], "data_offsets": [0, 16]}},
                                      bytes(16)),
        "shape_overflow": safetensors({"a": {**t, "shape": [1 << 32, 1 << 32, 1 << 32],
                                             "data_offsets": [0, 16]}}, bytes(16)),
        "n_huge": safetensors({"a": t}, bytes(16), n=1 << 62),
        "n_past_end": safetensors({"a": t}, bytes(16), n=10_000),
        "n_over_spec": safetensors({"a": t}, bytes(16), n=100_000_001),
        "not_json": safetensors(b'{"a": {"dtype": "F32", "shape": [2,', bytes(16)),
        "duplicate_names": safetensors(b'{"a":{"dtype":"F32","shape":[2,2],"data_offsets":'
                                       b'[0,16]},"a":{"dtype":"F32","shape":[2,2],'
                                       b'"data_offsets":[0,16]}}', bytes(16)),
        "unknown_dtype": safetensors({"a": {**t, "dtype": "F128"}}, bytes(16)),
        "trailing_bytes": safetensors({"a": t}, bytes(20)),
        "metadata_not_str": safetensors({"__metadata__": {"k": 1}, "a": t}, bytes(16)),
        "deep_json": safetensors(b"{" + b'"a":[' * 100_000 + b"]" * 100_000 + b"}"),
    }


def lfs_pointer_over_1k() -> bytes:
    return (b"version https://git-lfs.github.com/spec/v1\n"
            b"oid sha256:" + b"a" * 64 + b"\nsize 12345\n" + b"x-padding " + b"p" * 1100 + b"\n")


# Hostile in cost only: a conforming reader may read these, as long as it stays cheap.
MAY_READ = frozenset({"memo_far_index.pkl"})

HOSTILE: dict[str, Callable[[], bytes]] = {
    "storage_claims_1e12.pt": storage_claims_1e12,
    "deflate_bomb.pt": deflate_bomb,
    "deflate_bomb_lying_small.pt": lambda: deflate_bomb(declared=100),
    "deep_lists.pkl": deep_lists,
    "deep_tuples.pkl": deep_tuples,
    "deep_dicts.pkl": deep_dicts,
    "deep_opaque.pkl": deep_opaque,
    "memo_flood.pkl": memo_flood,
    "memo_far_index.pkl": memo_far_index,
    **{f"{k}.pkl": (lambda v=v: v) for k, v in huge_strings().items()},
    **{f"st_{k}.safetensors": (lambda v=v: v) for k, v in lying_safetensors().items()},
    "lfs_over_1k.pt": lfs_pointer_over_1k,
}


def peak_rss_mib() -> float:
    """This process's peak resident set. Linux's ``VmHWM`` belongs to the address space and
    starts afresh at exec; ``ru_maxrss`` does not (a child forked from a large pytest process
    inherits the parent's high-water mark), so ru_maxrss is only the fallback."""
    import resource

    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(directory: str) -> None:
    """Write every hostile file, read each (read_path + analyze), print one JSON line of
    outcomes, wall time and peak RSS. Used by the resource-bound test in a subprocess."""
    from ckpt_guard.analyze import analyze
    from ckpt_guard.read import UnreadableError, read_path

    d = Path(directory)
    outcomes: dict[str, str] = {}
    rss_after: dict[str, int] = {}  # high-water mark after each file: who raised it
    start = time.perf_counter()
    for name, build in HOSTILE.items():
        path = d / name
        path.write_bytes(build())
        try:
            analyze(read_path(str(path)))
            outcomes[name] = "read"
        except UnreadableError as e:
            outcomes[name] = f"unreadable: {e}"
        except Exception as e:  # noqa: BLE001 - reported to the test, which fails on it
            outcomes[name] = f"CRASH {type(e).__name__}: {e}"
        path.unlink()
        rss_after[name] = round(peak_rss_mib())
    wall = time.perf_counter() - start
    rss_mib = peak_rss_mib()
    print(json.dumps({"outcomes": outcomes, "wall_s": wall, "peak_rss_mib": rss_mib,
                      "rss_after_mib": rss_after}))


if __name__ == "__main__":
    main(sys.argv[1])
