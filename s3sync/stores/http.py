"""The HTTP store: pieces of a split archive at plain ``http://`` and ``https://`` URLs.

The only module besides ``stores/s3.py`` that imports urllib3 (our HTTP client; never
hand-written sockets). It implements the part of the ``Store`` protocol that a pull of
pieces uses, with ``S3Store``'s semantics and errors: keys are absolute URLs.

Requests follow RFC 9110: ranged GETs (section 14: ``Range``, ``206 Partial Content``,
``Content-Range``), pinned by ``If-Match`` to a strong ETag (section 13.1.1) or by
``If-Unmodified-Since`` to a Last-Modified date (section 13.1.4) when the server sends no
ETag. Many servers ignore these preconditions, so every answer's ETag or Last-Modified is
compared too. Failures are translated into ``s3sync.errors`` by exception type and HTTP
status, never by message text. It must not import botocore or the pipelines.
"""

from __future__ import annotations

import http.client
import re
import ssl
import threading
from collections.abc import Callable, Generator
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import urlsplit

import urllib3
import urllib3.exceptions

from ..config import TransferSettings
from ..errors import (
    AccessDeniedError,
    IntegrityError,
    NotFoundError,
    PartChangedError,
    S3SyncError,
    StoreError,
    TLSError,
    TransientStoreError,
    UsageError,
)
from .base import ObjectInfo, error_chain, same_etag

MAX_SMALL_BODY = 1024 * 1024
"""Largest body ``get`` reads (bytes): sidecars are small; anything larger is not one."""

MAX_REDIRECTS = 5
"""Redirects followed for one GET or HEAD (mirrors commonly redirect once or twice)."""

_WIRE_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)
"""What reading an answer may raise: read straight from http.client, a socket error arrives
as itself (ECONNRESET, a timeout, an SSL error), not wrapped by urllib3."""
_READ_STEP = 1024 * 1024
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")
_TLS_HINT = ("if the server uses a private or self-signed certificate, add its CA certificate to the system's "
             "trust store (or point SSL_CERT_FILE at it, a PEM file); check that the URL names the server's host")


def _version() -> str:
    """This package's version, for the User-Agent (importlib.metadata: read only when a
    store is made, as it costs ~40 ms)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("s3sync-datasets")
    except PackageNotFoundError:
        return "0+unknown"


def _strong(etag: str) -> bool:
    """Whether ``etag`` may go into If-Match: a weak ETag (``W/"..."``) never matches
    there (RFC 9110 section 13.1.1 uses the strong comparison)."""
    return bool(etag) and not etag.lstrip().startswith("W/")


def translate(err: BaseException, url: str) -> S3SyncError:
    """Map a urllib3, http.client, ssl or socket exception to an s3sync error.

    Classification is by exception type along the chain urllib3 builds (``MaxRetryError``
    wraps the failure in ``reason``; ``SSLError`` wraps the ssl module's error in its
    arguments), never by message text.

    Args:
        err: what a request or a body read raised.
        url: the URL the request was about, for the message.

    Returns:
        ``TLSError`` for a certificate that is not trusted or a handshake that fails (not
        retriable); ``TransientStoreError`` for refused, reset or timed-out connections,
        protocol errors, incomplete reads and a TLS stream that broke; ``StoreError`` for
        too many redirects or an unexpected urllib3 error; ``UsageError`` for a URL that
        cannot be requested.

    Raises:
        BaseException: ``err`` itself if it is none of these (a bug: the CLI reports it).
    """
    chain = list(error_chain(err))
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain):
        reason = next(e for e in chain if isinstance(e, ssl.SSLCertVerificationError))
        return TLSError(f"{url}: the server's TLS certificate is not trusted "
                        f"({getattr(reason, 'verify_message', '') or 'certificate verify failed'})", hint=_TLS_HINT)
    if any(isinstance(e, urllib3.exceptions.ResponseError) for e in chain):
        # Retry's "too many redirects": the only ResponseError with no status retries.
        return StoreError(f"{url}: more than {MAX_REDIRECTS} redirects", hint="check the URL in a browser or curl -IL")
    if any(isinstance(e, urllib3.exceptions.LocationValueError) for e in chain):
        return UsageError(f"{url!r} is not a URL that can be requested", hint="write http://HOST/PATH or https://...")
    ssl_errors = [e for e in chain if isinstance(e, (ssl.SSLError, urllib3.exceptions.SSLError))]
    if ssl_errors:
        if any(isinstance(e, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError)) for e in chain):
            return TransientStoreError(f"{url}: TLS connection closed by the server ({type(ssl_errors[-1]).__name__})")
        if isinstance(err, urllib3.exceptions.HTTPError) and not isinstance(err, urllib3.exceptions.ProtocolError):
            # Raised by the request, before any answer: the handshake failed (https:// to
            # a plain-http port is ssl's WRONG_VERSION_NUMBER). Python's ssl module, "Exceptions".
            return TLSError(f"{url}: TLS handshake failed ({type(ssl_errors[-1]).__name__}: "
                            f"{' '.join(str(ssl_errors[-1]).split())})",
                            hint="if the server speaks plain http, write http://...; " + _TLS_HINT)
        return TransientStoreError(f"{url}: TLS stream broken while reading ({type(ssl_errors[-1]).__name__})")
    transport = (urllib3.exceptions.TimeoutError, urllib3.exceptions.ProtocolError,
                 urllib3.exceptions.NewConnectionError, urllib3.exceptions.ProxyError,
                 urllib3.exceptions.ConnectTimeoutError, urllib3.exceptions.ReadTimeoutError,
                 http.client.HTTPException, OSError)
    found = next((e for e in chain if isinstance(e, transport)), None)
    if found is not None:
        # The request or its answer was lost (refused, reset, timed out, a malformed or
        # cut-short answer): every request this store sends is a GET or HEAD, safe to repeat.
        return TransientStoreError(f"{url}: connection failed ({type(found).__name__})")
    if isinstance(err, urllib3.exceptions.HTTPError):
        return StoreError(f"{url}: {type(err).__name__}: {' '.join(str(err).split())}")
    raise err


def _modified(value: str | None) -> float | None:
    """An HTTP date (Last-Modified) as seconds since the epoch; None if absent or unparsable."""
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


class HttpStore:
    """Objects at http(s) URLs, read with urllib3. Keys are absolute URLs.

    One ``urllib3.PoolManager`` holds up to ``settings.concurrency`` connections per host
    (the pull's parallel ranged GETs). TLS is verified against the system's default trust
    store, as urllib3 does without certifi. Redirects are followed for GET and HEAD (at
    most ``MAX_REDIRECTS``); nothing is retried here: the transfer engine retries with
    backoff. Bodies are read as stored (``Accept-Encoding: identity``, never decoded).

    When a server sends no ETag, each URL is pinned to the Last-Modified of the first
    answer this store got for it (a ``head`` or a GET), and every later answer is compared.

    Args:
        settings: ``concurrency`` sizes the connection pool.
        connect_timeout_s: seconds to wait for a connection (TCP and TLS handshake).
        read_timeout_s: seconds to wait for the next bytes of an answer.
        base_url: names ``bucket`` (its host) before the first request; else the first
            URL asked about does.
    """

    def __init__(self, settings: TransferSettings, *, connect_timeout_s: float = 10.0,
                 read_timeout_s: float = 20.0, base_url: str = "") -> None:
        self.bucket = urlsplit(base_url).netloc if base_url else ""
        self._lock = threading.Lock()
        self._first_modified: dict[str, str] = {}  # URL -> Last-Modified of its first answer
        retries = urllib3.Retry(total=None, connect=0, read=0, status=0, other=0, redirect=MAX_REDIRECTS,
                                raise_on_redirect=True, raise_on_status=False)
        self._pool = urllib3.PoolManager(
            num_pools=16, maxsize=max(1, settings.concurrency), block=False, retries=retries,
            timeout=urllib3.Timeout(connect=connect_timeout_s, read=read_timeout_s))
        # urllib3 uses a pool's default headers only for requests that pass none: ours always add them.
        self._headers = {"User-Agent": f"s3sync/{_version()}", "Accept-Encoding": "identity"}

    def url(self, key: str) -> str:
        """The URL itself: keys are URLs."""
        return key

    # ------------------------------------------------------------------ requests

    def _request(self, method: str, key: str, headers: dict[str, str] | None = None,
                 accept: tuple[int, ...] = (200, 206)) -> Any:
        """Send one request; return the urllib3 response (status in ``accept``) with its
        body unread.

        Raises:
            UsageError: ``key`` is not an http(s) URL.
            StoreError: the request failed (translated), or its status is an error.
        """
        parts = urlsplit(key)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise UsageError(f"{key!r} is not an http:// or https:// URL", hint="write http://HOST/PATH or https://...")
        if not self.bucket:
            self.bucket = parts.netloc
        try:
            resp = self._pool.request(method, key, headers={**self._headers, **(headers or {})},
                                      preload_content=False, decode_content=False, redirect=True)
        except Exception as err:
            raise translate(err, key) from err
        try:
            if resp.status not in accept:
                self._check_status(resp, key, headers or {})
        except BaseException:
            _finish(resp)
            raise
        return resp

    @staticmethod
    def _check_status(resp: Any, url: str, headers: dict[str, str]) -> None:
        """Raise the s3sync error an HTTP error status means (RFC 9110 section 15)."""
        status = resp.status
        what = f"{url}: HTTP {status} {resp.reason or ''}".rstrip()
        if status == 412:
            pin = headers.get("If-Match") or headers.get("If-Unmodified-Since") or ""
            raise PartChangedError(f"{url} no longer matches {pin}, to which the request was pinned "
                                   "(412 Precondition Failed)")
        if status in (404, 410):
            raise NotFoundError(what, bucket_missing=False, hint="check the URL")
        if status in (401, 403):
            raise AccessDeniedError(what, hint="the server refused the request: check the URL, or whether it needs "
                                               "a login s3sync cannot give")
        if status == 429 or status >= 500:
            raise TransientStoreError(what)
        raise StoreError(what, hint="check the URL")

    def _pin(self, resp: Any, url: str, etag: str | None, on_etag: Callable[[str], None] | None) -> None:
        """Check an answer's ETag against ``etag`` (or its Last-Modified against the first
        one seen for ``url`` when the server sends no ETag); hand the ETag to ``on_etag``."""
        got = resp.headers.get("ETag") or ""
        if etag and got and not same_etag(got, etag):
            # Many servers ignore If-Match: compare ourselves.
            raise PartChangedError(f"{url} has ETag {got}, but the request was pinned to {etag}")
        if not got:
            modified = resp.headers.get("Last-Modified") or ""
            if modified:
                with self._lock:
                    first = self._first_modified.setdefault(url, modified)
                if first != modified and _modified(first) != _modified(modified):
                    raise PartChangedError(f"{url} has Last-Modified {modified}, but it was {first} at its first "
                                           "request (the server sends no ETag)")
        if on_etag is not None:
            on_etag(got)

    def _conditions(self, url: str, etag: str | None) -> dict[str, str]:
        """Precondition headers that pin a GET: If-Match for a strong ETag, else
        If-Unmodified-Since with the first Last-Modified seen (RFC 9110 section 13.1.4:
        a server must ignore it next to If-Match)."""
        if etag and _strong(etag):
            return {"If-Match": etag}
        if not etag:
            with self._lock:
                first = self._first_modified.get(url)
            if first:
                return {"If-Unmodified-Since": first}
        return {}

    # ------------------------------------------------------------------ metadata

    def head(self, key: str) -> ObjectInfo:
        """Size (Content-Length), ETag (as sent, ``""`` if none) and Last-Modified of ``key``.

        Raises:
            StoreError: as ``_request``; also if the answer has no Content-Length.
        """
        resp = self._request("HEAD", key)
        try:
            resp.read()  # nothing: lets http.client mark the answer complete, so the connection is reused
            length = resp.headers.get("Content-Length")
            if length is None or not length.strip().isdigit():
                raise StoreError(f"{key}: the server does not say the size (no Content-Length in its HEAD answer)",
                                 hint="s3sync needs each piece's size; download it with another tool")
            etag = resp.headers.get("ETag") or ""
            modified = resp.headers.get("Last-Modified") or ""
            if modified and not etag:
                with self._lock:
                    self._first_modified.setdefault(key, modified)
            return ObjectInfo(key, int(length), etag, _modified(modified))
        except _WIRE_ERRORS as err:
            raise translate(err, key) from err
        finally:
            _finish(resp)

    def accepts_ranges(self, key: str) -> bool:
        """Whether the server answers ranged GETs of ``key``: a ``Range: bytes=0-0`` GET
        answered ``206`` with ``Content-Range: bytes 0-0/SIZE``. ``Accept-Ranges: bytes``
        alone is not trusted (some servers send it and then ignore Range). An empty object
        cannot be ranged (416): False.

        Raises:
            StoreError: as ``_request`` (404 ``NotFoundError``...).
        """
        resp = self._request("GET", key, {"Range": "bytes=0-0"}, accept=(200, 206, 416))
        complete = False
        try:
            m = _CONTENT_RANGE_RE.match(resp.headers.get("Content-Range") or "")
            ranged = resp.status == 206 and bool(m) and m[1] == "0" and m[2] == "0"
            if ranged and resp.headers.get("Content-Length") == "1":
                resp.read()  # the one byte: the connection can then be reused
                complete = True
            return ranged
        except _WIRE_ERRORS as err:
            raise translate(err, key) from err
        finally:
            _finish(resp, complete=complete)  # a 200 carries the whole object: never read it

    # ------------------------------------------------------------------ small objects

    def get(self, key: str) -> bytes:
        """The whole object (small objects only: sidecars).

        Raises:
            NotFoundError: 404 or 410.
            StoreError: the body is larger than ``MAX_SMALL_BODY`` bytes, or as ``_request``.
            IntegrityError: the body is shorter than its Content-Length.
        """
        return self.read(key)[0]

    def read(self, key: str) -> tuple[bytes, ObjectInfo]:
        """The whole object (small objects only) with its ETag and Last-Modified; as ``get``."""
        resp = self._request("GET", key)
        try:
            declared = resp.headers.get("Content-Length")
            too_big = StoreError(f"{key} is larger than {MAX_SMALL_BODY} bytes: not a checksum file",
                                 hint="check the URL")
            if declared is not None and declared.strip().isdigit() and int(declared) > MAX_SMALL_BODY:
                raise too_big
            buf = bytearray(MAX_SMALL_BODY + 1)
            view, pos = memoryview(buf), 0
            readinto = _readinto(resp)
            while pos < len(buf):
                n = readinto(view[pos:])
                if not n:
                    break
                pos += n
            if pos > MAX_SMALL_BODY:
                raise too_big
            if declared is not None and declared.strip().isdigit() and pos != int(declared):
                raise IntegrityError(f"{key}: body ended after {pos} of {declared} bytes")
        except _WIRE_ERRORS as err:
            _finish(resp, complete=False)
            raise translate(err, key) from err
        except BaseException:
            _finish(resp, complete=False)
            raise
        _finish(resp)
        etag = resp.headers.get("ETag") or ""
        return bytes(buf[:pos]), ObjectInfo(key, pos, etag, _modified(resp.headers.get("Last-Modified")))

    # ------------------------------------------------------------------ ranged reads

    def read_range_into(self, key: str, offset: int, buf: memoryview, etag: str | None,
                        on_bytes: Callable[[int], None] | None = None, *,
                        on_etag: Callable[[str], None] | None = None) -> None:
        """Fill ``buf`` with ``len(buf)`` bytes of ``key`` from ``offset``, as
        ``Store.read_range_into``; see ``_get_range`` for the checks."""
        if len(buf) == 0:
            return
        pos = 0
        for piece in self._pieces(key, offset, len(buf), etag, buf, on_etag, into=True):
            pos += len(piece)
            if on_bytes is not None:
                on_bytes(len(piece))

    def read_range_pieces(self, key: str, offset: int, length: int, etag: str | None,
                          scratch: memoryview, *, on_etag: Callable[[str], None] | None = None
                          ) -> Generator[memoryview, None, None]:
        """Yield the ``length`` bytes of ``key`` from ``offset`` as views into ``scratch``,
        as ``Store.read_range_pieces``; see ``_get_range`` for the checks."""
        if length == 0:
            return
        yield from self._pieces(key, offset, length, etag, scratch, on_etag, into=False)

    def stream(self, key: str, etag: str | None, scratch: memoryview, *,
               on_etag: Callable[[str], None] | None = None, length: int | None = None
               ) -> Generator[memoryview, None, None]:
        """Yield the whole body of ``key`` (a GET without Range, for servers that do not
        answer ranged GETs) as views into ``scratch``, each valid until the next is
        requested; pinned and checked as ``read_range_pieces``.

        Args:
            key: the URL.
            etag: the ETag to pin to (None: not pinned; see the class for Last-Modified).
            scratch: buffer the views point into; pieces are at most ``len(scratch)`` bytes.
            on_etag: gets the answer's ETag (``""`` if none) before any byte is used.
            length: bytes expected (the size ``head`` gave); None: whatever the server sends.

        Raises:
            IntegrityError: the body ends before its Content-Length (or ``length``).
            PartChangedError: the ETag or Last-Modified is not the pinned one, or the body
                is longer than ``length``.
            StoreError: as ``_request``.
        """
        resp = self._request("GET", key, self._conditions(key, etag))
        complete = False
        try:
            self._pin(resp, key, etag, on_etag)
            declared = resp.headers.get("Content-Length")
            total = int(declared) if declared is not None and declared.strip().isdigit() else None
            if total is not None and length is not None and total != length:
                raise PartChangedError(f"{key} is {total} bytes now, not {length}")
            expected = total if total is not None else length
            readinto = _readinto(resp)
            pos = 0
            while True:
                n = readinto(scratch)
                if not n:
                    break
                pos += n
                if expected is not None and pos > expected:
                    raise PartChangedError(f"{key} sent more than the {expected} bytes expected")
                yield scratch[:n]
            if expected is not None and pos != expected:
                raise IntegrityError(f"{key}: body ended after {pos} of {expected} bytes")
            complete = True
        except _WIRE_ERRORS as err:
            raise translate(err, key) from err
        finally:
            _finish(resp, complete=complete)

    def _pieces(self, key: str, offset: int, length: int, etag: str | None, scratch: memoryview,
                on_etag: Callable[[str], None] | None, *, into: bool) -> Generator[memoryview, None, None]:
        """Read ``length`` bytes at ``offset``: into ``scratch`` in turn (``into``: filling
        it from its start, which is then the caller's buffer), or each through its start."""
        resp = self._get_range(key, offset, length, etag, on_etag)
        complete = False
        try:
            readinto = _readinto(resp)
            pos = 0
            while pos < length:
                if into:
                    view = scratch[pos: min(length, pos + _READ_STEP)]
                else:
                    view = scratch[: min(len(scratch), length - pos)]
                n = readinto(view)
                if not n:
                    raise IntegrityError(f"{key}: body ended after {pos} of {length} bytes")
                pos += n
                yield view[:n]
            # A 200 answer goes on past our bytes: it is closed, never read to its end.
            complete = resp.status == 206
        except _WIRE_ERRORS as err:
            raise translate(err, key) from err
        finally:
            _finish(resp, complete=complete)

    def _get_range(self, key: str, offset: int, length: int, etag: str | None,
                   on_etag: Callable[[str], None] | None) -> Any:
        """Send ``GET`` with ``Range: bytes=offset-(offset+length-1)``, pinned (``If-Match``
        to a strong ``etag``, or ``If-Unmodified-Since``: see ``_conditions``), and check the
        answer before any byte of its body is read.

        A ``206`` must carry the requested Content-Range (else ``IntegrityError``,
        retriable: a cache or proxy mixed answers up). A ``200`` means the server ignored
        Range (RFC 9110 section 14.2 allows it): at offset 0 its first ``length`` bytes
        are ours and the connection is closed after them; elsewhere ``StoreError``, as
        reading and dropping ``offset`` bytes per chunk would cost the whole object again
        for every chunk (the caller should ``stream`` the object instead).
        """
        resp = self._request("GET", key, {"Range": f"bytes={offset}-{offset + length - 1}",
                                          **self._conditions(key, etag)})
        try:
            self._pin(resp, key, etag, on_etag)
            if resp.status == 200:
                if offset == 0:
                    declared = resp.headers.get("Content-Length")
                    if declared is not None and declared.strip().isdigit() and int(declared) < length:
                        raise IntegrityError(f"{key}: the server sent the whole object, {declared} bytes, "
                                             f"fewer than the {length} asked for")
                    return resp
                raise StoreError(f"{key}: the server ignores Range (it answered 200 with the whole object to a "
                                 f"request for bytes {offset}-{offset + length - 1})",
                                 hint="the pull must read this server's pieces in one stream each")
            content_range = resp.headers.get("Content-Range") or ""
            m = _CONTENT_RANGE_RE.match(content_range)
            if not m or int(m[1]) != offset or int(m[2]) != offset + length - 1:
                raise IntegrityError(f"{key}: Content-Range {content_range!r} does not match the requested bytes "
                                     f"{offset}-{offset + length - 1}")
            return resp
        except BaseException:
            _finish(resp, complete=False)
            raise

    def close(self) -> None:
        """Close every pooled connection."""
        self._pool.clear()


def _readinto(resp: Any) -> Callable[[memoryview], int]:
    """The ``readinto`` that fills the caller's buffer straight from the socket.

    urllib3 2.x's ``HTTPResponse.readinto`` is ``read(n)`` plus a copy; the
    ``http.client.HTTPResponse`` under it (``resp._fp``, a private attribute of urllib3,
    as ``stores/s3.py`` uses it too) reads into the buffer with one copy (measured against
    ``rclone serve http`` on loopback, 512 MiB in 16 MiB ranged reads, median of 6
    interleaved runs: 0.21 s of CPU against 0.245 s through urllib3). The body is not
    decoded (``decode_content=False``), so both give the same bytes. Falls back to urllib3's
    own if the layers ever look different.
    """
    fp = getattr(resp, "_fp", None)
    return fp.readinto if isinstance(fp, http.client.HTTPResponse) else resp.readinto


def _finish(resp: Any, complete: bool = True) -> None:
    """Hand a response's connection back to the pool: reusable if its body was read to the
    end (``complete``, and http.client saw the end), else closed first, so the next request
    opens a fresh connection instead of reading the rest of this body."""
    fp = getattr(resp, "_fp", None)
    done = complete and (not isinstance(fp, http.client.HTTPResponse) or fp.isclosed())
    if not done:
        resp.close()
    resp.release_conn()
