"""torch's first attempt at any file that is not a zip: the PyTorch <= 0.3 tar format.

``torch.serialization._legacy_load`` (torch 2.13), for a file with a descriptor opened at
offset 0, calls ``tarfile.open(fileobj=f, mode="r:", format=PAX_FORMAT)`` and, if Python's
``tarfile`` accepts the first header (old V7 headers without the ``ustar`` magic too),
unpickles from the tar's members, in this order:

* ``storages`` (extracted, read unbuffered): a count pickle, then per storage an argument
  pickle ``(key, location, storage_type)`` followed by an int64 element count and the raw
  data, then the ``storage_views`` pickle;
* ``tensors``: a count pickle, then per tensor an argument pickle ``(key, storage_id,
  tensor_type)`` followed by int32 ndim, 4 padding bytes, ndim int64 sizes, ndim int64
  strides and an int64 storage offset;
* ``pickle``: the object pickle.

Whether the file "is a tar" is decided here by Python's own ``tarfile`` exactly as torch calls
it (parsing headers executes nothing). Any ``TarError`` raised inside that path makes torch
start over and unpickle the file from offset 0 — so wherever that could happen (a member
that is not a plain regular file inside the file, a frame past a STOP, a value we cannot
evaluate), the file fails closed instead of being guessed at.
"""

from __future__ import annotations

import struct
import tarfile
from typing import Any, BinaryIO

from ckpt_guard.read import pickle_vm
from ckpt_guard.read.checkpoint import Checkpoint, GlobalUse, UnreadableError
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.positioned import PositionedReader
from ckpt_guard.read.rebuild import STORAGE_DTYPES
from ckpt_guard.read.tree import DTYPE_SIZES, GlobalRef

_PLAIN_FILE_TYPES = (tarfile.REGTYPE, tarfile.AREGTYPE, tarfile.CONTTYPE)
_MEMBERS = ("storages", "tensors", "pickle")
_MAX_TAR_MEMBERS = 100_000


def open_like_torch(fh: BinaryIO) -> tarfile.TarFile | None:
    """The :class:`tarfile.TarFile` torch's legacy loader would get for ``fh`` (positioned
    anywhere; read from offset 0), or ``None`` when ``tarfile`` refuses it (torch then reads
    the file as a pickle stream)."""
    fh.seek(0)
    try:
        return tarfile.open(fileobj=fh, mode="r:", format=tarfile.PAX_FORMAT)
    except tarfile.TarError:
        return None


def header_checksum_ok(block: bytes) -> bool:
    """Whether a 512-byte block carries a valid tar header checksum (signed or unsigned sum,
    as ``tarfile`` accepts): any header a tar reader of any Python version could take."""
    if len(block) < 512 or not block.strip(b"\0"):
        return False
    field = block[148:156].split(b"\0", 1)[0].strip()
    try:
        want = int(field or b"0", 8)
    except ValueError:
        return False
    unsigned = 256 + sum(block[:148]) + sum(block[156:512])
    signed = 256 + sum(struct.unpack_from("148b", block)) + sum(
        struct.unpack_from("356b", block, 156))
    return want in (unsigned, signed)


class TarVerdict(Exception):
    """Internal: stop emulating torch here. ``closed`` tells whether the file must fail closed
    (torch could go on to unpickle something we did not judge) rather than merely stop (torch
    raises here, having unpickled only what was judged)."""

    def __init__(self, message: str, *, closed: bool, member: str) -> None:
        super().__init__(message)
        self.closed = closed
        self.member = member


def read_torch_tar(path: str, fh: BinaryIO, size: int, limits: Limits,
                   tar: tarfile.TarFile) -> Checkpoint:
    """Judge every pickle torch's tar loader would unpickle from ``tar`` (format ``unknown``:
    the pickles are judged, the tensors are not mapped). A path torch could leave for the
    pickle-stream fallback, or one we cannot follow exactly, fails closed; one where torch
    raises is an :class:`UnreadableError` carrying ``partial_globals`` (what ran before)."""
    ckpt = Checkpoint(path=path, format="unknown", size_bytes=size)
    try:
        _judge(ckpt, PositionedReader(fh, size), size, limits, tar)
    except TarVerdict as v:
        if v.closed:
            fail_closed(ckpt, "tar", v.member, f"PyTorch <= 0.3 tar checkpoint: {v}")
            return ckpt
        # torch raises here: nothing after runs. Unreadable, with what ran kept for the verdict.
        err = UnreadableError(f"PyTorch <= 0.3 tar checkpoint that torch.load cannot load: {v}")
        err.partial_globals = list(ckpt.globals)  # type: ignore[attr-defined]
        raise err from v
    ckpt.notes.append("PyTorch <= 0.3 tar checkpoint: every pickle torch.load would unpickle "
                      "was judged; its tensors are not read (not supported by fix)")
    return ckpt


def fail_closed(ckpt: Checkpoint, what: str, member: str, reason: str) -> None:
    """Make ``ckpt`` fail as ``unsafe-pickle``: torch could read it differently from us."""
    ckpt.globals.append(GlobalUse("<container>", what, "container", member))
    ckpt.notes.append(f"fails closed: {reason}")


def _judge(ckpt: Checkpoint, src: PositionedReader, size: int, limits: Limits,
           tar: tarfile.TarFile) -> None:
    members: dict[str, tarfile.TarInfo] = {}
    try:
        count = 0
        while (info := tar.next()) is not None:
            count += 1
            if count > _MAX_TAR_MEMBERS:
                raise TarVerdict(f"more than {_MAX_TAR_MEMBERS} members", closed=True, member="")
            if info.name in _MEMBERS:  # getmember: the last of equal names wins
                members[info.name] = info
    except tarfile.TarError as e:  # torch's getmember raises it too: back to offset 0
        raise TarVerdict(f"tar headers fail to parse ({e})", closed=True, member="") from e
    except (ValueError, UnicodeError, OverflowError) as e:
        raise TarVerdict(f"tar headers fail to parse ({type(e).__name__})", closed=True,
                         member="") from e

    def member(name: str) -> bytes:  # torch asks for each member only when it gets there
        info = members.get(name)
        if info is None:  # getmember raises KeyError, which torch does not catch
            raise TarVerdict(f"no {name!r} member", closed=False, member=name)
        return _member_bytes(src, size, info, limits)

    storages = member("storages")
    pos, n_storages = _value(ckpt, storages, 0, limits, "storages", int)
    for i in range(n_storages):
        pos, args = _value(ckpt, storages, pos, limits, f"storages[{i}]", tuple)
        elem = _element_size(args, f"storages[{i}]")
        numel = _int64(storages, pos, "storages")
        if numel < 0:
            raise TarVerdict("negative storage size", closed=False, member="storages")
        pos += 8 + numel * elem
        if pos > len(storages):  # torch reads fewer bytes than asked: it raises
            raise TarVerdict("storage data past the member's end", closed=False,
                             member="storages")
    _value(ckpt, storages, pos, limits, "storages[views]", object, last=True)

    tensors = member("tensors")
    pos, n_tensors = _value(ckpt, tensors, 0, limits, "tensors", int)
    for i in range(n_tensors):
        pos, args = _value(ckpt, tensors, pos, limits, f"tensors[{i}]", tuple)
        if len(args) != 3:
            raise TarVerdict("tensor arguments are not a triple", closed=False, member="tensors")
        raw = tensors[pos:pos + 4]
        if len(raw) < 4:
            raise TarVerdict("truncated tensor header", closed=False, member="tensors")
        (ndim,) = struct.unpack("<i", raw)
        if ndim < 0:
            raise TarVerdict("negative ndim", closed=False, member="tensors")
        pos += 8 + 16 * ndim + 8
        if pos > len(tensors):
            raise TarVerdict("truncated tensor header", closed=False, member="tensors")

    res = _pickle(ckpt, member("pickle"), 0, limits, "pickle", _keep_pid)
    ckpt.root = res.root
    ckpt.pickle_protocol = res.protocol


def _member_bytes(src: PositionedReader, size: int, info: tarfile.TarInfo,
                  limits: Limits) -> bytes:
    # Only a plain regular file whose data lies inside the file reads the same for torch on
    # every Python: links may point outside the archive, sparse maps and unknown types are
    # assembled differently, and data past the end raises ReadError (a TarError ⇒ torch
    # falls back to unpickling the file from offset 0).
    if info.type not in _PLAIN_FILE_TYPES or info.sparse is not None:
        raise TarVerdict(f"member {info.name!r} is not a plain file (type {info.type!r})",
                         closed=True, member=info.name)
    if info.offset_data + info.size > size:
        raise TarVerdict(f"member {info.name!r} ends past the end of the file", closed=True,
                         member=info.name)
    if info.size > limits.max_pickle_bytes:
        raise TarVerdict(f"member {info.name!r} is larger than the pickle limit", closed=True,
                         member=info.name)
    return src.read_at(info.offset_data, info.size)


def _keep_pid(pid: object) -> object:
    return pid


def _pickle(ckpt: Checkpoint, data: bytes, pos: int, limits: Limits, member: str,
            persistent_load: Any = None) -> pickle_vm.PickleResult:
    """One pickle at ``pos`` of a member; ``member`` may add the role (``storages[0]``): the
    globals and the judged record name the tar member itself, offsets are within it."""
    try:
        res = pickle_vm.run(data, pos, persistent_load=persistent_load, limits=limits,
                            member=member.split("[")[0])
    except UnreadableError as e:
        ckpt.globals.extend(getattr(e, "partial_globals", None) or [])
        if pos >= len(data):  # nothing left: pickle.load raises EOFError, torch stops
            raise TarVerdict(f"member {member.split('[')[0]!r} ends before pickle {member}",
                             closed=False, member=member) from e
        # A pickle we cannot read to its end: what torch does with it is not certain.
        raise TarVerdict(f"pickle {member} cannot be read ({e})", closed=True,
                         member=member) from e
    ckpt.globals.extend(res.globals)
    ckpt.pickles.append(res.judged)
    return res


def _value(ckpt: Checkpoint, data: bytes, pos: int, limits: Limits, member: str,
           want: type, *, last: bool = False) -> tuple[int, Any]:
    """One pickle of a member read unbuffered (no ``peek``): its value, and where torch's
    next read starts — only known exactly when no frame runs past the STOP."""
    res = _pickle(ckpt, data, pos, limits, member)
    if not last and res.frames_end > res.end:
        raise TarVerdict(f"a frame in pickle {member} runs past its STOP", closed=True,
                         member=member)
    value = res.root
    if want is int:
        if type(value) not in (int, bool):
            raise TarVerdict(f"count in {member} is {type(value).__name__}, not an int",
                             closed=opaque(value), member=member)
        if value > 10_000_000:
            raise TarVerdict(f"count in {member} is too large", closed=True, member=member)
    elif want is tuple and type(value) not in (tuple, list):
        raise TarVerdict(f"arguments in {member} are {type(value).__name__}", closed=True,
                         member=member)
    return res.end, value


def opaque(value: Any) -> bool:
    """A value built by a call we do not run: torch could compare/iterate it differently."""
    return type(value) not in (int, bool, float, complex, str, bytes, bytearray, tuple, list,
                               dict, set, frozenset, type(None))


def _element_size(args: Any, member: str) -> int:
    if len(args) != 3:
        raise TarVerdict("storage arguments are not a triple", closed=False, member=member)
    stype = args[2]
    # torch reads storage_type._dtype of whatever this is: known for torch's typed storages.
    dtype = STORAGE_DTYPES.get(stype.name) if type(stype) is GlobalRef else None
    if (dtype is None or stype.name in ("UntypedStorage", "TypedStorage")
            or not stype.module.startswith("torch")):
        raise TarVerdict("storage type is not a torch typed storage class", closed=True,
                         member=member)
    return DTYPE_SIZES[dtype]


def _int64(data: bytes, pos: int, member: str) -> int:
    raw = data[pos:pos + 8]
    if len(raw) < 8:
        raise TarVerdict("truncated storage size", closed=False, member=member)
    return struct.unpack("<q", raw)[0]
