"""torch.save's zip format (and TorchScript archives), read from metadata only.

The central directory comes from :mod:`zipfile` (it handles ZIP64); pickle members are read
through their local headers as torch's miniz reader does (no CRC or name checks, so we parse
what torch would load). Storage records are never read: their data offset comes from the
30-byte local header, their size from the central directory.

Layout facts (caffe2/serialize/inline_container.cc, torch/serialization.py): the archive's
top folder is whatever precedes the first ``/`` of the FIRST entry; ``<top>/data.pkl`` is the
object; storages live in ``<top>/data/<key>``; ``<top>/byteorder`` (absent ⇒ little). A
TorchScript archive (``torch.jit.save``) also has ``<top>/constants.pkl`` and ``<top>/code/``;
its :attr:`Checkpoint.root` is ``{"data": <data.pkl tree>, "constants": <constants.pkl
tree>, …}`` with one entry per top-level ``<name>.pkl`` (``traced_inputs`` for traced
modules), whose storages are keyed ``<name>/<key>`` (``data`` storages keep plain keys).

Every other member that ends in ``.pkl`` or starts like a pickle (``\\x80`` + protocol) is
parsed too, so that globals hidden in a second pickle are reported (attributed to that
member); a member that fails to parse adds a note and its partial globals, never an error.
"""

from __future__ import annotations

import re
import struct
import zipfile
import zlib
from typing import Any, BinaryIO

from ckpt_guard.read import pickle_vm, rebuild
from ckpt_guard.read.checkpoint import Checkpoint, LimitExceeded, UnreadableError
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.positioned import PositionedReader
from ckpt_guard.read.tree import Storage

_LOCAL = struct.Struct("<4sHHHHHIIIHH")  # local file header, 30 bytes
_LOCAL_SIG = b"PK\x03\x04"
_RECORD = re.compile(r"[^/]+/\d+")


def read_torch_zip(path: str, fh: BinaryIO, size: int, limits: Limits) -> Checkpoint:
    """Read a torch zip checkpoint or TorchScript archive (format ``torch-zip`` or
    ``torchscript``). Raises :class:`UnreadableError` with a one-line message."""
    infos = _central_directory(fh, limits)
    reader = _Reader(fh, size, limits)
    first = infos[0].filename
    if "/" not in first:
        raise UnreadableError(f"zip archive is not a torch checkpoint: first entry {first!r} "
                              "is not in a folder")
    top = first.split("/", 1)[0]
    # torch's miniz finds a record by its name compared case-insensitively; of several
    # matching entries it loads the last in practice. Keyed by lower-case name, the last
    # entry wins; earlier ones are scanned as extra members.
    by_name: dict[str, zipfile.ZipInfo] = {}
    notes: list[str] = []
    for info in infos:
        key = info.filename.lower()
        if key in by_name:
            notes.append(f"duplicate zip entry {info.filename!r} (names compare "
                         "case-insensitively)")
        by_name[key] = info
    data_name = f"{top}/data.pkl"
    if data_name.lower() not in by_name:
        raise UnreadableError(f"zip archive has no {data_name}: not a torch checkpoint")
    is_script = f"{top}/constants.pkl".lower() in by_name and any(
        n.startswith(f"{top}/code/".lower()) for n in by_name)

    ckpt = Checkpoint(path=path, format="torchscript" if is_script else "torch-zip",
                      size_bytes=size, archive_prefix=top, notes=notes)
    ckpt.byteorder = _byteorder(reader, by_name.get(f"{top}/byteorder".lower()))
    for meta_name, key in (("version", "version"), (".format_version", "format_version"),
                           (".storage_alignment", "storage_alignment"),
                           (".data/serialization_id", "serialization_id")):
        info = by_name.get(f"{top}/{meta_name}".lower())
        if info is not None and info.file_size <= 256:
            text = reader.member(info, 256).decode("utf-8", "replace").strip()
            ckpt.metadata[key] = text

    storages: dict[str, Storage] = {}
    records: dict[str, str] = {}  # storage key -> record name
    lenient: set[str] = set()  # storage keys whose short record is only noted
    data_info = by_name[data_name.lower()]
    parsed = {id(data_info)}
    data_res = _parse(reader, data_info, storages, limits)
    ckpt.pickle_protocol = data_res.protocol
    ckpt.globals.extend(data_res.globals)
    ckpt.pickles.append(data_res.judged)
    records.update((k, f"{top}/data/{k}") for k in storages)
    ckpt.root = data_res.root

    if is_script:
        # torch.jit keeps one pickle archive per top-level <name>.pkl, its tensors in
        # <top>/<name>/<key>: data, constants, traced_inputs (torch writes traced inputs'
        # records empty: only noted).
        ckpt.notes.append("TorchScript archive (torch.jit.save); its code/ is not checked")
        ckpt.root = {"data": data_res.root}
        for info in infos:
            rel = info.filename[len(top) + 1:] if info.filename.startswith(top + "/") else ""
            if not rel.endswith(".pkl") or "/" in rel or rel == "data.pkl" or id(info) in parsed:
                continue
            if by_name[info.filename.lower()] is not info:
                continue  # a duplicate entry: scanned below as an extra pickle
            name = rel[:-4]
            parsed.add(id(info))
            own: dict[str, Storage] = {}
            res = _parse(reader, info, own, limits)
            ckpt.globals.extend(res.globals)
            ckpt.pickles.append(res.judged)
            ckpt.root[name] = res.root
            for key, st in own.items():
                st.key = f"{name}/{key}"  # unique across archives
                storages[st.key] = st
                records[st.key] = f"{top}/{name}/{key}"
                if name != "constants":
                    lenient.add(st.key)

    for key, st in storages.items():
        _locate(reader, st, by_name.get(records[key].lower()), records[key], ckpt.notes,
                lenient=key in lenient)
    ckpt.storages = storages

    referenced = {id(by_name[r.lower()]) for r in records.values() if r.lower() in by_name}
    extra: list[int | None] = []
    extra_names: list[str] = []
    for info in infos:
        name = info.filename
        if id(info) in parsed or id(info) in referenced or name.endswith("/"):
            continue
        # Unreferenced storage-named records too (TorchScript keeps tensor constants there;
        # an attacker may hide a pickle there), and duplicate entries of parsed names:
        # peek 2 bytes, parse only what looks like a pickle.
        rel = name[len(top) + 1:] if name.startswith(top + "/") else name
        storage_named = _RECORD.fullmatch(rel) is not None
        if (name.lower().endswith(".pkl") and not storage_named) or reader.looks_like_pickle(info):
            parsed.add(id(info))
            extra_names.append(name)
            extra.append(_parse_extra(reader, info, ckpt, limits, quiet=storage_named))
    scanned = [n for n in extra if n is not None]
    if scanned:  # one line, not one per member (TorchScript carries a debug pickle per file)
        ckpt.notes.append(
            f"{len(scanned)} extra pickle member{'s' if len(scanned) != 1 else ''} scanned "
            f"({sum(scanned)} global reference{'s' if sum(scanned) != 1 else ''}), "
            f"e.g. {extra_names[0]}")
    return ckpt


def _central_directory(fh: BinaryIO, limits: Limits) -> list[zipfile.ZipInfo]:
    try:
        fh.seek(0)
        with zipfile.ZipFile(fh) as zf:
            infos = zf.infolist()
            # zipfile adds to every offset the bytes found before the archive ("concat",
            # self-extracting archives); torch's miniz reads the offsets as written.
            shift = zf.start_dir - zipfile._EndRecData(fh)[zipfile._ECD_OFFSET]
    except (zipfile.BadZipFile, zipfile.LargeZipFile, ValueError, struct.error, EOFError,
            OSError, NotImplementedError, IndexError, UnicodeDecodeError) as e:
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise UnreadableError(f"corrupt zip archive: {msg}") from e
    if not infos:
        raise UnreadableError("empty zip archive: not a torch checkpoint")
    if shift:
        raise UnreadableError(f"zip archive with {shift} bytes before the archive its "
                              "directory describes: torch would read other entries")
    if len(infos) > limits.max_zip_entries:
        raise LimitExceeded(f"zip archive has {len(infos)} entries "
                            f"(limit {limits.max_zip_entries})")
    return infos


class _Reader(PositionedReader):
    """Positioned reads of a zip's members."""

    problem = "corrupt zip archive"

    def __init__(self, fh: BinaryIO, size: int, limits: Limits) -> None:
        super().__init__(fh, size)
        self.limits = limits

    def data_offset(self, info: zipfile.ZipInfo) -> int:
        """Where ``info``'s bytes start: after its local header's name and extra field."""
        head = self.read_at(info.header_offset, _LOCAL.size)
        if len(head) < _LOCAL.size or head[:4] != _LOCAL_SIG:
            raise UnreadableError(f"corrupt zip archive: bad local header for {info.filename!r}")
        fields = _LOCAL.unpack(head)
        return info.header_offset + _LOCAL.size + fields[9] + fields[10]

    def member(self, info: zipfile.ZipInfo, max_bytes: int) -> bytes:
        """A member's uncompressed bytes (stored or deflated), at most ``max_bytes``.

        The declared size is checked before reading, and inflation stops one byte past it:
        memory stays within the declared size even when the directory lies (a deflate bomb).
        """
        if info.file_size > max_bytes:
            raise LimitExceeded(f"{info.filename} is {info.file_size} bytes (limit {max_bytes})")
        start = self.data_offset(info)
        if info.compress_type == zipfile.ZIP_STORED:
            if info.compress_size != info.file_size:
                raise UnreadableError(f"corrupt zip archive: {info.filename} sizes disagree")
            raw = self.read_at(start, info.file_size)
            if len(raw) < info.file_size:
                raise UnreadableError(f"truncated file: {info.filename} is cut short")
            return raw
        if info.compress_type == zipfile.ZIP_DEFLATED:
            raw = self.read_at(start, info.compress_size)
            try:
                out = zlib.decompressobj(-15).decompress(raw, info.file_size + 1)
            except zlib.error as e:
                raise UnreadableError(f"corrupt zip archive: {info.filename}: {e}") from e
            if len(out) != info.file_size:
                raise UnreadableError(f"corrupt zip archive: {info.filename} inflates to a size "
                                      "other than the one declared")
            return out
        raise UnreadableError(f"{info.filename} uses zip compression method "
                              f"{info.compress_type}, which torch cannot read")

    def looks_like_pickle(self, info: zipfile.ZipInfo) -> bool:
        """First bytes are PROTO 0..5 (peeks 2 bytes; inflates a little when compressed)."""
        if info.file_size < 2:
            return False
        try:
            if info.compress_type == zipfile.ZIP_STORED:
                head = self.read_at(self.data_offset(info), 2)
            elif info.compress_type == zipfile.ZIP_DEFLATED:
                raw = self.read_at(self.data_offset(info), min(info.compress_size, 4096))
                head = zlib.decompressobj(-15).decompress(raw, 2)
            else:
                return False
        except (UnreadableError, zlib.error):
            return False
        return len(head) == 2 and head[0] == 0x80 and head[1] <= 5


def _byteorder(reader: _Reader, info: zipfile.ZipInfo | None) -> str:
    if info is None:
        return "little"
    if info.file_size > 16:
        raise UnreadableError("unknown byteorder record")
    value = reader.member(info, 16).decode("ascii", "replace").strip()
    if value not in ("little", "big"):
        raise UnreadableError(f"unknown byteorder {value[:16]!r}")
    return value


def _parse(reader: _Reader, info: zipfile.ZipInfo, storages: dict[str, Storage],
           limits: Limits) -> pickle_vm.PickleResult:
    data = reader.member(info, limits.max_pickle_bytes)

    def persistent_load(pid: Any) -> Any:
        return rebuild.storage_from_pid(pid, storages, limits)

    return pickle_vm.run(data, 0, persistent_load=persistent_load, limits=limits,
                         member=info.filename)


def _parse_extra(reader: _Reader, info: zipfile.ZipInfo, ckpt: Checkpoint, limits: Limits, *,
                 quiet: bool = False) -> int | None:
    """A pickle torch would not load: record its globals; never fail the file for it.
    Returns how many globals it references, or ``None`` when it did not parse.

    ``quiet``: a storage record whose bytes merely start like a pickle gets no note when it
    does not parse and references no global.
    """
    try:
        data = reader.member(info, limits.max_pickle_bytes)
        res = pickle_vm.run(data, 0, persistent_load=lambda pid: pid, limits=limits,
                            member=info.filename)
    except UnreadableError as e:
        partial = getattr(e, "partial_globals", [])
        ckpt.globals.extend(partial)
        if partial or not quiet:
            ckpt.notes.append(f"extra member {info.filename} looks like a pickle but is "
                              f"unreadable: {e}")
        return None
    ckpt.globals.extend(res.globals)
    ckpt.pickles.append(res.judged)
    return len(res.globals)


def _locate(reader: _Reader, st: Storage, info: zipfile.ZipInfo | None, name: str,
            notes: list[str], *, lenient: bool = False) -> None:
    """Set ``st.offset`` from the record's local header; check the record holds the bytes."""
    if info is None:
        if lenient:
            notes.append(f"storage {st.key} has no record {name}")
            return
        raise UnreadableError(f"storage {st.key} has no record {name}")
    if info.file_size < st.nbytes:
        if lenient:
            notes.append(f"storage {st.key} claims {st.nbytes} bytes but its record holds "
                         f"{info.file_size}")
            return
        raise UnreadableError(f"storage {st.key} claims {st.nbytes} bytes but its record "
                              f"holds {info.file_size}")
    if info.compress_type != zipfile.ZIP_STORED:
        st.offset = None  # compressed: no byte range of the file holds the data as is
        return
    start = reader.data_offset(info)
    if start + info.compress_size > reader.size:
        raise UnreadableError(f"truncated file: storage {st.key} ends past the end of file")
    st.offset = start
