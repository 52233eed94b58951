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

import dataclasses
import struct
import tarfile
from typing import Any, BinaryIO

from ckpt_guard.read import pickle_vm
from ckpt_guard.read.checkpoint import Checkpoint, GlobalUse, UnreadableError
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.positioned import PositionedReader
from ckpt_guard.read.rebuild import STORAGE_DTYPES
from ckpt_guard.read.tree import DTYPE_SIZES, GlobalRef
from ckpt_guard.vocab import Format

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
    ckpt = Checkpoint(path=path, format=Format.UNKNOWN, size_bytes=size)
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

    def member(name: str) -> _Member:  # torch asks for each member only when it gets there
        info = members.get(name)
        if info is None:  # getmember raises KeyError, which torch does not catch
            raise TarVerdict(f"no {name!r} member", closed=False, member=name)
        return _Member(src, size, info)

    storages = member("storages")
    pos, n_storages = _value(ckpt, storages, 0, limits, "storages", int)
    for i in range(n_storages):
        pos, args = _value(ckpt, storages, pos, limits, f"storages[{i}]", tuple)
        elem = _element_size(args, f"storages[{i}]")
        numel = _int64(storages.read(pos, 8), "storages")
        if numel < 0:
            raise TarVerdict("negative storage size", closed=False, member="storages")
        pos += 8 + numel * elem  # the raw data is skipped, never read
        if pos > storages.size:  # torch reads fewer bytes than asked: it raises
            raise TarVerdict("storage data past the member's end", closed=False,
                             member="storages")
    _value(ckpt, storages, pos, limits, "storages[views]", object, last=True)

    tensors = member("tensors")
    pos, n_tensors = _value(ckpt, tensors, 0, limits, "tensors", int)
    for i in range(n_tensors):
        pos, args = _value(ckpt, tensors, pos, limits, f"tensors[{i}]", tuple)
        if len(args) != 3:
            raise TarVerdict("tensor arguments are not a triple", closed=False, member="tensors")
        raw = tensors.read(pos, 4)
        if len(raw) < 4:
            raise TarVerdict("truncated tensor header", closed=False, member="tensors")
        (ndim,) = struct.unpack("<i", raw)
        if ndim < 0:
            raise TarVerdict("negative ndim", closed=False, member="tensors")
        pos += 8 + 16 * ndim + 8
        if pos > tensors.size:
            raise TarVerdict("truncated tensor header", closed=False, member="tensors")

    res = _pickle(ckpt, member("pickle"), 0, limits, "pickle", _keep_pid)
    ckpt.root = res.root
    ckpt.pickle_protocol = res.protocol


class _Member:
    """A tar member's data, read in windows (raw storage data is skipped, never loaded).

    Only a plain regular file whose data lies inside the file reads the same for torch on
    every Python: links may point outside the archive, sparse maps and unknown types are
    assembled differently, and data past the end raises ReadError (a TarError ⇒ torch falls
    back to unpickling the file from offset 0). Anything else fails closed."""

    def __init__(self, src: PositionedReader, file_size: int, info: tarfile.TarInfo) -> None:
        if info.type not in _PLAIN_FILE_TYPES or info.sparse is not None:
            raise TarVerdict(f"member {info.name!r} is not a plain file (type {info.type!r})",
                             closed=True, member=info.name)
        if info.offset_data + info.size > file_size:
            raise TarVerdict(f"member {info.name!r} ends past the end of the file",
                             closed=True, member=info.name)
        self.src, self.start, self.size, self.name = src, info.offset_data, info.size, info.name

    def read(self, pos: int, length: int) -> bytes:
        length = min(length, self.size - pos)
        return self.src.read_at(self.start + pos, length) if length > 0 else b""


def _keep_pid(pid: object) -> object:
    return pid


def _pickle(ckpt: Checkpoint, m: _Member, pos: int, limits: Limits, role: str,
            persistent_load: Any = None) -> pickle_vm.PickleResult:
    """The pickle at ``pos`` of member ``m`` (``role`` names it in messages: ``storages[0]``).
    Globals and the judged record name the member; offsets in the result are within it."""
    want = 64 * 1024
    while True:
        data = m.read(pos, want)
        try:
            res = pickle_vm.run(data, 0, persistent_load=persistent_load, limits=limits,
                                member=m.name)
            break
        except pickle_vm.PickleTruncated as e:
            if pos + len(data) < m.size and len(data) < limits.max_pickle_bytes:
                want *= 4
                continue
            err: UnreadableError = e
        except UnreadableError as e:
            err = e
        ckpt.globals.extend(getattr(err, "partial_globals", None) or [])
        if pos >= m.size:  # nothing left: pickle.load raises EOFError, torch stops
            raise TarVerdict(f"member {m.name!r} ends before pickle {role}", closed=False,
                             member=m.name) from err
        # A pickle we cannot read to its end: what torch does with it is not certain.
        raise TarVerdict(f"pickle {role} cannot be read ({err})", closed=True,
                         member=m.name) from err
    judged = res.judged and dataclasses.replace(res.judged, offset=pos)
    res = dataclasses.replace(res, end=pos + res.end, judged=judged,
                              frames_end=pos + res.frames_end if res.frames_end else 0)
    ckpt.globals.extend(res.globals)
    ckpt.pickles.append(res.judged)
    return res


def _value(ckpt: Checkpoint, m: _Member, pos: int, limits: Limits, role: str,
           want: type, *, last: bool = False) -> tuple[int, Any]:
    """One pickle of a member read unbuffered (no ``peek``): its value, and where torch's
    next read starts — only known exactly when no frame runs past the STOP."""
    res = _pickle(ckpt, m, pos, limits, role)
    if not last and res.frames_end > res.end:
        raise TarVerdict(f"a frame in pickle {role} runs past its STOP", closed=True,
                         member=m.name)
    value = res.root
    if want is int:
        if type(value) not in (int, bool):
            raise TarVerdict(f"count in {role} is {type(value).__name__}, not an int",
                             closed=opaque(value), member=m.name)
        if value > 10_000_000:
            raise TarVerdict(f"count in {role} is too large", closed=True, member=m.name)
    elif want is tuple and type(value) not in (tuple, list):
        raise TarVerdict(f"arguments in {role} are {type(value).__name__}", closed=True,
                         member=m.name)
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


def _int64(raw: bytes, member: str) -> int:
    if len(raw) < 8:
        raise TarVerdict("truncated storage size", closed=False, member=member)
    return struct.unpack("<q", raw)[0]
