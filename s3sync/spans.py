"""Fetching some members' byte spans of a tar stream: the chunks that cover them, and their
bytes out of those chunks. Shared by update in place (``update``: the new and changed members,
extracted as one made-up stream) and ``repair`` (each damaged member extracted on its own).

A span is ``(begin, end)``: stream offsets in bytes, end exclusive; a member's span runs from
its index entry's offset to the next entry's (``member_spans``; docs/manifest.md section 10).
Spans are given sorted and not overlapping. The chunks are the manifest's (``planning``),
fetched and verified by ``engine.ChunkFetcher``, whose ``data`` is valid until the next chunk
is asked for: ``SpanSupply`` never asks for one before the consumer is done with the last.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

from .engine import WindowedReader
from .errors import IntegrityError
from .index import IndexEntry
from .planning import ChunkJob

Span = tuple[int, int]


def member_spans(entries: Iterable[IndexEntry], pick: Callable[[IndexEntry], bool], tar_size: int
                 ) -> list[tuple[IndexEntry, int]]:
    """The index entries ``pick`` chooses, each with the stream offset its member ends at
    (where the next entry starts; the last member ends at ``tar_size``, where the
    end-of-archive marker starts). ``entries`` is consumed to its end (``index.parse``
    checks the totals there)."""
    out: list[tuple[IndexEntry, int]] = []
    pending: IndexEntry | None = None
    for entry in entries:
        if pending is not None:
            out.append((pending, entry.offset))
            pending = None
        if pick(entry):
            pending = entry
    if pending is not None:
        out.append((pending, tar_size))
    return out


def covering(jobs: list[ChunkJob], spans: list[Span]) -> list[ChunkJob]:
    """The chunks of ``jobs`` (all of the stream's, in order) that hold a byte of any span, in
    order, each once (a chunk two spans share is fetched once)."""
    out, i = [], 0
    for job in jobs:
        end = job.stream_offset + job.length
        while i < len(spans) and spans[i][1] <= job.stream_offset:
            i += 1
        if i < len(spans) and spans[i][0] < end:
            out.append(job)
    return out


class SpanSupply:
    """Hands out the fetched chunks span after span, from one in-order fetch of
    ``covering(jobs, spans)``: the chunks holding each span, the last one cut at the span's end.
    A chunk the previous span ended in is handed out again (not fetched again)."""

    def __init__(self, chunks: Iterator[tuple[ChunkJob, memoryview]]) -> None:
        self._chunks = chunks
        self._last: tuple[ChunkJob, memoryview] | None = None

    def chunks(self, begin: int, end: int) -> Iterator[tuple[ChunkJob, memoryview]]:
        """``(job, data)`` for each chunk holding a byte of ``[begin, end)``, in order, ``data``
        from the chunk's first byte to ``end`` at most. Ask for the spans in stream order.

        Raises:
            IntegrityError: the fetched chunks end before ``end``, or one arrives that does not
                hold the next byte wanted.
        """
        pos = begin
        while pos < end:
            last = self._last
            if last is None or last[0].stream_offset + len(last[1]) <= pos:
                try:
                    last = next(self._chunks)
                except StopIteration:
                    raise IntegrityError(f"the fetched chunks end before byte {end} of the stream") from None
                self._last = last
            job, data = last
            if not job.stream_offset <= pos < job.stream_offset + len(data):
                raise IntegrityError(f"chunk at stream offset {job.stream_offset} arrived, expected the one "
                                     f"holding byte {pos}")
            yield job, data[:end - job.stream_offset]
            pos = job.stream_offset + len(data)

    def pieces(self, spans: Iterable[Span]) -> Iterator[memoryview]:
        """The bytes of ``spans``, back to back: for each span, its part of each chunk."""
        for begin, end in spans:
            for job, data in self.chunks(begin, end):
                yield data[max(begin, job.stream_offset) - job.stream_offset:]


class SpanReader(WindowedReader):
    """A forward-only binary file over ``pieces`` (``SpanSupply.pieces``, and whatever follows
    them: update appends an end-of-archive marker); offsets are in this made-up stream. What a
    ``SafeExtractor`` reads to extract the members of several spans in one pass."""

    def __init__(self, pieces: Iterator[memoryview], ready: Callable[[], bool]) -> None:
        self._pieces = pieces
        self._ready = ready
        self._pos = 0
        self._cur: memoryview = memoryview(b"")
        self._cur_start = 0
        self.before_next_chunk: Callable[[], None] | None = None
        """As ``OrderedReader``'s: before waiting for the next chunk (``ready()`` false), the
        extractor writes and records the small files it holds, so that a kill while waiting
        loses none of them."""

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
