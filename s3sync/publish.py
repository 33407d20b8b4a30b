"""Publish: pack a directory into a tar stream, cut it into parts, hash, upload, commit.

The tar stream is never written to local disk. The calling thread writes the tar
(``archive.write_tar``) into a ``PartWriter``, which hashes every chunk, cuts parts
at member boundaries once ``part_size`` would be exceeded (and hard at
``part_size`` inside a member larger than a part), and feeds each part through a
bounded pipe to an uploader thread doing an s3transfer multipart upload.
The manifest is written last: until then the previous generation stays the
published one.
"""

from __future__ import annotations

import queue
from collections import deque
import secrets
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from . import archive, hashing
from .config import Location, TransferSettings
from .errors import Interrupted, S3SyncError, StoreError
from .manifest import MANIFEST_NAME, Manifest, PartEntry
from .planning import upload_part_size
from .progress import NullProgress, Progress
from .stores.base import ObjectInfo, Store

_PIPE_DEPTH = 16
_UPLOADERS = 2
_COALESCE = 1024 * 1024


class _Pipe:
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
    pipe: _Pipe
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
                 start_part: Callable[[int, _Pipe], None],
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
        part = _OpenPart(self._next_index, _Pipe(self._failed))
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


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What a publish committed: the manifest, where, and how long it took (seconds)."""

    manifest: Manifest
    location: Location
    elapsed_s: float


def _discard(store: Store, keys: list[str], progress: Progress) -> None:
    """Best-effort removal of the parts of a generation that will never be committed."""
    if not keys:
        return
    try:
        store.delete(keys)
    except S3SyncError as err:
        progress.message(f"could not remove {len(keys)} uncommitted part(s): {err}")


def new_generation() -> str:
    """A fresh generation id: UTC time plus randomness, sortable by time."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(4)


def publish(src: Path, name: str, location: Location, store: Store, settings: TransferSettings,
            progress: Progress | None = None) -> PublishResult:
    """Publish directory ``src`` as dataset ``name`` at ``location``.

    Raises:
        SourceError: ``src`` is unreadable or holds something that cannot be published.
        StoreError: the bucket is missing or an upload failed for good.
        Interrupted: on Ctrl-C; nothing is committed, the previous generation stays.
    """
    progress = progress or NullProgress()
    started = time.monotonic()
    store.check_bucket()
    entries = archive.scan_tree(src)
    estimate = sum(e.st.st_size for e in entries if e.link is None) + 1024 * len(entries)
    generation = new_generation()
    up_size = upload_part_size(settings.part_size, max(settings.chunk_size, 8 * 1024 * 1024))

    failed = threading.Event()
    parts: dict[int, tuple[int, str, list[str]]] = {}
    # HEAD of each uploaded part (for the ETag a GET will show), run while the next part
    # uploads: on rclone serve s3 a HEAD computes the object's MD5 (0.44 s per 256 MiB).
    heads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3sync-head")
    uploaded: dict[int, Future[ObjectInfo]] = {}
    work: queue.Queue[tuple[int, _Pipe] | None] = queue.Queue()
    errors: list[BaseException] = []

    def key(index: int) -> str:
        return f"{generation}/part-{index:05d}.tar"

    def uploader() -> None:
        while (item := work.get()) is not None:
            index, pipe = item
            try:
                store.upload(location.key(key(index)), pipe, up_size)
                uploaded[index] = heads.submit(store.head, location.key(key(index)))
            except BaseException as err:  # reported by the main thread
                errors.append(err)
                failed.set()
                return

    # Two uploaders: the next part starts uploading while the server completes the
    # previous one (CompleteMultipartUpload assembles the part; rclone copies it whole).
    threads = [threading.Thread(target=uploader, name=f"s3sync-upload-{i}", daemon=True)
               for i in range(_UPLOADERS)]
    for thread in threads:
        thread.start()
    progress.start("upload", estimate)
    writer = PartWriter(settings.part_size, settings.chunk_size,
                        start_part=lambda i, pipe: work.put((i, pipe)),
                        end_part=lambda i, size, dig, chunks: parts.__setitem__(i, (size, dig, chunks)),
                        failed=failed, progress=progress)
    try:
        try:
            stats = archive.write_tar(entries, writer, writer.before_member)
            writer.close()
        except BaseException as err:
            failed.set()
            if not errors or not isinstance(err, Interrupted):
                raise
        finally:
            for thread in threads:
                work.put(None)
            for thread in threads:
                while thread.is_alive():
                    thread.join(timeout=0.2)
        if errors:
            err = errors[0]
            if isinstance(err, S3SyncError):
                raise err
            raise StoreError(f"upload to {location.url()} failed: {err}") from err
        progress.start("upload", writer.tell())  # the estimate counted ~1 KiB of tar per member
        progress.finish("upload")

        entries_out = []
        for index in sorted(parts):
            size, dig, chunks = parts[index]
            info = uploaded[index].result()
            if info.size != size:
                raise StoreError(f"{location.url(key(index))}: server reports {info.size} bytes, {size} were sent")
            entries_out.append(PartEntry(key(index), size, info.etag, dig, tuple(chunks)))
        manifest = Manifest(
            name=name, generation=generation,
            created=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            chunk_size=settings.chunk_size, stream_size=writer.tell(),
            stream_digest=writer.stream_hasher.hexdigest(), files=stats.files,
            extracted_size=stats.extracted_size, members=stats.members, parts=tuple(entries_out),
        )
        store.put(location.key(MANIFEST_NAME), manifest.to_json())
    except BaseException:
        heads.shutdown(wait=True, cancel_futures=True)
        _discard(store, [location.key(key(i)) for i in uploaded], progress)
        raise
    heads.shutdown()
    if (warning := archive.owner_unreadable_warning(entries)) is not None:  # said once it is true
        progress.message(warning)
    return PublishResult(manifest, location, time.monotonic() - started)
