"""The member index as an object: written compressed while a publish writes its tar stream,
fetched, verified and read back by later commands.

The format of the lines is ``index``'s (core); this module adds the zstd compression
(``codecs``), the digest of the compressed bytes (the manifest's ``index.digest``) and the
store. Memory stays bounded whatever the member count: the writer spools the compressed index
to a temporary file past ``SPOOL_MAX`` bytes, the fetch streams the object into a file, and the
reader decompresses and parses one line at a time. Must not import zstandard (``codecs`` owns it).
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from . import hashing
from .codecs import DecodedReader, ZstdWriter
from .config import Location
from .errors import (
    DamagedArchiveError,
    IntegrityError,
    MemberIndexError,
    NotFoundError,
    PartChangedError,
)
from .index import MAX_LINE, IndexEntry, MemberRecord, encode, header_line, parse
from .manifest import INDEX_NAME, IndexRef, Manifest
from .stores.base import Store

SPOOL_MAX = 16 * 1024 * 1024
"""Bytes of compressed index kept in memory before the writer spills to a temporary file."""
BATCH = 256 * 1024
"""Bytes of index lines handed to the compressor at a time (one call per member cost more)."""
READ_STEP = 1024 * 1024
"""Bytes read from the index file, and decompressed, at a time."""


class _Hashing:
    """A file that hashes and counts what is written through it."""

    def __init__(self, out: BinaryIO) -> None:
        self.out, self.hasher, self.size = out, hashing.Hasher(), 0

    def write(self, data: bytes | bytearray | memoryview) -> int:
        self.hasher.update(data)
        self.size += len(data)
        return self.out.write(data)


class IndexWriter:
    """Builds a generation's compressed member index, one member at a time, in stream order.

    Args:
        generation: the generation being published.
        members: how many members the stream will hold (the header says so up front).
    """

    def __init__(self, generation: str, members: int) -> None:
        self.key = f"{generation}/{INDEX_NAME}"
        self._file = tempfile.SpooledTemporaryFile(max_size=SPOOL_MAX)  # noqa: SIM115 - closed by close()
        self._out = _Hashing(self._file)
        self._zstd = ZstdWriter(self._out)
        self._lines: list[bytes] = [header_line(generation, members)]
        self._pending = len(self._lines[0])
        self._ref: IndexRef | None = None

    def add(self, offset: int, record: MemberRecord) -> None:
        """Record a member whose first header block is at stream ``offset`` (bytes)."""
        line = encode(offset, record)
        self._lines.append(line)
        self._pending += len(line)
        if self._pending >= BATCH:
            self._flush()

    def _flush(self) -> None:
        self._zstd.write(b"".join(self._lines))
        self._lines.clear()
        self._pending = 0

    def finish(self) -> IndexRef:
        """End the index; return its key (relative to the dataset prefix), size and digest."""
        if self._ref is None:
            self._flush()
            self._zstd.close()
            self._ref = IndexRef(self.key, self._out.size, self._out.hasher.hexdigest())
        return self._ref

    def upload(self, store: Store, location: Location) -> IndexRef:
        """``finish``, then PUT the index at ``location`` (one request: a million members take
        about 25 MiB, see docs/manifest.md section 10).

        Raises:
            StoreError: the PUT failed.
        """
        ref = self.finish()
        self._file.seek(0)
        store.put(location.key(ref.key), self._file.read())
        return ref

    def close(self) -> None:
        """Release the spooled bytes (memory or temporary file)."""
        self._file.close()


def fetch(store: Store, location: Location, manifest: Manifest, dest: Path) -> Path:
    """Download a generation's member index into the file ``dest`` and check it against the
    manifest's ``index`` (size and digest) before anything reads it.

    The object is streamed (bounded memory) into ``dest`` (created or truncated; the caller
    owns it and removes it).

    Returns:
        ``dest``.

    Raises:
        MemberIndexError: the manifest names no index (a publish before issue 13, an adopted
            archive), the object is missing, or its size or digest differ from the manifest's.
        StoreError: the request failed.
    """
    ref = manifest.index
    url = location.url(ref.key if ref else f"{manifest.generation}/{INDEX_NAME}")
    if ref is None:
        raise MemberIndexError(f"{location.url()}: generation {manifest.generation} has no member index "
                               "(published before s3sync had one, or adopted)",
                               hint="republish the dataset with this s3sync to give it one")
    hasher = hashing.Hasher()
    scratch = memoryview(bytearray(min(READ_STEP, ref.size)))
    got = 0
    try:
        with open(dest, "wb") as f:
            for piece in store.read_range_pieces(location.key(ref.key), 0, ref.size, None, scratch):
                hasher.update(piece)
                f.write(piece)
                got += len(piece)
    except NotFoundError as err:
        if err.bucket_missing:
            raise
        raise MemberIndexError(f"{url}: the member index is missing") from err
    except (IntegrityError, PartChangedError) as err:  # a short body, or an object of another size
        raise MemberIndexError(f"{url}: not the {ref.size}-byte member index the manifest names ({err})") from err
    if got != ref.size or hasher.hexdigest() != ref.digest:
        raise MemberIndexError(f"{url}: digest {hasher.hexdigest()} ({got} bytes) differs from the manifest's "
                               f"{ref.digest} ({ref.size} bytes)")
    return dest


def members(store: Store, location: Location, manifest: Manifest) -> Iterator[MemberRecord]:
    """The members of ``manifest``'s generation, in stream order, from its member index
    (fetched into a temporary file and checked as ``fetch`` does, then read one line at a time:
    bounded memory whatever the member count; the file is removed when the iterator is done).

    Raises:
        MemberIndexError, StoreError: as ``fetch`` and ``read``.
    """
    with tempfile.TemporaryDirectory(prefix="s3sync-index-") as tmp:
        path = fetch(store, location, manifest, Path(tmp) / INDEX_NAME)
        for entry in read(path, manifest, location.url(manifest.index.key if manifest.index else INDEX_NAME)):
            yield entry.record


def read(path: Path, manifest: Manifest, source: str = "member index") -> Iterator[IndexEntry]:
    """Decompress and parse a member index file (``fetch`` verified it), streaming: one entry at a
    time, in stream order (see ``index.parse``; consume it to the end before trusting it as whole).

    Raises:
        MemberIndexError: the data is not a whole zstd frame, or a line is bad.
        OSError: the file cannot be read.
    """
    with open(path, "rb") as f:
        blocks = _blocks(f)
        try:
            with DecodedReader(blocks, "zstd", source, threaded=False) as reader:
                yield from parse(_lines(reader), manifest, source)
        except DamagedArchiveError as err:
            raise MemberIndexError(f"{err}") from err


def _blocks(f: BinaryIO) -> Iterator[memoryview]:
    while block := f.read(READ_STEP):
        yield memoryview(block)


def _lines(reader: DecodedReader) -> Iterator[bytes]:
    """Lines of the decompressed stream, each ending in ``\\n`` but perhaps the last; a line
    longer than ``MAX_LINE`` is cut there (``parse`` refuses it), so memory stays bounded."""
    buf = bytearray()
    while True:
        piece = reader.read(READ_STEP)
        if not piece:
            break
        buf += piece
        start = 0
        while (nl := buf.find(b"\n", start)) >= 0:
            yield bytes(buf[start:nl + 1])
            start = nl + 1
        del buf[:start]
        if len(buf) > MAX_LINE:
            yield bytes(buf)
            return
    if buf:
        yield bytes(buf)

