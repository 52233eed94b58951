"""safetensors files: validate the JSON header exactly as the format's spec and reference
implementation do (huggingface/safetensors ``tensor.rs``); never read the data buffer.

Layout: 8-byte little-endian u64 ``N``, ``N`` bytes of UTF-8 JSON starting with ``{``, then the
data buffer. Header: ``{name: {"dtype", "shape", "data_offsets": [begin, end]}}`` plus an
optional ``"__metadata__"`` (str → str). Offsets are relative to the buffer, contiguous in
offset order with no holes or overlaps, ``end - begin == numel * bits / 8``, and the last end
is the end of the file.
"""

from __future__ import annotations

import json
import struct

from ckpt_guard.read.checkpoint import Checkpoint, LimitExceeded, UnreadableError
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.tree import Storage, TensorRef, contiguous_stride
from ckpt_guard.vocab import Format

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any, BinaryIO

# safetensors dtype code → (torch dtype name, bits per element).
DTYPES: dict[str, tuple[str, int]] = {
    "BOOL": ("bool", 8),
    "U8": ("uint8", 8), "I8": ("int8", 8),
    "F8_E5M2": ("float8_e5m2", 8), "F8_E4M3": ("float8_e4m3fn", 8),
    "F8_E5M2FNUZ": ("float8_e5m2fnuz", 8), "F8_E4M3FNUZ": ("float8_e4m3fnuz", 8),
    "F8_E8M0": ("float8_e8m0fnu", 8),
    "I16": ("int16", 16), "U16": ("uint16", 16), "F16": ("float16", 16),
    "BF16": ("bfloat16", 16),
    "I32": ("int32", 32), "U32": ("uint32", 32), "F32": ("float32", 32),
    "I64": ("int64", 64), "U64": ("uint64", 64), "F64": ("float64", 64),
    "C64": ("complex64", 64),
    # Sub-byte types of newer releases: storages are counted in bytes (dtype uint8).
    "F4": ("float4_e2m1fn_x2", 4), "F6_E2M3": ("float6_e2m3fn", 6),
    "F6_E3M2": ("float6_e3m2fn", 6),
}
# torch dtype name → safetensors code (for writers).
CODES: dict[str, str] = {torch_name: code for code, (torch_name, _) in DTYPES.items()}

HEADER_LEN_BYTES = 8


def looks_like_safetensors(head: bytes, size: int) -> bool:
    """Whether ``head`` starts like a safetensors file of ``size`` bytes."""
    if size < HEADER_LEN_BYTES + 2 or len(head) < HEADER_LEN_BYTES + 1:
        return False
    (n,) = struct.unpack("<Q", head[:HEADER_LEN_BYTES])
    return 2 <= n <= size - HEADER_LEN_BYTES and head[HEADER_LEN_BYTES:HEADER_LEN_BYTES + 1] == b"{"


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise UnreadableError(f"invalid safetensors header: duplicate key {k!r}")
        out[k] = v
    return out


def _bad(msg: str) -> UnreadableError:
    return UnreadableError(f"invalid safetensors header: {msg}")


def _is_uint(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0


def parse_header(raw: bytes, buffer_len: int) -> tuple[dict[str, dict[str, Any]], dict[str, str] | None]:
    """Validate a header's bytes against a data buffer of ``buffer_len`` bytes.

    Returns ``(tensors, metadata)``: name → ``{"dtype", "shape", "data_offsets"}`` in header
    order, and ``__metadata__`` or ``None``. Raises :class:`UnreadableError` on any violation.
    """
    if not raw.startswith(b"{"):
        raise _bad("does not start with '{'")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise _bad("not UTF-8") from e
    try:
        header = json.loads(text, object_pairs_hook=_no_duplicates)
    except (ValueError, RecursionError) as e:
        raise _bad(f"not JSON ({str(e).splitlines()[0][:80]})") from e
    if not isinstance(header, dict):
        raise _bad("not a JSON object")
    metadata = header.pop("__metadata__", None)
    if metadata is not None and (not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise _bad("__metadata__ must map strings to strings")
    tensors: dict[str, dict[str, Any]] = {}
    spans: list[tuple[int, int, str]] = []
    for name, info in header.items():
        if not isinstance(info, dict):
            raise _bad(f"entry {name!r} is not an object")
        dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if dtype not in DTYPES:
            raise _bad(f"tensor {name!r} has unknown dtype {dtype!r}")
        if not isinstance(shape, list) or not all(_is_uint(d) for d in shape):
            raise _bad(f"tensor {name!r} has an invalid shape")
        if (not isinstance(offsets, list) or len(offsets) != 2
                or not all(_is_uint(o) for o in offsets)):
            raise _bad(f"tensor {name!r} has invalid data_offsets")
        begin, end = offsets
        if end < begin:
            raise _bad(f"tensor {name!r} ends before it begins")
        numel = 1
        for d in shape:
            numel *= d
        bits = DTYPES[dtype][1]
        if (numel * bits) % 8:
            raise _bad(f"tensor {name!r}: {numel} elements of {dtype} are not whole bytes")
        if end - begin != numel * bits // 8:
            raise _bad(f"tensor {name!r}: {end - begin} bytes for shape {shape} of {dtype} "
                       f"(expected {numel * bits // 8})")
        tensors[name] = {"dtype": dtype, "shape": tuple(shape), "data_offsets": (begin, end)}
        spans.append((begin, end, name))
    # Contiguous from 0, no holes, no overlaps (same rule as safetensors' validate()).
    spans.sort()
    expected = 0
    for begin, end, name in spans:
        if begin != expected:
            what = "overlaps the previous one" if begin < expected else "leaves a hole before it"
            raise _bad(f"tensor {name!r} at offset {begin} {what} (expected {expected})")
        expected = end
    if expected != buffer_len:
        raise _bad(f"tensors cover {expected} bytes but the data buffer holds {buffer_len}")
    return tensors, metadata




def read_safetensors(path: str, fh: BinaryIO, size: int, limits: Limits) -> Checkpoint:
    """Read a safetensors file's header (only) into a :class:`Checkpoint`.

    ``root`` is a dict name → :class:`TensorRef`, each with its own :class:`Storage` whose
    ``offset`` is absolute in the file. ``metadata`` holds ``__metadata__`` (or ``None``),
    ``header_len`` (N) and ``data_start`` (8 + N).
    """
    fh.seek(0)
    prefix = fh.read(HEADER_LEN_BYTES)
    if len(prefix) < HEADER_LEN_BYTES:
        raise UnreadableError("truncated safetensors file: no header length")
    (n,) = struct.unpack("<Q", prefix)
    if n > limits.max_safetensors_header:
        raise LimitExceeded(f"safetensors header of {n} bytes exceeds the limit "
                            f"({limits.max_safetensors_header})")
    if n > size - HEADER_LEN_BYTES:
        raise UnreadableError(f"truncated safetensors file: header claims {n} bytes, file has "
                              f"{size - HEADER_LEN_BYTES} after the length")
    raw = fh.read(n)
    if len(raw) != n:
        raise UnreadableError("truncated safetensors file while reading the header")
    data_start = HEADER_LEN_BYTES + n
    tensors, metadata = parse_header(raw, size - data_start)
    if len(tensors) > limits.max_container:
        raise LimitExceeded(f"safetensors header lists {len(tensors)} tensors")
    root: dict[str, TensorRef] = {}
    storages: dict[str, Storage] = {}
    for name, info in tensors.items():
        torch_dtype, bits = DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        if bits % 8:  # sub-byte packing: account in bytes
            storage = Storage(key=name, dtype="uint8", numel=end - begin,
                              offset=data_start + begin)
        else:
            storage = Storage(key=name, dtype=torch_dtype, numel=(end - begin) // (bits // 8),
                              offset=data_start + begin)
        storages[name] = storage
        shape = info["shape"]
        root[name] = TensorRef(storage=storage, dtype=torch_dtype, shape=shape,
                               stride=contiguous_stride(shape))
    return Checkpoint(path=path, format=Format.SAFETENSORS, size_bytes=size, root=root,
                      storages=storages,
                      metadata={"__metadata__": metadata, "header_len": n,
                                "data_start": data_start})
