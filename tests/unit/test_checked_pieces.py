"""splitpull.CheckedPieces hashes each chunk in a thread of its own while the consumer
extracts it (issue 11, speed): the chunk buffers are reused as soon as the next chunk is
asked for, as ``engine.ChunkFetcher.fetch`` reuses them, so every hash must be done by then;
and once the stream's last chunk has been handed over every piece must be settled, since a
consumer that stops at the end of the stream never asks for more.
"""

from __future__ import annotations

import hashlib
import os
import threading

import pytest

from s3sync import hashing
from s3sync.errors import PieceDigestError
from s3sync.pieces import Evidence, Piece, SplitArchive
from s3sync.splitpull import CheckedPieces, plan_chunks

CHUNK = 1 << 20


def archive_of(bodies: list[bytes], wrong: int | None = None) -> SplitArchive:
    """Pieces with an MD5 sidecar each; piece ``wrong``'s sidecar claims another digest."""
    pieces = []
    for i, body in enumerate(bodies):
        md5 = hashlib.md5(body if i != wrong else body + b"x").hexdigest()
        name = f"ds.tar.{i + 1:03d}"
        pieces.append(Piece(name, name, f"s3://b/{name}", len(body), f'"{i}"',
                            Evidence("sidecar", "md5", md5, name + ".md5")))
    return SplitArchive("ds", "s3://b/ds", tuple(pieces))


def reused_buffer(archive: SplitArchive, bodies: list[bytes]):
    """(job, view) for every chunk, all in ONE buffer that is overwritten the moment the
    next chunk is asked for (what a fetch worker writing a new GET into it would do)."""
    buf = bytearray(CHUNK)
    for job in plan_chunks(archive, CHUNK, 0, {}):
        buf[:job.length] = bodies[job.part_index][job.offset:job.offset + job.length]
        yield job, memoryview(buf)[:job.length]
        buf[:] = b"\xa5" * CHUNK


def checked_of(archive: SplitArchive, bodies: list[bytes]) -> tuple[CheckedPieces, list[int]]:
    seen: list[int] = []
    checked = CheckedPieces(archive, reused_buffer(archive, bodies), CHUNK, {}, lambda p: seen.append(p.index),
                            lambda: (0, 0), stream_digest=True)  # as adopt asks: the stream digest is checked too
    return checked, seen


@pytest.fixture
def bodies() -> list[bytes]:
    sizes = [3 * CHUNK + 1234, 2 * CHUNK, CHUNK // 3, 4 * CHUNK - 7]
    return [os.urandom(n) for n in sizes]


def test_every_piece_is_hashed_before_its_buffer_is_reused(bodies):
    archive = archive_of(bodies)
    checked, seen = checked_of(archive, bodies)
    try:
        passed = b"".join(bytes(view) for _, view in checked)
    finally:
        checked.close()
    assert passed == b"".join(bodies)
    assert seen == [0, 1, 2, 3]
    for i, body in enumerate(bodies):
        piece = checked.known[i]
        assert piece.computed == hashlib.md5(body).hexdigest() and piece.verified
        assert piece.digest == hashing.digest(body)
        assert piece.chunks == tuple(hashing.digest(body[at:at + CHUNK]) for at in range(0, len(body), CHUNK))
    assert checked.stream.hexdigest() == hashing.digest(b"".join(bodies))


def test_every_piece_is_settled_once_the_last_chunk_is_handed_over(bodies):
    archive = archive_of(bodies)
    checked, _ = checked_of(archive, bodies)
    it = iter(checked)
    try:
        for _ in plan_chunks(archive, CHUNK, 0, {}):
            next(it)  # the consumer never asks past the last chunk
        assert sorted(checked.known) == [0, 1, 2, 3]
        assert checked.stream.hexdigest() == hashing.digest(b"".join(bodies))
    finally:
        checked.close()


@pytest.mark.parametrize("wrong", [1, 3])
def test_a_mismatch_is_raised_before_the_chunk_after_the_piece_is_handed_over(bodies, wrong):
    archive = archive_of(bodies, wrong=wrong)
    checked, seen = checked_of(archive, bodies)
    jobs = plan_chunks(archive, CHUNK, 0, {})
    handed = []
    with pytest.raises(PieceDigestError, match=f"piece {wrong + 1} "):
        for job, _ in checked:
            handed.append(job)
    checked.close()
    assert checked.failed == wrong and seen == list(range(wrong))
    last_of_wrong = max(k for k, job in enumerate(jobs) if job.part_index == wrong)
    # a middle piece: its own chunks were passed on, the next piece's first was not;
    # the last piece: its last chunk is checked before it is passed on
    assert len(handed) == (last_of_wrong + 1 if wrong < len(bodies) - 1 else last_of_wrong)


def test_pieces_are_hashed_off_the_consumers_thread(bodies, monkeypatch):
    threads = set()
    update = hashing.PieceHasher.update

    def spy(self, data):
        threads.add(threading.current_thread().name)
        return update(self, data)

    monkeypatch.setattr(hashing.PieceHasher, "update", spy)
    archive = archive_of(bodies)
    checked, _ = checked_of(archive, bodies)
    try:
        for _ in checked:
            pass
    finally:
        checked.close()
    assert threads and all(name.startswith("s3sync-hash") for name in threads)
