"""A real HTTP(S) server on loopback that serves a directory the way web servers and mirrors do.

``serve_directory(root, ...)`` starts a ``http.server.ThreadingHTTPServer`` on a port the kernel
picks (port 0) and returns a ``FileServer``: its ``url`` is the base URL, ``url_of(name)`` a
file's URL. Options reproduce what real servers differ in:

- ``ranges``: answer ``Range: bytes=a-b`` with 206 and Content-Range (RFC 9110 section 14), or
  ignore Range and send the whole file with 200 (``lying_accept_ranges`` still advertises
  ``Accept-Ranges: bytes``, as some servers do);
- ``etags``: a strong ETag (the file's MD5, quoted) and ``If-Match`` (412 when it differs), or no
  ETag at all; ``last_modified``: a Last-Modified header and ``If-Unmodified-Since``;
  ``preconditions=False`` sends both headers but ignores If-Match and If-Unmodified-Since, as
  many servers do; ``weak_etags`` sends ``W/"..."`` ETags (which If-Match never matches);
- ``tls``: a ``(certfile, keyfile)`` pair to speak HTTPS (see ``self_signed_cert``);
- ``host``: the loopback address to listen on (``127.0.0.2``... play other hosts).

Faults are queued per path with ``FileServer.fault(path, Fault(...))``; each request to that path
consumes the next one: an error status, a body cut after N bytes (the connection closed, or reset
with an RST), a flipped byte, a wrong Content-Range, a redirect, a stall, a trickling body, extra headers
(``Retry-After``). Every request is logged in
``FileServer.requests`` (method, path, headers) for assertions.

Used by tests/conftest.py's ``http_server`` fixture. It must not import ``s3sync``.
"""

from __future__ import annotations

import dataclasses
import email.utils
import hashlib
import http.server
import os
import shutil
import socket
import ssl
import struct
import subprocess
import threading
import time
from pathlib import Path
from urllib.parse import quote, unquote, urlsplit

BLOCK = 64 * 1024


@dataclasses.dataclass(frozen=True)
class Fault:
    """What to do to one request instead of (or while) answering it.

    Attributes:
        status: answer this HTTP status with a short text body (0: answer normally).
        cut_after: send only this many bytes of the body, then close the connection
            (``reset``: with an RST instead of a FIN). -1: send the whole body.
        reset: see ``cut_after``.
        content_range: send this Content-Range instead of the true one (206 answers).
        redirect: answer 302 with this Location (a path or a URL).
        stall_s: wait this many seconds before answering (a slow server).
        corrupt_at: flip every bit of the body's byte at this offset (-1: none), as a bad
            NIC, proxy or disk does: the answer is otherwise correct (status, length).
        headers: extra response headers, e.g. ``(("Retry-After", "1"),)`` on a 503.
        trickle_s: send the body in ``trickle_step``-byte steps, waiting this many seconds
            before each (a server that trickles: every read gets a few bytes in time).
        trickle_step: see ``trickle_s``.
    """

    status: int = 0
    cut_after: int = -1
    reset: bool = False
    content_range: str = ""
    redirect: str = ""
    stall_s: float = 0.0
    corrupt_at: int = -1
    headers: tuple[tuple[str, str], ...] = ()
    trickle_s: float = 0.0
    trickle_step: int = 16


@dataclasses.dataclass(frozen=True)
class Request:
    """One request as the server saw it."""

    method: str
    path: str
    headers: dict[str, str]
    client_port: int
    """The client's port: one per TCP connection, so equal ports mean a reused connection."""
    at: float = 0.0
    """When it arrived (time.monotonic())."""


class FileServer(http.server.ThreadingHTTPServer):
    """The server; options as in the module docstring. Start it with ``serve_directory``."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, root: Path, *, ranges: bool = True, etags: bool = True, last_modified: bool = True,
                 lying_accept_ranges: bool = False, preconditions: bool = True, weak_etags: bool = False,
                 tls: tuple[Path, Path] | None = None, host: str = "127.0.0.1") -> None:
        super().__init__((host, 0), _Handler)
        self.root = Path(root).resolve()
        self.ranges = ranges
        self.etags = etags
        self.last_modified = last_modified
        self.lying_accept_ranges = lying_accept_ranges
        self.preconditions = preconditions
        self.weak_etags = weak_etags
        self.requests: list[Request] = []
        self._faults: dict[str, list[Fault]] = {}
        self._lock = threading.Lock()
        if tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.load_cert_chain(str(tls[0]), str(tls[1]))
            self.socket = context.wrap_socket(self.socket, server_side=True, do_handshake_on_connect=False)
        scheme = "https" if tls is not None else "http"
        host, port = self.server_address[:2]
        self.url = f"{scheme}://{host}:{port}"
        self._thread = threading.Thread(target=self.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="test-http-server", daemon=True)

    def handle_error(self, request, client_address) -> None:
        pass  # a client that refused our certificate, or hung up: the test asserts on the client side

    def url_of(self, name: str) -> str:
        """The URL of ``name`` (a path relative to the root, ``/``-separated)."""
        return f"{self.url}/{quote(name)}"

    def fault(self, name: str, *faults: Fault) -> None:
        """Queue ``faults`` for the next requests to ``name`` (one each, in order)."""
        with self._lock:
            self._faults.setdefault("/" + name.lstrip("/"), []).extend(faults)

    def next_fault(self, path: str) -> Fault | None:
        with self._lock:
            queue = self._faults.get(path)
            return queue.pop(0) if queue else None

    def log(self, request: Request) -> None:
        with self._lock:
            self.requests.append(request)

    def requests_for(self, name: str, method: str = "GET") -> list[Request]:
        """The requests logged for ``name`` with ``method``."""
        path = "/" + name.lstrip("/")
        with self._lock:
            return [r for r in self.requests if r.path == path and r.method == method]

    def start(self) -> FileServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        self._thread.join(timeout=5)


def serve_directory(root: Path, **options) -> FileServer:
    """Start a ``FileServer`` for ``root`` (options: see ``FileServer``); stop it with ``stop()``."""
    return FileServer(root, **options).start()


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made by the openssl command (PEM files).

    Returns:
        ``(certfile, keyfile)``.
    """
    cert, key = directory / "cert.pem", directory / "key.pem"
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the openssl command is needed to make a test certificate (apt-get install openssl)")
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    return cert, key


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers: connections are reused
    # Headers and body go out in separate writes: with Nagle's algorithm the body of a small
    # answer on a reused connection waits for the client's delayed ACK (40 ms on Linux).
    disable_nagle_algorithm = True
    server: FileServer

    def log_message(self, format: str, *args) -> None:
        pass  # quiet: failures are asserted on, not read from stderr

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def do_GET(self) -> None:
        self._answer(body=True)

    def _answer(self, body: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        self.server.log(Request(self.command, path, dict(self.headers.items()), self.client_address[1],
                                time.monotonic()))
        fault = self.server.next_fault(path) or Fault()
        if fault.stall_s:
            time.sleep(fault.stall_s)
        if fault.redirect:
            return self._short(302, "moved", {"Location": fault.redirect, **dict(fault.headers)})
        if fault.status:
            return self._short(fault.status, f"fault {fault.status}", dict(fault.headers))
        file = (self.server.root / path.lstrip("/")).resolve()
        if not file.is_relative_to(self.server.root) or not file.is_file():
            return self._short(404, "not found")
        data = file.read_bytes()
        mtime = file.stat().st_mtime
        headers: dict[str, str] = {}
        etag = ("W/" if self.server.weak_etags else "") + '"' + hashlib.md5(data).hexdigest() + '"'
        if self.server.etags:
            headers["ETag"] = etag
            pin = self.headers.get("If-Match")
            # If-Match compares strongly: a weak ETag never matches (RFC 9110 section 13.1.1).
            if (self.server.preconditions and pin is not None and pin.strip() != "*"
                    and (etag.startswith("W/") or etag not in [t.strip() for t in pin.split(",")])):
                return self._short(412, "precondition failed")
        if self.server.last_modified:
            headers["Last-Modified"] = email.utils.formatdate(mtime, usegmt=True)
            since = self.headers.get("If-Unmodified-Since")
            if self.server.preconditions and since is not None and self.headers.get("If-Match") is None:
                try:
                    limit = email.utils.parsedate_to_datetime(since).timestamp()
                except (TypeError, ValueError):
                    limit = None
                if limit is not None and int(mtime) > limit:
                    return self._short(412, "precondition failed")
        if self.server.ranges or self.server.lying_accept_ranges:
            headers["Accept-Ranges"] = "bytes"
        status, start, end = 200, 0, len(data)
        wanted = self.headers.get("Range")
        if wanted and self.server.ranges:
            parsed = _parse_range(wanted, len(data))
            if parsed is None:
                return self._short(416, "range not satisfiable", {"Content-Range": f"bytes */{len(data)}"})
            start, end = parsed
            status = 206
            headers["Content-Range"] = fault.content_range or f"bytes {start}-{end - 1}/{len(data)}"
        headers["Content-Length"] = str(end - start)
        headers["Content-Type"] = "application/octet-stream"
        headers.update(fault.headers)
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if not body:
            return
        payload = memoryview(data)[start:end]
        if fault.cut_after >= 0:
            payload = payload[: fault.cut_after]
        if 0 <= fault.corrupt_at < len(payload):
            flipped = bytearray(payload)
            flipped[fault.corrupt_at] ^= 0xFF
            payload = memoryview(flipped)
        step = fault.trickle_step if fault.trickle_s else BLOCK
        try:
            for i in range(0, len(payload), step):
                if fault.trickle_s:
                    time.sleep(fault.trickle_s)
                self.wfile.write(payload[i: i + step])
                if fault.trickle_s:
                    self.wfile.flush()
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
            self.close_connection = True  # the client went away (it closes 200s it does not want)
            return
        if fault.cut_after >= 0:
            self._cut(fault.reset)

    def _short(self, status: int, text: str, extra: dict[str, str] | None = None) -> None:
        body = text.encode()
        self.send_response(status)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _cut(self, reset: bool) -> None:
        """Close the connection now, with an RST (SO_LINGER 0) if ``reset``."""
        self.close_connection = True
        sock = self.connection
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        sock.close()


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """One ``bytes=`` range as ``(start, end)`` (end exclusive), clipped to ``size``; None if
    unsatisfiable. Several ranges are not served (none of s3sync's requests asks for them)."""
    unit, _, spec = header.partition("=")
    if unit.strip() != "bytes" or "," in spec:
        return None
    first, _, last = spec.strip().partition("-")
    if first == "":
        n = int(last)
        return (max(0, size - n), size) if n > 0 and size else None
    start = int(first)
    end = min(size, int(last) + 1) if last else size
    return (start, end) if start < size and start < end else None


def touch_later(path: Path, seconds: float = 10.0) -> None:
    """Move ``path``'s mtime ``seconds`` forward (a changed file, as Last-Modified sees it)."""
    st = os.stat(path)
    os.utime(path, (st.st_atime, st.st_mtime + seconds))
