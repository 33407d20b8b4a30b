"""Compression of split archives s3sync did not publish: found by magic bytes, decoded as a stream.

``detect`` names the compression of an archive from its first bytes (gzip, zstd, bzip2,
xz, or none for a plain tar) and refuses what is not a tar (zip, 7z, rar, lz4...).
``DecodedReader`` turns the compressed bytes, as blocks in stream order, into the forward-only
file that ``archive.SafeExtractor.extract`` reads (the interface of ``engine.OrderedReader``).

Decoding follows ``gzip -dc``, ``zstd -dc``, ``bzip2 -dc`` and ``xz -dc``: concatenated
members, frames and streams (pigz, pbzip2, ``cat a.gz b.gz``, pzstd, ``xz -T``) decode as one
stream. Zero bytes after a complete gzip member, bzip2 or xz stream are padding (tape blocks,
``dd conv=sync``; the xz format calls it Stream Padding) and are skipped, as ``gzip -dc`` does
(it warns "trailing zero bytes ignored"); any other byte there must start a new member, or the
archive is refused: ``gzip -dc`` only warns "trailing garbage ignored", but a byte that is
neither padding nor a member is damage we cannot explain, and s3sync commits only what it
could check. zstd is strict as ``zstd -dc`` is: only frames and skippable frames (RFC 8878
section 3.1.2). Corrupt data (a CRC or checksum mismatch, a bad block) and a stream cut
short (its last member, frame or stream has no end) raise ``DamagedArchiveError``, naming the
archive and the compressed byte offset. Whether the *tar* inside is whole (its end-of-archive
marker) is the tar reader's business: a stream cut exactly between two members decodes cleanly.

Memory stays bounded whatever the compression ratio (a "zip bomb" included): the decoders are
asked for at most ``OUTPUT_PIECE`` bytes at a time (``max_length`` for zlib, bz2 and lzma; a
``stream_reader`` for zstandard), are fed at most ``INPUT_STEP`` compressed bytes at a time, and
at most ``QUEUE_DEPTH`` decoded pieces wait for the consumer. What the formats themselves
need comes on top: up to 64 MiB of xz dictionary (``xz -9``), a zstd window (8 MiB at the
default levels; zstandard refuses windows over 128 MiB unless told otherwise).

The gzip decoder was picked by measurement: ``python scripts/bench_codecs.py --dir D``, the
decoding loop of this module with each library behind it, 1 MiB output pieces, input read in
8 MiB blocks; runs interleaved, median of 5; MB/s of compressed input / of decoded output; 2
cores shared with other work (absolute figures drift by 30% between sessions, the order held)::

    decoder                    img: 603 MiB tar of random-content   txt: 201 MiB tar of text
                               files, gzip -6 (630 MB)              files, gzip -6 (79 MB)
    zlib (stdlib)              480 / 482                            86 / 228
    isal (isal_zlib)           449 / 451                            197 / 524
    isal (igzip_lib)           445 / 447                            189 / 501
    zlib-ng                    572 / 575                            133 / 354
    rapidgzip (file, 2 thr.)   656 / 659                            40 / 105
    gzip -dc (baseline)        160 / 161                            45 / 118

zlib-ng wins on incompressible content, which is what image datasets (JPEG inside a tar) are,
by 20% over stdlib zlib and 28% over isal; isal wins on text (+48% over zlib-ng). rapidgzip is
faster still on images but only on a seekable file with both cores, while a pull hands the
decoder a forward-only stream and needs those cores for downloading and extracting; on text it
loses to everything. Extraction (about 100 MB/s for these trees) stays the bottleneck either way.

The decoding thread (``--thread --decoder zlib-ng --runs 7``, wall seconds, median): decoding
alone img 0.86 inline / 0.85 threaded, txt 0.52 / 0.50; decoding into ``SafeExtractor`` img
5.64 / 5.67, txt 2.66 / 2.55. On 2 cores the extractor's writer threads already keep both busy,
so the thread moves work more than it adds parallelism: a tie on images, 4% faster on small
text files. It is on by default, because with a spare core it overlaps decoding (15% of the
time on images) with extraction, and costs only ``QUEUE_DEPTH`` MiB.

Must not import tarfile (archive.py owns it): the tar header check in ``detect`` is done by hand.
Owns zlib-ng (the gzip decoder), zstandard, bz2 and lzma (tests/unit/test_layering.py).
"""

from __future__ import annotations

import bz2
import lzma
import queue
import threading
from collections.abc import Callable, Iterator
from typing import Any, Self

import zstandard
from zlib_ng import zlib_ng

from .engine import WindowedReader
from .errors import DamagedArchiveError, SplitArchiveError
from .threads import Worker, wait_all

CODECS = ("none", "gzip", "zstd", "bzip2", "xz")
"""Compressions ``detect`` can name and ``DecodedReader`` can decode."""

OUTPUT_PIECE = 1 << 20
"""Bytes of decoded output asked of a decoder at a time (the unit handed to the consumer)."""

INPUT_STEP = 256 * 1024
"""Bytes of compressed input handed to a decoder at a time: a chunk buffer may be 64 MiB, and
zlib copies what it did not consume (``unconsumed_tail``) at every call."""

QUEUE_DEPTH = 4
"""Decoded pieces (of ``OUTPUT_PIECE`` bytes) the decoding thread may run ahead of the consumer."""

_TAR_BLOCK = 512

# Magic numbers: RFC 1952 section 2.3.1 (gzip), RFC 8878 section 3.1.1 (zstd frames) and
# 3.1.2 (skippable frames, 0x184D2A50..0x184D2A5F little-endian: pzstd starts with one), the
# bzip2 file format ("BZh" + block size '1'..'9'), the .xz file format 1.2.0 section 2.1.1.1.
_GZIP = b"\x1f\x8b"
_ZSTD = b"\x28\xb5\x2f\xfd"
_XZ = b"\xfd7zXZ\x00"
_REFUSED = (
    (b"PK\x03\x04", "zip archives are not tar"),
    (b"PK\x05\x06", "zip archives are not tar"),
    (b"7z\xbc\xaf\x27\x1c", "7z archives are not tar"),
    (b"Rar!\x1a\x07", "rar archives are not tar"),
    (b"\x04\x22\x4d\x18", "lz4 compression is not supported (gzip, zstd, bzip2 and xz are)"),
    (b"\x1f\x9d", "compress (.Z) compression is not supported (gzip, zstd, bzip2 and xz are)"),
    (b"LZIP", "lzip compression is not supported (gzip, zstd, bzip2 and xz are)"),
)


def _is_zstd_magic(head: bytes) -> bool:
    if head[:4] == _ZSTD:
        return True
    return len(head) >= 4 and head[1:4] == b"\x2a\x4d\x18" and head[0] & 0xF0 == 0x50


def tar_header_ok(block: bytes) -> bool:
    """Whether ``block`` (512 bytes) is a tar header: its checksum field matches.

    The checksum (POSIX.1-1988 ustar, and v7 before it; GNU tar manual, "Basic Tar Format") is
    the sum of the header's bytes with the 8-byte ``chksum`` field (offset 148) taken as spaces,
    stored as octal digits ended by NUL or space. Some old tars summed signed chars: accepted too.
    """
    if len(block) < _TAR_BLOCK:
        return False
    field = bytes(block[148:156]).replace(b"\x00", b" ").strip()
    if not field or any(c not in b"01234567" for c in field):
        return False
    stored = int(field, 8)
    unsigned = sum(block[:148]) + 8 * 32 + sum(block[156:_TAR_BLOCK])
    signed = unsigned - 256 * sum(1 for b in (*block[:148], *block[156:_TAR_BLOCK]) if b >= 128)
    return stored in (unsigned, signed)


def detect(head: bytes, name: str) -> str:
    """Name the compression of an archive from its first bytes.

    Args:
        head: the archive's first bytes: 512 (a tar header block) are enough; fewer only if
            the whole archive is that short.
        name: the piece or object named in messages.

    Returns:
        One of ``CODECS``: ``"gzip"``, ``"zstd"``, ``"bzip2"``, ``"xz"``, or ``"none"`` when
        ``head`` starts with a tar header (ustar magic, a valid v7 checksum, or the all-zero
        block of an empty tar).

    Raises:
        SplitArchiveError: the bytes are a zip, 7z or rar archive, another compression (lz4,
            compress, lzip), empty, or nothing known.
    """
    head = bytes(head[:_TAR_BLOCK])
    if head[:2] == _GZIP:
        return "gzip"
    if _is_zstd_magic(head):
        return "zstd"
    if head[:3] == b"BZh" and len(head) >= 4 and 0x31 <= head[3] <= 0x39:
        return "bzip2"
    if head[:6] == _XZ:
        return "xz"
    for magic, what in _REFUSED:
        if head.startswith(magic):
            raise SplitArchiveError(f"{name}: {what}")
    if not head:
        raise SplitArchiveError(f"{name}: empty, not a tar archive")
    if len(head) == _TAR_BLOCK and (head[257:262] == b"ustar" or head == bytes(_TAR_BLOCK) or tar_header_ok(head)):
        return "none"
    raise SplitArchiveError(f"{name}: not a tar archive, nor gzip/zstd/bzip2/xz "
                            f"(it starts with {head[:8].hex(' ')})")


def _gzip_member() -> tuple[Callable[[], Any], tuple[type[BaseException], ...]]:
    """A factory of gzip member decoders (the library picked by measurement, see the module
    docstring) and the exception classes its corrupt data raises."""
    return (lambda: _ZlibMember(zlib_ng)), (zlib_ng.error,)


class _Input:
    """The compressed bytes from ``blocks``, in slices of at most ``INPUT_STEP`` bytes.

    A slice is a view into the current block: valid until the next slice is asked for.
    ``offset`` counts the compressed bytes handed out (for messages). An exception raised by
    ``blocks`` is kept in ``error`` so that it is re-raised as it was, never mistaken for a
    decoding error by the decoders' own ``except`` clauses.
    """

    def __init__(self, blocks: Iterator[memoryview], before_wait: Callable[[], None] | None = None) -> None:
        self._blocks = blocks
        self._view = memoryview(b"")
        self._at = 0
        self.offset = 0
        self.ended = False
        self.error: BaseException | None = None
        self.before_wait = before_wait

    def take(self, limit: int = INPUT_STEP) -> memoryview | None:
        """The next slice (never empty), or None at the end of the input."""
        while self._at >= len(self._view):
            if self.ended:
                return None
            if self.before_wait is not None:
                self.before_wait()
            try:
                block = next(self._blocks)
            except StopIteration:
                self.ended = True
                return None
            except BaseException as err:
                self.error = err
                raise
            self._view = memoryview(block).cast("B") if not isinstance(block, memoryview) else block.cast("B")
            self._at = 0
        piece = self._view[self._at:self._at + limit]
        self._at += len(piece)
        self.offset += len(piece)
        return piece

    def close(self) -> None:
        close = getattr(self._blocks, "close", None)
        if close is not None:
            close()


class _ZlibMember:
    """A gzip member decoder (RFC 1952) with the needs_input interface of bz2 and lzma."""

    def __init__(self, lib: Any) -> None:
        self._d = lib.decompressobj(31)  # 16 + 15: gzip wrapper, 32 KiB window
        self._tail: bytes | memoryview = b""
        self.needs_input = True

    def decompress(self, data: bytes | memoryview, limit: int) -> bytes:
        out = self._d.decompress(data if data else self._tail, limit)
        self._tail = self._d.unconsumed_tail
        # All input taken and less output than allowed: inflate has nothing left to give.
        self.needs_input = not self._tail and len(out) < limit
        return out

    @property
    def eof(self) -> bool:
        return self._d.eof

    @property
    def unused_data(self) -> bytes:
        return self._d.unused_data


class _MemberDecoder:
    """gzip, bzip2 or xz: a sequence of members (streams), each decoded with bounded output.

    ``read(limit)`` returns at most ``limit`` decoded bytes, ``b""`` at the clean end.
    """

    def __init__(self, codec: str, source: _Input, name: str) -> None:
        self._codec = codec
        self._src = source
        self._name = name
        self._dec: Any = None
        self._pending: bytes | memoryview = b""
        self._members = 0
        self._errors: tuple[type[BaseException], ...]
        if codec == "gzip":
            self._new, self._errors = _gzip_member()
        elif codec == "bzip2":
            self._new = bz2.BZ2Decompressor
            self._errors = (OSError,)  # _bz2 raises OSError("Invalid data stream")
        elif codec == "xz":
            self._new = lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ)
            self._errors = (lzma.LZMAError,)
        else:
            raise ValueError(f"not a member codec: {codec}")

    def _damaged(self, what: str) -> DamagedArchiveError:
        return DamagedArchiveError(f"{self._name}: {what} (near compressed byte {self._src.offset})")

    def read(self, limit: int) -> bytes:
        while True:
            if self._dec is None:  # between members
                if not self._pending:
                    nxt = self._src.take()
                    if nxt is None:
                        if not self._members:
                            raise self._damaged(f"the {self._codec} stream is empty")
                        return b""
                    self._pending = nxt
                if self._members:
                    rest = bytes(self._pending).lstrip(b"\x00")  # padding after a member
                    if len(rest) < len(self._pending):
                        self._pending = rest
                        continue
                self._dec = self._new()
                self._members += 1
            dec = self._dec
            data = b""
            if dec.needs_input:
                data = self._pending
                self._pending = b""
                if not data:
                    nxt = self._src.take()
                    if nxt is None:
                        raise self._damaged(f"the {self._codec} stream is cut short: "
                                            f"member {self._members} has no end")
                    data = nxt
            try:
                out = dec.decompress(data, limit)
            except self._errors as err:
                if self._src.error is not None:
                    raise self._src.error from None
                raise self._damaged(f"corrupt {self._codec} data in member {self._members}: {err}") from err
            except EOFError as err:  # decompress after eof: cannot happen, as we renew the member
                raise self._damaged(f"corrupt {self._codec} data: {err}") from err
            if dec.eof:
                self._pending = dec.unused_data
                self._dec = None
            if out:
                return out


class _ZstdFrames:
    """Walks zstd frame structure (RFC 8878 section 3.1) over the compressed bytes, without
    decoding: zstandard's ``stream_reader`` returns end of file, not an error, when its input
    ends inside a frame, so this tells a stream cut short from a complete one.
    """

    def __init__(self) -> None:
        self._buf = bytearray()
        self._need = 4  # bytes of the next field
        self._skip = 0  # bytes to pass over before it
        self._state = "magic"
        self._checksum = False
        self.frames = 0  # frames begun
        self.bad = False  # not a frame: the decoder reports that

    def feed(self, data: bytes | memoryview) -> None:
        view = memoryview(data)
        while view and not self.bad:
            if self._skip:
                n = min(self._skip, len(view))
                self._skip -= n
                view = view[n:]
                continue
            n = min(self._need - len(self._buf), len(view))
            self._buf += view[:n]
            view = view[n:]
            if len(self._buf) == self._need:
                field = bytes(self._buf)
                self._buf.clear()
                self._field(field)

    def _field(self, field: bytes) -> None:
        state = self._state
        if state == "magic":
            if field == _ZSTD:
                self._state, self._need = "fhd", 1
            elif _is_zstd_magic(field):
                self._state, self._need = "skippable", 4
            else:
                self.bad = True
                return
            self.frames += 1
        elif state == "skippable":
            self._skip = int.from_bytes(field, "little")
            self._state, self._need = "magic", 4
        elif state == "fhd":
            fhd = field[0]
            single = (fhd >> 5) & 1
            self._checksum = bool((fhd >> 2) & 1)
            fcs = (1 if single else 0, 2, 4, 8)[fhd >> 6]
            self._skip = (0 if single else 1) + (0, 1, 2, 4)[fhd & 3] + fcs
            self._state, self._need = "block", 3
        elif state == "block":
            header = int.from_bytes(field, "little")
            last, kind, size = header & 1, (header >> 1) & 3, header >> 3
            if kind == 3:
                self.bad = True
                return
            self._skip = 1 if kind == 1 else size  # an RLE block stores one byte
            if last:
                self._skip += 4 if self._checksum else 0
                self._state, self._need = "magic", 4
        else:  # pragma: no cover - states are the four above
            raise AssertionError(state)

    @property
    def complete(self) -> bool:
        """Whether the bytes fed so far end exactly after a frame."""
        return self.bad or (self._state == "magic" and not self._buf and not self._skip and self.frames > 0)


class _ZstdSource:
    """The raw file zstandard's ``stream_reader`` reads: ``_Input`` slices, walked by ``_ZstdFrames``."""

    def __init__(self, source: _Input, frames: _ZstdFrames) -> None:
        self._src = source
        self._frames = frames

    def read(self, n: int = -1) -> bytes:
        piece = self._src.take(INPUT_STEP if n is None or n < 0 else min(n, INPUT_STEP))
        if piece is None:
            return b""
        self._frames.feed(piece)
        return bytes(piece)


class _ZstdDecoder:
    """zstd: frames and skippable frames in sequence, as ``zstd -dc`` reads them."""

    def __init__(self, source: _Input, name: str) -> None:
        self._src = source
        self._name = name
        self._frames = _ZstdFrames()
        self._reader = zstandard.ZstdDecompressor().stream_reader(
            _ZstdSource(source, self._frames), read_size=INPUT_STEP, read_across_frames=True, closefd=False)

    def _damaged(self, what: str) -> DamagedArchiveError:
        return DamagedArchiveError(f"{self._name}: {what} (near compressed byte {self._src.offset})")

    def read(self, limit: int) -> bytes:
        try:
            out = self._reader.read(limit)
        except zstandard.ZstdError as err:
            if self._src.error is not None:
                raise self._src.error from None
            raise self._damaged(f"corrupt zstd data: {err}") from err
        if not out and not self._frames.complete:
            if not self._frames.frames and not self._src.offset:
                raise self._damaged("the zstd stream is empty")
            raise self._damaged(f"the zstd stream is cut short: frame {self._frames.frames} has no end")
        return out


class DecodedReader(WindowedReader):
    """A forward-only binary file over the decompressed bytes of ``blocks``.

    Args:
        blocks: the compressed bytes in stream order; each view is valid only until the next
            is asked for (chunk buffers are reused), and is never kept longer.
        codec: one of ``CODECS`` (from ``detect``).
        name: the archive named in messages.
        threaded: decode in a background thread, up to ``QUEUE_DEPTH`` pieces ahead of the
            consumer (the decoders release the GIL). Ignored for ``"none"``.

    The interface is ``engine.OrderedReader``'s (``archive.ForwardReader``): ``tell`` is an
    offset in the decompressed stream; ``seek`` moves forward, or back within the decoded
    piece being read (``ValueError`` otherwise); ``views(n)`` yields exactly ``n`` bytes;
    ``drain`` decodes to the end (every check still runs) and returns the bytes skipped;
    ``before_next_chunk`` is called before waiting for more input. ``close`` stops the thread
    and closes ``blocks``; the reader is also a context manager.

    Errors raised by ``blocks`` reach the caller unchanged, at the read that needs the data.

    Raises (from the reading methods):
        DamagedArchiveError: corrupt compressed data, a stream cut short, or (``views``) the
            decompressed stream ends before the bytes asked for.
    """

    def __init__(self, blocks: Iterator[memoryview], codec: str, name: str, *, threaded: bool = True) -> None:
        if codec not in CODECS:
            raise ValueError(f"unknown codec {codec!r}; expected one of {CODECS}")
        self.codec = codec
        self.name = name
        self._pos = 0
        self._cur: memoryview = memoryview(b"")
        self._cur_start = 0
        self._ended = False
        self._error: BaseException | None = None
        self.before_next_chunk: Callable[[], None] | None = None
        """Called, in the consumer's thread, when the decoded bytes are used up and more must be
        waited for: a consumer finishes its pending work first (see ``engine.OrderedReader``)."""
        self._threaded = threaded and codec != "none"
        self._src = _Input(iter(blocks), None if self._threaded else self._before_wait)
        self._decoder: Any = None
        if codec in ("gzip", "bzip2", "xz"):
            self._decoder = _MemberDecoder(codec, self._src, name)
        elif codec == "zstd":
            self._decoder = _ZstdDecoder(self._src, name)
        self._stop = threading.Event()
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(maxsize=QUEUE_DEPTH)
        self._thread: Worker | None = None
        if self._threaded:
            self._thread = Worker(self._run, f"s3sync-decode-{codec}")
            self._thread.start()

    # -- producing decoded pieces

    def _before_wait(self) -> None:
        if self.before_next_chunk is not None:
            self.before_next_chunk()

    def _run(self) -> None:
        """The decoding thread: pieces into the queue, then None (end) or the error."""
        item: bytes | BaseException | None
        while not self._stop.is_set():
            try:
                item = self._decoder.read(OUTPUT_PIECE) or None
            except BaseException as err:  # noqa: BLE001 - handed to the consumer, raised there
                item = err
            while not self._stop.is_set():
                try:
                    self._queue.put(item, timeout=0.05)
                    break
                except queue.Full:
                    continue
            if not isinstance(item, bytes):
                return

    def _next_piece(self) -> memoryview | None:
        if self._codec_is_plain:
            piece = self._src.take(1 << 62)
            return piece
        if not self._threaded:
            out = self._decoder.read(OUTPUT_PIECE)
            return memoryview(out) if out else None
        if self._queue.empty():
            self._before_wait()
        item = self._queue.get()
        if isinstance(item, BaseException):
            raise item
        return memoryview(item) if item is not None else None

    @property
    def _codec_is_plain(self) -> bool:
        return self.codec == "none"

    def _window(self) -> memoryview:
        """Decoded bytes available from the current position inside the current piece."""
        while True:
            rel = self._pos - self._cur_start
            if rel < len(self._cur):
                return self._cur[rel:]
            if self._ended:
                return memoryview(b"")
            if self._error is not None:
                raise self._error
            try:
                piece = self._next_piece()
            except BaseException as err:
                self._error = err
                raise
            if piece is None:
                self._ended = True
                return memoryview(b"")
            self._cur_start += len(self._cur)
            self._cur = piece

    # -- the file interface

    @property
    def compressed_offset(self) -> int:
        """Compressed bytes taken from ``blocks`` so far (the decoding thread may be ahead)."""
        return self._src.offset

    def _ended_early(self, left: int) -> Exception:
        return DamagedArchiveError(f"{self.name}: the decompressed stream ended {left} bytes early at offset "
                                   f"{self._pos}")

    def close(self) -> None:
        """Stop the decoding thread (after its current step) and close ``blocks``.

        A step is one decoded piece, or one wait for the next block: if ``blocks`` may stall
        (a download that hangs), cancel its source first, so that the wait ends.
        """
        self._stop.set()
        if self._thread is not None:
            def make_room() -> None:  # a thread waiting to hand over a piece then sees the stop
                try:
                    self._queue.get_nowait()
                except queue.Empty:
                    pass
            # through Ctrl-C too: closing ``blocks`` while the thread reads it would fail
            thread, self._thread = self._thread, None
            try:
                wait_all([thread], poll_s=0.05, between=make_room)
            finally:
                self._cur = memoryview(b"")
                self._src.close()
            return
        self._cur = memoryview(b"")
        self._src.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


ZSTD_WRITE_LEVEL = 3
"""zstd level of what s3sync compresses itself (the member index). Measured on 1M SBU-shaped
members (``scripts/bench_index.py --levels 3,6,9,12,19``): 37.6 MB at level 3 in 1.6 s, 36.8 MB
at 9 in 7.9 s, 32.0 MB at 19 in 135 s. The index is dominated by random digests, so higher
levels buy little and cost publish time."""


class ZstdWriter:
    """Compress what is written into ``out`` as one zstd frame with a content checksum
    (RFC 8878 section 3.1.1: ``Content_Checksum_Flag``), which ``DecodedReader`` reads back.

    Args:
        out: a binary file object; ``write`` is all it needs. Not closed.
        level: zstd compression level.
    """

    def __init__(self, out: Any, level: int = ZSTD_WRITE_LEVEL) -> None:
        self._writer = zstandard.ZstdCompressor(level=level, write_checksum=True).stream_writer(
            out, closefd=False, write_return_read=True)

    def write(self, data: bytes | bytearray | memoryview) -> int:
        """Compress ``data`` (output goes to ``out`` as the compressor fills blocks)."""
        return self._writer.write(data)

    def close(self) -> None:
        """End the frame: write what is buffered and the checksum to ``out``. (``close`` ends
        the frame; a ``flush(FLUSH_FRAME)`` before it would add a second, empty frame.)"""
        self._writer.close()
