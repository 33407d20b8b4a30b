"""Chunk planning: pure arithmetic over sizes and offsets (bytes), no I/O.

A *part* (one S3 object of the split archive) is cut into fixed-size *chunks*
(the unit of ranged GET and verification; ``index`` is 0-based). S3's multipart
upload has its own unit, the *multipart upload part* (``part_number`` is
1-based); its size is chosen here within the limits of the S3 API reference,
"Amazon S3 multipart upload limits": at most 10,000 parts per upload, each at
least 5 MiB except the last, at most 5 GiB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .manifest import Manifest

MiB = 1024 * 1024
GiB = 1024 * MiB

S3_MAX_UPLOAD_PARTS = 10_000
S3_MIN_UPLOAD_PART = 5 * MiB
S3_MAX_UPLOAD_PART = 5 * GiB
S3_MAX_OBJECT = 5 * 1024 * GiB
"""S3's largest object (5 TiB): a part is one object."""

DEFAULT_CHUNK_SIZE = 16 * MiB
DEFAULT_PART_SIZE = 10 * GiB
MIN_CHUNK_SIZE = 64 * 1024
MAX_CHUNK_SIZE = 512 * MiB


@dataclass(frozen=True, slots=True)
class ChunkSpan:
    """One chunk of a part: ``length`` bytes at ``offset`` within the part."""

    index: int
    offset: int
    length: int


def chunk_count(size: int, chunk_size: int) -> int:
    """Number of chunks of a part of ``size`` bytes; 0 for an empty part."""
    if size < 0 or chunk_size <= 0:
        raise ValueError(f"bad sizes: size={size} chunk_size={chunk_size}")
    return -(-size // chunk_size)


def chunk_spans(size: int, chunk_size: int) -> list[ChunkSpan]:
    """Cut a part of ``size`` bytes into chunks of ``chunk_size`` (the last may be shorter).

    The spans tile ``[0, size)`` exactly, in order, without gaps or overlap.
    """
    return [
        ChunkSpan(i, off, min(chunk_size, size - off))
        for i, off in enumerate(range(0, size, chunk_size))
    ]


def upload_part_size(max_object_size: int, preferred: int = 16 * MiB) -> int:
    """Multipart upload part size (bytes) for objects of at most ``max_object_size`` bytes.

    Returns ``preferred`` unless that would need more than 10,000 parts, in which
    case the smallest whole number of MiB that fits; never below 5 MiB.

    Raises:
        ValueError: if the object could not be uploaded within S3's limits.
    """
    size = max(preferred, S3_MIN_UPLOAD_PART)
    needed = -(-max_object_size // S3_MAX_UPLOAD_PARTS)
    if needed > size:
        size = -(-needed // MiB) * MiB
    if size > S3_MAX_UPLOAD_PART:
        raise ValueError(f"an object of {max_object_size} bytes exceeds S3's multipart limits")
    return size


@dataclass(frozen=True, slots=True)
class MemberCheck:
    """What a ranged job cut to fetch some members (``spans.plan_ranges``) must hold for one of
    them: the member index's record of it, checked before the bytes are used.

    Attributes:
        header: offset (bytes) in the job of the member's first header block.
        path, size, mode, mtime, digest: the member index's record (size in bytes, mtime in
            whole seconds, digest the XXH3-128 of the data).
    """

    header: int
    path: str
    size: int
    mode: int
    mtime: int
    digest: str


@dataclass(frozen=True, slots=True)
class ChunkJob:
    """One ranged GET to perform and verify during a pull.

    ``stream_offset`` is where the chunk's first byte sits in the logical tar stream
    (the parts concatenated in order).

    A job is verified by ``digest`` (a chunk of the manifest: its XXH3-128), or, for a
    range cut to fetch some members only (``spans.plan_ranges``: ``digest`` is ``""``), by
    ``members``: every member it holds, its headers and data checked against the member
    index's record (``ChunkFetcher``'s ``check``).
    """

    part_index: int
    key: str
    etag: str
    index: int
    offset: int
    length: int
    digest: str
    stream_offset: int
    members: tuple[MemberCheck, ...] = ()


def plan_pull(manifest: Manifest, start: int = 0) -> list[ChunkJob]:
    """All chunks needed to read the stream from byte ``start`` to its end, in stream order.

    The first job is the chunk containing ``start`` (callers skip the bytes before it).
    Empty parts yield no job (a ranged GET of a 0-byte object is answered 416).
    """
    jobs: list[ChunkJob] = []
    base = 0
    for p, part in enumerate(manifest.parts):
        for span, dig in zip(chunk_spans(part.size, manifest.chunk_size), part.chunks):
            if base + span.offset + span.length > start:
                jobs.append(
                    ChunkJob(p, part.key, part.etag, span.index, span.offset, span.length,
                             dig, base + span.offset)
                )
        base += part.size
    return jobs
