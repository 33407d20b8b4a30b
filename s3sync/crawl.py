"""The crawler: many small GETs to many hosts, with a bounded pool of threads.

Separate from the chunk engine (ranged chunks of a few big objects): here every URL is its
own small object on its own host, most hosts answer once, many not at all. ``Crawler.fetch``
gets one URL with

- a per-request timeout (connect, then each read) and a deadline per URL across every
  attempt, redirect, header and body, so one stalled host never holds a thread for long:
  a watchdog thread shuts the socket of a request down when its URL's deadline passes
  (a status line or header trickled one byte at a time, an error page read for connection
  reuse, a gzip body that never yields a byte would otherwise each hold the thread for as
  long as the server likes); a URL fails as ``timeout`` within about its deadline (DNS
  resolution and the TCP connect are bounded by the connect timeout only);
- retries with exponential backoff and full jitter (AWS Architecture Blog, "Exponential
  Backoff And Jitter") for 5xx, 408, 429 and connection failures, honouring ``Retry-After``
  (RFC 9110 section 10.2.3: seconds or an HTTP date; capped);
- redirects followed by hand (bounded, the chain recorded), so that a redirect to a URL
  containing ``photo_unavailable`` (Flickr's answer for a deleted photo) is refused as a
  placeholder without downloading it;
- a maximum body size; URLs with spaces or non-ASCII characters percent-quoted
  (``quote_url``). ``Content-Encoding`` gzip and deflate are undone by urllib3, whose
  decoders (2.6 and later) yield at most the amount asked for each read, so a compression
  bomb stops at the size limit; a body that decodes to nothing for long is cut by the
  watchdog;
- error and redirect bodies are read (for connection reuse) only when they announce at
  most ``_REUSE_BODY_MAX`` bytes; otherwise the connection is closed unread.

``download`` streams one big source file (a URL list, an archive) to disk.

``crawl`` runs a function over many jobs with a pool of worker threads and yields the
results in completion order; it stops promptly when asked (Ctrl-C) and never holds more
than a few results per thread in memory.

This module and ``stores/http.py`` are the ones that import urllib3. It must not import the
pipelines or Pillow.
"""

from __future__ import annotations

import email.utils
import heapq
import http.client
import os
import queue
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

import urllib3
import urllib3.connection
import urllib3.connectionpool
import urllib3.exceptions

from .errors import BuildError
from .threads import Worker

PLACEHOLDER_MARK = "photo_unavailable"
"""A redirect to a URL containing this is Flickr's placeholder for a deleted photo."""

REASON_TIMEOUT = "timeout"
REASON_CONNECTION = "connection"
REASON_PLACEHOLDER = "placeholder"
REASON_TRUNCATED = "truncated"
REASON_TOO_LARGE = "too large"
REASON_REDIRECTS = "too many redirects"
REASON_BAD_URL = "bad url"
REASON_TLS = "tls"

_READ_STEP = 64 * 1024
_REUSE_BODY_MAX = 4 * 1024
"""Largest error or redirect body (by its Content-Length) read to keep the connection."""
_SAFE_PATH = "/%:@!$&'()*+,;=-._~"  # RFC 3986 pchar and "/" (and "%", so escapes stay as they are)
_SAFE_QUERY = _SAFE_PATH + "?"


@dataclass(frozen=True, slots=True)
class CrawlSettings:
    """How the crawler fetches.

    Attributes:
        threads: worker threads (the original SBU scripts used 10).
        timeout_s: seconds to connect, and to wait for each read of an answer.
        deadline_s: seconds one URL may take in all: attempts, backoff waits, redirects, body.
        max_body: largest body kept (bytes); a larger one fails as ``too large``.
        retries: attempts after the first, for transient failures.
        backoff_s: first backoff (seconds); attempt n waits up to ``backoff_s * 2**n``.
        backoff_max_s: the longest backoff or ``Retry-After`` wait honoured (seconds).
        max_redirects: redirects followed for one URL.
        user_agent: the User-Agent header.
    """

    threads: int = 10
    timeout_s: float = 10.0
    deadline_s: float = 60.0
    max_body: int = 32 * 1024 * 1024
    retries: int = 3
    backoff_s: float = 1.0
    backoff_max_s: float = 30.0
    max_redirects: int = 5
    user_agent: str = "s3sync (dataset builder)"


@dataclass(frozen=True, slots=True)
class Fetched:
    """A URL answered 200 with a whole body.

    Attributes:
        url: the URL asked for (as given).
        final_url: the URL that answered, after redirects.
        data: the body (Content-Encoding undone, nothing else).
        redirects: the Location of each redirect followed, in order.
        attempts: requests sent, retries and redirects included.
        framed: the transfer's end was known (Content-Length, or chunked encoding), so a
            body that arrived whole at the HTTP level is all the server meant to send;
            False for a body that ended when the connection closed (HTTP/1.0 style): a cut
            by the network then looks the same as the end.
    """

    url: str
    final_url: str
    data: bytes
    redirects: tuple[str, ...] = ()
    attempts: int = 1
    framed: bool = True


@dataclass(frozen=True, slots=True)
class Failed:
    """A URL that gave no body to keep.

    Attributes:
        url: the URL asked for.
        reason: short and stable, for tallies and ``failures.tsv``: ``http 404``, ``timeout``,
            ``connection``, ``placeholder``, ``truncated``, ``too large``...
        permanent: asking again will not help (4xx other than 408 and 429, a placeholder, a
            bad URL); False for a transient failure whose retries ran out.
        redirects: the Location of each redirect followed.
        attempts: requests sent.
    """

    url: str
    reason: str
    permanent: bool
    redirects: tuple[str, ...] = ()
    attempts: int = 1


class Cancelled(Exception):
    """``fetch`` stopped because the crawl's stop event was set (Ctrl-C); nothing to record."""


def quote_url(url: str) -> str:
    """``url`` with surrounding blanks removed and what may not appear in a URL
    percent-encoded as UTF-8 (spaces, non-ASCII characters in path and query; RFC 3986
    section 2.1); a non-ASCII host name in IDNA. Existing ``%XX`` escapes are kept.

    Raises:
        ValueError: not an http(s) URL with a host.
    """
    parts = urlsplit(url.strip())
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) URL: {url!r}")
    netloc = parts.netloc
    if not netloc.isascii():
        host = parts.hostname.encode("idna").decode("ascii")
        netloc = host + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme.lower(), netloc, quote(parts.path, safe=_SAFE_PATH),
                       quote(parts.query, safe=_SAFE_QUERY), ""))


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait that a ``Retry-After`` header asks for (RFC 9110 section 10.2.3:
    delay-seconds or an HTTP-date); None if absent or unreadable; 0 for a date in the past.

    Args:
        value: the header's value.
        now: the current time (seconds since the epoch; default: now).
    """
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    return max(0.0, when - (time.time() if now is None else now))


class _Watch:
    """One request's deadline: ``fire`` shuts its socket down (reads then end at once)."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.fired = False
        self._sock: socket.socket | None = None
        self._done = False
        self._lock = threading.Lock()

    def attach(self, sock: socket.socket | None) -> None:
        with self._lock:
            if self._done or sock is None:
                return
            self._sock = sock
            if self.fired:
                _shut(sock)

    def fire(self) -> None:
        with self._lock:
            if self._done:
                return
            self.fired = True
            if self._sock is not None:
                _shut(self._sock)

    def disarm(self) -> bool:
        """Stop watching; return whether it fired (then the connection must not be reused)."""
        with self._lock:
            self._done = True
            self._sock = None
            return self.fired


def _shut(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed


class _Watchdog:
    """A thread that fires each ``_Watch`` when its deadline passes (a heap of deadlines)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._heap: list[tuple[float, int, _Watch]] = []
        self._seq = 0
        self._closed = False
        self._thread: threading.Thread | None = None

    def arm(self, deadline: float) -> _Watch:
        watch = _Watch(deadline)
        with self._cond:
            if self._thread is None and not self._closed:
                self._thread = threading.Thread(target=self._run, name="crawl-watchdog", daemon=True)
                self._thread.start()
            self._seq += 1
            heapq.heappush(self._heap, (deadline, self._seq, watch))
            self._cond.notify()
        return watch

    def _run(self) -> None:
        with self._cond:
            while not self._closed:
                now = time.monotonic()
                while self._heap and self._heap[0][0] <= now:
                    heapq.heappop(self._heap)[2].fire()
                self._cond.wait(self._heap[0][0] - now if self._heap else None)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._heap.clear()
            self._cond.notify()


_current = threading.local()
"""``_current.watch``: the ``_Watch`` of the request this thread is making, if any."""


class _WatchedHTTPConnection(urllib3.connection.HTTPConnection):
    """Hands its socket to the current thread's ``_Watch`` before waiting for the answer."""

    def getresponse(self):  # type: ignore[no-untyped-def]
        watch = getattr(_current, "watch", None)
        if watch is not None:
            watch.attach(self.sock)
        return super().getresponse()


class _WatchedHTTPSConnection(urllib3.connection.HTTPSConnection):
    def getresponse(self):  # type: ignore[no-untyped-def]
        watch = getattr(_current, "watch", None)
        if watch is not None:
            watch.attach(self.sock)
        return super().getresponse()


class _WatchedHTTPPool(urllib3.connectionpool.HTTPConnectionPool):
    ConnectionCls = _WatchedHTTPConnection


class _WatchedHTTPSPool(urllib3.connectionpool.HTTPSConnectionPool):
    ConnectionCls = _WatchedHTTPSConnection


class Crawler:
    """Fetches URLs for many threads at once through one urllib3 ``PoolManager``.

    Connections are kept per host (at most one idle per host and thread: most hosts of a
    crawl serve one image then never again, so the pool holds ``4 * threads`` hosts).

    Args:
        settings: timeouts, retries, sizes.
        stop: when set, ``fetch`` raises ``Cancelled`` at its next wait or read.
        rng: the jitter's random source (seeded in tests).
    """

    def __init__(self, settings: CrawlSettings, stop: threading.Event | None = None,
                 rng: random.Random | None = None) -> None:
        self.settings = settings
        self.stop = stop or threading.Event()
        self._rng = rng or random.Random()
        self._rng_lock = threading.Lock()
        self._pool = urllib3.PoolManager(num_pools=max(16, 4 * settings.threads), maxsize=settings.threads,
                                         block=False, retries=False)
        self._pool.pool_classes_by_scheme = {"http": _WatchedHTTPPool, "https": _WatchedHTTPSPool}
        self._watchdog = _Watchdog()
        self._headers = {"User-Agent": settings.user_agent, "Accept": "image/*,*/*;q=0.5",
                         "Accept-Encoding": "gzip, deflate"}

    def close(self) -> None:
        """Close every pooled connection; stop the watchdog."""
        self._pool.clear()
        self._watchdog.close()

    def fetch(self, url: str) -> Fetched | Failed:
        """GET ``url`` (see the module docstring for retries, deadline and redirects).

        Returns:
            ``Fetched`` for a 200 answer read whole, else ``Failed``.

        Raises:
            Cancelled: the stop event was set.
        """
        s = self.settings
        deadline = time.monotonic() + s.deadline_s
        try:
            current = quote_url(url)
        except ValueError:
            return Failed(url, REASON_BAD_URL, True, (), 0)
        redirects: list[str] = []
        attempts = 0
        failures = 0  # transient failures so far (each costs a retry)
        while True:
            if self.stop.is_set():
                raise Cancelled
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return Failed(url, REASON_TIMEOUT, False, tuple(redirects), attempts)
            attempts += 1
            outcome = self._attempt(current, min(s.timeout_s, remaining), deadline)
            if isinstance(outcome, _Body):
                return Fetched(url, current, outcome.data, tuple(redirects), attempts, outcome.framed)
            if isinstance(outcome, _Redirect):
                if len(redirects) >= s.max_redirects:
                    return Failed(url, REASON_REDIRECTS, True, tuple(redirects), attempts)
                redirects.append(outcome.location)
                if PLACEHOLDER_MARK in outcome.location:
                    return Failed(url, REASON_PLACEHOLDER, True, tuple(redirects), attempts)
                try:
                    current = quote_url(urljoin(current, outcome.location))
                except ValueError:
                    return Failed(url, REASON_BAD_URL, True, tuple(redirects), attempts)
                continue
            if outcome.permanent or failures >= s.retries:
                return Failed(url, outcome.reason, outcome.permanent, tuple(redirects), attempts)
            failures += 1
            with self._rng_lock:
                wait = self._rng.uniform(0, min(s.backoff_max_s, s.backoff_s * 2 ** (failures - 1)))
            if outcome.retry_after_s is not None:
                wait = min(s.backoff_max_s, outcome.retry_after_s)
            if time.monotonic() + wait >= deadline:
                # No time left to try again: the failure as it is (not "timeout": the server
                # said why, and the reason should say it too).
                return Failed(url, outcome.reason, False, tuple(redirects), attempts)
            if self.stop.wait(wait):
                raise Cancelled

    def _attempt(self, url: str, timeout_s: float, deadline: float) -> _Body | _Redirect | _Failure:
        """One request: the body, a redirect to follow, or why it failed. The watchdog
        shuts the socket down at ``deadline``, whatever the request is waiting for."""
        watch = self._watchdog.arm(deadline)
        _current.watch = watch
        try:
            outcome = self._exchange(url, timeout_s, deadline, watch)
        finally:
            _current.watch = None
            watch.disarm()
        return outcome

    def _exchange(self, url: str, timeout_s: float, deadline: float, watch: _Watch) -> _Body | _Redirect | _Failure:
        try:
            resp = self._pool.request("GET", url, headers=self._headers, preload_content=False,
                                      redirect=False, retries=False,
                                      timeout=urllib3.Timeout(connect=timeout_s, read=timeout_s))
        except urllib3.exceptions.LocationValueError:
            return _Failure(REASON_BAD_URL, True)
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as err:
            return _Failure(REASON_TIMEOUT, False) if watch.fired else _wire_failure(err)
        reuse = False  # whether the connection may serve the next request
        try:
            status = resp.status
            length = resp.headers.get("Content-Length", "").strip()
            if status != 200:
                # A short error or redirect body is read so that the connection is reused
                # (hosts answer many 404s in a row); a long or unsized one is not read.
                reuse = length.isdigit() and int(length) <= _REUSE_BODY_MAX
                if status in (301, 302, 303, 307, 308) and resp.headers.get("Location"):
                    return _Redirect(_header_text(resp.headers["Location"]))
                transient = status in (408, 429) or status >= 500
                wait = retry_after_s(resp.headers.get("Retry-After")) if transient else None
                return _Failure(f"http {status}", not transient, wait)
            if length.isdigit() and int(length) > self.settings.max_body:
                return _Failure(REASON_TOO_LARGE, True)
            body = self._read_body(resp, deadline)
            if watch.fired:  # the socket was shut down: the body may end early without an error
                return _Failure(REASON_TIMEOUT, False)
            if isinstance(body, _Failure):
                return body
            reuse = True
            chunked = "chunked" in resp.headers.get("Transfer-Encoding", "").lower()
            return _Body(body, length.isdigit() or chunked)
        except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError) as err:
            reuse = False
            return _Failure(REASON_TIMEOUT, False) if watch.fired else _wire_failure(err)
        finally:
            if reuse:
                try:
                    resp.drain_conn()  # nothing left of a 200 read whole; a few bytes of an error page
                except (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError):
                    reuse = False
            # Disarmed before the connection goes back to the pool: the watchdog must never
            # shut down a connection that another request is using.
            if watch.disarm() or not reuse:
                resp.close()
                resp.release_conn()
            else:
                resp.release_conn()

    def _read_body(self, resp: urllib3.BaseHTTPResponse, deadline: float) -> bytes | _Failure:
        """The whole body, read in steps so that the deadline, the size limit and the stop
        event are checked between reads (a server trickling bytes never trips the read
        timeout).

        Raises:
            Cancelled: the stop event was set.
        """
        parts: list[bytes] = []
        size = 0
        while True:
            block = resp.read1(_READ_STEP)
            if not block:
                break
            parts.append(block)
            size += len(block)
            if size > self.settings.max_body:
                return _Failure(REASON_TOO_LARGE, True)
            if self.stop.is_set():
                raise Cancelled
            if time.monotonic() > deadline:
                return _Failure(REASON_TIMEOUT, False)
        return b"".join(parts)


@dataclass(frozen=True, slots=True)
class _Body:
    data: bytes
    framed: bool


@dataclass(frozen=True, slots=True)
class _Redirect:
    location: str


@dataclass(frozen=True, slots=True)
class _Failure:
    reason: str
    permanent: bool
    retry_after_s: float | None = None


def _header_text(value: str) -> str:
    """A header value as the server meant it: http.client decodes header bytes as Latin-1
    (RFC 9110 section 5.5 allows only ASCII in practice), but servers send non-ASCII file
    names in ``Location`` as raw UTF-8 (curl and browsers read them so); a value whose
    Latin-1 bytes are valid UTF-8 is read as UTF-8, any other is kept as it is."""
    if value.isascii():
        return value
    try:
        return value.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return value


def _wire_failure(err: BaseException) -> _Failure:
    """Classify a urllib3, http.client or socket exception by type along its chain (never
    by message text): a timeout, a body shorter than its Content-Length (truncated), a TLS
    certificate that is not trusted (permanent), or another connection failure."""
    chain: list[BaseException] = []
    seen: BaseException | None = err
    while seen is not None and seen not in chain:
        chain.append(seen)
        seen = getattr(seen, "reason", None) or seen.__cause__ or seen.__context__
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain):
        return _Failure(REASON_TLS, True)
    if any(isinstance(e, (urllib3.exceptions.IncompleteRead, http.client.IncompleteRead)) for e in chain):
        return _Failure(REASON_TRUNCATED, False)
    if any(isinstance(e, urllib3.exceptions.NewConnectionError) for e in chain):
        return _Failure(REASON_CONNECTION, False)  # refused, unreachable (a subclass of ConnectTimeoutError!)
    if any(isinstance(e, (urllib3.exceptions.TimeoutError, TimeoutError)) for e in chain):
        return _Failure(REASON_TIMEOUT, False)
    return _Failure(REASON_CONNECTION, False)


J = TypeVar("J")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class _Raised:
    error: BaseException


class _Jobs(Generic[J]):
    """An iterator shared by the workers (each ``next`` under a lock)."""

    def __init__(self, jobs: Iterable[J]) -> None:
        self._it = iter(jobs)
        self._lock = threading.Lock()

    def next(self) -> tuple[bool, J | None]:
        with self._lock:
            try:
                return True, next(self._it)
            except StopIteration:
                return False, None


def crawl(jobs: Iterable[J], work: Callable[[J], R], threads: int, stop: threading.Event,
          grace_s: float = 2.0) -> Iterator[R]:
    """Run ``work(job)`` for every job on ``threads`` worker threads; yield the results as
    they complete (in no particular order).

    Jobs are taken from ``jobs`` lazily, so a list of millions is never held in memory; at
    most ``2 * threads`` results wait for the caller. A worker whose ``work`` raises
    ``Cancelled`` drops that job. Any other exception stops the crawl and is raised here.

    When the caller stops iterating (the generator is closed, or Ctrl-C lands in it), or
    ``stop`` is set, the workers stop taking jobs (``stop`` is set when the generator ends
    before every job is done); the generator waits up to ``grace_s``
    seconds for them to notice (a worker blocked in a read notices at its next read or at
    its timeout; its result is then dropped, which is safe for a caller that records a
    job only when its result arrives).

    Args:
        jobs: the jobs (iterated from the worker threads, under a lock).
        work: run on a worker thread; should call ``Crawler.fetch`` with the same ``stop``.
        threads: worker threads (at least 1).
        stop: set to stop the workers; set by this function when it ends early.
        grace_s: seconds to wait for busy workers when stopping.

    Raises:
        BaseException: what a ``work`` call raised (other than ``Cancelled``).
    """
    source = _Jobs(jobs)
    results: queue.Queue[R | _Raised] = queue.Queue(maxsize=2 * max(1, threads))

    def hand_over(item: R | _Raised) -> None:
        while not stop.is_set():
            try:
                results.put(item, timeout=0.1)
                return
            except queue.Full:
                continue

    def loop() -> None:
        while not stop.is_set():
            try:
                more, job = source.next()
            except BaseException as err:  # the jobs iterator failed (a bad input file)
                hand_over(_Raised(err))
                return
            if not more:
                return
            try:
                result = work(job)  # type: ignore[arg-type]
            except Cancelled:
                return
            except BaseException as err:
                hand_over(_Raised(err))
                return
            hand_over(result)

    workers = [Worker(loop, f"crawl-{i}") for i in range(max(1, threads))]
    for w in workers:
        w.start()
    finished = False
    try:
        while True:
            try:
                item = results.get(timeout=0.1)
            except queue.Empty:
                if all(w.done.is_set() for w in workers) and results.empty():
                    finished = True
                    return
                continue
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        if not finished:  # closed, interrupted, a work error: no worker may go on
            stop.set()
        end = time.monotonic() + grace_s
        for w in workers:
            w.done.wait(max(0.0, end - time.monotonic()))


@dataclass(frozen=True, slots=True)
class Downloaded:
    """What ``download`` wrote.

    Attributes:
        size: bytes written.
        etag: the answer's ``ETag`` ("" if none).
        last_modified: its ``Last-Modified`` ("" if none).
    """

    size: int
    etag: str = ""
    last_modified: str = ""


def download(url: str, path: Path, settings: CrawlSettings, stop: threading.Event | None = None) -> Downloaded:
    """Stream the body at ``url`` to ``path`` (a temporary file beside it, then a rename):
    a builder's source (a URL list, a distribution archive), not a crawled image.

    Redirects are followed (at most ``settings.max_redirects``); connection failures, 5xx
    and 429 are retried ``settings.retries`` times with backoff; each read waits at most
    ``settings.timeout_s``; no size limit.

    Returns:
        The bytes written, with the answer's validators.

    Raises:
        BuildError: the URL is not http(s), answers an error status, or the transfer failed
            after its retries.
        KeyboardInterrupt: ``stop`` was set (the temporary file is removed).
    """
    try:
        target = quote_url(url)
    except ValueError as err:
        raise BuildError(f"{url!r} is not an http(s) URL", hint="give a local file or an http(s):// URL") from err
    retries = urllib3.Retry(total=settings.retries, redirect=settings.max_redirects, backoff_factor=settings.backoff_s,
                            backoff_max=settings.backoff_max_s, status_forcelist=(429, 500, 502, 503, 504),
                            raise_on_status=False, respect_retry_after_header=True)
    pool = urllib3.PoolManager(retries=retries, timeout=urllib3.Timeout(connect=settings.timeout_s,
                                                                       read=settings.timeout_s))
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    written = 0
    etag = last_modified = ""
    try:
        resp = pool.request("GET", target, headers={"User-Agent": settings.user_agent}, preload_content=False)
        try:
            if resp.status != 200:
                raise BuildError(f"{url}: HTTP {resp.status} {resp.reason or ''}".rstrip(),
                                 hint="check the URL, or download the file and give its path")
            etag, last_modified = resp.headers.get("ETag", ""), resp.headers.get("Last-Modified", "")
            with open(tmp, "wb") as out:
                for block in resp.stream(1024 * 1024):
                    out.write(block)
                    written += len(block)
                    if stop is not None and stop.is_set():
                        raise KeyboardInterrupt
            os.replace(tmp, path)
        finally:
            resp.release_conn()
    except (urllib3.exceptions.HTTPError, http.client.HTTPException) as err:
        failure = _wire_failure(err)
        raise BuildError(f"{url}: download failed ({failure.reason}, after {settings.retries} retries)",
                         hint="check the URL and the network, then run the same command again") from err
    except OSError as err:
        if isinstance(err.__context__, urllib3.exceptions.HTTPError) or err.filename is None:
            raise BuildError(f"{url}: download failed ({_wire_failure(err).reason})",
                             hint="check the URL and the network, then run the same command again") from err
        raise BuildError(f"{path}: cannot write ({err.strerror})") from err
    finally:
        tmp.unlink(missing_ok=True)
        pool.clear()
    return Downloaded(written, etag, last_modified)
