"""Shared builders for the property tests: chunked streams over in-memory bytes.

The chunk jobs come from ``planning`` exactly as a pull plans them; their digests are
arbitrary because ``engine.OrderedReader`` trusts what ``ChunkFetcher`` already verified.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Iterator
from pathlib import Path

from s3sync import archive, planning
from s3sync.engine import OrderedReader
from s3sync.manifest import Manifest, PartEntry

DUMMY_DIGEST = "0" * 32


def cut(total: int, part_sizes: list[int]) -> list[int]:
    """Part sizes that add up to ``total``: the given sizes in turn, the remainder last."""
    sizes = []
    left = total
    for size in part_sizes:
        if left <= 0:
            break
        take = min(size, left)
        sizes.append(take)
        left -= take
    if left > 0 or not sizes:
        sizes.append(left)
    return sizes


def manifest_for(total: int, part_sizes: list[int], chunk_size: int) -> Manifest:
    """A Manifest (not validated: chunk sizes may be tiny) describing ``total`` bytes."""
    gen = "g1"
    parts = tuple(
        PartEntry(f"{gen}/part-{i:05d}.tar", size, '"etag"', DUMMY_DIGEST,
                  (DUMMY_DIGEST,) * planning.chunk_count(size, chunk_size))
        for i, size in enumerate(cut(total, part_sizes))
    )
    return Manifest("ds", gen, "2024-01-01T00:00:00Z", chunk_size, total, DUMMY_DIGEST,
                    0, 0, 0, parts)


def deliver(data: bytes, jobs: list[planning.ChunkJob], *, scribble: bool = True,
            ) -> Iterator[tuple[planning.ChunkJob, memoryview]]:
    """Yield ``(job, view)`` like ``ChunkFetcher.fetch``: one reused buffer per chunk.

    With ``scribble`` the buffer is overwritten as soon as the consumer asks for the next
    chunk, the way the fetcher's buffer pool reuses it: a reader that kept a stale view
    would return garbage.
    """
    buf = bytearray(max((j.length for j in jobs), default=0))
    for job in jobs:
        view = memoryview(buf)[: job.length]
        view[:] = data[job.stream_offset: job.stream_offset + job.length]
        yield job, view
        if scribble:
            buf[:] = b"\xa5" * len(buf)


def reader_over(data: bytes, chunk_size: int, part_sizes: list[int] | None = None,
                start: int = 0) -> OrderedReader:
    """An OrderedReader over ``data`` cut into parts and chunks as a pull would plan them."""
    manifest = manifest_for(len(data), part_sizes or [len(data) or 1], chunk_size)
    jobs = planning.plan_pull(manifest, start)
    return OrderedReader(deliver(data, jobs), start, len(data))


def make_extractor(root: Path) -> archive.SafeExtractor:
    """A SafeExtractor for ``root`` whatever its constructor currently asks for."""
    params = inspect.signature(archive.SafeExtractor).parameters
    if "on_dir" in params:
        return archive.SafeExtractor(root, on_dir=lambda meta: None)
    return archive.SafeExtractor(root)


def ignore(*_args: object) -> None:
    """An ``on_member`` callback that does nothing."""


def links_escaping(root: Path) -> list[str]:
    """Every symlink or file under ``root`` whose resolved path is outside ``root``."""
    real_root = os.path.realpath(root)
    bad = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            resolved = os.path.realpath(path)
            if os.path.commonpath([resolved, real_root]) != real_root:
                bad.append(os.path.relpath(path, root))
    return bad
