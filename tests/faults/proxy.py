"""A small fault-injection HTTP/1.1 reverse proxy for S3 servers on loopback (stdlib only).

The proxy listens on a free loopback port and forwards every request, headers verbatim
(``Host`` included, so SigV4 signatures made for the proxy's address stay valid), to one
upstream S3 endpoint. One request per connection: every response carries
``Connection: close``, which keeps the byte accounting and the faults simple and exact.

Faults are ``Rule`` objects matched on method, a substring of the request path (bucket and
key, URL-decoded) and the request's ordinal among the requests that rule matched (1-based),
with an optional window (``first``/``last``), a deterministic fraction (``every``: apply to
every n-th matching request) and a budget (``times``). The first rule whose window applies
wins. Faults on a response body (cut, reset, flip, stall) only act on ``200``/``206``
responses with a non-empty body; ``error`` answers without asking upstream.

Actions (the classic failures of S3 clients, see issue 3):

``cut``           send the headers with the full ``Content-Length``, then close (FIN)
                  ``cut_before_end`` bytes before the end of the body.
``reset``         send ``reset_after`` body bytes, then reset the connection (RST via
                  ``SO_LINGER`` 0).
``error``         answer ``status`` with an S3 XML error body ``code`` (e.g. 503 SlowDown).
``flip``          invert one body byte at ``flip_at`` (default: the middle of the body).
``ignore_range``  drop the ``Range`` header upstream (re-signing the request with ``resign``
                  when given, for servers that check signatures), so the server answers
                  ``200`` with the whole object.
``stall``         send ``stall_after`` body bytes, then send nothing for ``stall_s`` seconds
                  (bounded; cut short by ``stop``), then close.
``hang``          send nothing at all (not even headers) for ``stall_s`` seconds, then close.
``shift_range``   ask upstream for the requested range moved by ``shift`` bytes (re-signed):
                  the server answers other bytes with an honest ``Content-Range``.
``shift_range_lie`` the same, but the response claims the requested ``Content-Range``: only
                  the digest can tell.
``hook``          call ``hook(request)`` before forwarding normally (e.g. to fill a disk at
                  a precise moment).
``bad_status``    answer a malformed status line (``HTTP/1.1 ??? garbage``: http.client's
                  BadStatusLine), then close, without asking upstream.
``close``         close the connection (FIN) before sending anything: http.client's
                  RemoteDisconnected, without asking upstream.

Besides rules: a global throttle (``throttle_bps``), a gate (``hold()``/``release()``) that
freezes every response body, and per-key counters of requests and body bytes actually
written to clients (``stats``), so tests can measure what a retry or a resume re-fetched.
"""

from __future__ import annotations

import collections
import dataclasses
import http.client
import select
import socket
import socketserver
import struct
import threading
import time
import urllib.parse
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler
from typing import Self

_PIECE = 16 * 1024
_HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "proxy-authenticate",
               "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade"}
_UPSTREAM_TIMEOUT_S = 30.0

ACTIONS = {"cut", "reset", "error", "flip", "ignore_range", "stall", "hang", "shift_range", "shift_range_lie",
           "hook", "bad_status", "close"}


@dataclasses.dataclass(frozen=True)
class Request:
    """What a rule sees of a request.

    Attributes:
        method: ``GET``, ``HEAD``, ...
        path: the URL path, decoded (``/bucket/key``), without the query.
        query: the raw query string.
        headers: request headers (case-insensitive mapping as parsed by http.server).
    """

    method: str
    path: str
    query: str
    headers: Mapping[str, str]

    @property
    def range_start(self) -> int | None:
        """First byte of a ``Range: bytes=A-B`` header, or None."""
        value = self.headers.get("Range")
        if not value or not value.startswith("bytes="):
            return None
        first = value[6:].split("-", 1)[0]
        return int(first) if first.isdigit() else None


@dataclasses.dataclass
class Rule:
    """One programmable fault (see the module docstring for the actions).

    Attributes:
        action: one of ``ACTIONS``.
        key: substring the decoded path must contain ("" matches all).
        bucket: if set, the path must be in this bucket (``/bucket/...``).
        method: HTTP method to match.
        first, last: window of matching-request ordinals (1-based, inclusive; ``last`` None =
            open-ended) in which the rule applies.
        every: apply to every ``every``-th ordinal of the window (1 = all of them).
        times: apply at most this many times (None = unlimited).
        match: extra predicate on the request (e.g. on ``range_start``).
    """

    action: str
    key: str = ""
    bucket: str = ""
    method: str = "GET"
    first: int = 1
    last: int | None = None
    every: int = 1
    times: int | None = None
    match: Callable[[Request], bool] | None = None
    cut_before_end: int = 4096
    reset_after: int = 32 * 1024
    status: int = 503
    code: str = "SlowDown"
    flip_at: int | None = None
    stall_after: int = 32 * 1024
    stall_s: float = 5.0
    shift: int = 1
    hook: Callable[[Request], None] | None = None
    # bookkeeping, guarded by the proxy's lock
    seen: int = 0
    applied: int = 0

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}")

    def _matches(self, req: Request) -> bool:
        return (req.method == self.method and self.key in req.path
                and (not self.bucket or req.path.startswith(f"/{self.bucket}/"))
                and (self.match is None or self.match(req)))

    def _applies(self, ordinal: int) -> bool:
        if ordinal < self.first or (self.last is not None and ordinal > self.last):
            return False
        if (ordinal - self.first) % self.every:
            return False
        return self.times is None or self.applied < self.times


@dataclasses.dataclass
class KeyStats:
    """Counters for one path: requests seen, body bytes sent to clients, statuses, faults."""

    requests: int = 0
    bytes: int = 0
    statuses: collections.Counter = dataclasses.field(default_factory=collections.Counter)
    faults: collections.Counter = dataclasses.field(default_factory=collections.Counter)


def _hung_up(conn: socket.socket) -> bool:
    """True if the client closed its end (readable with nothing to read) or reset it."""
    try:
        readable, _, _ = select.select([conn], [], [], 0)
        return bool(readable) and conn.recv(1, socket.MSG_PEEK) == b""
    except OSError:
        return True


class _Stopped(Exception):
    """The proxy is stopping: abandon this connection."""


class _Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, proxy: FaultProxy) -> None:
        self.proxy = proxy
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: object) -> None:
        pass

    def handle(self) -> None:
        proxy = self.server.proxy
        proxy._register(self.connection)
        try:
            self.close_connection = True
            self.handle_one_request()
        except (_Stopped, OSError, http.client.HTTPException):
            pass
        finally:
            proxy._unregister(self.connection)

    # BaseHTTPRequestHandler dispatches on do_<METHOD>
    def do_GET(self) -> None:
        self.server.proxy._serve(self)

    do_HEAD = do_PUT = do_POST = do_DELETE = do_GET


class FaultProxy:
    """The proxy. ``start()`` binds a free loopback port; ``url`` is its endpoint.

    Args:
        upstream: endpoint URL of the real server, ``http://127.0.0.1:PORT``.
        resign: optional ``resign(method, path_with_query, headers) -> headers`` used when a
            rule changes a signed header (``ignore_range``); servers that check SigV4
            signatures (rclone) reject a request whose Range was removed otherwise.
    """

    def __init__(self, upstream: str,
                 resign: Callable[[str, str, dict[str, str]], dict[str, str]] | None = None) -> None:
        parsed = urllib.parse.urlsplit(upstream)
        self.upstream_host = parsed.hostname or "127.0.0.1"
        self.upstream_port = parsed.port or 80
        self.resign = resign
        self.rules: list[Rule] = []
        self.throttle_bps: float | None = None
        self._lock = threading.Lock()
        self._stats: dict[str, KeyStats] = collections.defaultdict(KeyStats)
        self._stop = threading.Event()
        self._gate = threading.Event()
        self._gate.set()
        self._tb_next = 0.0
        self._conns: dict[socket.socket, str] = {}  # open client connections -> request path
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    @property
    def url(self) -> str:
        assert self._server is not None, "proxy not started"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop accepting, abort stalls and held bodies, close every client connection."""
        self._stop.set()
        self._gate.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not self._conns:
                    break
            time.sleep(0.02)
        if self._thread is not None:
            self._thread.join(timeout=max(0.0, deadline - time.monotonic()))

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ control

    def add(self, *rules: Rule) -> list[Rule]:
        with self._lock:
            self.rules.extend(rules)
        return list(rules)

    def clear(self) -> None:
        """Remove every rule, the throttle and the hold."""
        with self._lock:
            self.rules.clear()
        self.throttle_bps = None
        self._gate.set()

    def hold(self) -> None:
        """Freeze: every response (new ones and bodies in progress) waits until ``release``."""
        self._gate.clear()

    def release(self) -> None:
        self._gate.set()

    def wait_idle(self, *keys: str, timeout_s: float = 5.0) -> bool:
        """Wait until no client connection for a path containing all ``keys`` is open (so their
        counters are final; connections whose request is not parsed yet count too)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            with self._lock:
                if not any(all(k in path for k in keys) or not path for path in self._conns.values()):
                    return True
            time.sleep(0.01)
        return False

    def reset_stats(self) -> None:
        with self._lock:
            self._stats.clear()

    def stats(self, *keys: str) -> KeyStats:
        """Counters summed over every path containing all of ``keys``."""
        total = KeyStats()
        with self._lock:
            for path, st in self._stats.items():
                if all(k in path for k in keys):
                    total.requests += st.requests
                    total.bytes += st.bytes
                    total.statuses.update(st.statuses)
                    total.faults.update(st.faults)
        return total

    def bytes_sent(self, *keys: str) -> int:
        """Body bytes written to clients for paths containing all of ``keys``."""
        return self.stats(*keys).bytes

    # ------------------------------------------------------------------ internals

    def _register(self, conn: socket.socket, path: str = "") -> None:
        with self._lock:
            self._conns[conn] = path

    def _unregister(self, conn: socket.socket) -> None:
        with self._lock:
            self._conns.pop(conn, None)

    def _wait(self, seconds: float, conn: socket.socket | None = None) -> None:
        """Sleep ``seconds``; give up early when stopping or when the client hung up."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if self._stop.wait(min(left, 0.05)):
                raise _Stopped()
            if conn is not None and _hung_up(conn):
                raise _Stopped()

    def _pass_gate(self, conn: socket.socket | None = None) -> None:
        while not self._gate.wait(0.05):
            if self._stop.is_set() or (conn is not None and _hung_up(conn)):
                raise _Stopped()
        if self._stop.is_set():
            raise _Stopped()

    def _throttle(self, n: int) -> None:
        rate = self.throttle_bps
        if not rate:
            return
        with self._lock:
            now = time.monotonic()
            start = max(self._tb_next, now)
            self._tb_next = start + n / rate
        if start > now:
            self._wait(start - now)

    def _pick(self, req: Request) -> Rule | None:
        with self._lock:
            chosen = None
            for rule in self.rules:
                if not rule._matches(req):
                    continue
                rule.seen += 1
                if chosen is None and rule._applies(rule.seen):
                    rule.applied += 1
                    chosen = rule
            st = self._stats[req.path]
            st.requests += 1
            if chosen is not None:
                st.faults[chosen.action] += 1
            return chosen

    def _count(self, path: str, *, status: int | None = None, nbytes: int = 0) -> None:
        with self._lock:
            st = self._stats[path]
            st.bytes += nbytes
            if status is not None:
                st.statuses[status] += 1

    def _send(self, h: _Handler, path: str, data: bytes | memoryview, body: bool = True) -> None:
        h.connection.sendall(data)
        if body:
            self._count(path, nbytes=len(data))

    def _serve(self, h: _Handler) -> None:
        split = urllib.parse.urlsplit(h.path)
        req = Request(h.command, urllib.parse.unquote(split.path), split.query, h.headers)
        length = int(h.headers.get("Content-Length") or 0)
        if h.headers.get("Transfer-Encoding"):
            self._reply_error(h, req, 501, "NotImplemented", "the fault proxy does not relay chunked uploads")
            return
        req_body = h.rfile.read(length) if length else b""
        self._register(h.connection, req.path)
        rule = self._pick(req)
        self._pass_gate(h.connection)
        if rule is not None and rule.action == "hook" and rule.hook is not None:
            rule.hook(req)
        if rule is not None and rule.action == "error":
            self._reply_error(h, req, rule.status, rule.code, "injected by the fault proxy")
            return
        if rule is not None and rule.action == "bad_status":
            self._send(h, req.path, b"HTTP/1.1 ??? garbage\r\nConnection: close\r\n\r\n", body=False)
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if rule is not None and rule.action == "close":
            h.connection.shutdown(socket.SHUT_RDWR)
            return
        if rule is not None and rule.action == "hang":
            self._wait(rule.stall_s, h.connection)
            return

        headers = {k: v for k, v in h.headers.items() if k.lower() not in _HOP_BY_HOP}
        claimed_range = None
        if rule is not None and rule.action == "ignore_range":
            headers = {k: v for k, v in headers.items() if k.lower() != "range"}
            if self.resign is not None:
                headers = self.resign(req.method, h.path, headers)
        elif rule is not None and rule.action in ("shift_range", "shift_range_lie"):
            name = next((k for k in headers if k.lower() == "range"), None)
            first, _, last = headers[name][6:].partition("-") if name else ("", "", "")
            if first.isdigit() and last.isdigit():
                headers[name] = f"bytes={int(first) + rule.shift}-{int(last) + rule.shift}"
                if self.resign is not None:
                    headers = self.resign(req.method, h.path, headers)
                if rule.action == "shift_range_lie":
                    claimed_range = (int(first), int(last))

        upstream = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=_UPSTREAM_TIMEOUT_S)
        try:
            upstream.putrequest(req.method, h.path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers.items():
                upstream.putheader(k, v)
            upstream.putheader("Connection", "close")
            upstream.endheaders(req_body or None)
            resp = upstream.getresponse()
            self._relay(h, req, rule, resp, claimed_range)
        finally:
            upstream.close()

    def _reply_error(self, h: _Handler, req: Request, status: int, code: str, message: str) -> None:
        body = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
                f"<Message>{message}</Message><Resource>{req.path}</Resource>"
                f"<RequestId>fault-proxy</RequestId></Error>").encode()
        head = (f"HTTP/1.1 {status} {http.client.responses.get(status, 'Error')}\r\n"
                f"Content-Type: application/xml\r\nContent-Length: {len(body)}\r\n"
                f"x-amz-request-id: fault-proxy\r\nConnection: close\r\n\r\n").encode()
        self._count(req.path, status=status)
        self._send(h, req.path, head, body=False)
        if req.method != "HEAD":
            self._send(h, req.path, body, body=False)

    def _relay(self, h: _Handler, req: Request, rule: Rule | None, resp: http.client.HTTPResponse,
               claimed_range: tuple[int, int] | None = None) -> None:
        self._count(req.path, status=resp.status)
        lines = [f"HTTP/1.1 {resp.status} {resp.reason}"]
        for k, v in resp.getheaders():
            if k.lower() == "content-range" and claimed_range is not None:
                v = f"bytes {claimed_range[0]}-{claimed_range[1]}/{v.rpartition('/')[2]}"
            if k.lower() not in _HOP_BY_HOP:
                lines.append(f"{k}: {v}")
        lines.append("Connection: close")
        self._send(h, req.path, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"), body=False)
        if req.method == "HEAD" or resp.status in (204, 304):
            return
        declared = resp.getheader("Content-Length")
        total = int(declared) if declared is not None else None
        body_fault = rule is not None and rule.action in {"cut", "reset", "flip", "stall"} \
            and resp.status in (200, 206) and total
        action = rule.action if body_fault else None
        assert rule is not None or action is None
        stop_at = None  # body offset at which to end the response early
        if action == "cut":
            stop_at = max(0, total - rule.cut_before_end)
        elif action == "reset":
            stop_at = min(rule.reset_after, total - 1)
        elif action == "stall":
            stop_at = min(rule.stall_after, total - 1)
        flip_at = None
        if action == "flip":
            flip_at = rule.flip_at if rule.flip_at is not None else total // 2
            flip_at = min(flip_at, total - 1)

        sent = 0
        while True:
            want = _PIECE if stop_at is None else min(_PIECE, stop_at - sent)
            if want <= 0:
                break
            data = resp.read(want)
            if not data:
                break
            if flip_at is not None and sent <= flip_at < sent + len(data):
                mutable = bytearray(data)
                mutable[flip_at - sent] ^= 0xFF
                data = bytes(mutable)
            self._pass_gate(h.connection)
            self._throttle(len(data))
            self._send(h, req.path, data)
            sent += len(data)
        if action == "reset":
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
        elif action == "stall":
            self._wait(rule.stall_s, h.connection)
            h.connection.shutdown(socket.SHUT_RDWR)
        elif action == "cut":
            h.connection.shutdown(socket.SHUT_RDWR)
