"""Pull a split archive that s3sync did not publish (issue 11): pieces in natural order,
checked against the strongest evidence each has, extracted while downloading.

Pipeline (the same machinery as ``pull``): plan chunks over the pieces -> ``ChunkFetcher``
(parallel ranged GETs, every request pinned to the piece's listed ETag) -> ``CheckedPieces``
(in stream order: each chunk's XXH3-128 noted, each piece hashed as its evidence asks: a
sidecar's MD5/SHA-256, the single-part ETag's MD5, or the multipart ETag recomputed) ->
``OrderedReader`` -> ``codecs.DecodedReader`` if compressed -> ``SafeExtractor`` into
``.NAME.s3sync-partial/tree`` -> end-of-archive check -> completion marker -> rename.

A piece's digest is known only once its last byte has streamed, so files from it may be in
staging already; the dataset is renamed into place only after every piece matched. A
mismatch raises ``PieceDigestError`` and moves the resume point back before that piece.

Resume state beyond the journal's offset (``pieces.json`` in the staging directory): for each
piece checked so far, the XXH3-128 of each of its chunks. A rerun checks the chunks of those
pieces against them (as for s3sync's own format) and hashes again only pieces not yet
checked, from their first byte. An uncompressed archive resumes at the member after the
last one extracted; a compressed one is read again from its first byte (gzip and friends
cannot start mid-stream), extracting nothing again before that member.
"""

from __future__ import annotations

import dataclasses
import json
import os
import posixpath
import shutil
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import hashing
from .archive import METADATA_DIR, MemberRecord, SafeExtractor
from .codecs import DecodedReader, detect
from .config import TransferSettings, format_size
from .engine import ChunkFetcher, FetchStats, OrderedReader
from .errors import (
    DamagedArchiveError,
    InsufficientSpaceError,
    IntegrityError,
    PieceDigestError,
    S3SyncError,
    StoreError,
    UnsafeArchiveError,
)
from .journal import Journal, staging_dir
from .manifest import TAR_BLOCK
from .pieces import Piece, SplitArchive, describe
from .planning import ChunkJob, chunk_spans
from .progress import NullProgress, Progress
from .pull import SPACE_MARGIN, Tally, commit, prepare_destination, read_back
from .pull import RecordingReader as _Recording
from .stores.base import Store

STATE_NAME = "pieces.json"
SOURCE_NAME = "source.json"
"""``NAME/.s3sync/source.json``: what a split-archive pull read (``verify`` reads it)."""
SOURCE_KIND = "split-archive"
"""The completion marker's ``source`` for a pull of a split archive."""
HEAD_BYTES = 512


@dataclass(frozen=True, slots=True)
class CheckedPiece:
    """What reading a piece established.

    Attributes:
        index: 0-based position in the archive.
        digest: XXH3-128 of the whole piece.
        chunks: XXH3-128 of each chunk (``chunk_size`` bytes, the last shorter).
        computed: the digest its evidence promises, as computed here (``""`` when its
            evidence is ``none``, or when an earlier run checked it).
        verified: the evidence matched (False: there was no evidence).
    """

    index: int
    digest: str
    chunks: tuple[str, ...]
    computed: str
    verified: bool


@dataclass(frozen=True, slots=True)
class SplitPullResult:
    """What a pull of a split archive did.

    Attributes:
        archive: the archive pulled.
        dest: the dataset directory.
        codec: compression found from the magic bytes (``none``, ``gzip``...).
        members, files, extracted_size: tar members, regular files, bytes of file data
            (this run's and, on resume, earlier runs').
        resumed_from: offset (bytes; in the decompressed stream if compressed) an earlier
            run had reached.
        bytes_received: bytes received (failed attempts included).
        retries: chunk attempts retried.
        up_to_date: the destination already held this archive; nothing was fetched.
        elapsed_s: wall time in seconds.
    """

    archive: SplitArchive
    dest: Path
    codec: str
    members: int
    files: int
    extracted_size: int
    resumed_from: int
    bytes_received: int
    retries: int
    up_to_date: bool
    elapsed_s: float


def plan_chunks(archive: SplitArchive, chunk_size: int, start: int,
                known: dict[int, CheckedPiece]) -> list[ChunkJob]:
    """Chunks to read the stored stream from byte ``start`` (the chunk holding it first).

    Chunks of pieces in ``known`` carry their recorded digest (checked by the fetch
    workers); the others carry ``""`` (length only: their piece is hashed whole).
    Empty pieces yield no chunk.
    """
    jobs: list[ChunkJob] = []
    base = 0
    for i, piece in enumerate(archive.pieces):
        digests = known[i].chunks if i in known else None
        for span in chunk_spans(piece.size, chunk_size):
            if base + span.offset + span.length > start:
                jobs.append(ChunkJob(i, piece.key, piece.etag, span.index, span.offset, span.length,
                                     digests[span.index] if digests else "", base + span.offset))
        base += piece.size
    return jobs


def piece_starts(archive: SplitArchive) -> list[int]:
    """Stored-stream offset (bytes) of each piece's first byte."""
    starts, at = [], 0
    for piece in archive.pieces:
        starts.append(at)
        at += piece.size
    return starts


class CheckedPieces:
    """The stored stream's chunks in order, passed through; each piece not checked by an
    earlier run is hashed as its evidence asks, and compared once its last byte passed.

    Args:
        archive: the pieces.
        chunks: ``(job, data)`` in stream order from the first chunk of ``start``'s piece
            for every piece not in ``known`` (a piece is hashed from its first byte).
        chunk_size: bytes per chunk.
        known: pieces checked by earlier runs (their chunks were verified by digest).
        on_checked: called with each piece as it is checked (before the next chunk is
            passed on): the caller saves it, so a rerun need not hash it again.
        mark: returns the journal's resume mark; the one current when a piece's first
            chunk is passed on covers only members read from earlier pieces
            (``mark_before``), which is where a rerun must resume if the piece fails.
        on_start: called with a piece's index and that mark as its hashing starts (the
            caller saves it: a resumed run that fails the piece needs it too).

    Each chunk is hashed (MD5 or SHA-256 of its piece, its own XXH3-128, the piece's and,
    with ``stream_digest``, the stream's XXH3-128) by a thread of its own while the consumer extracts it: hashlib
    and xxhash release the GIL over large buffers, so the digests overlap extraction
    instead of adding to it (``python scripts/bench.py --archive --profile``: MD5 took 30 %
    of the main thread's time when hashed inline). A chunk's buffer is valid only until the
    next chunk is requested (``ChunkFetcher.fetch``), so its hash is waited for before
    that; a piece is compared with its evidence then, still before the next chunk is
    passed on. The stream's last chunk is hashed before it is passed on, so every piece
    is settled once the last chunk has been handed over, whether or not the consumer asks
    for more.

    Raises (while iterating):
        PieceDigestError: a piece's digest differs from its evidence (``failed`` is set).
    """

    def __init__(self, archive: SplitArchive, chunks: Iterator[tuple[ChunkJob, memoryview]], chunk_size: int,
                 known: dict[int, CheckedPiece], on_checked: Callable[[CheckedPiece], None],
                 mark: Callable[[], tuple[int, int]],
                 on_start: Callable[[int, tuple[int, int]], None] = lambda i, mark: None, *,
                 stream_digest: bool = False) -> None:
        self.archive = archive
        self._chunks = chunks
        self._chunk_size = chunk_size
        self.known = dict(known)
        self._on_checked = on_checked
        self._mark = mark
        self._on_start = on_start
        self.mark_before: dict[int, tuple[int, int]] = {}
        self.failed: int | None = None
        self._current: int | None = None
        self._hasher: hashing.PieceHasher | None = None
        self._whole = hashing.Hasher()
        self._chunk_digests: list[str] = []
        self._seen = 0  # bytes of the current piece passed so far
        self.stream = hashing.Hasher() if stream_digest else None
        """With ``stream_digest`` (``adopt``, which reads from byte 0): XXH3-128 of the stored
        stream; a pull has no use for it."""
        self._pool: ThreadPoolExecutor | None = None
        self._pending: tuple[Future[None], int | None] | None = None
        """The hash of the chunk last passed on: its future, and its piece if it is hashed."""

    def __iter__(self) -> Iterator[tuple[ChunkJob, memoryview]]:
        return self._run()

    def _run(self) -> Iterator[tuple[ChunkJob, memoryview]]:
        while True:
            self._settle()  # before the next chunk is requested: the last one's buffer is then reused
            try:
                job, data = next(self._chunks)
            except StopIteration:
                return
            self._take(job, data)
            if job.stream_offset + len(data) >= self.archive.size:
                self._settle()  # the last chunk: nothing may be left unsettled once it is handed over
            yield job, data

    def close(self) -> None:
        """Stop the hashing thread (a hash still running is waited for, its result dropped)."""
        self._pending = None
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None

    def _take(self, job: ChunkJob, data: memoryview) -> None:
        i = job.part_index
        piece: int | None = None
        if i not in self.known:
            if self._current != i:
                if job.offset:  # planning guarantees this never happens; never hash a piece from its middle
                    raise IntegrityError(f"{self.archive.pieces[i].url}: read from byte {job.offset}, not its first")
                self._start(i)
            self._seen += len(data)
            piece = i
        if self._pool is None:
            self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3sync-hash")
        self._pending = (self._pool.submit(self._hash, data, piece is not None), piece)

    def _hash(self, data: memoryview, whole: bool) -> None:
        """In the hashing thread: every digest the chunk feeds (one chunk at a time)."""
        if self.stream is not None:
            self.stream.update(data)
        if not whole:
            return
        self._chunk_digests.append(hashing.digest(data))
        self._whole.update(data)
        if self._hasher is not None:
            self._hasher.update(data)

    def _settle(self) -> None:
        """Wait for the chunk last passed on to be hashed; compare its piece if that was its
        last chunk.

        Raises:
            PieceDigestError: the piece does not match its evidence.
        """
        if self._pending is None:
            return
        future, piece = self._pending
        self._pending = None
        future.result()
        if piece is not None and self._seen == self.archive.pieces[piece].size:
            self._finish(piece)

    def _start(self, i: int) -> None:
        self._current, self._seen, self._chunk_digests = i, 0, []
        self._whole = hashing.Hasher()
        ev = self.archive.pieces[i].evidence
        self._hasher = hashing.PieceHasher(ev.algorithm, ev.upload_part_size) if ev.kind != "none" else None
        # A resumed run that starts hashing this piece knows an older mark (saved by the
        # run that first started it): members from the piece were extracted since.
        self.mark_before.setdefault(i, self._mark())
        self._on_start(i, self.mark_before[i])
        if self.archive.pieces[i].size == 0:
            self._finish(i)

    def _finish(self, i: int) -> None:
        piece = self.archive.pieces[i]
        computed = self._hasher.hexdigest() if self._hasher is not None else ""
        if self._hasher is not None and computed != piece.evidence.expected:
            self.failed = i
            raise digest_error(i, piece, computed)
        checked = CheckedPiece(i, self._whole.hexdigest(), tuple(self._chunk_digests), computed,
                               self._hasher is not None)
        self.known[i] = checked
        self._current = None
        self._on_checked(checked)

    def check_empty_pieces(self) -> None:
        """Check the empty pieces now (they yield no chunk; their evidence is about 0 bytes)."""
        for i, piece in enumerate(self.archive.pieces):
            if piece.size == 0 and i not in self.known:
                self._start(i)

    def finish_current(self) -> None:
        """Read the rest of the piece being hashed (after a failure downstream: a tar error
        caused by a damaged piece must be reported as that piece's digest mismatch).

        Raises:
            PieceDigestError: the piece does not match its evidence.
        """
        self._settle()
        while self._current is not None:
            try:
                job, data = next(self._chunks)
            except StopIteration:
                return
            self._take(job, data)
            self._settle()


def digest_error(i: int, piece: Piece, computed: str) -> PieceDigestError:
    """The error for piece ``i`` whose bytes hash to ``computed``, not its evidence's digest."""
    ev = piece.evidence
    name = {"md5": "MD5", "sha256": "SHA-256", "sha1": "SHA-1", "sha512": "SHA-512"}.get(ev.algorithm, ev.algorithm)
    what = {"sidecar": f"{name} in {ev.source}", "etag-md5": "its ETag (the object's MD5)",
            "etag-multipart": f"its multipart ETag (parts of {ev.upload_part_size} bytes)"}.get(ev.kind, ev.kind)
    return PieceDigestError(f"piece {i + 1} ({piece.url}): {name} is {computed}, {what} says {ev.expected}; "
                            "nothing was committed")


def pull_split(archive: SplitArchive, dest_parent: Path, store: Store, settings: TransferSettings, *,
               strip_components: int = 0, progress: Progress | None = None) -> SplitPullResult:
    """Pull ``archive`` into ``dest_parent / archive.name``: every piece checked against its
    evidence, files extracted while downloading, committed by a rename only once all matched.

    Raises:
        DestinationError, InsufficientSpaceError: as ``pull.pull``.
        PieceDigestError: a piece does not match its evidence; nothing committed, and a
            rerun fetches that piece again (all of a compressed archive up to it, without
            writing again what was extracted before it).
        DamagedArchiveError: the bytes are not a whole tar (or compressed tar) stream.
        UnsafeArchiveError: a member would escape the destination, or is a special file.
        SplitArchiveError: the first bytes are not a tar or a supported compression.
        StoreError, IntegrityError: a chunk failed for good; a rerun resumes.
    """
    progress = progress or NullProgress()
    started = time.monotonic()
    name = archive.name
    dest = dest_parent / name
    identity = archive.identity() + json.dumps({"strip_components": strip_components}).encode()
    generation = "split-" + hashing.digest(identity)[:16]
    empty = SplitPullResult(archive, dest, "", 0, 0, 0, 0, 0, 0, True, 0.0)
    if prepare_destination(dest_parent, name, identity, generation, "extract"):
        marker = json.loads((dest / archive_metadata(SOURCE_NAME)).read_text() or "{}") \
            if (dest / archive_metadata(SOURCE_NAME)).exists() else {}
        return dataclasses.replace(empty, codec=marker.get("codec", ""), members=marker.get("members", 0),
                                   files=marker.get("files", 0), extracted_size=marker.get("extracted_size", 0),
                                   elapsed_s=time.monotonic() - started)
    chunk_size = settings.chunk_size
    journal = Journal(staging_dir(dest_parent, name), identity, generation, "extract", min_advance=chunk_size)
    offset = journal.open()
    fetcher = None
    try:
        state, resumed_mark, root = _load_state(journal, archive, chunk_size) if offset else ({}, None, None)
        safe = _verified_mark(archive, state, resumed_mark) if offset else None
        if safe is not None and safe[0] < offset:
            # Members after ``safe`` came from a piece whose digest was never checked (the
            # run ended first): the bytes it extracted may differ from the ones this run
            # checks. Extract them again from the verified point.
            progress.message(f"the interrupted run extracted from piece {_first_unchecked(archive, state) + 1} "
                             "before checking it: extracting its members again")
            journal.rewind(safe)
            journal.close()
            journal = Journal(staging_dir(dest_parent, name), identity, generation, "extract",
                              min_advance=chunk_size)
            offset = journal.open()
        recorded = None
        if offset:
            recorded = read_back(journal)
            if recorded.gone is not None:
                progress.message(f"{recorded.gone}: recorded as extracted by the interrupted run, but missing or "
                                 f"changed in {journal.tree}; starting {name} over")
                journal.forget()
                journal.close_quietly()
                journal = Journal(staging_dir(dest_parent, name), identity, generation, "extract",
                                  min_advance=chunk_size)
                offset, state, recorded, resumed_mark, root = journal.open(), {}, None, None, None
        _prune(journal)  # also at offset 0: a rewound or reopened journal keeps the tree it had
        codec = archive_codec(archive, store, settings)
        _preflight(journal.tree, archive, codec, offset, progress)
        starts = piece_starts(archive)
        unchecked = [i for i, p in enumerate(archive.pieces) if i not in state and p.size]
        first_unchecked = starts[unchecked[0]] if unchecked else archive.size
        read_from = 0 if codec != "none" else min(offset, first_unchecked)
        if offset:
            progress.message(f"resuming {name} at byte {offset:,}" + (
                f" of the {codec} stream: the archive is read again from its start, and nothing before that "
                "point is written again" if codec != "none" else
                f" ({format_size(offset)} of {format_size(archive.size)})"))
        fetcher = piece_fetcher(archive, store, settings, progress)
        jobs = plan_chunks(archive, chunk_size, read_from, state)
        progress.start("download", archive.size - (jobs[0].stream_offset if jobs else archive.size))
        checked_log: list[CheckedPiece] = []

        def on_checked(piece: CheckedPiece) -> None:
            state[piece.index] = piece
            checked_log.append(piece)
            _save_state(journal, state, chunk_size, {}, extractor.root_record or root)
            p = archive.pieces[piece.index]
            progress.message(f"piece {piece.index + 1}/{len(archive.pieces)} {p.name} ({format_size(p.size)}): "
                             + describe(p.evidence) + (f": {piece.computed}, matches" if piece.verified else ""))

        chunks = piece_chunks(fetcher, archive, store, jobs, settings, progress)
        current: dict[str, object] = {}
        extractor = SafeExtractor(journal.tree_path, shown=journal.tree, strip_components=strip_components)

        def on_start(i: int, mark: tuple[int, int]) -> None:
            current.update(index=i, mark=list(mark))
            _save_state(journal, state, chunk_size, current, extractor.root_record or root)

        checked = CheckedPieces(archive, chunks, chunk_size, state, on_checked, lambda: journal.mark, on_start)
        if resumed_mark is not None and unchecked and resumed_mark[0] == unchecked[0]:
            checked.mark_before[unchecked[0]] = resumed_mark[1]  # the piece resumed mid-way
        checked.check_empty_pieces()
        tally = dataclasses.replace(recorded.seen) if recorded else Tally()
        try:
            tar_end = _extract(archive, checked, extractor, codec, read_from, offset, journal, tally, progress,
                               fetcher.next_ready if archive.ranges else None, strip_components,
                               list(recorded.dirs) if recorded else [], fetcher.cancel)
        except PieceDigestError:
            _rewind(journal, checked)
            raise
        except (DamagedArchiveError, UnsafeArchiveError, IntegrityError) as err:
            # A damaged piece shows first as a tar or decompression error: its digest, once
            # the piece has been read to its end, is the better report.
            try:
                checked.finish_current()
            except PieceDigestError as bad:
                _rewind(journal, checked)
                raise bad from err
            except S3SyncError:
                pass
            raise
        finally:
            checked.close()
            getattr(chunks, "close", lambda: None)()
        progress.finish("download")
        missing = [i for i, p in enumerate(archive.pieces) if i not in checked.known]
        if missing:  # cannot happen: every byte was read; never commit on it anyway
            raise DamagedArchiveError(f"{archive.pieces[missing[0]].url} was not read to its end")
        source = {"kind": SOURCE_KIND, "source": archive.source, "codec": codec, "tar_size": tar_end,
                  "members": tally.members, "files": tally.files, "extracted_size": tally.extracted_size,
                  "strip_components": strip_components,
                  "pieces": [{"name": p.name, "url": p.url, "size": p.size, "etag": p.etag,
                              "evidence": p.evidence.kind, "algorithm": p.evidence.algorithm,
                              "expected": p.evidence.expected, "from": p.evidence.source,
                              "digest": state[i].digest}
                             for i, p in enumerate(archive.pieces)]}
        commit(journal, dest, {SOURCE_NAME: (json.dumps(source, indent=1) + "\n").encode()},
               {"generation": generation, "manifest_digest": hashing.digest(identity), "mode": "extract",
                "name": name, "source": SOURCE_KIND})
        # As GNU tar gives the archive's './' member's mode and mtime to the directory of -C
        # DIR: after the rename (the metadata written into the tree moved its mtime; a mode
        # without owner write would have stopped that), through the tree's open descriptor.
        extractor.finish_root(None if extractor.root_record else root)
        journal.remove()
    except InsufficientSpaceError as err:
        journal.close_quietly()
        if err.needed and not offset:
            journal.remove()
        raise
    except BaseException:
        journal.close_quietly()
        raise
    stats = fetcher.stats
    return SplitPullResult(archive, dest, codec, tally.members, tally.files, tally.extracted_size, offset,
                           stats.bytes_received, stats.retries, False, time.monotonic() - started)


def archive_metadata(name: str) -> str:
    """``.s3sync/NAME``: where a pulled dataset keeps its metadata file ``name``."""
    return f"{METADATA_DIR}/{name}"


def _extract(archive: SplitArchive, checked: CheckedPieces, extractor: SafeExtractor, codec: str, read_from: int,
             offset: int,
             journal: Journal, tally: Tally, progress: Progress, ready, strip_components: int,
             dirs: list[MemberRecord], cancel: Callable[[], None]) -> int:
    """Extract from ``offset`` (of the tar stream), reading the stored stream from
    ``read_from``; check the end of the archive; read every piece to its end. Returns the
    tar stream's size (bytes, decompressed)."""
    stored, decoded, reader = open_tar(archive, checked, codec, read_from, ready)
    try:
        reader.seek(offset)  # compressed: decodes and discards what earlier runs extracted
        if reader.tell() != offset:
            raise DamagedArchiveError(f"{archive.source}: the stream ends at byte {reader.tell()}, before the "
                                      f"resume point {offset} an earlier run recorded",
                                      hint="remove the staging directory .NAME.s3sync-partial and pull again")
        progress.start("extract", 0)
        end = offset

        def on_member(next_offset: int, record: MemberRecord) -> None:
            nonlocal end
            journal.add(record)
            journal.checkpoint(next_offset)
            end = next_offset
            tally.add(record)
            if record.kind == "dir":
                dirs.append(record)
            progress.advance("extract", record.size if record.kind == "file" else 0)

        try:
            extractor.extract(reader, on_member)
            if extractor.end is not None:
                end = extractor.end  # past members --strip-components (or the root) left out
        except PieceDigestError:
            raise
        except DamagedArchiveError as err:
            if decoded is None or stored.tell() < archive.size or len(archive.pieces) == 1:
                raise
            # The compressed stream is cut short or damaged at the end of the last piece.
            raise DamagedArchiveError(f"{err}; a piece may be missing") from err
        except IntegrityError as err:
            if stored.tell() < archive.size:
                raise  # a chunk that failed for good, not the end of the archive
            raise DamagedArchiveError(f"{archive.source}: the archive ends inside a tar member (byte {reader.tell()}"
                                      f"{' of the decompressed stream' if decoded else ''}); a piece may be missing"
                                      ) from err
        check_end(archive, reader, end, decoded is not None, progress)
        if decoded is not None:
            decoded.drain()  # to the end of the compressed stream: its last checksum
        tar_size = reader.tell()
        stored.drain()  # every piece to its end: every digest checked
        journal.checkpoint(end, force=True)
        extractor.finish_dirs(dirs)
        progress.finish("extract")
        return tar_size
    except (DamagedArchiveError, UnsafeArchiveError, IntegrityError):
        raise  # the fetch goes on: the caller reads the current piece to its end (finish_current)
    except BaseException:
        cancel()  # Ctrl-C, disk full...: the decoding thread may be waiting for a chunk
        raise
    finally:
        if decoded is not None:
            decoded.close()


def piece_fetcher(archive: SplitArchive, store: Store, settings: TransferSettings, progress: Progress) -> ChunkFetcher:
    """The fetcher for ``archive``'s pieces (keys are the pieces' own; every GET pinned to the
    piece's listed ETag), its window trimmed to 256 MiB of chunk buffers. Shared by
    ``pull_split`` and ``adopt``."""
    return ChunkFetcher(store, lambda key: key, dataclasses.replace(
        settings, window=max(settings.concurrency, min(settings.window, (256 << 20) // settings.chunk_size))),
        progress, pins={p.key: p.etag for p in archive.pieces if p.etag})


def piece_chunks(fetcher: ChunkFetcher, archive: SplitArchive, store: Store, jobs: list[ChunkJob],
                 settings: TransferSettings, progress: Progress) -> Iterator[tuple[ChunkJob, memoryview]]:
    """``jobs``' chunks in stream order: parallel ranged GETs, or one stream per piece when
    the server ignores ``Range``."""
    return fetcher.fetch(jobs) if archive.ranges else _streamed(store, archive, jobs, settings, progress,
                                                                fetcher.stats)


def open_tar(archive: SplitArchive, checked: CheckedPieces, codec: str, read_from: int, ready
             ) -> tuple[OrderedReader, DecodedReader | None, _Recording]:
    """The stored stream from ``read_from`` over ``checked``, its decoder if ``codec`` is
    not ``none``, and the tar stream to read (recording tarfile's last read, for
    ``check_end``). The caller closes the decoder."""
    stored = OrderedReader(iter(checked), read_from, archive.size, ready=ready)
    decoded = None
    if codec == "none":
        inner = stored
    else:
        decoded = inner = DecodedReader(stored.rest(), codec, archive.source)
    return stored, decoded, _Recording(inner)


def check_end(archive: SplitArchive, reader: _Recording, end: int, compressed: bool, progress: Progress,
               strict: bool = False) -> None:
    """Require tarfile to have stopped at an end-of-archive marker at ``end``: a zero block
    (GNU tar writes two, and accepts one with a warning). tarfile takes the end of the data,
    or a header that fails its checksum, for the end of the archive: a missing last piece
    or a damaged header would otherwise pass. Data after the marker is ignored, as tar
    does, with a warning if it is not zeros.

    ``strict`` (``adopt``): data after the marker that is not zeros is refused, since the
    manifest promises only zeros there (docs/manifest.md).

    Raises:
        DamagedArchiveError: naming where the stream ends or what is there instead.
    """
    where = " of the decompressed stream" if compressed else ""
    at, block = reader.last_read
    if at != end or len(block) < TAR_BLOCK:
        raise DamagedArchiveError(f"{archive.source}: the archive ends at byte {end}{where} without the tar "
                                  "end-of-archive marker; a piece may be missing")
    if block.count(0) != TAR_BLOCK:
        raise DamagedArchiveError(f"{archive.source}: byte {end}{where} is neither a tar header nor the "
                                  "end-of-archive marker (a damaged header?)")
    extra = 0
    for view in reader_views_to_end(reader):
        if bytes(view).count(0) != len(view):
            extra += 1
    if extra and strict:
        raise DamagedArchiveError(f"{archive.source} holds data after its tar end-of-archive marker (byte {end}"
                                  f"{where}); adopt takes only archives that end with zeros, as tar writes them",
                                  hint="repack the archive, or pull it without adopting it")
    if extra:
        progress.message(f"warning: {archive.source} holds data after its tar end-of-archive marker; ignored, "
                         "as tar does")


def reader_views_to_end(reader: _Recording) -> Iterator[memoryview]:
    """The rest of the (tar) stream, as views (read, so every byte is still checked)."""
    while True:
        data = reader.read(1 << 20)
        if not data:
            return
        yield memoryview(data)


def _rewind(journal: Journal, checked: CheckedPieces) -> None:
    """Move the resume point back before the failed piece (see ``CheckedPieces``)."""
    if checked.failed is None:
        return
    mark = checked.mark_before.get(checked.failed)
    if mark is None:
        journal.forget()  # where the piece's members began is unknown: start over
    elif mark[0] < journal.mark[0]:
        journal.rewind(mark)


def archive_codec(archive: SplitArchive, store: Store, settings: TransferSettings) -> str:
    """Compression of the archive, from the first bytes of its first pieces."""
    head = bytearray()
    for piece in archive.pieces:
        n = min(piece.size, HEAD_BYTES - len(head))
        if n:
            buf = bytearray(n)
            store.read_range_into(piece.key, 0, memoryview(buf), piece.etag or None)
            head += buf
        if len(head) >= HEAD_BYTES:
            break
    return detect(bytes(head), archive.pieces[0].url)


def _preflight(tree: Path, archive: SplitArchive, codec: str, offset: int, progress: Progress) -> None:
    """Refuse at once when clearly short of space. An uncompressed tar holds at most its
    own size in files; a compressed one's extracted size is unknown until it is read."""
    free = shutil.disk_usage(tree).free
    if codec != "none":
        progress.message(f"warning: the extracted size of a {codec} archive is not known before it is read "
                         f"({format_size(archive.size)} compressed, {format_size(free)} free): free space was not "
                         "checked; if the disk fills up, free some and run the command again (it resumes)")
        return
    need = max(0, archive.size - offset) + SPACE_MARGIN
    if free < need:
        raise InsufficientSpaceError(
            f"{tree.parent.parent}: {format_size(free)} free, the archive's pieces hold {format_size(need)} "
            "(the extracted files need about as much)", path=str(tree.parent.parent), needed=need, available=free)


def _streamed(store: Store, archive: SplitArchive, jobs: list[ChunkJob], settings: TransferSettings,
              progress: Progress, stats: FetchStats) -> Iterator[tuple[ChunkJob, memoryview]]:
    """For a server without ``Range``: each piece in one GET, from the piece of the first
    job, as ``(job, view)`` pairs (views valid until the next). A broken stream is fetched
    again from the piece's start (the server can do nothing else), skipping what was
    delivered."""
    if not jobs:
        return
    starts = piece_starts(archive)
    first = jobs[0].part_index
    scratch = memoryview(bytearray(1 << 20))
    for i in range(first, len(archive.pieces)):
        piece = archive.pieces[i]
        done = 0
        for attempt in range(settings.retries + 1):
            try:
                at = 0
                for view in store.stream(piece.key, piece.etag or None, scratch, length=piece.size):
                    n = len(view)
                    stats.add(received=n)
                    if at + n > done:
                        skip = max(0, done - at)
                        part = view[skip:]
                        yield ChunkJob(i, piece.key, piece.etag, 0, at + skip, len(part), "",
                                       starts[i] + at + skip), part
                        progress.advance("download", len(part))
                        done = at + n
                    at += n
                if done != piece.size:
                    raise IntegrityError(f"{piece.url}: {done} bytes received, {piece.size} expected")
                break
            except StoreError as err:
                if not err.retriable or attempt == settings.retries:
                    raise
                stats.add(retries=1)
                progress.message(f"retrying {piece.url} from its start at byte {done:,}: {err}")
                time.sleep(min(settings.backoff_max_s, settings.backoff_base_s * 2 ** attempt))
            except IntegrityError:
                if attempt == settings.retries:
                    raise


def _first_unchecked(archive: SplitArchive, state: dict[int, CheckedPiece]) -> int | None:
    """Index of the first non-empty piece no run has checked, or None."""
    return next((i for i, p in enumerate(archive.pieces) if i not in state and p.size), None)


def _verified_mark(archive: SplitArchive, state: dict[int, CheckedPiece],
                   resumed_mark: tuple[int, tuple[int, int]] | None) -> tuple[int, int] | None:
    """The latest journal mark that covers only members read from checked pieces, for a
    resumed pull; None if the journal's own mark already does.

    Pieces are checked in stream order, and an earlier run saved the mark current as it
    began hashing each piece (``resumed_mark``). Without it, while a piece is unchecked,
    where its members began is unknown: ``(0, 0)``, start over.
    """
    first = _first_unchecked(archive, state)
    if first is None:
        return None
    if resumed_mark is not None:
        return resumed_mark[1] if resumed_mark[0] == first else (0, 0)  # else: inconsistent, start over
    if not state:  # no resume state (unreadable, or another --chunk-size): nothing known verified
        return (0, 0)
    return None  # the run ended between a piece's check and the next piece's first chunk


def _prune(journal: Journal) -> int:
    """Remove from a resumed pull's staging tree every entry its index does not record
    (with the directories above recorded ones): a member being written when the run ended,
    or extracted after the resume point, may have a name that only damaged bytes gave it
    (a GNU long-name block or a pax record carries no checksum), which no later run
    writes again. Returns the number of entries removed.

    Raises:
        OSError: an entry cannot be removed.
    """
    keep: set[str] = set()
    for rec in journal.records():
        path = posixpath.normpath(rec.path)
        while path not in keep and path not in (".", "", "/"):
            keep.add(path)
            path = posixpath.dirname(path)
    root = journal.tree_path
    removed = 0
    for top, dirs, files in os.walk(root):
        rel = os.path.relpath(top, root)
        for name in list(dirs) + files:
            path = name if rel == "." else posixpath.join(rel, name)
            if path == METADATA_DIR:
                if name in dirs:
                    dirs.remove(name)  # the index and the resume state: never walked into
                continue
            if path in keep:
                continue
            full = os.path.join(top, name)
            if name in dirs and not os.path.islink(full):
                dirs.remove(name)
                shutil.rmtree(full)
            else:
                os.unlink(full)
            removed += 1
    return removed


def _load_state(journal: Journal, archive: SplitArchive, chunk_size: int
                ) -> tuple[dict[int, CheckedPiece], tuple[int, tuple[int, int]] | None, MemberRecord | None]:
    """Pieces an earlier run of this pull checked (see the module docstring), the resume
    mark from before the piece it was hashing, and the archive's root member (``./``) if
    it had one; ({}, None, None) if none or unreadable (then every piece is hashed again,
    and a failure starts the pull over)."""
    raw = journal.load_state(STATE_NAME)
    if not raw:
        return {}, None, None
    try:
        doc = json.loads(raw)
        if doc.get("chunk_size") != chunk_size:
            return {}, None, None
        out = {}
        for entry in doc["pieces"]:
            i = int(entry["index"])
            piece = archive.pieces[i]
            chunks = tuple(str(c) for c in entry["chunks"])
            if len(chunks) != len(chunk_spans(piece.size, chunk_size)) or not all(map(hashing.is_digest, chunks)):
                return {}, None, None
            out[i] = CheckedPiece(i, str(entry["digest"]), chunks, str(entry.get("computed", "")),
                                  bool(entry.get("verified")))
        current = doc.get("current") or {}
        mark = None
        if current and int(current["index"]) not in out:
            o, n = current["mark"]
            mark = (int(current["index"]), (int(o), int(n)))
        root = None
        if doc.get("root"):
            mode, mtime = doc["root"]
            root = MemberRecord(".", "dir", 0, int(mode) & 0o777, int(mtime))
        return out, mark, root
    except (ValueError, KeyError, TypeError, IndexError, AttributeError):
        return {}, None, None


def _save_state(journal: Journal, state: dict[int, CheckedPiece], chunk_size: int,
                current: dict[str, object], root: MemberRecord | None) -> None:
    doc = {"chunk_size": chunk_size, "current": current, "root": [root.mode, root.mtime] if root else None,
           "pieces": [
        {"index": c.index, "digest": c.digest, "chunks": list(c.chunks), "computed": c.computed,
         "verified": c.verified} for c in sorted(state.values(), key=lambda c: c.index)]}
    journal.save_state(STATE_NAME, json.dumps(doc).encode())
