"""Properties of member-range planning (``spans``): for any tar stream cut into parts at member
boundaries, any chunk size and any set of wanted members, the planned ranges bring every byte
of every wanted member's span exactly once, in order, each range within one part and at most
a chunk long, and every member check a range carries holds on the true bytes and fails on
altered ones."""

from __future__ import annotations

import io
import tarfile

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prop_helpers import DUMMY_DIGEST, deliver

from s3sync import archive, hashing, planning
from s3sync.index import MemberRecord
from s3sync.manifest import END_OF_ARCHIVE, Manifest, PartEntry
from s3sync.spans import MemberSpan, check_range, plan_ranges, span_bytes


def _stream(sizes: list[int], long_names: list[bool]) -> tuple[bytes, list[tuple[int, int, bytes, str]]]:
    """A pax tar of files with these sizes (a long name gets a pax header); per member:
    header offset, size, data, name."""
    out = io.BytesIO()
    members = []
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for i, (size, long) in enumerate(zip(sizes, long_names, strict=True)):
            data = bytes((i * 7 + k) % 251 for k in range(size))
            name = f"f{i:04d}" + ("x" * 150 if long else "")
            info = tarfile.TarInfo(name)
            info.size = size
            off = out.tell()
            tar.addfile(info, io.BytesIO(data))
            members.append((off, size, data, name))
    return out.getvalue(), members


def _manifest(total: int, cuts: list[int], chunk_size: int) -> Manifest:
    sizes = [b - a for a, b in zip([0, *cuts], [*cuts, total], strict=True)]
    parts = tuple(PartEntry(f"g1/part-{i:05d}.tar", size, '"etag"', DUMMY_DIGEST,
                            (DUMMY_DIGEST,) * planning.chunk_count(size, chunk_size))
                  for i, size in enumerate(sizes))
    return Manifest("ds", "g1", "2024-01-01T00:00:00Z", chunk_size, total, DUMMY_DIGEST, 0, 0, 0, parts)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_planned_ranges_bring_every_wanted_span_once(data) -> None:
    n = data.draw(st.integers(1, 14), label="members")
    sizes = data.draw(st.lists(st.integers(0, 3000), min_size=n, max_size=n), label="sizes")
    longs = data.draw(st.lists(st.booleans(), min_size=n, max_size=n), label="long names")
    stream, members = _stream(sizes, longs)
    boundaries = sorted(data.draw(st.sets(st.sampled_from([m[0] for m in members[1:]] or [0])), label="cuts")
                        - {0})
    chunk_size = data.draw(st.sampled_from([512, 1000, 4096, 8192, 1 << 20]), label="chunk size")
    manifest = _manifest(len(stream), boundaries, chunk_size)
    wanted = sorted(data.draw(st.sets(st.integers(0, n - 1), min_size=1), label="wanted"))
    gap = data.draw(st.sampled_from([0, 512, 64 * 1024]), label="max gap")
    spans = []
    for i in wanted:
        off, size, content, name = members[i]
        end = len(stream) if i == n - 1 else members[i + 1][0]
        spans.append(MemberSpan(off, end, _record(name, content)))

    jobs = plan_ranges(manifest, spans, max_gap=gap)

    starts = [j.stream_offset for j in jobs]
    assert starts == sorted(starts)
    bases = [0]
    for part in manifest.parts:
        bases.append(bases[-1] + part.size)
    for job in jobs:
        assert job.stream_offset - bases[job.part_index] == job.offset
        assert job.offset + job.length <= manifest.parts[job.part_index].size  # one part
        assert job.length <= chunk_size
        assert bool(job.digest) != bool(job.members)  # a chunk, or a range checked member by member
        buf = memoryview(bytearray(stream[job.stream_offset:job.stream_offset + job.length]))
        if job.members:
            assert check_range(job, buf) == ""  # the true bytes pass
            for m in job.members:  # an altered byte of any member's header or data is caught
                data_at = m.header + archive.read_header(bytes(buf[m.header:]))[5]
                for at in (m.header + 3, data_at + m.size // 2 if m.size else None):
                    if at is None or at >= len(buf):
                        continue
                    buf[at] ^= 0x01
                    assert check_range(job, buf) != ""
                    buf[at] ^= 0x01
    got = b"".join(bytes(v) for v in span_bytes(deliver(stream, jobs), spans))
    assert got == b"".join(stream[s.start:s.end] for s in spans) + bytes(END_OF_ARCHIVE)
    # nothing far from the wanted spans is fetched: at most the gaps and whole chunks
    wanted_bytes = sum(s.end - s.start for s in spans)
    assert sum(j.length for j in jobs) <= wanted_bytes + len(jobs) * max(gap, chunk_size) + 2 * chunk_size


def _record(name: str, content: bytes) -> MemberRecord:
    return MemberRecord(name, "file", len(content), 0o644, 0, hashing.digest(content))


def test_the_last_member_with_a_pax_header_is_checked() -> None:
    stream, members = _stream([700, 1234], [False, True])
    off, size, content, name = members[-1]
    manifest = _manifest(len(stream), [], 1 << 20)
    span = MemberSpan(off, len(stream), _record(name, content))
    [job] = plan_ranges(manifest, [span])
    assert job.stream_offset == off and job.length == len(stream) - off
    buf = memoryview(bytearray(stream[off:]))
    assert check_range(job, buf) == ""
    data_at = stream.index(content, off) - off
    buf[data_at + 5] ^= 0xFF
    assert "digest" in check_range(job, buf)


def test_checking_many_members_reads_each_byte_about_once(monkeypatch) -> None:
    """Finding 1 of tests/breakers/test_break17a.py: the check must not be quadratic."""
    import s3sync.spans as spans_module
    hashed = []
    real = spans_module.hashing.digest
    monkeypatch.setattr(spans_module.hashing, "digest", lambda b: (hashed.append(len(b)), real(b))[1])
    stream, members = _stream([1000] * 400, [False] * 400)
    manifest = _manifest(len(stream), [], 1 << 20)
    spans = [MemberSpan(off, members[i + 1][0] if i + 1 < len(members) else len(stream), _record(name, content))
             for i, (off, _size, content, name) in enumerate(members)]
    [job] = plan_ranges(manifest, spans)
    hashed.clear()  # the records' digests above
    assert check_range(job, memoryview(stream)) == ""
    assert sum(hashed) == 400 * 1000


def test_a_span_larger_than_a_chunk_comes_as_whole_verified_chunks() -> None:
    stream, members = _stream([100, 9000, 100], [False, False, False])
    manifest = _manifest(len(stream), [], 4096)
    off, size, content, _name = members[1]
    jobs = plan_ranges(manifest, [MemberSpan(off, members[2][0], _record(members[1][3], content))])
    assert jobs and all(j.digest and not j.members for j in jobs)
    assert jobs == [j for j in planning.plan_pull(manifest) if j.stream_offset < members[2][0]
                    and j.stream_offset + j.length > off]
