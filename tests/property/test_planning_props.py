"""Properties of chunk planning: chunks tile a part, plans tile a stream, upload part sizes fit S3."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st
from prop_helpers import manifest_for

from s3sync import planning
from s3sync.planning import GiB, MiB

sizes = st.integers(min_value=0, max_value=10 * GiB)
chunk_sizes = st.integers(min_value=1, max_value=1 * GiB)


@given(size=sizes, chunk_size=chunk_sizes)
def test_chunk_spans_tile_the_part(size: int, chunk_size: int) -> None:
    if size // chunk_size > 20_000:  # keep the list small; the arithmetic is the same
        chunk_size = -(-size // 20_000)
    spans = planning.chunk_spans(size, chunk_size)
    assert len(spans) == planning.chunk_count(size, chunk_size)
    pos = 0
    for i, span in enumerate(spans):
        assert span.index == i
        assert span.offset == pos
        assert 0 < span.length <= chunk_size
        if i < len(spans) - 1:
            assert span.length == chunk_size  # only the last chunk may be short
        pos += span.length
    assert pos == size


@given(size=st.integers(min_value=-(2**40), max_value=-1), chunk_size=chunk_sizes)
def test_chunk_count_rejects_negative_sizes(size: int, chunk_size: int) -> None:
    with pytest.raises(ValueError):
        planning.chunk_count(size, chunk_size)


@given(object_size=st.integers(min_value=0, max_value=10_000 * 5 * GiB),
       preferred=st.integers(min_value=0, max_value=5 * GiB))
def test_upload_part_size_fits_s3_limits(object_size: int, preferred: int) -> None:
    size = planning.upload_part_size(object_size, preferred)
    assert size >= planning.S3_MIN_UPLOAD_PART
    assert size <= planning.S3_MAX_UPLOAD_PART
    assert -(-object_size // size) <= planning.S3_MAX_UPLOAD_PARTS
    if -(-object_size // max(preferred, 5 * MiB)) <= planning.S3_MAX_UPLOAD_PARTS:
        assert size == max(preferred, planning.S3_MIN_UPLOAD_PART)  # preferred is kept when it fits
    else:
        assert size % MiB == 0


@given(object_size=st.integers(min_value=10_000 * 5 * GiB + 1, max_value=2**62))
def test_upload_part_size_refuses_impossible_objects(object_size: int) -> None:
    with pytest.raises(ValueError):
        planning.upload_part_size(object_size)


@given(total=st.integers(min_value=0, max_value=5000),
       part_sizes=st.lists(st.integers(min_value=0, max_value=2000), min_size=1, max_size=6),
       chunk_size=st.integers(min_value=1, max_value=700),
       data=st.data())
def test_plan_pull_tiles_the_stream_from_any_start(total: int, part_sizes: list[int], chunk_size: int,
                                                   data: st.DataObject) -> None:
    manifest = manifest_for(total, part_sizes, chunk_size)
    start = data.draw(st.integers(min_value=0, max_value=total), label="start")
    jobs = planning.plan_pull(manifest, start)
    if start == total:
        assert jobs == []
        return
    assert jobs[0].stream_offset <= start < jobs[0].stream_offset + jobs[0].length
    pos = jobs[0].stream_offset
    part_bases = [sum(p.size for p in manifest.parts[:i]) for i in range(len(manifest.parts))]
    for job in jobs:
        assert job.length > 0  # empty parts yield no job (a 0-byte ranged GET is a 416)
        assert job.stream_offset == pos
        part = manifest.parts[job.part_index]
        assert job.key == part.key
        assert job.stream_offset == part_bases[job.part_index] + job.offset
        assert job.offset + job.length <= part.size
        assert job.offset == job.index * chunk_size
        pos += job.length
    assert pos == total
