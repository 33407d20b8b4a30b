"""HttpStore against real HTTP(S) servers on loopback (tests/httpserver.py).

Each server variant is one a split archive may sit on: ranges or none, ETags or none,
preconditions honoured or ignored, TLS with a certificate nobody trusts. Faults are real:
error statuses, bodies cut by FIN or RST, wrong Content-Range, redirects, a stalled answer.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from httpserver import Fault, self_signed_cert, touch_later

from s3sync import hashing
from s3sync.config import TransferSettings
from s3sync.engine import ChunkFetcher
from s3sync.errors import (
    AccessDeniedError,
    IntegrityError,
    NotFoundError,
    PartChangedError,
    StoreError,
    TLSError,
    TransientStoreError,
    UsageError,
)
from s3sync.planning import ChunkJob
from s3sync.stores.http import MAX_SMALL_BODY, HttpStore

KiB = 1024
SETTINGS = TransferSettings(concurrency=2, chunk_size=64 * KiB, window=4, retries=3,
                            backoff_base_s=0.01, backoff_max_s=0.02)


@pytest.fixture
def files(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    (root / "piece.001").write_bytes(os.urandom(300 * KiB + 7))
    (root / "piece.001.md5").write_text("0123456789abcdef0123456789abcdef  piece.001\n")
    (root / "empty").write_bytes(b"")
    return root


@pytest.fixture
def store():
    s = HttpStore(SETTINGS, connect_timeout_s=5, read_timeout_s=5)
    yield s
    s.close()


def _read(store: HttpStore, url: str, offset: int, length: int, etag: str | None = None) -> bytes:
    buf = bytearray(length)
    store.read_range_into(url, offset, memoryview(buf), etag)
    return bytes(buf)


# ------------------------------------------------------------------ metadata


def test_head_gives_size_etag_and_last_modified(files, http_server, store):
    server = http_server(files)
    url = server.url_of("piece.001")
    info = store.head(url)
    data = (files / "piece.001").read_bytes()
    assert (info.key, info.size) == (url, len(data))
    assert info.etag.startswith('"') and len(info.etag) == 34
    assert info.modified == int((files / "piece.001").stat().st_mtime)
    assert store.url(url) == url and store.bucket == server.url.split("//")[1]
    sent = server.requests_for("piece.001", "HEAD")[0].headers
    assert sent["User-Agent"].startswith("s3sync/") and sent["Accept-Encoding"] == "identity"


def test_head_without_etags_gives_an_empty_etag(files, http_server, store):
    server = http_server(files, etags=False)
    assert store.head(server.url_of("piece.001")).etag == ""


def test_accepts_ranges_only_when_a_range_is_answered(files, http_server, store):
    assert store.accepts_ranges(http_server(files).url_of("piece.001"))
    assert not store.accepts_ranges(http_server(files, ranges=False).url_of("piece.001"))
    # Accept-Ranges: bytes, then the whole object for a Range request.
    liar = http_server(files, ranges=False, lying_accept_ranges=True)
    assert not store.accepts_ranges(liar.url_of("piece.001"))
    assert not store.accepts_ranges(http_server(files).url_of("empty"))


def test_a_url_that_is_not_http_is_a_usage_error(store):
    with pytest.raises(UsageError):
        store.head("ftp://example.org/x")


# ------------------------------------------------------------------ small objects


def test_get_reads_a_sidecar(files, http_server, store):
    server = http_server(files)
    assert store.get(server.url_of("piece.001.md5")) == (files / "piece.001.md5").read_bytes()


def test_get_refuses_a_body_larger_than_a_sidecar(files, http_server, store):
    (files / "big").write_bytes(b"x" * (MAX_SMALL_BODY + 1))
    url = http_server(files).url_of("big")
    with pytest.raises(StoreError) as info:
        store.get(url)
    assert url in str(info.value) and not info.value.retriable


# ------------------------------------------------------------------ ranged reads


@pytest.mark.parametrize("etags", [True, False])
def test_ranges_are_exact(files, http_server, store, etags):
    server = http_server(files, etags=etags)
    url = server.url_of("piece.001")
    data = (files / "piece.001").read_bytes()
    etag = store.head(url).etag or None
    for offset, length in [(0, 64 * KiB), (64 * KiB, 100 * KiB), (len(data) - 1, 1), (5, 1)]:
        assert _read(store, url, offset, length, etag) == data[offset: offset + length]
        scratch = memoryview(bytearray(16 * KiB))
        pieces = [bytes(p) for p in store.read_range_pieces(url, offset, length, etag, scratch)]
        assert b"".join(pieces) == data[offset: offset + length]
        assert all(len(p) <= len(scratch) for p in pieces)
    sent = server.requests_for("piece.001")[-1].headers
    if etags:
        assert sent["If-Match"] == etag
    else:
        # Pinned to the Last-Modified that head saw.
        assert "If-Match" not in sent and sent["If-Unmodified-Since"]


def test_connections_are_reused_after_complete_answers(files, http_server, store):
    server = http_server(files)
    url = server.url_of("piece.001")
    store.head(url)
    assert store.accepts_ranges(url)
    store.get(server.url_of("piece.001.md5"))
    for offset in range(0, 200 * KiB, 50 * KiB):
        _read(store, url, offset, 50 * KiB)
        list(store.read_range_pieces(url, offset, 50 * KiB, None, memoryview(bytearray(8 * KiB))))
    assert len({r.client_port for r in server.requests}) == 1, [(r.method, r.path, r.client_port) for r in server.requests]


def test_a_weak_etag_is_compared_but_never_sent_in_if_match(files, http_server, store):
    server = http_server(files, weak_etags=True)
    url = server.url_of("piece.001")
    etag = store.head(url).etag
    assert etag.startswith("W/")
    assert _read(store, url, 0, 10, etag) == (files / "piece.001").read_bytes()[:10]
    assert "If-Match" not in server.requests_for("piece.001")[-1].headers
    (files / "piece.001").write_bytes(b"changed")
    with pytest.raises(PartChangedError):
        _read(store, url, 0, 5, etag)


def test_on_etag_sees_the_etag_before_the_body(files, http_server, store):
    url = http_server(files).url_of("piece.001")
    seen: list[str] = []

    def refuse(etag: str) -> None:
        seen.append(etag)
        raise PartChangedError("refused")

    with pytest.raises(PartChangedError):
        store.read_range_into(url, 0, memoryview(bytearray(10)), None, on_etag=refuse)
    assert seen == [store.head(url).etag]


@pytest.mark.parametrize("preconditions", [True, False], ids=["412", "compared"])
def test_a_changed_object_is_refused_by_etag(files, http_server, store, preconditions):
    url = http_server(files, preconditions=preconditions).url_of("piece.001")
    etag = store.head(url).etag
    (files / "piece.001").write_bytes(os.urandom(300 * KiB + 7))
    with pytest.raises(PartChangedError) as info:
        _read(store, url, 0, 10, etag)
    assert url in str(info.value)
    with pytest.raises(PartChangedError):
        list(store.read_range_pieces(url, 10, 10, etag, memoryview(bytearray(64))))


@pytest.mark.parametrize("preconditions", [True, False], ids=["412", "compared"])
def test_a_changed_object_is_refused_by_last_modified_without_etags(files, http_server, store, preconditions):
    url = http_server(files, etags=False, preconditions=preconditions).url_of("piece.001")
    assert store.head(url).etag == ""
    _read(store, url, 0, 10)
    touch_later(files / "piece.001")
    with pytest.raises(PartChangedError) as info:
        _read(store, url, 10, 10)
    assert url in str(info.value)


def test_a_wrong_content_range_is_an_integrity_error(files, http_server, store):
    server = http_server(files)
    server.fault("piece.001", Fault(content_range="bytes 1-10/307207"))
    with pytest.raises(IntegrityError) as info:
        _read(store, server.url_of("piece.001"), 0, 10)
    assert info.value.retriable


def test_a_server_without_ranges_serves_offset_zero_and_refuses_the_rest(files, http_server, store):
    server = http_server(files, ranges=False)
    url = server.url_of("piece.001")
    data = (files / "piece.001").read_bytes()
    assert _read(store, url, 0, 1000) == data[:1000]
    with pytest.raises(StoreError) as info:
        _read(store, url, 1000, 1000)
    assert "ignores Range" in str(info.value) and not info.value.retriable
    with pytest.raises(IntegrityError):  # the whole object is shorter than the bytes asked for
        _read(store, url, 0, len(data) + 1)
    # The first answer's connection was closed, not read to its end and reused mid-body.
    assert _read(store, url, 0, 10) == data[:10]


def test_stream_reads_a_whole_object_from_a_server_without_ranges(files, http_server, store):
    server = http_server(files, ranges=False)
    url = server.url_of("piece.001")
    data = (files / "piece.001").read_bytes()
    info = store.head(url)
    seen: list[str] = []
    scratch = memoryview(bytearray(32 * KiB))
    out = b"".join(bytes(p) for p in store.stream(url, info.etag, scratch, on_etag=seen.append, length=info.size))
    assert out == data and seen == [info.etag]
    assert "Range" not in server.requests_for("piece.001")[-1].headers
    server.fault("piece.001", Fault(cut_after=1000))
    with pytest.raises(IntegrityError):
        list(store.stream(url, info.etag, scratch, length=info.size))
    (files / "piece.001").write_bytes(b"new")
    with pytest.raises(PartChangedError):
        list(store.stream(url, info.etag, scratch))


# ------------------------------------------------------------------ errors


@pytest.mark.parametrize("status, error, retriable", [
    (404, NotFoundError, False), (410, NotFoundError, False),
    (401, AccessDeniedError, False), (403, AccessDeniedError, False),
    (500, TransientStoreError, True), (503, TransientStoreError, True), (429, TransientStoreError, True),
    (400, StoreError, False),
])
def test_statuses_are_translated(files, http_server, store, status, error, retriable):
    server = http_server(files)
    url = server.url_of("piece.001")
    server.fault("piece.001", Fault(status=status), Fault(status=status))
    with pytest.raises(error) as info:
        _read(store, url, 0, 10)
    assert type(info.value) is error and info.value.retriable is retriable and url in str(info.value)
    with pytest.raises(error):
        store.get(url)


def test_a_missing_object_is_not_found(files, http_server, store):
    with pytest.raises(NotFoundError) as info:
        store.head(http_server(files).url_of("absent"))
    assert not info.value.bucket_missing


def test_a_body_cut_short_is_an_integrity_error(files, http_server, store):
    server = http_server(files)
    server.fault("piece.001", Fault(cut_after=1000))
    with pytest.raises(IntegrityError) as info:
        _read(store, server.url_of("piece.001"), 0, 64 * KiB)
    assert info.value.retriable


def test_a_connection_reset_mid_body_is_transient(files, http_server, store):
    server = http_server(files)
    server.fault("piece.001", Fault(cut_after=1000, reset=True))
    with pytest.raises((TransientStoreError, IntegrityError)) as info:
        _read(store, server.url_of("piece.001"), 0, 200 * KiB)
    assert info.value.retriable


def test_a_refused_connection_is_transient(files, http_server, store):
    server = http_server(files)
    url = server.url_of("piece.001")
    server.stop()
    with pytest.raises(TransientStoreError) as info:
        store.head(url)
    assert url in str(info.value)


def test_a_stalled_answer_times_out_as_transient(files, http_server):
    server = http_server(files)
    server.fault("piece.001", Fault(stall_s=1.0))
    store = HttpStore(SETTINGS, connect_timeout_s=5, read_timeout_s=0.2)
    try:
        with pytest.raises(TransientStoreError):
            _read(store, server.url_of("piece.001"), 0, 10)
    finally:
        store.close()


def test_redirects_are_followed_up_to_five(files, http_server, store):
    server = http_server(files)
    data = (files / "piece.001").read_bytes()
    server.fault("moved", Fault(redirect="/piece.001"))
    assert _read(store, server.url_of("moved"), 5, 10) == data[5:15]
    server.fault("loop", *[Fault(redirect="/loop")] * 7)
    with pytest.raises(StoreError) as info:
        store.head(server.url_of("loop"))
    assert type(info.value) is StoreError and "redirects" in str(info.value)


def test_an_untrusted_certificate_is_a_tls_error(files, http_server, store, tmp_path):
    server = http_server(files, tls=self_signed_cert(tmp_path))
    url = server.url_of("piece.001")
    assert url.startswith("https://")
    with pytest.raises(TLSError) as info:
        store.head(url)
    assert "not trusted" in str(info.value) and not info.value.retriable


def test_a_certificate_trusted_through_the_system_default_paths_is_accepted(files, http_server, store, tmp_path,
                                                                          monkeypatch):
    # No certifi: the system's default context, which OpenSSL points at SSL_CERT_FILE if set.
    cert, key = self_signed_cert(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    server = http_server(files, tls=(cert, key))
    data = (files / "piece.001").read_bytes()
    assert _read(store, server.url_of("piece.001"), 100, 1000) == data[100:1100]


def test_https_to_a_plain_http_server_is_a_tls_error(files, http_server, store):
    url = http_server(files).url_of("piece.001").replace("http://", "https://")
    with pytest.raises(TLSError):
        store.head(url)


# ------------------------------------------------------------------ through the engine


def _jobs(url: str, data: bytes, chunk: int) -> list[ChunkJob]:
    return [ChunkJob(0, url, "", i, off, min(chunk, len(data) - off), hashing.digest(data[off: off + chunk]), off)
            for i, off in enumerate(range(0, len(data), chunk))]


@pytest.mark.parametrize("fault", [Fault(status=500), Fault(status=503), Fault(cut_after=100),
                                   Fault(cut_after=100, reset=True), Fault(content_range="bytes 0-0/1")],
                         ids=["500", "503", "cut", "reset", "content-range"])
def test_the_engine_retries_transient_failures_to_success(files, http_server, store, fault):
    server = http_server(files)
    url = server.url_of("piece.001")
    data = (files / "piece.001").read_bytes()
    server.fault("piece.001", fault)
    fetcher = ChunkFetcher(store, lambda key: key, SETTINGS)
    got = b"".join(bytes(view) for _, view in fetcher.fetch(_jobs(url, data, SETTINGS.chunk_size)))
    assert got == data and fetcher.stats.retries == 1


def test_the_engine_reports_a_missing_piece_by_its_url(files, http_server, store):
    url = http_server(files).url_of("absent")
    fetcher = ChunkFetcher(store, lambda key: key, SETTINGS)
    with pytest.raises(Exception) as info:
        list(fetcher.fetch(_jobs(url, b"x" * 10, 10)))
    assert url in str(info.value)


def test_the_fast_path_is_taken_with_the_installed_libraries(files, http_server, store):
    import http.client

    from s3sync.stores import http as http_module

    resp = store._request("GET", http_server(files).url_of("piece.001"))
    try:
        readinto = http_module._readinto(resp)
        assert isinstance(getattr(readinto, "__self__", None), http.client.HTTPResponse), (
            "urllib3 changed its layers: reads fell back to urllib3's HTTPResponse.readinto")
    finally:
        http_module._finish(resp, complete=False)


# ------------------------------------------------------------------ a real web server


@pytest.fixture
def rclone_http(files: Path, tmp_path: Path):
    """``rclone serve http`` over ``files`` (Go's net/http file serving: ranges, Last-Modified,
    If-Unmodified-Since, no ETag), on a port the kernel picks. No directory cache, so a
    changed file is seen at once."""
    import re
    import shutil
    import subprocess
    import sysconfig
    import time

    exe = Path(sysconfig.get_path("scripts")) / "rclone"
    exe = str(exe) if exe.is_file() else shutil.which("rclone")
    if exe is None:
        pytest.fail("rclone not found: install the test extra")
    log = tmp_path / "rclone-http.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([exe, "serve", "http", "--addr", "127.0.0.1:0", "--config", "",
                                 "--dir-cache-time", "0s", "--log-level", "NOTICE", str(files)],
                                stdout=out, stderr=subprocess.STDOUT,
                                env={"HOME": str(tmp_path), "PATH": os.environ.get("PATH", "")})
    try:
        for _ in range(400):
            m = re.search(r"started on \[(http://127\.0\.0\.1:\d+)/?\]", log.read_text(errors="replace"))
            if m or proc.poll() is not None:
                break
            time.sleep(0.05)
        if not m:
            pytest.fail(f"rclone serve http did not start:\n{log.read_text(errors='replace')}")
        yield m[1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_real_web_server_without_etags(files, rclone_http, store):
    url = f"{rclone_http}/piece.001"
    data = (files / "piece.001").read_bytes()
    info = store.head(url)
    assert (info.size, info.etag) == (len(data), "") and info.modified
    assert store.accepts_ranges(url)
    assert _read(store, url, 1000, 64 * KiB) == data[1000: 1000 + 64 * KiB]
    assert b"".join(bytes(p) for p in store.stream(url, None, memoryview(bytearray(64 * KiB)))) == data
    with pytest.raises(NotFoundError):
        store.head(f"{rclone_http}/absent")
    touch_later(files / "piece.001")
    with pytest.raises(PartChangedError):  # pinned by Last-Modified (If-Unmodified-Since: 412)
        _read(store, url, 0, 10)
