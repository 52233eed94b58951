"""torch.save's zip format (and TorchScript archives), read from metadata only.

The central directory, record lookups and member bytes come from
:mod:`ckpt_guard.read.zip_directory`, which reads them exactly as torch's miniz does (ZIP64
locator, entry count, ASCII-only case folding, local header offsets, no CRC check), so the
pickles parsed are the ones torch would unpickle. An archive another reader could read
differently, or that we cannot be sure we read as miniz does (two central directories,
duplicate names, overlapping records, a local header naming another file, …), fails closed:
its globals start with the :data:`AMBIGUOUS` marker, which the safety check calls unsafe.
Storage records are never read: their data offset comes from the 30-byte local header,
their size from the central directory.

Layout facts (caffe2/serialize/inline_container.cc, torch/serialization.py): the archive's
top folder is whatever precedes the first ``/`` of the FIRST entry; ``<top>/data.pkl`` is the
object; storages live in ``<top>/data/<key>``; ``<top>/byteorder`` (absent ⇒ little). A
TorchScript archive (``torch.jit.save``) also has ``<top>/constants.pkl`` and ``<top>/code/``
(read by :mod:`ckpt_guard.read.torchscript_code`: torch.jit.load runs that code);
its :attr:`Checkpoint.root` is ``{"data": <data.pkl tree>, "constants": <constants.pkl
tree>, …}`` with one entry per top-level ``<name>.pkl`` (``traced_inputs`` for traced
modules), whose storages are keyed ``<name>/<key>`` (``data`` storages keep plain keys).

Every other member that ends in ``.pkl`` or starts like a pickle (``\\x80`` + protocol) is
parsed too, so that globals hidden in a second pickle are reported (attributed to that
member) and judged as strictly as ``data.pkl``'s: one that fails to parse fails the file
(its globals up to the failure are still judged). Only a storage record whose raw bytes merely
start like a pickle may fail to parse quietly (its partial globals are kept).
"""

from __future__ import annotations

import json
import re

from ckpt_guard.read import pickle_vm, rebuild
from ckpt_guard.read import zip_directory as zd
from ckpt_guard.read.checkpoint import Checkpoint, GlobalUse, UnreadableError
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.positioned import PositionedReader
from ckpt_guard.read.tree import Storage
from ckpt_guard.vocab import Format

TYPE_CHECKING = False  # as typing's, without importing typing (~2 ms of a cold check)
if TYPE_CHECKING:
    from typing import Any, BinaryIO

_RECORD = re.compile(r"[^/]+/\d+")


AMBIGUOUS = "<ambiguous-archive>"  # marker global: the safety check calls it unsafe


def read_torch_zip(path: str, fh: BinaryIO, size: int, limits: Limits) -> Checkpoint:
    """Read a torch zip checkpoint or TorchScript archive (format ``torch-zip`` or
    ``torchscript``). Raises :class:`UnreadableError` with a one-line message."""
    reader = _Reader(fh, size, limits)
    directory = zd.read_directory(reader, limits)
    zd.check_layout(reader, directory)
    first = directory.entries[0]
    # PyTorchStreamReader::init: the archive name is what precedes the first "/" of the
    # FIRST entry (central directory order); every record is looked up as "<archive>/<name>".
    slash = first.raw_name.find(b"/")
    if slash < 0:
        raise UnreadableError(f"zip archive is not a torch checkpoint: first entry "
                              f"{first.filename!r} is not in a folder")
    prefix = first.raw_name[:slash + 1]
    top = first.filename.split("/", 1)[0]

    def lookup(name: str) -> zd.Entry | None:
        return directory.lookup(prefix + name.encode())

    data_info = lookup("data.pkl")
    if data_info is None:
        raise UnreadableError(f"zip archive has no {top}/data.pkl: not a torch checkpoint")
    # torch.serialization._is_torchscript_zip: "constants.pkl" in get_all_records(), an exact
    # (case-sensitive) comparison; torch.jit.load then looks records up as miniz does.
    is_script = any(e.raw_name == prefix + b"constants.pkl" for e in directory.entries)

    ckpt = Checkpoint(path=path, format=Format.TORCHSCRIPT if is_script else Format.TORCH_ZIP,
                      size_bytes=size, archive_prefix=top)
    ambiguities = list(directory.ambiguities)
    ckpt.byteorder = _byteorder(reader, lookup("byteorder"))
    for meta_name, key in (("version", "version"), (".format_version", "format_version"),
                           (".storage_alignment", "storage_alignment"),
                           (".data/serialization_id", "serialization_id")):
        info = lookup(meta_name)
        if info is not None and info.file_size <= 256:
            try:
                text = reader.member(info, 256).decode("utf-8", "replace").strip()
            except UnreadableError:
                continue  # metadata only; torch's own reading of it is not our verdict
            ckpt.metadata[key] = text
    _read_fix_record(reader, lookup(KEPT_FP32_RECORD), ckpt)

    storages: dict[str, Storage] = {}
    records: dict[str, str] = {}  # storage key -> record name
    lenient: set[str] = set()  # storage keys whose short record is only noted
    parsed = {data_info.index}
    data_res = _parse_judged(reader, data_info, storages, limits, ambiguities)
    if data_res is not None:
        ckpt.pickle_protocol = data_res.protocol
        ckpt.globals.extend(data_res.globals)
        ckpt.pickles.append(data_res.judged)
        ckpt.root = data_res.root
    records.update((k, f"{top}/data/{k}") for k in storages)

    legacy, bytecode = lookup("model.json"), lookup("bytecode.pkl")
    if lookup("constants.pkl") is not None or legacy is not None or bytecode is not None:
        # torch.jit.load (which finds names as miniz does) compiles and runs these records,
        # the lite interpreter bytecode.pkl's operators (torchscript_code explains which).
        # Imported here: a plain torch.save file has none of these records.
        from ckpt_guard.read import torchscript_code

        ckpt.code = torchscript_code.read_code(
            [(e.filename, e, e.file_size) for e in directory.entries if not e.is_directory],
            reader.member, limits, legacy=legacy.filename if legacy else None,
            bytecode=(bytecode.filename, bytecode) if bytecode else None)
    if is_script:
        # torch.jit keeps one pickle archive per top-level <name>.pkl, its tensors in
        # <top>/<name>/<key>: data, constants, traced_inputs (torch writes traced inputs'
        # records empty: only noted).
        n = sum(r.text is not None for r in ckpt.code)
        ckpt.notes.append(f"TorchScript archive (torch.jit.save): a program, loading it runs "
                          f"its code; {n} code record{'s' if n != 1 else ''} read and judged "
                          "(file, process and network operations are unsafe)")
        ckpt.root = {"data": ckpt.root}
        # Records already claimed by a storage (the same record read by two archives is the
        # same bytes of the file: one Storage, counted once).
        by_record: dict[str, Storage] = {records[k]: st for k, st in storages.items()}
        in_bytecode_dir = any(b"bytecode/" in e.raw_name[len(prefix):]
                              for e in directory.entries if e.raw_name.startswith(prefix))
        for info in directory.entries:
            raw = info.raw_name
            rel = raw[len(prefix):] if raw.startswith(prefix) else b""
            if not rel.endswith(b".pkl") or b"/" in rel or info.index in parsed:
                continue
            if rel.lower() == b"data.pkl" or directory.lookup(raw) is not info:
                continue  # a duplicate entry: scanned below as an extra pickle
            name = info.filename[len(top) + 1:-4]
            parsed.add(info.index)
            tensor_dir = _tensor_dir(name, in_bytecode_dir)
            # Storages of records another archive already read are shared, not new.
            shared = {rec[len(f"{top}/{tensor_dir}"):]: st for rec, st in by_record.items()
                      if rec.startswith(f"{top}/{tensor_dir}")}
            own: dict[str, Storage] = dict(shared)
            res = _parse_judged(reader, info, own, limits, ambiguities)
            if res is None:
                continue
            ckpt.globals.extend(res.globals)
            ckpt.pickles.append(res.judged)
            ckpt.root[name] = res.root
            for key, st in own.items():
                if shared.get(key) is st:
                    continue
                st.key = f"{name}/{key}"  # unique across archives
                storages[st.key] = st
                rec = f"{top}/{tensor_dir}{key}"
                records[st.key] = rec
                by_record[rec] = st
                if name != "constants":
                    lenient.add(st.key)

    referenced: set[int] = set()
    for key, st in storages.items():
        info = directory.lookup(records[key].encode())
        if info is not None:
            referenced.add(info.index)
        _locate(reader, st, info, records[key], ckpt.notes, lenient=key in lenient)
    ckpt.storages = storages

    extra: list[int | None] = []
    extra_names: list[str] = []
    for info in directory.entries:
        if info.index in parsed or info.index in referenced or info.raw_name.endswith(b"/"):
            continue
        # Unreferenced storage-named records too (TorchScript keeps tensor constants there;
        # an attacker may hide a pickle there), and duplicate entries of parsed names:
        # peek 2 bytes, parse only what looks like a pickle.
        name = info.filename
        rel = name[len(top) + 1:] if name.startswith(top + "/") else name
        storage_named = _RECORD.fullmatch(rel) is not None
        if (name.lower().endswith(".pkl") and not storage_named) or reader.looks_like_pickle(info):
            parsed.add(info.index)
            extra_names.append(name)
            extra.append(_parse_extra(reader, info, ckpt, limits, quiet=storage_named))
    scanned = [n for n in extra if n is not None]
    if scanned:  # one line, not one per member (TorchScript carries a debug pickle per file)
        ckpt.notes.append(
            f"{len(scanned)} extra pickle member{'s' if len(scanned) != 1 else ''} scanned "
            f"({sum(scanned)} global reference{'s' if sum(scanned) != 1 else ''}), "
            f"e.g. {extra_names[0]}")
    if ambiguities:
        # Two plausible readings (or one we cannot be sure of): the pickle torch unpickles
        # may not be the one judged, so the file fails as unsafe, whatever was judged.
        more = f" (and {len(ambiguities) - 1} more)" if len(ambiguities) > 1 else ""
        ckpt.notes.insert(0, f"ambiguous zip archive: {ambiguities[0]}{more}; torch may "
                             "unpickle other bytes than those checked")
        ckpt.globals.insert(0, GlobalUse(AMBIGUOUS, ambiguities[0], "ZIP",
                                         member=data_info.filename))
    return ckpt


def _tensor_dir(archive: str, in_bytecode_dir: bool) -> str:
    """Where torch reads the storages of the pickle archive ``<archive>.pkl`` from
    (torch/csrc/jit/serialization/import_read.cpp: ``<archive>/``). The lite interpreter's
    ``bytecode.pkl`` shares ``constants/`` with constants.pkl (export_module.cpp writes its
    tensors there, through one storage context) unless some record lies under ``bytecode/``
    (mobile/import.cpp, ``isTensorInBytecodeArchive``: older archives)."""
    if archive == "bytecode" and not in_bytecode_dir:
        return "constants/"
    return f"{archive}/"


class _Reader(PositionedReader):
    """Positioned reads of a zip's members, as torch's miniz reads them."""

    problem = "corrupt zip archive"

    def __init__(self, fh: BinaryIO, size: int, limits: Limits) -> None:
        super().__init__(fh, size)
        self.limits = limits

    def data_offset(self, info: zd.Entry) -> int:
        return zd.data_start(self, info)

    def member(self, info: zd.Entry, max_bytes: int) -> bytes:
        return zd.read_member(self, info, max_bytes)

    def looks_like_pickle(self, info: zd.Entry) -> bool:
        """First bytes are PROTO 0..5 (peeks 2 bytes; inflates a little when compressed)."""
        head = zd.peek(self, info, 2)
        return len(head) == 2 and head[0] == 0x80 and head[1] <= 5


# What ckpt-guard fix records in the archive it wrote (torch.load ignores the record): the
# tensors it kept FP32 because of their values, which check cannot see (it reads metadata
# only). Without it, check would call them fixable forever (issue 9, defect 2).
KEPT_FP32_RECORD = ".data/ckpt_guard.json"
_KEPT_FP32_MAX = 1 << 20


def _read_fix_record(reader: _Reader, info: zd.Entry | None, ckpt: Checkpoint) -> None:
    if info is None or info.file_size > _KEPT_FP32_MAX:
        return
    try:
        data = json.loads(reader.member(info, _KEPT_FP32_MAX).decode("utf-8"))
    except (UnreadableError, ValueError):
        return  # advisory only: a bad record means nothing is honoured
    kept = data.get("kept_fp32") if isinstance(data, dict) else None
    if isinstance(kept, dict) and all(isinstance(k, str) and isinstance(v, str)
                                      for k, v in kept.items()):
        ckpt.metadata["kept_fp32"] = kept


def _byteorder(reader: _Reader, info: zd.Entry | None) -> str:
    if info is None:
        return "little"
    if info.file_size > 16:
        raise UnreadableError("unknown byteorder record")
    value = reader.member(info, 16).decode("ascii", "replace").strip()
    if value not in ("little", "big"):
        raise UnreadableError(f"unknown byteorder {value[:16]!r}")
    return value


def _parse_judged(reader: _Reader, info: zd.Entry, storages: dict[str, Storage],
                  limits: Limits, ambiguities: list[str]) -> pickle_vm.PickleResult | None:
    """A pickle torch unpickles. When we cannot know its bytes (miniz leaves the buffer
    uninitialised, or its inflater may accept what zlib refuses) it is an ambiguity."""
    try:
        return _parse(reader, info, storages, limits)
    except (zd.Uninitialised, zd.BadDeflate) as e:
        ambiguities.append(str(e))
        return None


def _parse(reader: _Reader, info: zd.Entry, storages: dict[str, Storage],
           limits: Limits) -> pickle_vm.PickleResult:
    data = reader.member(info, limits.max_pickle_bytes)

    def persistent_load(pid: Any) -> Any:
        return rebuild.storage_from_pid(pid, storages, limits)

    return pickle_vm.run(data, 0, persistent_load=persistent_load, limits=limits,
                         member=info.filename)


def _parse_extra(reader: _Reader, info: zd.Entry, ckpt: Checkpoint, limits: Limits, *,
                 quiet: bool = False) -> int | None:
    """A pickle torch would not load by its name, but could (a duplicate entry, a reader that
    disagrees): its globals are judged. Returns how many globals it references, or ``None``
    when a ``quiet`` member (a storage record whose bytes merely start like a pickle) does not
    parse; any other member that does not parse fails the file."""
    own: dict[str, Storage] = {}

    def persistent_load(pid: Any) -> Any:
        # As torch would read it if it took this member for data.pkl (a duplicate entry).
        try:
            return rebuild.storage_from_pid(pid, own, limits)
        except UnreadableError:
            return pid

    try:
        data = reader.member(info, limits.max_pickle_bytes)
        res = pickle_vm.run(data, 0, persistent_load=persistent_load, limits=limits,
                            member=info.filename)
    except UnreadableError as e:
        if not quiet:
            raise UnreadableError(f"extra member {info.filename} looks like a pickle but "
                                  f"cannot be read to the end: {e}") from e
        partial = getattr(e, "partial_globals", [])
        ckpt.globals.extend(partial)
        if partial:
            ckpt.notes.append(f"storage record {info.filename} starts like a pickle and "
                              f"names globals before it stops parsing: {e}")
        return None
    ckpt.globals.extend(res.globals)
    ckpt.pickles.append(res.judged)
    return len(res.globals)


def _locate(reader: _Reader, st: Storage, info: zd.Entry | None, name: str,
            notes: list[str], *, lenient: bool = False) -> None:
    """Set ``st.offset`` from the record's local header; check the record holds the bytes."""
    if info is None:
        if lenient:
            notes.append(f"storage {st.key} has no record {name}")
            st.held = 0  # counted for the bytes the file holds: none (issue 9, defect 8)
            return
        raise UnreadableError(f"storage {st.key} has no record {name}")
    if info.file_size < st.nbytes:
        if lenient:
            notes.append(f"storage {st.key} claims {st.nbytes} bytes but its record holds "
                         f"{info.file_size}")
            st.held = info.file_size
            return
        raise UnreadableError(f"storage {st.key} claims {st.nbytes} bytes but its record "
                              f"holds {info.file_size}")
    if info.compress_type != zd.STORED or reader.remote:
        # compressed: no byte range of the file holds the data as is; remote: a check needs
        # no data offsets (fix refuses remote files), and each would cost a request
        st.offset = None
        return
    start = reader.data_offset(info)
    if start + info.compress_size > reader.size:
        raise UnreadableError(f"truncated file: storage {st.key} ends past the end of file")
    st.offset = start
