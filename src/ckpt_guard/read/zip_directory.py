"""A zip's central directory and members exactly as torch's miniz reads them.

torch 2.13 reads ``torch.save`` zips and TorchScript archives with caffe2's
``PyTorchStreamReader`` on miniz 3.0.2 (``MZ_VERSION`` 11.0.2 in ``libtorch_cpu.so``). This
module follows that code, not the zip specification and not :mod:`zipfile`, whose reading
differs (it looks for a ZIP64 record only right before the locator and falls back silently,
shifts every offset by bytes found before the archive, reads entries until the directory's
byte size is used up rather than the end record's count, folds names with ``str.lower``):

* ``mz_zip_reader_locate_header_sig``: the end record is the LAST ``PK\\x05\\x06`` with 22
  bytes after it, scanned backwards in 4 KiB windows for about 64 KiB.
* ``mz_zip_reader_read_central_dir``: a ZIP64 locator right before the end record is followed
  to wherever it points; when a ZIP64 record is there its counts, size and offset replace the
  end record's. The end record's entry count (not the directory's byte size) says how many
  entries are parsed; each is sanity-checked (sizes, disk numbers, masked headers).
* ``mz_zip_reader_locate_file``: names are sorted and binary-searched with ASCII-only case
  folding (``MZ_TOLOWER``), so ``bytes.lower`` — never ``str.lower``, which maps the Kelvin
  sign U+212A to ``k`` — and among names equal after folding the heap sort decides which one
  is found.
* ``mz_zip_reader_extract_to_mem``: offsets and sizes come from the central directory, the
  data starts after the LOCAL header's name and extra field; stored members are read for
  their uncompressed size; no CRC check (torch builds miniz with
  ``MINIZ_DISABLE_ZIP_READER_CRC32_CHECKS``); a "directory" or a member with no compressed
  bytes leaves torch's buffer uninitialised.

What miniz refuses is an :class:`UnreadableError` (torch cannot load the file either).
Whatever makes the archive read differently by another plausible reader, or that we cannot
be sure we read as miniz does, is collected in :attr:`Directory.ambiguities`: the caller
fails such a file closed (``unsafe-pickle``).
"""

from __future__ import annotations

import struct
import zlib

from ckpt_guard.read.checkpoint import LimitExceeded, UnreadableError
from ckpt_guard.read.limits import Limits
from ckpt_guard.read.positioned import PositionedReader

_EOCD = struct.Struct("<IHHHHIIH")  # end of central directory record, 22 bytes
_LOCATOR = struct.Struct("<IIQI")  # ZIP64 end of central directory locator, 20 bytes
_EOCD64 = struct.Struct("<IQHHIIQQQQ")  # ZIP64 end of central directory record, 56 bytes
_CDH = struct.Struct("<IHHHHHHIIIHHHHHII")  # central directory header, 46 bytes
_LOCAL = struct.Struct("<IHHHHHIIIHH")  # local file header, 30 bytes
_EOCD_SIG, _LOCATOR_SIG, _EOCD64_SIG = 0x06054B50, 0x07064B50, 0x06064B50
_CDH_SIG, _LOCAL_SIG = 0x02014B50, 0x04034B50
_U16, _U32 = 0xFFFF, 0xFFFFFFFF
_SCAN = 4096  # mz_zip_reader_locate_header_sig's buffer
_MASKED = 0x2000  # MZ_ZIP_GENERAL_PURPOSE_BIT_FLAG_LOCAL_DIR_IS_MASKED
_UNSUPPORTED = 0x1 | 0x20 | 0x40  # encrypted, compressed patch, strong encryption
_DOS_DIRECTORY = 0x10
STORED, DEFLATED = 0, 8


class _Refused(UnreadableError):
    pass


def _refuse(what: str) -> _Refused:
    return _Refused(f"corrupt zip archive: {what} (torch's zip reader refuses it)")


class Entry:
    """One central directory entry (attribute names as :class:`zipfile.ZipInfo`'s). (The
    directory's records are plain classes: nothing compares or prints them, and creating
    them as dataclasses cost every cold ``check`` ~1 ms.)"""

    __slots__ = ("index", "raw_name", "filename", "flag_bits", "compress_type",
                 "compress_size", "file_size", "header_offset", "external_attr",
                 "is_directory", "_local")

    def __init__(self, index: int, raw_name: bytes, filename: str, flag_bits: int,
                 compress_type: int, compress_size: int, file_size: int, header_offset: int,
                 external_attr: int, is_directory: bool) -> None:
        self.index = index  # miniz's file index: position in the central directory
        self.raw_name = raw_name
        self.filename = filename  # for messages and member names (undecodable bytes escaped)
        self.flag_bits = flag_bits
        self.compress_type = compress_type
        self.compress_size = compress_size
        self.file_size = file_size
        self.header_offset = header_offset
        self.external_attr = external_attr
        self.is_directory = is_directory
        self._local: tuple[int, bytes] | None = None  # data start, name in the local header

    @property
    def folded(self) -> bytes:
        return self.raw_name.lower()  # ASCII only, as MZ_TOLOWER


class Directory:
    __slots__ = ("entries", "cdir_offset", "ambiguities", "_by_folded", "_sorted")

    def __init__(self, entries: list[Entry], cdir_offset: int, ambiguities: list[str]) -> None:
        self.entries = entries
        self.cdir_offset = cdir_offset
        self.ambiguities = ambiguities
        self._by_folded: dict[bytes, Entry] = {}
        self._sorted: list[int] | None = None  # miniz's heap-sorted indices, on duplicates

    def lookup(self, name: bytes) -> Entry | None:
        """The entry ``mz_zip_reader_locate_file(name)`` finds (``name`` as a C string)."""
        key = name.split(b"\0", 1)[0].lower()
        if self._sorted is None:
            return self._by_folded.get(key)
        lo, hi = 0, len(self._sorted) - 1
        while lo <= hi:
            mid = lo + ((hi - lo) >> 1)
            entry = self.entries[self._sorted[mid]]
            folded = entry.folded
            if folded == key:
                return entry
            if folded < key:
                lo = mid + 1
            else:
                hi = mid - 1
        return None


def read_directory(reader: PositionedReader, limits: Limits) -> Directory:
    size = reader.size
    if size < _EOCD.size:
        raise _refuse("too small for a zip archive")
    ecd_ofs = _locate_end_record(reader)
    ambiguities: list[str] = []
    (_sig, this_disk, cdir_disk, on_disk, total, cdir_size, cdir_ofs,
     comment_len) = _EOCD.unpack(reader.read_at(ecd_ofs, _EOCD.size))
    if ecd_ofs + _EOCD.size + comment_len != size:
        ambiguities.append("bytes after the end of central directory record")
    end_of_cdir = ecd_ofs  # where the central directory must end for one reading
    if ecd_ofs >= _LOCATOR.size + _EOCD64.size:
        loc = reader.read_at(ecd_ofs - _LOCATOR.size, _LOCATOR.size)
        lsig, _ldisk, z64_ofs, disks = _LOCATOR.unpack(loc)
        if lsig == _LOCATOR_SIG:
            if z64_ofs > size - _EOCD64.size:
                raise _refuse("ZIP64 locator points past the end of the file")
            rec = _EOCD64.unpack(reader.read_at(z64_ofs, _EOCD64.size))
            if rec[0] != _EOCD64_SIG:
                # miniz ignores it, zipfile may not: two readings of one file
                ambiguities.append("ZIP64 locator that points at no ZIP64 record")
            else:
                (_s, rec_size, _made, _need, z_this, z_cdir_disk, z_on_disk, z_total,
                 z_cdir_size, z_cdir_ofs) = rec
                if rec_size < _EOCD64.size - 12:
                    raise _refuse("ZIP64 record too small")
                if disks != 1:
                    raise _refuse("multi-disk archive")
                if z_total > _U32 or z_on_disk > _U32:
                    raise _refuse("too many entries")
                if z_cdir_size > _U32:
                    raise _refuse("central directory too large")
                if z64_ofs + _EOCD64.size != ecd_ofs - _LOCATOR.size or rec_size != 44:
                    # zipfile reads the ZIP64 record right before the locator, miniz where
                    # the locator points: the file may carry two central directories.
                    ambiguities.append("ZIP64 locator pointing away from the record "
                                       "before it")
                for small, big, sat in ((total, z_total, _U16), (on_disk, z_on_disk, _U16),
                                        (cdir_size, z_cdir_size, _U32),
                                        (cdir_ofs, z_cdir_ofs, _U32)):
                    if small not in (sat, big):
                        ambiguities.append("end record and ZIP64 record disagree")
                        break
                total, on_disk, cdir_size, cdir_ofs = z_total, z_on_disk, z_cdir_size, z_cdir_ofs
                this_disk, cdir_disk = z_this, z_cdir_disk
                end_of_cdir = z64_ofs
    elif ecd_ofs >= _LOCATOR.size:
        lsig = int.from_bytes(reader.read_at(ecd_ofs - _LOCATOR.size, 4), "little")
        if lsig == _LOCATOR_SIG:  # miniz does not look here, zipfile does
            ambiguities.append("ZIP64 locator too close to the start of the file")
    if total != on_disk:
        raise _refuse("multi-disk archive")
    if (this_disk | cdir_disk) != 0 and (this_disk != 1 or cdir_disk != 1):
        raise _refuse("multi-disk archive")
    if cdir_size < total * _CDH.size:
        raise _refuse("central directory smaller than its entries")
    if cdir_ofs + cdir_size > size:
        raise _refuse("central directory past the end of the file")
    if total == 0:
        raise UnreadableError("empty zip archive: not a torch checkpoint")
    if total > limits.max_zip_entries:
        raise LimitExceeded(f"zip archive has {total} entries (limit {limits.max_zip_entries})")
    if cdir_ofs + cdir_size != end_of_cdir:
        # zipfile shifts offsets by the difference ("bytes before the archive"), miniz reads
        # them as written.
        ambiguities.append("central directory does not end where the end records start")
    cdir = reader.read_at(cdir_ofs, cdir_size)
    if len(cdir) != cdir_size:
        raise _refuse("central directory cut short")
    entries = _parse_entries(cdir, total, this_disk, size, ambiguities)
    directory = Directory(entries, cdir_ofs, ambiguities)
    _index(directory)
    return directory


def _locate_end_record(reader: PositionedReader) -> int:
    """``mz_zip_reader_locate_header_sig``, window for window."""
    size = reader.size
    cur = max(size - _SCAN, 0)
    sig = _EOCD_SIG.to_bytes(4, "little")
    while True:
        buf = reader.read_at(cur, min(_SCAN, size - cur))
        i = len(buf) - 4
        while i >= 0:
            i = buf.rfind(sig, 0, i + 4)
            if i < 0:
                break
            if size - (cur + i) >= _EOCD.size:
                return cur + i
            i -= 1
        if cur == 0 or size - cur >= _U16 + _EOCD.size:
            raise _refuse("no end of central directory record")
        cur = max(cur - (_SCAN - 3), 0)


def _parse_entries(cdir: bytes, total: int, this_disk: int, size: int,
                   ambiguities: list[str]) -> list[Entry]:
    entries: list[Entry] = []
    pos = 0
    for i in range(total):
        if len(cdir) - pos < _CDH.size:
            raise _refuse("central directory cut short")
        (sig, _made, _need, flags, method, mtime, _mdate, _crc, csize, usize, name_len,
         extra_len, comment_len, disk, _iattr, eattr, lho) = _CDH.unpack_from(cdir, pos)
        if sig != _CDH_SIG:
            raise _refuse("bad central directory entry")
        end = pos + _CDH.size + name_len + extra_len + comment_len
        if end > len(cdir):
            raise _refuse("central directory entry cut short")
        name = cdir[pos + _CDH.size:pos + _CDH.size + name_len]
        extra = cdir[pos + _CDH.size + name_len:pos + _CDH.size + name_len + extra_len]
        # miniz reads 32 bits at the method offset: method AND the modification time
        if csize != _U32 and usize != _U32 and (
                ((method | mtime << 16) == 0 and usize != csize) or (usize and not csize)):
            raise _refuse("sizes disagree")
        if disk == _U16 or (disk != this_disk and disk != 1):
            raise _refuse("multi-disk archive")
        if csize != _U32 and lho + 30 + csize > size:
            raise _refuse("entry past the end of the file")
        if flags & _MASKED:
            raise _refuse("masked local headers")
        usize, csize, lho = _zip64_extra(extra, usize, csize, lho, ambiguities)
        if method == STORED and usize != csize:
            ambiguities.append(f"stored entry {_show(name)} with two sizes")
        entries.append(Entry(i, name, _show(name), flags, method, csize, usize, lho, eattr,
                             name.endswith(b"/") or bool(eattr & _DOS_DIRECTORY)))
        pos = end
    if pos != len(cdir):
        # zipfile reads entries until the directory's size is used up: it would see others
        ambiguities.append("entry count of the end record does not cover the central "
                           "directory")
    return entries


def _zip64_extra(extra: bytes, usize: int, csize: int, lho: int,
                 ambiguities: list[str]) -> tuple[int, int, int]:
    """``mz_zip_file_stat_internal``: 64-bit values from the first ZIP64 extra field, for the
    fields that hold 0xFFFFFFFF."""
    if max(usize, csize, lho) != _U32:
        return usize, csize, lho
    pos = 0
    while pos < len(extra):
        if len(extra) - pos < 4:
            raise _refuse("bad extra field")
        fid, flen = struct.unpack_from("<HH", extra, pos)
        if flen + 4 > len(extra) - pos:
            raise _refuse("bad extra field")
        if fid == 1:
            data, off = extra[pos + 4:pos + 4 + flen], 0
            values = []
            for value in (usize, csize, lho):
                if value == _U32:
                    if len(data) - off < 8:
                        raise _refuse("bad ZIP64 extra field")
                    value = int.from_bytes(data[off:off + 8], "little")
                    off += 8
                values.append(value)
            usize, csize, lho = values
            # miniz stops at the first ZIP64 field, zipfile takes the last one
            rest = pos + 4 + flen
            while rest + 4 <= len(extra):
                fid, flen = struct.unpack_from("<HH", extra, rest)
                if fid == 1:
                    ambiguities.append("more than one ZIP64 extra field in an entry")
                    break
                rest += 4 + flen
            break
        pos += 4 + flen
    return usize, csize, lho


def _index(directory: Directory) -> None:
    by_folded = directory._by_folded
    duplicates: list[str] = []
    for entry in directory.entries:
        if b"\0" in entry.raw_name:
            directory.ambiguities.append(f"entry name {entry.filename} with a NUL byte "
                                         "(torch's C strings end there)")
        if entry.folded in by_folded:
            duplicates.append(entry.filename)
        else:
            by_folded[entry.folded] = entry
    if duplicates:
        directory.ambiguities.append(
            f"duplicate entry name {duplicates[0]} (names compare ASCII-case-insensitively; "
            "which one torch reads depends on its sort)")
        directory._sorted = _miniz_heap_sort([e.folded for e in directory.entries])


def _miniz_heap_sort(keys: list[bytes]) -> list[int]:
    """``mz_zip_reader_sort_central_dir_offsets_by_filename``, step for step (a heap sort is
    not stable: of names equal after folding, which one ends where matters for lookups)."""
    idx = list(range(len(keys)))
    n = len(idx)
    if n <= 1:
        return idx

    def sift(root: int, end: int) -> None:
        while True:
            child = 2 * root + 1
            if child >= end:
                return
            if child + 1 < end and keys[idx[child]] < keys[idx[child + 1]]:
                child += 1
            if not keys[idx[root]] < keys[idx[child]]:
                return
            idx[root], idx[child] = idx[child], idx[root]
            root = child

    for start in range((n - 2) >> 1, -1, -1):
        sift(start, n)
    for end in range(n - 1, 0, -1):
        idx[end], idx[0] = idx[0], idx[end]
        sift(0, end)
    return idx


def _show(name: bytes) -> str:
    return name.decode("utf-8", "backslashreplace")


# ------------------------------------------------------------------------------- members

def _local(reader: PositionedReader, entry: Entry) -> tuple[int, bytes]:
    if entry._local is None:
        # one read: the header and, when it is as long as the central one, its name
        head = reader.read_at(entry.header_offset, _LOCAL.size + len(entry.raw_name))
        if len(head) < _LOCAL.size or int.from_bytes(head[:4], "little") != _LOCAL_SIG:
            raise _refuse(f"bad local header for {entry.filename}")
        fields = _LOCAL.unpack_from(head)
        name = head[_LOCAL.size:_LOCAL.size + fields[9]]
        if len(name) != len(entry.raw_name):
            name = b"\0" + name  # another length: another name, whatever its bytes
        entry._local = (entry.header_offset + _LOCAL.size + fields[9] + fields[10], name)
    return entry._local


def data_start(reader: PositionedReader, entry: Entry) -> int:
    """Where ``entry``'s bytes start: after its LOCAL header's name and extra field."""
    return _local(reader, entry)[0]


def check_layout(reader: PositionedReader, directory: Directory) -> None:
    """Ambiguities between entries: local headers that name another file, records that
    overlap each other or the central directory (one byte range read as two members)."""
    spans = []
    for entry in directory.entries:
        if getattr(reader, "remote", False) and not entry.raw_name.lower().endswith(b".pkl"):
            # Read by range, a local header is a request: only pickles' are read (the bytes
            # judged); other records' spans use the shortest header they can have.
            start = entry.header_offset + _LOCAL.size + len(entry.raw_name)
            length = max(entry.compress_size, entry.file_size if entry.compress_type == STORED
                         else 0)
            spans.append((entry.header_offset, start + length, entry.filename))
            continue
        try:
            start, name = _local(reader, entry)
        except UnreadableError:
            continue  # only fatal if torch reads that entry
        if name != entry.raw_name:
            directory.ambiguities.append(f"local header of {entry.filename} names another "
                                         "file")
        length = max(entry.compress_size, entry.file_size if entry.compress_type == STORED
                     else 0)
        spans.append((entry.header_offset, start + length, entry.filename))
    spans.sort()
    for (_a0, a1, a_name), (b0, _b1, b_name) in zip(spans, spans[1:], strict=False):
        if b0 < a1:
            directory.ambiguities.append(f"entries {a_name} and {b_name} overlap")
            break
    if spans and max(s[1] for s in spans) > directory.cdir_offset:
        directory.ambiguities.append("an entry overlaps the central directory")


class Uninitialised(UnreadableError):
    """torch would read a buffer miniz never fills (a "directory", or no compressed bytes)."""


class BadDeflate(UnreadableError):
    """zlib refuses the deflate stream; miniz's own inflater may not."""


def read_member(reader: PositionedReader, entry: Entry, max_bytes: int) -> bytes:
    """``mz_zip_reader_extract_to_mem``: the bytes torch's ``getRecord`` returns, at most
    ``max_bytes`` (checked before reading; inflation stops one byte past the declared size, so
    memory stays bounded when the directory lies)."""
    if entry.file_size > max_bytes:
        raise LimitExceeded(f"{entry.filename} is {entry.file_size} bytes (limit {max_bytes})")
    if entry.is_directory or not entry.compress_size:
        if entry.file_size:
            raise Uninitialised(f"{entry.filename}: torch would read {entry.file_size} bytes "
                                "of uninitialised memory (a directory entry or no data)")
        return b""
    if entry.flag_bits & _UNSUPPORTED:
        raise _refuse(f"{entry.filename} is encrypted")
    if entry.compress_type not in (STORED, DEFLATED):
        raise UnreadableError(f"{entry.filename} uses zip compression method "
                              f"{entry.compress_type}, which torch cannot read")
    start = data_start(reader, entry)
    if start + entry.compress_size > reader.size:
        raise _refuse(f"{entry.filename} ends past the end of the file")
    if entry.compress_type == STORED:
        raw = reader.read_at(start, entry.file_size)
        if len(raw) != entry.file_size:
            raise _refuse(f"{entry.filename} is cut short")
        return raw
    raw = reader.read_at(start, entry.compress_size)
    inflater = zlib.decompressobj(-15)
    try:
        out = inflater.decompress(raw, entry.file_size + 1)
    except zlib.error as e:
        raise BadDeflate(f"corrupt zip archive: {entry.filename}: {e}") from e
    if len(out) != entry.file_size or not inflater.eof:
        raise _refuse(f"{entry.filename} inflates to a size other than the one declared")
    return out


def peek(reader: PositionedReader, entry: Entry, n: int) -> bytes:
    """The first ``n`` bytes of a member ("" when it cannot be read)."""
    if entry.file_size < n or entry.is_directory or not entry.compress_size:
        return b""
    try:
        start = data_start(reader, entry)
        if entry.compress_type == STORED:
            return reader.read_at(start, n)
        if entry.compress_type == DEFLATED:
            raw = reader.read_at(start, min(entry.compress_size, 4096))
            return zlib.decompressobj(-15).decompress(raw, n)
    except (UnreadableError, zlib.error):
        pass
    return b""
