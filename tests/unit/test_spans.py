"""spans: the chunks covering some members' byte spans, and their bytes out of those chunks
(shared by update in place and repair)."""

from __future__ import annotations

import random

import pytest

from s3sync.errors import IntegrityError
from s3sync.index import IndexEntry, MemberRecord
from s3sync.planning import ChunkJob
from s3sync.spans import SpanReader, SpanSupply, covering, member_spans


def jobs_of(size: int, chunk: int) -> list[ChunkJob]:
    return [ChunkJob(0, "part-00000.tar", "etag", i, off, min(chunk, size - off), "d" * 32, off)
            for i, off in enumerate(range(0, size, chunk))]


def fetch(stream: bytes, jobs: list[ChunkJob], asked: list[int]):
    """What ChunkFetcher.fetch yields: (job, data) in order, ``data`` a view of ONE buffer that
    the next chunk overwrites (the fetch reuses its buffers): a consumer that keeps a view of an
    earlier chunk past the next request sees other bytes."""
    buf = bytearray(max(j.length for j in jobs))
    for job in jobs:
        asked.append(job.stream_offset)
        buf[:job.length] = stream[job.stream_offset:job.stream_offset + job.length]
        yield job, memoryview(buf)[:job.length]
        buf[:] = b"\xee" * len(buf)  # reused: the old bytes are gone


def random_spans(rng: random.Random, size: int) -> list[tuple[int, int]]:
    cuts = sorted(rng.sample(range(1, size), rng.randint(1, 30)))
    bounds = [0, *cuts, size]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if rng.random() < 0.4 and a < b]


def test_member_spans_end_where_the_next_entry_starts() -> None:
    entries = [IndexEntry(o, MemberRecord(p, "file", 1, 0o644, 0, "0" * 32)) for o, p in
               [(0, "a"), (1024, "b"), (2048, "c"), (4096, "d")]]
    got = member_spans(iter(entries), lambda e: e.record.path in {"b", "d"}, 8192)
    assert [(e.record.path, e.offset, end) for e, end in got] == [("b", 1024, 2048), ("d", 4096, 8192)]
    assert member_spans(iter(entries), lambda e: False, 8192) == []


def test_covering_takes_each_chunk_once_in_order() -> None:
    jobs = jobs_of(1000, 100)
    # two spans in chunk 1, one across chunks 3-5, one ending exactly at a chunk boundary
    assert [j.index for j in covering(jobs, [(110, 120), (150, 199), (350, 510), (700, 800)])] == [1, 3, 4, 5, 7]
    assert covering(jobs, []) == []


@pytest.mark.parametrize("seed", range(40))
def test_pieces_are_the_spans_bytes_and_only_covering_chunks_are_asked_for(seed: int) -> None:
    rng = random.Random(seed)
    size = rng.randint(1, 5000)
    stream = rng.randbytes(size)
    jobs = jobs_of(size, rng.choice([1, 7, 64, 512, 4096]))
    spans = random_spans(rng, size) if size > 1 else [(0, 1)]
    need = covering(jobs, spans)
    asked: list[int] = []
    supply = SpanSupply(fetch(stream, need, asked))
    got = b"".join(bytes(p) for p in supply.pieces(spans))  # each piece copied as it comes
    assert got == b"".join(stream[a:b] for a, b in spans)
    assert asked == [j.stream_offset for j in need]  # each chunk once, nothing more


@pytest.mark.parametrize("seed", range(20))
def test_chunks_per_span_as_repair_reads_them(seed: int) -> None:
    """Each span on its own (``chunks``), a shared chunk handed to the next span again: still
    valid, as the supply asks for no chunk before the span that needs it."""
    rng = random.Random(seed)
    size = rng.randint(2, 5000)
    stream = rng.randbytes(size)
    jobs = jobs_of(size, rng.choice([7, 64, 512]))
    spans = random_spans(rng, size) or [(0, size)]
    supply = SpanSupply(fetch(stream, covering(jobs, spans), []))
    for begin, end in spans:
        got = [(job.stream_offset, bytes(data)) for job, data in supply.chunks(begin, end)]
        assert got[0][0] <= begin < got[0][0] + len(got[0][1])  # from the chunk's first byte
        assert all(off + len(data) <= end for off, data in got)  # cut at the span's end
        joined = b"".join(d for _, d in got)
        assert joined == stream[got[0][0]:end]


def test_a_reader_over_the_pieces() -> None:
    stream = bytes(range(256)) * 8
    spans = [(10, 20), (100, 700), (1500, 2048)]
    supply = SpanSupply(fetch(stream, covering(jobs_of(len(stream), 128), spans), []))
    reader = SpanReader(supply.pieces(spans), lambda: True)
    assert reader.read(5) == stream[10:15]
    assert reader.read() == stream[15:20] + stream[100:700] + stream[1500:2048]


def test_chunks_that_end_early_or_arrive_out_of_order_are_refused() -> None:
    stream = bytes(1000)
    jobs = jobs_of(1000, 100)
    supply = SpanSupply(fetch(stream, jobs[:3], []))
    with pytest.raises(IntegrityError, match="end before byte 450"):
        list(supply.pieces([(50, 450)]))
    supply = SpanSupply(fetch(stream, [jobs[0], jobs[2]], []))
    with pytest.raises(IntegrityError, match="expected the one holding byte 100"):
        list(supply.pieces([(50, 250)]))
