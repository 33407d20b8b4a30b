"""Fetch some members of a published generation: only the byte ranges that hold them.

An update in place, a partial pull (``--include``/``--exclude``) and ``repair`` need a few
members of a tar stream. The member index (``index``) gives each member's header offset,
size and content digest; the next member's offset is where its span ends. ``plan_ranges`` turns the
members' spans into ranged GETs (HTTP Range requests, RFC 9110 section 14; S3 GetObject
``Range``) of just those bytes, coalescing neighbours less than ``MAX_GAP`` bytes apart, up
to one chunk per request:

- a range is verified member by member in the fetch worker (``check_range``, given to
  ``ChunkFetcher`` as ``check_members``): each member's header blocks (a pax extended header
  included) must parse and name the path, size, mode and mtime of the index's record, a
  regular file, and the data they point to must hash (XXH3-128) to the record's digest; a
  difference is retried like a chunk with a wrong digest (a transit error), the same
  difference twice is a damaged dataset. The caller compares each extracted member's record
  with the index's again;
- the stream's last member has no next member to end its span: its range runs to the end of
  the tar stream (the end-of-archive marker and tar's record padding, at most ~11 KiB);
- a span larger than a chunk is fetched as the manifest's whole chunks covering it, each
  verified against its chunk digest, as a pull does.

``span_bytes`` then cuts the spans' bytes out of the fetched ranges, in stream order, and
``SpanReader`` serves them back to back, followed by an end-of-archive marker, as the tar
stream an ``archive.SafeExtractor`` reads.
"""

from __future__ import annotations

import bisect
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from . import archive, hashing
from .engine import WindowedReader
from .errors import IntegrityError
from .index import MemberRecord
from .manifest import END_OF_ARCHIVE, Manifest
from .planning import ChunkJob, MemberCheck, plan_pull

MAX_GAP = 64 * 1024
"""Two spans at most this many bytes apart (in one part) are fetched by one ranged GET, the
gap included: a request costs about as much as this many bytes on a fast link."""


@dataclass(frozen=True, slots=True)
class MemberSpan:
    """The bytes of one file member in the tar stream.

    Attributes:
        start: stream offset (bytes) of the member's first header block (``IndexEntry.offset``).
        end: stream offset where the next member starts (its span ends there); for the last
            member, the end of the tar stream.
        record: the member index's record of it (a file: path, size, mode, mtime, digest).
    """

    start: int
    end: int
    record: MemberRecord


def plan_ranges(manifest: Manifest, spans: list[MemberSpan], max_gap: int = MAX_GAP) -> list[ChunkJob]:
    """Ranged GETs covering every span, in stream order (see the module docstring).

    Args:
        manifest: the generation (its parts, chunk size and chunk digests).
        spans: sorted by ``start``, not overlapping.
        max_gap: bytes between two spans below which one request fetches both.

    Returns:
        Jobs sorted by ``stream_offset``; two may overlap (a range, then a whole chunk that
        also holds it): ``span_bytes`` takes each byte once.
    """
    chunks = plan_pull(manifest)
    starts = [c.stream_offset for c in chunks]
    bases, base = [], 0
    for part in manifest.parts:
        bases.append(base)
        base += part.size
    jobs: list[ChunkJob] = []
    covered = 0  # stream bytes before this are covered by the jobs planned
    run: list[MemberSpan] = []  # spans of the range being built, all in part ``run_part``
    run_part = -1

    def close_run() -> None:
        if not run:
            return
        p, first = run_part, run[0].start
        part = manifest.parts[p]
        ci = bisect.bisect_right(starts, first) - 1
        jobs.append(ChunkJob(p, part.key, part.etag, chunks[ci].index, first - bases[p], run[-1].end - first, "",
                             first, tuple(MemberCheck(s.start - first, s.record.path, s.record.size, s.record.mode,
                                                      s.record.mtime, s.record.digest) for s in run)))
        run.clear()

    for span in spans:
        if span.end <= covered:
            continue  # inside a whole chunk already planned
        p = bisect.bisect_right(bases, span.start) - 1
        whole_part = p >= 0 and span.end <= bases[p] + manifest.parts[p].size
        if not whole_part or span.end - span.start > manifest.chunk_size:
            close_run()
            first = bisect.bisect_right(starts, max(span.start, covered)) - 1
            last = bisect.bisect_left(starts, span.end)
            new = [c for c in chunks[max(first, 0):last] if c.stream_offset + c.length > covered]
            while jobs and new and jobs[-1].stream_offset >= new[0].stream_offset:
                jobs.pop()  # a range inside the first chunk: the chunk brings its bytes
            jobs.extend(new)
            covered = max(covered, span.end, new[-1].stream_offset + new[-1].length if new else 0)
            continue
        if run and (run_part != p or span.start - run[-1].end > max_gap
                    or span.end - run[0].start > manifest.chunk_size):
            close_run()
        run_part = p
        run.append(span)
        covered = span.end
    close_run()
    return jobs


MAX_HEADER = 64 * 1024
"""Bytes of a member's header blocks ``check_range`` reads at most: a pax extended header with
a path and a link target of 4,096 bytes each (Linux PATH_MAX), and more, fits."""


def check_range(job: ChunkJob, data: memoryview) -> str:
    """Check that a range planned by ``plan_ranges`` holds its members as the index records them
    (``ChunkFetcher``'s ``check_members``).

    Returns:
        "" if every member's headers and data agree with its record, else what differs first.
    """
    for m in job.members:
        end = len(data)
        try:
            name, size, mode, mtime, regular, at = archive.read_header(bytes(data[m.header:min(end, m.header + MAX_HEADER)]))
        except ValueError as err:
            return f"the header of {m.path!r} at byte {job.offset + m.header} is {err}"
        if (name, size, mode, mtime, regular) != (m.path, m.size, m.mode, m.mtime, True):
            return (f"the header at byte {job.offset + m.header} is of {name!r} ({size} bytes, mode {mode:o}, mtime "
                    f"{mtime}{'' if regular else ', not a regular file'}), not of {m.path!r} ({m.size} bytes, mode "
                    f"{m.mode:o}, mtime {m.mtime})")
        at += m.header
        if at + size > end:
            return f"{m.path!r} runs past the end of the range"
        got = hashing.digest(data[at:at + size])
        if got != m.digest:
            return f"the data of {m.path!r} has digest {got}, not {m.digest}"
    return ""


def span_bytes(chunks: Iterator[tuple[ChunkJob, memoryview]], spans: list[MemberSpan]) -> Iterator[memoryview]:
    """The spans' bytes out of the fetched ranges (in stream order), then an end-of-archive marker.

    Raises:
        IntegrityError: a span byte that no fetched range holds (the ranges ended early).
    """
    it = iter(spans)
    cur = next(it, None)
    pos = cur.start if cur is not None else 0
    for job, data in chunks:
        c0, c1 = job.stream_offset, job.stream_offset + len(data)
        while cur is not None and pos < c1:
            if pos < c0:
                raise IntegrityError(f"no fetched range holds byte {pos} of the stream")
            e = min(cur.end, c1)
            yield data[pos - c0:e - c0]
            pos = e
            if pos < cur.end:
                break
            cur = next(it, None)
            if cur is not None:
                pos = cur.start
    if cur is not None:
        raise IntegrityError(f"the fetched ranges end before byte {cur.end} of the stream")
    yield memoryview(bytes(END_OF_ARCHIVE))


class SpanReader(WindowedReader):
    """The tar stream a ``SafeExtractor`` reads: the fetched members' spans, back to back,
    then an end-of-archive marker. Offsets are in this made-up stream.

    Args:
        pieces: ``span_bytes(...)``.
        ready: ``ChunkFetcher.next_ready``: True if the next range can be had without waiting.
    """

    def __init__(self, pieces: Iterator[memoryview], ready: Callable[[], bool]) -> None:
        self._pieces = pieces
        self._ready = ready
        self._pos = 0
        self._cur: memoryview = memoryview(b"")
        self._cur_start = 0
        self.before_next_chunk: Callable[[], None] | None = None
        """As ``OrderedReader``'s: before waiting for the next range, the extractor writes and
        records the small files it holds, so that a kill while waiting loses none of them."""

    def _window(self) -> memoryview:
        while True:
            rel = self._pos - self._cur_start
            if rel < len(self._cur):
                return self._cur[rel:]
            if self.before_next_chunk is not None and not self._ready():
                self.before_next_chunk()
            piece = next(self._pieces, None)
            if piece is None:
                return memoryview(b"")
            self._cur_start += len(self._cur)
            self._cur = piece
