"""Reassembly: reading through ``engine.OrderedReader`` reproduces the stream whatever the cut.

Chunks reach the reader in stream order (``ChunkFetcher`` reorders them); what varies is
how the stream is cut into parts and chunks, where reading starts, and the sizes of reads,
forward seeks and zero-copy ``views``. The delivery reuses one buffer, as the fetcher's
pool does, so a reader that held on to a stale view would return garbage.
"""

from __future__ import annotations

import io

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prop_helpers import reader_over

from s3sync.errors import IntegrityError

streams = st.binary(max_size=6000)
chunk_sizes = st.integers(min_value=1, max_value=900)
part_sizes = st.lists(st.integers(min_value=0, max_value=2500), min_size=1, max_size=5)
ops = st.lists(
    st.tuples(st.sampled_from(["read", "seek", "views", "seek_cur", "back"]),
              st.integers(min_value=0, max_value=1500)),
    max_size=40,
)


@given(data=streams, chunk_size=chunk_sizes, parts=part_sizes, plan=ops)
def test_random_reads_and_forward_seeks_reproduce_the_bytes(data: bytes, chunk_size: int,
                                                            parts: list[int], plan: list) -> None:
    reader = reader_over(data, chunk_size, parts)
    model = io.BytesIO(data)
    for op, n in plan:
        pos = reader.tell()
        assert pos == model.tell()
        if op == "read":
            assert reader.read(n) == model.read(n)
        elif op == "seek":
            target = min(pos + n, len(data))
            assert reader.seek(target) == model.seek(target)
        elif op == "seek_cur":
            target = min(n, len(data) - pos)
            assert reader.seek(target, 1) == model.seek(target, 1)
        elif op == "views":
            want = min(n, len(data) - pos)
            got = b"".join(bytes(v) for v in reader.views(want))
            assert got == model.read(want)
        else:  # a short seek back that stays inside bytes already read
            back = min(n, 1)
            if pos >= back:
                try:
                    reader.seek(pos - back)
                except ValueError:
                    continue  # allowed: back across a chunk boundary
                model.seek(pos - back)
    rest = reader.read()
    assert rest == model.read()
    assert reader.read(10) == b""
    assert reader.tell() == len(data)


@given(data=streams, chunk_size=chunk_sizes, parts=part_sizes, st_data=st.data())
def test_reading_from_any_start_offset(data: bytes, chunk_size: int, parts: list[int],
                                       st_data: st.DataObject) -> None:
    start = st_data.draw(st.integers(min_value=0, max_value=len(data)), label="start")
    step = st_data.draw(st.integers(min_value=1, max_value=1000), label="step")
    reader = reader_over(data, chunk_size, parts, start=start)
    assert reader.tell() == start
    out = bytearray()
    while piece := reader.read(step):
        out += piece
    assert bytes(out) == data[start:]


@given(data=st.binary(min_size=1, max_size=3000), chunk_size=chunk_sizes, extra=st.integers(1, 50))
def test_views_past_the_end_raise_integrity_error(data: bytes, chunk_size: int, extra: int) -> None:
    reader = reader_over(data, chunk_size)
    with pytest.raises(IntegrityError):
        for _ in reader.views(len(data) + extra):
            pass


@given(data=st.binary(min_size=1, max_size=3000), chunk_size=chunk_sizes)
def test_drain_reads_to_the_end(data: bytes, chunk_size: int) -> None:
    reader = reader_over(data, chunk_size)
    first = reader.read(len(data) // 3)
    assert reader.drain() == len(data) - len(first)
    assert reader.tell() == len(data)
