"""Structure-aware mutations shared by the hypothesis test and the long-run harness.

Besides raw byte edits, a zip seed can have one of its members (data.pkl, constants.pkl…)
mutated and the archive re-emitted with correct CRCs and sizes, so mutations reach the pickle
interpreter instead of dying in the zip parser.
"""

from __future__ import annotations

import io
import pickletools
import random
import zipfile
import zlib

from tests.adversarial import containers as Z

# Every opcode byte the pickle protocol defines (protocols 0-5).
OPCODES = bytes(sorted({op.code.encode("latin1")[0] for op in pickletools.opcodes}))
INTERESTING = [0, 1, 0x7F, 0x80, 0xFF, 0x7FFFFFFF, 0xFFFFFFFF, 1 << 31, 1 << 62]


def mutate_bytes(data: bytes, rng: random.Random, n_ops: int = 3) -> bytes:
    b = bytearray(data)
    for _ in range(n_ops):
        kind = rng.randrange(8)
        pos = rng.randrange(len(b) + 1) if b else 0
        if kind == 0 and b:  # bit flip
            i = min(pos, len(b) - 1)
            b[i] ^= 1 << rng.randrange(8)
        elif kind == 1 and b:  # random byte
            b[min(pos, len(b) - 1)] = rng.randrange(256)
        elif kind == 2 and b:  # opcode swap
            b[min(pos, len(b) - 1)] = rng.choice(OPCODES)
        elif kind == 3:  # insertion of random bytes or an opcode
            ins = bytes([rng.choice(OPCODES)]) if rng.random() < 0.5 else rng.randbytes(
                rng.randrange(1, 9))
            b[pos:pos] = ins
        elif kind == 4 and b:  # deletion
            del b[pos:pos + rng.randrange(1, 9)]
        elif kind == 5:  # truncation
            del b[pos:]
        elif kind == 6 and b:  # duplicate a chunk
            end = min(len(b), pos + rng.randrange(1, 33))
            b[pos:pos] = b[pos:end]
        elif b:  # interesting little-endian integer overwrite
            v = rng.choice(INTERESTING).to_bytes(8, "little")[: rng.choice((1, 2, 4, 8))]
            b[pos:pos + len(v)] = v
    return bytes(b)


def members(data: bytes) -> list[tuple[str, bytes]] | None:
    if not data.startswith(b"PK\x03\x04"):
        return None
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            return [(i.filename, z.read(i)) for i in z.infolist()]
    except (zipfile.BadZipFile, ValueError, NotImplementedError, OSError, EOFError, zlib.error,
            RuntimeError, KeyError):
        return None


def mutate(data: bytes, rng: random.Random) -> bytes:
    """One structure-aware mutation round of ``data``."""
    ms = members(data)
    if ms and rng.random() < 0.6:
        pkl = [i for i, (n, _) in enumerate(ms) if n.endswith(".pkl")] or list(range(len(ms)))
        i = rng.choice(pkl)
        name, body = ms[i]
        ms[i] = (name, mutate_bytes(body, rng, rng.randrange(1, 4)))
        return Z.zip_bytes([Z.Member(n, d) for n, d in ms])
    return mutate_bytes(data, rng, rng.randrange(1, 5))


def warm_codecs() -> None:
    """Text opcodes make the reader decode with codecs Python imports lazily
    (encodings.raw_unicode_escape…): import them before watching sys.modules."""
    import codecs

    for enc in ("raw_unicode_escape", "unicode_escape", "latin1", "ascii", "utf-8"):
        b"".decode(enc)
    codecs.escape_decode(b"")
