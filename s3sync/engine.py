"""Bounded parallel chunk fetching with retry, cancel and in-order delivery.

``ChunkFetcher.fetch`` runs ranged GETs on a pool of worker threads, verifies the
length and digest of every chunk in the worker (xxhash releases the GIL), retries
a failed chunk alone with exponential backoff and full jitter (AWS Architecture
Blog, "Exponential Backoff and Jitter", 2015), and hands chunks to one consumer
in stream order. ``OrderedReader`` turns that sequence into a forward-only file.
``ChunkFetcher.fetch_to`` instead hands each chunk to a writer in small pieces as they
arrive (hashing them on the way) and reports the chunk once verified: for writing part
files, where bytes can be written before their chunk is verified and overwritten if not.

Memory is bounded: at most ``window`` chunk buffers exist, each reused once the
consumer is done with it, so memory is about ``window * chunk_size`` bytes
whatever the dataset size.
"""

from __future__ import annotations

import queue
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import hashing
from .config import TransferSettings
from .errors import (
    DamagedDatasetError,
    IntegrityError,
    Interrupted,
    NotFoundError,
    PartChangedError,
    S3SyncError,
)
from .planning import ChunkJob
from .progress import NullProgress, Progress
from .stores.base import Store, same_etag

T = TypeVar("T")


def backoff_s(settings: TransferSettings, attempt: int, rng: random.Random | None = None) -> float:
    """Seconds to wait before retry number ``attempt + 1`` (``attempt`` 0 for the first
    retry): exponential backoff with full jitter (AWS Architecture Blog, "Exponential
    Backoff and Jitter", 2015), uniform in ``[0, min(backoff_max_s, backoff_base_s * 2**attempt)]``.
    The one policy of every retry of a request in s3sync."""
    cap = min(settings.backoff_max_s, settings.backoff_base_s * 2 ** attempt)
    return (rng or random).uniform(0, cap)


def with_retries(call: Callable[[], T], settings: TransferSettings,
                 on_retry: Callable[[S3SyncError, float], None] | None = None) -> T:
    """``call()``, tried again after a retriable ``S3SyncError`` (``err.retriable``) up to
    ``settings.retries`` times with ``backoff_s`` between: for small requests outside a
    ``ChunkFetcher`` (a HEAD, a range probe, a zip's tail).

    Args:
        call: the request; raises ``S3SyncError`` on failure.
        settings: ``retries`` and the backoff (seconds).
        on_retry: told each retriable error and the delay (seconds) before the next try.

    Raises:
        S3SyncError: the first error that is not retriable, or the last one.
    """
    for attempt in range(settings.retries + 1):
        try:
            return call()
        except S3SyncError as err:
            if not err.retriable or attempt == settings.retries:
                raise
            delay = backoff_s(settings, attempt)
            if on_retry is not None:
                on_retry(err, delay)
            time.sleep(delay)
    raise AssertionError("unreachable")


PIECE = 512 * 1024
"""Bytes per piece of ``fetch_to``: small enough to stay in a core's L2 cache (1 MiB on
the benchmark machine) between the socket read, the hash and the write, large enough to
keep system calls and thread switches few. Measured (1 GiB of parts onto ext4, 8
interleaved runs, median wall s): 256 KiB 1.73, 512 KiB 1.45, 1 MiB 1.59; 2 MiB and
4 MiB pieces doubled the system CPU."""


@dataclass(slots=True)
class FetchStats:
    """Counters of one fetch: bytes received (including retried attempts), retries."""

    bytes_received: int = 0
    chunks: int = 0
    retries: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, received: int = 0, chunks: int = 0, retries: int = 0) -> None:
        with self.lock:
            self.bytes_received += received
            self.chunks += chunks
            self.retries += retries


class ChunkFetcher:
    """Fetch and verify chunks in parallel; deliver them in order.

    Args:
        store: where the parts live.
        key_of: maps a manifest part key to the full object key.
        settings: concurrency, window, retry budget and backoff (seconds).
        progress: receives ``download`` bytes as they arrive, rewound on retry.
        pins: part key -> ETag every request for that part is pinned to from the start
            (default: the ETag of each part's first response).
        check_members: for jobs with ``members`` (ranges cut to fetch some members,
            ``spans.plan_ranges``): ``check_members(job, data)`` returns "" if the bytes hold
            those members as recorded, else what differs; run in the worker, a difference is
            retried like a chunk with a wrong digest, and the same difference twice is a
            ``DamagedDatasetError`` (the published bytes, not a transit error).

    A job whose ``digest`` is ``""`` is checked for length only: a split archive's pieces
    have no chunk digests until a whole piece has been checked (``splitpull``).
    """

    def __init__(self, store: Store, key_of: Callable[[str], str], settings: TransferSettings,
                 progress: Progress | None = None, pins: dict[str, str] | None = None,
                 check_members: Callable[[ChunkJob, memoryview], str] | None = None) -> None:
        self.store = store
        self.check_members = check_members
        self.key_of = key_of
        self.settings = settings
        self.progress = progress or NullProgress()
        self.stats = FetchStats()
        self._cancel = threading.Event()
        self._rng = random.Random()
        self._pending: queue.Queue | None = None
        # part key -> ETag of the first response in this run, or as given in ``pins`` (a split
        # archive's pieces are pinned to the ETags listed when the pull began)
        self._etags: dict[str, str] = dict(pins or {})
        self._etags_lock = threading.Lock()

    def cancel(self) -> None:
        """Ask workers to stop at their next step (between reads or retries)."""
        self._cancel.set()

    def fetch(self, jobs: Iterable[ChunkJob]) -> Iterator[tuple[ChunkJob, memoryview]]:
        """Yield ``(job, data)`` for every job, in the order given.

        ``data`` is valid only until the next item is requested: its buffer is then reused.

        Raises:
            S3SyncError: the first chunk that failed for good (non-retriable error or
                retry budget spent); the remaining work is cancelled.
        """
        pool: queue.SimpleQueue[bytearray] = queue.SimpleQueue()

        def start(job: ChunkJob, executor: ThreadPoolExecutor):
            try:
                buf = pool.get_nowait()
            except queue.Empty:
                buf = bytearray(self.settings.chunk_size)
            if len(buf) < job.length:
                buf = bytearray(job.length)
            view = memoryview(buf)[: job.length]
            return executor.submit(self._fetch_one, job, view), (job, view), lambda: pool.put(buf)

        return self._run(jobs, start)

    def fetch_to(self, jobs: Iterable[ChunkJob],
                 write: Callable[[ChunkJob, int, memoryview], None]) -> Iterator[ChunkJob]:
        """Fetch every chunk in pieces of ``PIECE`` bytes, handing each piece to
        ``write(job, offset, piece)`` as it arrives (``offset`` is the piece's byte offset in
        the part object), hashing it on the way; yield the jobs in the order given, each
        once its whole chunk has been written and verified.

        ``write`` runs in the worker threads and sees bytes *before* their chunk is
        verified: a chunk that fails is written again by its retry, so the caller must
        only trust chunks that have been yielded. Each piece is written while it is still
        in the CPU cache: measured on 1 GiB of part files, 0.5 s of system CPU instead of
        1.5 s for writing whole 16 MiB chunks after verification, and half the wall time.
        No chunk-sized buffers are used: memory is ``concurrency * PIECE`` bytes.

        Raises:
            S3SyncError: as ``fetch``; also whatever ``write`` raises.
        """
        scratch = threading.local()

        def work(job: ChunkJob) -> None:
            buf = getattr(scratch, "buf", None)
            if buf is None:
                buf = scratch.buf = memoryview(bytearray(PIECE))
            self._fetch_one(job, buf, write)

        def start(job: ChunkJob, executor: ThreadPoolExecutor):
            return executor.submit(work, job), job, None

        return self._run(jobs, start)

    def _run(self, jobs: Iterable[ChunkJob],
             start: Callable[[ChunkJob, ThreadPoolExecutor], tuple[Future[None], Any, Callable[[], None] | None]]
             ) -> Iterator[Any]:
        """Start jobs on the worker pool, at most ``window`` ahead of the consumer; yield
        each started job's item in order once its future is done.

        ``start(job, executor)`` submits the job and returns ``(future, item, release)``;
        ``release()`` (or None) runs once the consumer is done with ``item``.
        """
        slots = threading.Semaphore(max(1, self.settings.window))
        pending: queue.Queue[tuple[Future[None], object, Callable[[], None] | None] | None] = queue.Queue()
        self._pending = pending
        executor = ThreadPoolExecutor(max_workers=self.settings.concurrency, thread_name_prefix="s3sync-fetch")

        def feed() -> None:
            try:
                for job in jobs:
                    while not slots.acquire(timeout=0.2):
                        if self._cancel.is_set():
                            return
                    if self._cancel.is_set():
                        return
                    try:
                        pending.put(start(job, executor))
                    except RuntimeError:  # the pool was shut down: the consumer has stopped
                        return
            finally:
                pending.put(None)

        feeder = threading.Thread(target=feed, name="s3sync-feed", daemon=True)
        feeder.start()
        try:
            while True:
                entry = pending.get()
                if entry is None:
                    return
                fut, item, release = entry
                fut.result()
                try:
                    yield item
                finally:
                    if release is not None:
                        release()
                    slots.release()
        finally:
            self._cancel.set()
            executor.shutdown(wait=False, cancel_futures=True)
            feeder.join(timeout=5)

    def next_ready(self) -> bool:
        """True if the next item of the running fetch can be had without waiting."""
        pending = self._pending
        if pending is None:
            return False
        with pending.mutex:
            if not pending.queue:
                return False
            head = pending.queue[0]
        return head is None or head[0].done()  # None: the end of the stream

    def _fetch_one(self, job: ChunkJob, buf: memoryview,
                   write: Callable[[ChunkJob, int, memoryview], None] | None = None) -> None:
        """Fetch the chunk and verify its digest, retrying it alone.

        Without ``write``: into ``buf`` (``job.length`` bytes). With ``write``: in pieces
        through ``buf`` (scratch), each handed to ``write`` as it arrives.
        """
        key = self.key_of(job.key)
        s = self.settings
        bad = ""  # the wrong digest of the previous attempt
        for attempt in range(s.retries + 1):
            if self._cancel.is_set():
                raise Interrupted("cancelled")
            counted = 0

            def on_bytes(n: int) -> None:
                nonlocal counted
                counted += n
                self.progress.advance("download", n)
                if self._cancel.is_set():
                    raise Interrupted("cancelled")

            def on_etag(etag: str) -> None:
                self._observe(job, key, etag)

            pinned = self._etags.get(job.key)
            try:
                if write is None:
                    self.store.read_range_into(key, job.offset, buf, pinned, on_bytes, on_etag=on_etag)
                    got = hashing.digest(buf) if job.digest else ""
                    problem = self._member_problem(job, buf) if job.members else ""
                    if problem:
                        if problem == bad:  # the same twice: the bytes published, not a transit error
                            raise DamagedDatasetError(
                                f"this dataset is damaged: {self.store.url(key)} {problem}, on two attempts",
                                hint="the member index does not describe the parts: pull the whole dataset "
                                     "into a fresh directory, or republish it")
                        bad = problem
                        raise IntegrityError(f"{self.store.url(key)}: {problem}")
                else:
                    if job.members:
                        raise ValueError("fetch_to cannot check a job's members: use fetch")
                    hasher = hashing.Hasher()
                    pos = job.offset
                    pieces = self.store.read_range_pieces(key, job.offset, job.length, pinned, buf, on_etag=on_etag)
                    try:
                        for piece in pieces:
                            hasher.update(piece)
                            write(job, pos, piece)
                            pos += len(piece)
                            on_bytes(len(piece))
                    finally:
                        pieces.close()  # the connection goes back to the pool or is closed now
                    got = hasher.hexdigest()
                if job.digest and got != job.digest:
                    what = (f"chunk {job.index} (bytes {job.offset}-{job.offset + job.length - 1}) has digest {got}, "
                            f"expected {job.digest}")
                    observed = self._etags.get(job.key, "")
                    if observed and not same_etag(observed, job.etag) and (got == bad or attempt == s.retries):
                        # Not the object published, and the same wrong bytes twice: not a transit error.
                        raise _part_changed(
                            job, f"part {job.part_index} ({self.store.url(key)}) changed on the server "
                                 f"since publish and no longer matches the manifest: {what} (ETag {observed}, "
                                 f"published as {job.etag})",
                            hint="the part was overwritten after publish: republish the dataset (or pull an "
                                 "intact copy of it)")
                    bad = got
                    raise IntegrityError(f"{self.store.url(key)}: {what}")
                self.stats.add(received=counted, chunks=1)
                return
            except S3SyncError as err:
                self.stats.add(received=counted)
                self.progress.advance("download", -counted)
                explained = self._explain(job, key, err)
                if explained is not err:
                    raise explained from err
                if not err.retriable or attempt == s.retries:
                    raise
                self.stats.add(retries=1)
                delay = backoff_s(s, attempt, self._rng)
                self.progress.message(f"retrying chunk {job.index} of {job.key} in {delay:.1f}s: {err}")
                if self._cancel.wait(delay):
                    raise Interrupted("cancelled") from err


    def _member_problem(self, job: ChunkJob, buf: memoryview) -> str:
        """What differs between a ranged job's bytes and the member index's records of the
        members it holds (``check_members``), naming the bytes; "" if nothing."""
        if self.check_members is None:
            raise ValueError("a job with members needs a fetcher with check_members")
        problem = self.check_members(job, buf)
        return f"bytes {job.offset}-{job.offset + job.length - 1}: {problem} (the member index's record)" \
            if problem else ""

    def _explain(self, job: ChunkJob, key: str, err: S3SyncError) -> S3SyncError:
        """What a store error means for a part of a published dataset: a part that is not
        there (404) makes the dataset damaged, not a wrong name; a pinned request that
        found another ETag (or 412) means the part changed during this pull."""
        if isinstance(err, PartChangedError) and getattr(err, "part_index", None) is None:
            return _part_changed(job, f"part {job.part_index} changed on the server during this pull: {err}",
                                 hint=_RERUN_HINT)
        if isinstance(err, NotFoundError) and not err.bucket_missing:
            return DamagedDatasetError(
                f"this dataset is damaged: part {job.part_index} ({self.store.url(key)}) is missing")
        return err

    def _observe(self, job: ChunkJob, key: str, etag: str) -> None:
        """Pin ``job``'s part to the ETag of its first response in this run; refuse a later
        response with another one (the part changed during the pull).

        The manifest's ETag is not required: a byte-identical copy of the dataset (S3
        CopyObject, ``aws s3 cp --recursive``) has other ETags than the multipart uploads
        of the publish, and the chunk digests decide integrity anyway. A server that sends
        no ETag leaves the part unpinned; the digests still check every byte.

        Raises:
            PartChangedError: naming the part and both ETags.
        """
        if not etag:
            return
        with self._etags_lock:
            first = self._etags.get(job.key)
            new = first is None
            if new:
                first = self._etags[job.key] = etag
        if not same_etag(first, etag):
            raise _part_changed(
                job, f"part {job.part_index} ({self.store.url(key)}) changed on the server during this "
                     f"pull: ETag {first} at its first request, {etag} now", hint=_RERUN_HINT)
        if new and not same_etag(etag, job.etag):
            self.progress.message(f"part {job.part_index} ({job.key}) has ETag {etag}, not the published {job.etag} "
                                  "(a copy?): its chunks are checked against the manifest's digests")


_RERUN_HINT = ("run the same command again: it keeps the chunks already verified and checks the part's current "
               "bytes against the manifest")


def _part_changed(job: ChunkJob, message: str, hint: str) -> PartChangedError:
    """A PartChangedError that names ``job``'s part (``part_index`` set: not wrapped again)."""
    err = PartChangedError(message, hint=hint)
    err.part_index = job.part_index  # type: ignore[attr-defined]
    return err



class WindowedReader:
    """A forward-only binary file over successive windows of bytes (views into buffers that
    are reused once the next window is asked for): the file interface ``tarfile`` and
    ``archive.SafeExtractor`` read, shared by ``OrderedReader`` (verified chunks) and
    ``codecs.DecodedReader`` (decompressed pieces).

    A subclass sets ``_pos`` (stream offset), ``_cur`` (the current window) and ``_cur_start``
    (its offset) and implements ``_window``: the bytes from ``_pos`` to the end of the
    current window, moving to the next one when used up; empty at the end of the stream.
    ``seek`` moves forward (skipping bytes) or back within the current window only;
    anything else raises ``ValueError``.
    """

    _pos: int
    _cur: memoryview
    _cur_start: int

    def _window(self) -> memoryview:
        raise NotImplementedError

    def _ended_early(self, left: int) -> Exception:
        """The error ``views`` raises when the stream ends ``left`` bytes short."""
        return IntegrityError(f"stream ended {left} bytes early at offset {self._pos}")

    def tell(self) -> int:
        return self._pos

    def seekable(self) -> bool:
        return True

    def readable(self) -> bool:
        return True

    def seek(self, pos: int, whence: int = 0) -> int:
        if whence == 1:
            pos += self._pos
        elif whence != 0:
            raise ValueError(f"{type(self).__name__} supports only absolute and relative seeks")
        if pos < self._cur_start:
            raise ValueError(f"cannot seek back to {pos}: stream is at {self._pos}")
        while pos > self._pos:
            w = self._window()
            if not w:
                break
            self._pos += min(len(w), pos - self._pos)
        self._pos = min(self._pos, pos)
        return self._pos

    def read(self, n: int = -1) -> bytes:
        """Up to ``n`` bytes (all the rest if ``n`` is negative or None), copied."""
        out = bytearray()
        while n is None or n < 0 or len(out) < n:
            w = self._window()
            if not w:
                break
            take = w if n is None or n < 0 else w[: n - len(out)]
            out += take
            self._pos += len(take)
        return bytes(out)

    def views(self, n: int) -> Iterator[memoryview]:
        """Yield exactly ``n`` bytes as memoryviews into the window buffers (no copy), each
        valid until the next is requested.

        Raises:
            IntegrityError (or the subclass's ``_ended_early``): the stream ends first.
        """
        left = n
        while left:
            w = self._window()
            if not w:
                raise self._ended_early(left)
            take = w[:left]
            self._pos += len(take)
            left -= len(take)
            yield take

    def peek(self) -> memoryview:
        """The bytes from the position to the end of the current window (or of the next one,
        if the current is used up), not consumed; empty at the end of the stream. Valid
        until the stream moves past the window (its buffer is then reused)."""
        return self._window()

    def next_view(self) -> memoryview:
        """The bytes from the position to the end of the current window (or of the next one,
        if the current is used up), consumed; empty at the end of the stream. Valid until
        the next call (the buffer is then reused)."""
        w = self._window()
        self._pos += len(w)
        return w

    def rest(self) -> Iterator[memoryview]:
        """The stream from the position on, as successive windows (each consumed and valid
        until the next is requested): what a decoder reads."""
        while view := self.next_view():
            yield view

    def drain(self) -> int:
        """Read to the end of the stream (every check still runs); return bytes skipped."""
        skipped = 0
        while True:
            w = self._window()
            if not w:
                return skipped
            self._pos += len(w)
            skipped += len(w)


class OrderedReader(WindowedReader):
    """A forward-only binary file over ``(job, data)`` pairs in stream order.

    Args:
        chunks: iterator from ``ChunkFetcher.fetch``.
        start: stream offset to begin at; it must fall inside the first chunk.
        size: total stream size in bytes (end of file).

    The file interface is ``WindowedReader``'s; the windows are the chunks.
    """

    def __init__(self, chunks: Iterator[tuple[ChunkJob, memoryview]], start: int, size: int,
                 ready: Callable[[], bool] | None = None) -> None:
        self._chunks = chunks
        self._ready = ready
        self._size = size
        self._pos = start
        self._cur: memoryview = memoryview(b"")
        self._cur_start = start
        self.before_next_chunk: Callable[[], None] | None = None
        """Called when the current chunk is used up and the next one is not there yet
        (``ready``, if given, says so): before waiting, which may take long if the network
        stalls, a consumer finishes its pending work."""

    def _advance(self) -> bool:
        if self.before_next_chunk is not None and not (self._ready is not None and self._ready()):
            self.before_next_chunk()
        try:
            job, data = next(self._chunks)
        except StopIteration:
            return False
        if job.stream_offset > self._pos or job.stream_offset + len(data) <= self._pos:
            raise IntegrityError(f"chunk at stream offset {job.stream_offset} does not cover byte {self._pos}")
        self._cur, self._cur_start = data, job.stream_offset
        return True

    def _window(self) -> memoryview:
        """Bytes available from the current position inside the current chunk."""
        while True:
            rel = self._pos - self._cur_start
            if rel < len(self._cur):
                return self._cur[rel:]
            if self._pos >= self._size or not self._advance():
                return memoryview(b"")
