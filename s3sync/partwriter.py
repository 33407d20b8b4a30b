"""The tar stream cut into parts: ``PartWriter`` hashes every chunk, part and the whole
stream as publish writes the tar, and hands each part through a bounded ``Pipe`` to an
uploader thread. Pure in-memory machinery: no I/O, no third-party imports.

Parts are cut at member boundaries once ``part_size`` would be exceeded (``before_member``)
and hard at ``part_size`` inside a member larger than a part.
"""

from __future__ import annotations

import queue
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from . import hashing
from .errors import Interrupted
from .progress import Progress

_PIPE_DEPTH = 16
_COALESCE = 1024 * 1024


class Pipe:
    """A bounded, blocking, non-seekable byte stream from the tar writer to s3transfer.

    ``read(n)`` returns exactly ``n`` bytes unless the part has ended: s3transfer
    takes a short read as the end of a multipart upload part, and S3 rejects parts
    under 5 MiB that are not the last.
    """

    def __init__(self, failed: threading.Event) -> None:
        self._q: queue.Queue[bytes | bytearray | None] = queue.Queue(_PIPE_DEPTH)
        self._items: deque[bytes | bytearray] = deque()
        self._held = 0
        self._eof = False
        self._failed = failed

    def put(self, data: bytes | bytearray | None) -> None:
        while True:
            if self._failed.is_set():
                raise Interrupted("upload failed")
            try:
                self._q.put(data, timeout=0.2)
                return
            except queue.Full:
                continue

    def read(self, n: int = -1) -> bytes:
        while not self._eof and (n < 0 or self._held < n):
            try:
                item = self._q.get(timeout=0.2)
            except queue.Empty:
                if self._failed.is_set():
                    raise Interrupted("publish stopped") from None
                continue
            if item is None:
                self._eof = True
            else:
                self._items.append(item)
                self._held += len(item)
        if n < 0 or n >= self._held:
            out = b"".join(self._items)
            self._items.clear()
            self._held = 0
            return out
        taken: list[bytes | bytearray] = []
        need = n
        while need:
            item = self._items.popleft()
            if len(item) > need:
                self._items.appendleft(item[need:])
                item = item[:need]
            taken.append(item)
            need -= len(item)
        self._held -= n
        return b"".join(taken)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False


@dataclass(slots=True)
class _OpenPart:
    index: int
    pipe: Pipe
    size: int = 0
    chunk_pos: int = 0
    hasher: hashing.Hasher = field(default_factory=hashing.Hasher)
    chunk_hasher: hashing.Hasher = field(default_factory=hashing.Hasher)
    chunks: list[str] = field(default_factory=list)
    small: bytearray = field(default_factory=bytearray)


class PartWriter:
    """File-like sink for the tar stream that cuts, hashes and hands over parts.

    Args:
        part_size: target bytes per part (a part never exceeds it).
        chunk_size: bytes per chunk (digest unit).
        start_part: called with ``(index, pipe)`` when a part begins.
        end_part: called with ``(index, size, digest, chunk digests)`` when it ends.
    """

    def __init__(self, part_size: int, chunk_size: int,
                 start_part: Callable[[int, Pipe], None],
                 end_part: Callable[[int, int, str, list[str]], None],
                 failed: threading.Event, progress: Progress) -> None:
        self.part_size = part_size
        self.chunk_size = chunk_size
        self._start_part = start_part
        self._end_part = end_part
        self._failed = failed
        self._progress = progress
        self._part: _OpenPart | None = None
        self._next_index = 0
        self._pos = 0
        self.stream_hasher = hashing.Hasher()

    def tell(self) -> int:
        return self._pos

    def write(self, data: bytes | bytearray | memoryview) -> int:
        mv = memoryview(data).cast("B")
        n = len(mv)
        while mv:
            part = self._part or self._open()
            take = mv[: min(len(mv), self.part_size - part.size, self.chunk_size - part.chunk_pos)]
            # Coalesce small writes (tar headers, tiny files): they are hashed and handed to
            # the uploader once per ~1 MiB instead of once per 512-byte header. Each hash
            # call releases the GIL, and getting it back can cost this thread, the only
            # producer, a whole switch interval while the upload threads run.
            if len(take) >= _COALESCE:
                self._flush(part)
                # tarfile hands over fresh bytes objects: keep them whole rather than copy.
                self._send(part, data if len(take) == n and isinstance(data, bytes) else bytes(take))
            else:
                part.small += take
                if len(part.small) >= _COALESCE:
                    self._flush(part)
            part.size += len(take)
            part.chunk_pos += len(take)
            self._pos += len(take)
            mv = mv[len(take):]
            if part.chunk_pos == self.chunk_size:
                self._flush(part)
                part.chunks.append(part.chunk_hasher.hexdigest())
                part.chunk_hasher = hashing.Hasher()
                part.chunk_pos = 0
            if part.size == self.part_size:
                self._close_part()
        self._progress.advance("upload", n)
        return n

    def before_member(self, span: int) -> None:
        """Cut the current part if the next member (``span`` bytes) would overflow it."""
        if self._part is not None and self._part.size and self._part.size + span > self.part_size:
            self._close_part()

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """End the last part (an empty trailing part is not created)."""
        if self._part is not None:
            self._close_part()

    def _send(self, part: _OpenPart, data: bytes | bytearray) -> None:
        """Hash ``data`` into the chunk, part and stream digests; hand it to the uploader
        (which owns it from then on: it is never written to again)."""
        part.chunk_hasher.update(data)
        part.hasher.update(data)
        self.stream_hasher.update(data)
        part.pipe.put(data)

    def _flush(self, part: _OpenPart) -> None:
        """Send the coalesced small writes."""
        if part.small:
            data, part.small = part.small, bytearray()
            self._send(part, data)  # handed over as it is: a copy would cost 0.1 s per GiB

    def _open(self) -> _OpenPart:
        part = _OpenPart(self._next_index, Pipe(self._failed))
        self._next_index += 1
        self._part = part
        self._start_part(part.index, part.pipe)
        return part

    def _close_part(self) -> None:
        part = self._part
        assert part is not None
        self._flush(part)
        if part.chunk_pos:
            part.chunks.append(part.chunk_hasher.hexdigest())
        part.pipe.put(None)
        self._part = None
        self._end_part(part.index, part.size, part.hasher.hexdigest(), part.chunks)
