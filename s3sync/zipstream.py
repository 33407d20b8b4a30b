"""Extract a zip while it downloads: the only module that imports ``zipfile`` (and ``zlib``).

The format is PKWARE's APPNOTE.TXT (version 6.3.10): local file headers (section 4.3.7)
followed by each member's data, then the central directory (4.3.12) and the End of Central
Directory record (4.3.16), preceded by the Zip64 EOCD record and locator (4.3.14, 4.3.15)
when counts or offsets do not fit 16 or 32 bits (COCO's train2017.zip is 19 GB).

How (``read_directory`` then ``stream_extract``):

1. The tail is fetched first (``TAIL_BYTES``, more if the central directory is larger), and
   ``zipfile`` parses the central directory over a file object that holds only those bytes at
   their true offsets: no home-made central-directory parser. Every member is checked before
   any data is fetched: a safe relative name, no encryption, stored or deflated, spans that do
   not overlap (a zip bomb trick). A zip that fails a check is refused, saying why.
2. The zip is read as one in-order stream (``engine.ChunkFetcher``: parallel ranged GETs,
   pinned to the ETag, delivered in order) and cut into members by the central directory's
   offsets: each local header is skipped by its own name and extra lengths, stored data is
   written as it streams, deflated data is inflated (raw deflate), every member's CRC-32 and
   size are checked. Bytes between a member's data and the next header (a data descriptor,
   flag bit 3) are skipped: the central directory has the real CRC and sizes.
3. The whole zip's digest (MD5 for COCO) is computed on the same pass. A member whose
   CRC-32 fails is fetched again alone (its byte range, bounded retries); the digest's state
   from before the member is restored first, so a transit error does not spoil the
   whole-zip digest.

A zip can also be read partially (``full=False``): only the byte ranges of the members still
missing, each checked by its CRC-32 (the resume of an interrupted build).

Must not import the pipelines. Files land only under the ``tree`` directory given.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import struct
import time
import zipfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from .config import TransferSettings
from .engine import ChunkFetcher, backoff_s, with_retries
from .errors import (
    BuildError,
    DamagedArchiveError,
    IntegrityError,
    S3SyncError,
    UnsafeArchiveError,
)
from .planning import ChunkJob
from .progress import NullProgress, Progress

TAIL_BYTES = 64 * 1024
"""Bytes of the zip's end fetched first: the EOCD, the Zip64 locator and record, and the
central directory of a zip of up to ~600 members (COCO-like names); a larger directory, or an
EOCD behind a long comment, takes one more ranged GET (COCO's train2014.zip has ~7 MB of it)."""
MAX_DIRECTORY_BYTES = 512 * 1024 * 1024
"""A central directory larger than this (about 4 million members) is refused: it is held in memory."""
MEMBER_ATTEMPTS = 4
"""Fetches of one member (the first included) before a CRC-32 mismatch is final."""
INFLATE_STEP = 4 * 1024 * 1024
"""Most bytes one ``decompress`` call may return: memory stays bounded even for a zip bomb."""

STORED, DEFLATED = zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED
_LOCAL = struct.Struct("<4s5H3L2H")
"""Local file header (APPNOTE 4.3.7): signature, version, flags, method, time, date, CRC-32,
compressed size, size, name length, extra length: 30 bytes."""
_LOCAL_SIGNATURE = b"PK\x03\x04"
_EOCD_SIGNATURE = b"PK\x05\x06"
_EOCD64_LOCATOR = b"PK\x06\x07"
_ENCRYPTED = 0x1
_METHOD_NAMES = {12: "bzip2", 14: "LZMA", 93: "Zstandard", 95: "XZ", 9: "Deflate64", 99: "AES (WinZip)"}
TMP_DIR = ".s3sync-tmp"
"""A pass writes each member to a numbered file (``0``, ``1``...) in a temporary directory of
the tree (``TMP_DIR``, or ``TMP_DIR-1``... if the zip has a top-level entry of that name),
renamed to the member's name once its CRC-32 matched: a temporary name that can collide with
no member and does not lengthen the member's name (a 255-byte name stays legal). The
directory is on the tree's file system (rename is atomic) and is removed when the pass ends."""


@dataclass(frozen=True, slots=True)
class ZipMember:
    """One member, as the central directory describes it.

    Attributes:
        name: the path inside the zip (``/``-separated; a directory ends with ``/``).
        offset: byte offset of its local header in the zip.
        span_end: where its bytes end: the next member's local header, or the central
            directory. The local header, data and any data descriptor lie in
            ``[offset, span_end)``; a refetch asks for exactly that range.
        compressed_size, size: bytes of data as stored, and once extracted.
        crc: CRC-32 of the extracted bytes.
        method: 0 stored, 8 deflated.
        date_time: the DOS modification time (local time, as ``zipfile.ZipInfo``).
    """

    name: str
    offset: int
    span_end: int
    compressed_size: int
    size: int
    crc: int
    method: int
    date_time: tuple[int, int, int, int, int, int]

    @property
    def is_dir(self) -> bool:
        return self.name.endswith("/")


@dataclass(frozen=True, slots=True)
class ZipDirectory:
    """A zip's central directory and the tail bytes it was read from.

    Attributes:
        url: where the zip is (messages).
        size: the zip's bytes.
        members: in offset order.
        directory_offset: where the central directory starts (member data ends before it).
        zip64: the zip has a Zip64 end of central directory record.
        tail_offset: offset of ``tail``'s first byte in the zip.
        tail: the last ``size - tail_offset`` bytes of the zip (reused, never fetched twice).
    """

    url: str
    size: int
    members: tuple[ZipMember, ...]
    directory_offset: int
    zip64: bool
    tail_offset: int
    tail: bytes

    @property
    def extracted_size(self) -> int:
        return sum(m.size for m in self.members)


@dataclass(frozen=True, slots=True)
class ExtractedMember:
    """A member written (and checked) under the tree: its name, size (bytes) and CRC-32."""

    name: str
    size: int
    crc: int


@dataclass(frozen=True, slots=True)
class StreamResult:
    """What one pass over a zip did.

    Attributes:
        digest: hex digest of the whole zip in ``algorithm`` (``""`` for a partial pass).
        members: members checked in this pass (written or not).
        written: members written under the tree.
        bytes_received: bytes fetched (chunks, refetches; failed attempts included).
        refetched: members fetched again after a failed check.
    """

    digest: str
    members: int
    written: int
    bytes_received: int
    refetched: int


class _NeedBytes(Exception):
    """zipfile asked for bytes before the tail held (not an OSError: zipfile catches those)."""

    def __init__(self, offset: int) -> None:
        super().__init__(offset)
        self.offset = offset


class _TailFile(io.RawIOBase):
    """A read-only file of ``size`` bytes of which only ``[start, size)`` is held: what
    ``zipfile`` reads the end records and the central directory from."""

    def __init__(self, data: bytes, start: int, size: int) -> None:
        self._data, self._start, self._size, self._pos = data, start, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = 0) -> int:
        base = {0: 0, 1: self._pos, 2: self._size}[whence]
        if base + pos < 0:
            raise OSError("seek before the start of the zip")
        self._pos = base + pos
        return self._pos

    def read(self, n: int = -1) -> bytes:
        end = self._size if n is None or n < 0 else min(self._size, self._pos + n)
        if self._pos < self._start and end > self._pos:
            raise _NeedBytes(self._pos)
        out = self._data[self._pos - self._start: end - self._start]
        self._pos += len(out)
        return out


def read_bytes(store, url: str, offset: int, length: int, etag: str | None, settings: TransferSettings) -> bytes:
    """``length`` bytes of ``url`` from ``offset`` (one ranged GET), retried as the engine
    retries a chunk (exponential backoff with full jitter, ``settings.retries`` times).

    Raises:
        S3SyncError: the last error, or the first that is not retriable.
    """
    buf = bytearray(length)

    def read() -> bytes:
        store.read_range_into(url, offset, memoryview(buf), etag)
        return bytes(buf)

    return with_retries(read, settings)


def read_directory(fetch: Callable[[int, int], bytes], size: int, url: str,
                   tail_bytes: int = TAIL_BYTES) -> ZipDirectory:
    """Fetch the zip's tail and parse its central directory with ``zipfile``; check every member.

    Args:
        fetch: ``fetch(offset, length)`` returns those bytes of the zip (e.g. ``read_bytes``).
        size: the zip's size in bytes.
        url: the zip's URL, for messages.
        tail_bytes: bytes fetched first; more are fetched if the central directory starts
            earlier.

    Raises:
        DamagedArchiveError: no end of central directory record, a central directory that
            does not parse, overlapping members, a member beyond the directory.
        UnsafeArchiveError: a member name that is absolute, has ``..``, NUL or ``\\``,
            or a symbolic link.
        BuildError: the zip cannot be streamed: encrypted members, compression other than
            stored or deflated, a central directory over ``MAX_DIRECTORY_BYTES``.
        S3SyncError: from ``fetch``.
    """
    start = max(0, size - tail_bytes)
    data = fetch(start, size - start) if size else b""
    while True:
        try:
            with zipfile.ZipFile(_TailFile(data, start, size)) as zf:
                infos, directory_offset = zf.infolist(), zf.start_dir
            break
        except _NeedBytes as need:
            if size - need.offset > MAX_DIRECTORY_BYTES:
                raise BuildError(f"{url}: its central directory starts at byte {need.offset:,}, "
                                 f"{size - need.offset:,} bytes before the end: too large to hold",
                                 hint="download the zip and extract it with unzip") from None
            data = fetch(need.offset, start - need.offset) + data
            start = need.offset
        except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, ValueError, struct.error,
                UnicodeDecodeError, EOFError) as err:
            raise DamagedArchiveError(f"{url}: not a readable zip: its central directory cannot be read "
                                      f"({type(err).__name__}: {err})",
                                      hint="the zip is damaged or not a zip: check the URL; run again to fetch "
                                           "its end again") from err
    members = _members(infos, directory_offset, size, url)
    eocd = data.rfind(_EOCD_SIGNATURE)
    zip64 = eocd >= 20 and data[eocd - 20: eocd - 16] == _EOCD64_LOCATOR
    return ZipDirectory(url, size, members, directory_offset, zip64, start, bytes(data))


def check_name(name: str, raw: str, url: str) -> None:
    """Refuse a member name that could land outside the tree, as zipfile's own extraction
    sanitises (``ZipFile._extract_member``), but refusing rather than rewriting.

    Raises:
        UnsafeArchiveError: an absolute name, a drive letter, ``\\``, NUL (``raw`` is the
            name before zipfile cut it at the NUL), ``..`` or ``.`` components, an empty
            component or name.
    """
    parts = name.rstrip("/").split("/")
    why = ("it holds a NUL byte" if "\x00" in raw else
           "it is empty" if not name.rstrip("/") else
           "it is absolute" if name.startswith("/") else
           "it holds a backslash" if "\\" in name else
           "it starts with a drive letter" if len(name) > 1 and name[1] == ":" else
           "it has a '..' component" if ".." in parts else
           "it has an empty or '.' component" if any(p in ("", ".") for p in parts) else
           "")
    if why:
        raise UnsafeArchiveError(f"{url}: member {raw!r} has an unsafe name ({why}); nothing of it was extracted",
                                 hint="the zip is hostile or damaged: check its source")


_UTF8_FLAG = 0x800
"""General purpose bit 11 (APPNOTE 4.4.4): the name and comment are UTF-8."""
_UNICODE_PATH = 0x7075
"""Info-ZIP Unicode Path extra field (APPNOTE 4.6.9): version 1, CRC-32 of the header's
name bytes, the name in UTF-8."""


def _unicode_path(extra: bytes, raw: bytes) -> str | None:
    """The name an Info-ZIP Unicode Path extra field gives, if there is one, of version 1,
    whose CRC-32 matches the header's name bytes ``raw`` (else the field is stale: a tool
    renamed the member without updating it) and whose name is UTF-8."""
    pos = 0
    while pos + 4 <= len(extra):
        tag, length = struct.unpack_from("<2H", extra, pos)
        data = extra[pos + 4: pos + 4 + length]
        pos += 4 + length
        if tag == _UNICODE_PATH and len(data) >= 5 and data[0] == 1:
            if struct.unpack_from("<L", data, 1)[0] != zlib.crc32(raw):
                return None
            try:
                return data[5:].decode("utf-8")
            except UnicodeDecodeError:
                return None
    return None


def _decode_name(info: zipfile.ZipInfo) -> int:
    """Give ``info`` the name ``unzip`` gives it on a UTF-8 system; return the byte length of
    the name as stored in the headers.

    zipfile decodes a name without flag bit 11 as cp437, but Info-ZIP ``zip`` (and most
    tools on Unix) store UTF-8 names without setting it. So, for such a name: the Info-ZIP
    Unicode Path extra field (0x7075) when present and its CRC-32 matches; else the bytes as
    UTF-8 when they decode as UTF-8; else cp437 (zipfile's reading, which maps every byte).
    ``filename`` is cut at a NUL as zipfile does (``orig_filename`` keeps it for ``check_name``).
    """
    if info.flag_bits & _UTF8_FLAG:
        return len(info.orig_filename.encode("utf-8", "surrogatepass"))
    raw = info.orig_filename.encode("cp437")  # zipfile's decoding: reversible, one char per byte
    name = _unicode_path(info.extra, raw)
    if name is None:
        try:
            name = raw.decode("utf-8")
        except UnicodeDecodeError:
            name = info.orig_filename
    info.orig_filename = name
    info.filename = name.split("\x00", 1)[0]
    return len(raw)


def _members(infos: list[zipfile.ZipInfo], directory_offset: int, size: int, url: str) -> tuple[ZipMember, ...]:
    """The central directory's members, their names decoded as ``unzip`` does (``_decode_name``),
    checked, in offset order, each with its span."""
    raw_length = {id(info): _decode_name(info) for info in infos}
    seen: set[str] = set()
    for info in infos:
        check_name(info.filename, info.orig_filename, url)
        if info.filename.rstrip("/") in seen:
            raise DamagedArchiveError(f"{url}: member {info.filename!r} is listed twice",
                                      hint="the zip is damaged: check its source")
        seen.add(info.filename.rstrip("/"))
        if info.flag_bits & _ENCRYPTED:
            raise BuildError(f"{url}: member {info.filename!r} is encrypted: s3sync cannot extract it",
                             hint="extract the zip with a tool that knows its password")
        if info.compress_type not in (STORED, DEFLATED):
            method = _METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
            raise BuildError(f"{url}: member {info.filename!r} is compressed with {method}: s3sync streams "
                             "stored and deflated members only, so it cannot extract this zip while downloading",
                             hint="download the zip and extract it with unzip or 7z")
        kind = (info.external_attr >> 16) & 0o170000
        if info.create_system == 3 and kind not in (0, 0o100000, 0o040000):  # Unix: only files and directories
            raise UnsafeArchiveError(f"{url}: member {info.filename!r} is a "
                                     f"{'symbolic link' if kind == 0o120000 else 'special file'}; refused",
                                     hint="the zip is hostile or damaged: check its source")
        if info.is_dir() and info.file_size:
            raise DamagedArchiveError(f"{url}: directory member {info.filename!r} claims {info.file_size} bytes",
                                      hint="the zip is damaged: check its source")
    ordered = sorted(infos, key=lambda i: i.header_offset)
    out = []
    for i, info in enumerate(ordered):
        end = ordered[i + 1].header_offset if i + 1 < len(ordered) else directory_offset
        least = _LOCAL.size + raw_length[id(info)] + info.compress_size
        if info.header_offset < 0 or info.header_offset + least > end or end > size:
            raise DamagedArchiveError(f"{url}: member {info.filename!r} at byte {info.header_offset:,} "
                                      f"({info.compress_size:,} bytes) overlaps the next member or the central "
                                      "directory", hint="the zip is damaged or hostile: check its source")
        out.append(ZipMember(info.filename, info.header_offset, end, info.compress_size, info.file_size,
                             info.CRC, info.compress_type, tuple(info.date_time)))
    return tuple(out)


# ---------------------------------------------------------------------------- streaming


class _Digest:
    """The whole-zip digest, computed by a thread of its own while the main thread writes files.

    hashlib releases the GIL over buffers of 2 KiB and more, so hashing overlaps the writes and
    the file creations the extraction waits on (measured on 300 MB of 160 KB members: MD5 took
    0.6 s of the main thread's 2.6 s when hashed inline). Updates run in submission order.
    ``mark`` snapshots the state at a point of that order (a member's first byte) and
    ``restore`` goes back to it, so a member that failed its check is hashed again from its
    good bytes only. The views handed to ``update`` must stay valid until ``drain`` returns:
    the cursor drains before it asks for the next window (whose buffer may be a reused one).
    """

    def __init__(self, algorithm: str) -> None:
        self._hash = hashlib.new(algorithm)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3sync-digest")
        self._pending: list[Future] = []

    def update(self, view: memoryview) -> None:
        self._pending.append(self._pool.submit(self._hash.update, view))

    def mark(self) -> Future:
        """A future of the state once every update submitted so far is done."""
        return self._pool.submit(self._hash.copy)

    def restore(self, mark: Future) -> None:
        """Drop every update submitted after ``mark``; later updates continue from its state."""
        self.drain()
        self._hash = mark.result().copy()

    def drain(self) -> None:
        """Wait for every update submitted so far (raising what one raised)."""
        for future in self._pending:
            future.result()
        self._pending.clear()

    def hexdigest(self) -> str:
        self.drain()
        return self._hash.hexdigest()

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


class _Cursor:
    """The zip's bytes in offset order, from windows ``(offset, view)``; every byte consumed
    is fed to ``hasher`` (a ``_Digest``, if any). Without a hasher, a gap between windows is jumped over by
    ``skip_to`` (a partial pass reads only some members' ranges)."""

    def __init__(self, windows: Iterator[tuple[int, memoryview]], pos: int, hasher: _Digest | None = None) -> None:
        self._windows = windows
        self.pos = pos
        self._cur = memoryview(b"")
        self._cur_start = pos
        self.hasher = hasher

    def _peek(self, jump_to: int | None = None) -> memoryview:
        while True:
            rel = self.pos - self._cur_start
            if 0 <= rel < len(self._cur):
                return self._cur[rel:]
            if self.hasher is not None:
                self.hasher.drain()  # the current window's buffer may be reused by the next one
            try:
                offset, view = next(self._windows)
            except StopIteration:
                raise IntegrityError(f"the zip's stream ended at byte {self.pos:,}") from None
            if offset > self.pos:
                if self.hasher is not None or jump_to is None or offset > jump_to:
                    raise IntegrityError(f"the zip's stream jumps from byte {self.pos:,} to {offset:,}")
                self.pos = offset
            self._cur, self._cur_start = view, offset

    def _take(self, view: memoryview, n: int) -> memoryview:
        piece = view[:n]
        if self.hasher is not None:
            self.hasher.update(piece)
        self.pos += n
        return piece

    def skip_to(self, offset: int) -> None:
        while self.pos < offset:
            view = self._peek(jump_to=offset)
            if self.pos >= offset:
                return
            self._take(view, min(len(view), offset - self.pos))

    def read_exact(self, n: int) -> bytes:
        out = bytearray()
        while len(out) < n:
            view = self._peek()
            out += self._take(view, min(len(view), n - len(out)))
        return bytes(out)

    def views(self, n: int) -> Iterator[memoryview]:
        left = n
        while left:
            view = self._peek()
            take = min(len(view), left)
            left -= take
            yield self._take(view, take)


class _BadMember(Exception):
    """A member's bytes did not check out (header, inflate, size or CRC-32): fetch it again."""


class _Tree:
    """Writes members under ``root``: directories made as needed, each file under a numbered
    temporary name in the pass's temporary directory (``TMP_DIR``) until its CRC-32 matched,
    then renamed (``os.replace``) to its own. ``close`` removes the temporary directory."""

    def __init__(self, root: Path, url: str, tops: frozenset[str] = frozenset()) -> None:
        self.root = root
        self.url = url
        self._dirs: set[str] = set()
        self._count = 0
        name, n = TMP_DIR, 0
        while name in tops:
            n += 1
            name = f"{TMP_DIR}-{n}"
        self.tmp = root / name
        try:
            root.mkdir(parents=True, exist_ok=True)
            if os.path.lexists(self.tmp):  # a killed pass's: no member of this zip has that name
                shutil.rmtree(self.tmp)
            self.tmp.mkdir()
        except OSError as err:
            raise BuildError(f"{self.tmp}: cannot create the directory ({err.strerror})",
                             hint="check that DIR is writable") from err

    def close(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _mkdirs(self, rel: str) -> None:
        if rel and rel not in self._dirs:
            try:
                os.makedirs(self.root / rel, exist_ok=True)
            except OSError as err:
                raise BuildError(f"{self.root / rel}: cannot create the directory ({err.strerror})",
                                 hint="check that DIR is writable and nothing of that name is in the way") from err
            self._dirs.add(rel)

    def directory(self, member: ZipMember) -> None:
        self._mkdirs(member.name.rstrip("/"))

    def open(self, member: ZipMember) -> _File:
        self._mkdirs(member.name.rpartition("/")[0])
        self._count += 1
        return _File(self.root / member.name, self.tmp / str(self._count), member)


class _File:
    def __init__(self, path: Path, tmp: Path, member: ZipMember) -> None:
        self.path = path
        self.tmp = tmp
        self.member = member
        try:
            self.fd = os.open(self.tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666)
        except OSError as err:
            raise BuildError(f"{self.tmp}: cannot write ({err.strerror})", hint="check that DIR is writable") from err

    def write(self, data) -> None:
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self.fd, view):]
        except OSError as err:
            self.abort()
            raise BuildError(f"{self.path}: cannot write ({err.strerror})",
                             hint="free some space (or pick another DIR) and run the same command again; it resumes"
                             ) from err

    def commit(self) -> None:
        os.close(self.fd)
        self.fd = -1
        try:
            stamp = time.mktime((*self.member.date_time, 0, 0, -1))
            os.utime(self.tmp, (stamp, stamp))
        except (OverflowError, ValueError, OSError):
            pass  # a date the platform cannot represent: the file keeps the time it was written
        try:
            os.replace(self.tmp, self.path)
        except OSError as err:
            self.tmp.unlink(missing_ok=True)
            raise BuildError(f"{self.path}: cannot put the member in place ({err.strerror})",
                             hint="something of that name is in the way: remove it") from err

    def abort(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        self.tmp.unlink(missing_ok=True)


def _extract_one(cur: _Cursor, member: ZipMember, tree: _Tree | None) -> ExtractedMember:
    """Read ``member`` from the cursor (at its local header) to its ``span_end``; write it
    under ``tree`` unless None; check header, size and CRC-32.

    Raises:
        _BadMember: the bytes do not check out (the cursor is left inside the span).
        BuildError: the tree cannot be written.
    """
    header = cur.read_exact(_LOCAL.size)
    sig, _version, flags, method, _t, _d, _crc, _csize, _size, name_len, extra_len = _LOCAL.unpack(header)
    if sig != _LOCAL_SIGNATURE:
        raise _BadMember(f"no local header at byte {member.offset:,}")
    if method != member.method or flags & _ENCRYPTED:
        raise _BadMember("its local header disagrees with the central directory")
    data_start = member.offset + _LOCAL.size + name_len + extra_len
    if data_start + member.compressed_size > member.span_end:
        raise _BadMember("its local header's lengths run past its span")
    cur.skip_to(data_start)
    if member.is_dir:
        if tree is not None:
            tree.directory(member)
        cur.skip_to(member.span_end)
        return ExtractedMember(member.name, 0, 0)
    out = tree.open(member) if tree is not None else None
    try:
        crc, written = 0, 0
        if member.method == STORED:
            for view in cur.views(member.compressed_size):
                crc = zlib.crc32(view, crc)
                if out is not None:
                    out.write(view)
            written = member.compressed_size
        else:
            inflater = zlib.decompressobj(-zlib.MAX_WBITS)
            try:
                for view in cur.views(member.compressed_size):
                    data = inflater.decompress(view, INFLATE_STEP)
                    while True:
                        written += len(data)
                        if written > member.size:
                            raise _BadMember(f"it inflates to more than its {member.size:,} bytes")
                        crc = zlib.crc32(data, crc)
                        if out is not None:
                            out.write(data)
                        if not inflater.unconsumed_tail:
                            break
                        data = inflater.decompress(inflater.unconsumed_tail, INFLATE_STEP)
                tail = inflater.flush()
            except zlib.error as err:
                raise _BadMember(f"its deflate data is corrupt ({err})") from err
            written += len(tail)
            crc = zlib.crc32(tail, crc)
            if out is not None:
                out.write(tail)
            if not inflater.eof or inflater.unused_data:
                raise _BadMember("its deflate data does not end where its size says")
        if written != member.size:
            raise _BadMember(f"it holds {written:,} bytes, not {member.size:,}")
        if crc != member.crc:
            raise _BadMember(f"CRC-32 {crc:08x}, expected {member.crc:08x}")
        cur.skip_to(member.span_end)
    except BaseException:
        if out is not None:
            out.abort()
        raise
    if out is not None:
        out.commit()
    return ExtractedMember(member.name, member.size, crc)


def spans(directory: ZipDirectory, members: Iterable[ZipMember]) -> list[tuple[int, int]]:
    """The byte ranges ``[start, end)`` that hold ``members``, adjacent ones merged."""
    out: list[list[int]] = []
    for m in sorted(members, key=lambda m: m.offset):
        if out and out[-1][1] == m.offset:
            out[-1][1] = m.span_end
        else:
            out.append([m.offset, m.span_end])
    return [(a, b) for a, b in out]


def plan_jobs(url: str, etag: str, ranges: list[tuple[int, int]], chunk_size: int) -> list[ChunkJob]:
    """Chunks (length-checked only: ``digest`` is ``""``) covering ``ranges`` in order."""
    jobs = []
    for a, b in ranges:
        for off in range(a, b, chunk_size):
            jobs.append(ChunkJob(0, url, etag, len(jobs), off, min(chunk_size, b - off), "", off))
    return jobs


def stream_extract(store, directory: ZipDirectory, etag: str, tree: Path, settings: TransferSettings, *,
                   full: bool, skip: frozenset[str] = frozenset(), algorithm: str = "md5",
                   on_member: Callable[[ExtractedMember], None] = lambda m: None,
                   progress: Progress | None = None) -> StreamResult:
    """Read the zip in order with parallel ranged GETs and extract its members under ``tree``.

    Args:
        store: an ``HttpStore`` (or any store with ranged reads) holding ``directory.url``.
        directory: from ``read_directory``; its tail bytes are used, not fetched again.
        etag: every request is pinned to it (``""``: not pinned).
        tree: the directory members are written under (created as needed).
        settings: concurrency, chunk size, window and retries of the fetch.
        full: read every byte from 0 and compute the whole zip's digest; else read only
            the ranges of members not in ``skip``.
        skip: names of members already extracted: with ``full``, read and checked but not
            written again; without, not read at all.
        algorithm: hashlib name of the whole-zip digest.
        on_member: called after each member is written and checked (the caller records it).
        progress: gets ``download`` bytes.

    Returns:
        The ``StreamResult`` (``digest`` ``""`` unless ``full``).

    Raises:
        BuildError: a member's CRC-32 (or size) still differs after ``MEMBER_ATTEMPTS``
            fetches; the tree cannot be written.
        S3SyncError: the fetch failed for good (``StoreError``...).
    """
    progress = progress or NullProgress()
    url = directory.url
    todo = [m for m in directory.members if full or m.name not in skip]
    ranges = [(0, directory.size)] if full else spans(directory, todo)
    fetched = [(a, min(b, directory.tail_offset)) for a, b in ranges if a < directory.tail_offset]
    fetcher = ChunkFetcher(store, lambda key: key, settings, progress, pins={url: etag} if etag else None)
    hasher = _Digest(algorithm) if full else None

    def windows() -> Iterator[tuple[int, memoryview]]:
        for job, view in fetcher.fetch(plan_jobs(url, etag, fetched, settings.chunk_size)):
            yield job.offset, view
        tail = memoryview(directory.tail)
        for a, b in ranges:
            a = max(a, directory.tail_offset)
            if a < b:
                yield a, tail[a - directory.tail_offset: b - directory.tail_offset]

    writer = _Tree(tree, url, frozenset(m.name.split("/", 1)[0] for m in directory.members))
    cur = _Cursor(windows(), ranges[0][0] if ranges else 0, hasher)
    written = refetched = extra = 0
    scratch = memoryview(bytearray(1024 * 1024))
    try:
        for member in todo:
            cur.skip_to(member.offset)
            write = member.name not in skip
            saved = hasher.mark() if hasher is not None else None
            try:
                done = _extract_one(cur, member, writer if write else None)
            except _BadMember as bad:
                cur.skip_to(member.span_end)
                if hasher is not None and saved is not None:
                    hasher.restore(saved)  # forget the bad bytes: the member is hashed again from its good ones
                progress.message(f"{url}: member {member.name} failed its check ({bad}); fetching it again")
                done, received = _again(store, url, etag, member, writer if write else None, hasher, settings,
                                        scratch, str(bad))
                refetched += 1
                extra += received
            if write:
                written += 1
                on_member(done)
        if hasher is not None:
            cur.skip_to(directory.size)
        digest = hasher.hexdigest() if hasher is not None else ""
    finally:
        writer.close()
        if hasher is not None:
            hasher.close()
    return StreamResult(digest, len(todo), written, fetcher.stats.bytes_received + extra, refetched)


def _again(store, url: str, etag: str, member: ZipMember, tree: _Tree | None, hasher: _Digest | None,
           settings: TransferSettings, scratch: memoryview, first: str) -> tuple[ExtractedMember, int]:
    """Fetch ``member``'s span again (one ranged GET per attempt) until it checks out; its
    good bytes go to ``hasher`` (whose state is the one before the member), a failed
    attempt's are taken back.

    Returns:
        ``(extracted, bytes received)``.

    Raises:
        BuildError: still bad after ``MEMBER_ATTEMPTS`` fetches in all.
        S3SyncError: a fetch failed for good.
    """
    why, received = first, 0
    for attempt in range(1, MEMBER_ATTEMPTS):
        mark = hasher.mark() if hasher is not None else None
        pieces = store.read_range_pieces(url, member.offset, member.span_end - member.offset, etag or None, scratch)

        def windows() -> Iterator[tuple[int, memoryview]]:
            nonlocal received
            at = member.offset
            for piece in pieces:
                received += len(piece)
                yield at, piece
                at += len(piece)

        cur = _Cursor(windows(), member.offset, hasher)
        try:
            done = _extract_one(cur, member, tree)
            if hasher is not None:
                hasher.drain()  # the scratch buffer is reused by the next refetch
            return done, received
        except _BadMember as bad:
            why = str(bad)
        except S3SyncError as err:
            if not err.retriable:
                raise
            why = str(err)
        finally:
            pieces.close()  # the connection goes back to the pool, or is closed now
        if hasher is not None and mark is not None:
            hasher.restore(mark)
        time.sleep(backoff_s(settings, attempt))
    raise BuildError(f"{url}: member {member.name} (bytes {member.offset:,}-{member.span_end - 1:,}) failed its "
                     f"check in {MEMBER_ATTEMPTS} fetches: {why}",
                     hint="the zip is damaged at the source, or the network corrupts it: try again later or "
                          "another --mirror")
