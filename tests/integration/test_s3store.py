"""S3Store's ranged reads on moto and rclone: exact bytes, one copy, connections reused.

``read_range_into`` and ``read_range_pieces`` read response bodies straight from the
``http.client`` response under botocore and urllib3 (urllib3's own ``readinto`` copies each
byte twice more). These tests pin that the fast path is the one taken with the installed
libraries, so an upgrade that changes their layers shows up here rather than as a silent
slowdown, and that handing connections back by hand keeps them reusable.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import io
import os
import zlib

import pytest
import urllib3.connection

from s3sync.config import S3Settings
from s3sync.errors import IntegrityError, PartChangedError, TransientStoreError
from s3sync.stores import s3 as s3_module
from s3sync.stores.s3 import S3Store, make_client

MiB = 1024 * 1024


@pytest.fixture
def store(s3_server, bucket):
    s = S3Store(make_client(S3Settings(endpoint_url=s3_server.endpoint_url), max_connections=4), bucket)
    yield s
    s.close()


@pytest.fixture
def connections(monkeypatch) -> list[int]:
    """Counts TCP connections opened by urllib3 (one list entry per connect)."""
    opened: list[int] = []
    real = urllib3.connection.HTTPConnection.connect

    def connect(self):
        opened.append(1)
        return real(self)

    monkeypatch.setattr(urllib3.connection.HTTPConnection, "connect", connect)
    return opened


def _put(store: S3Store, key: str, size: int) -> tuple[bytes, str]:
    data = os.urandom(size)
    etag = store.client.put_object(Bucket=store.bucket, Key=key, Body=data)["ETag"]
    return data, etag


def test_the_fast_path_is_taken_with_the_installed_libraries(store):
    _, etag = _put(store, "obj", 1000)
    resp = store.client.get_object(Bucket=store.bucket, Key="obj")
    try:
        readinto = s3_module._body_readinto(resp["Body"])
        assert isinstance(readinto.__self__, http.client.HTTPResponse), (
            "botocore/urllib3 changed their layers: ranged reads fell back to StreamingBody.readinto")
    finally:
        resp["Body"].close()


def test_ranges_are_exact(store):
    data, etag = _put(store, "obj", 3 * MiB + 123)
    for offset, length in [(0, MiB), (MiB, MiB), (2 * MiB, MiB + 123), (5, 1), (3 * MiB + 122, 1)]:
        buf = bytearray(length)
        store.read_range_into("obj", offset, memoryview(buf), etag)
        assert bytes(buf) == data[offset:offset + length]
        scratch = memoryview(bytearray(64 * 1024))
        pieces = [bytes(p) for p in store.read_range_pieces("obj", offset, length, etag, scratch)]
        assert b"".join(pieces) == data[offset:offset + length]
        assert all(len(p) <= len(scratch) for p in pieces)


# moto's server answers every request with "Connection: close", so connection reuse can
# only be seen on rclone (and on AWS).
@pytest.mark.parametrize("s3_server", ["rclone"], indirect=True)
def test_connections_are_reused(store, connections):
    data, etag = _put(store, "obj", 3 * MiB + 123)
    for offset, length in [(0, MiB), (MiB, MiB), (2 * MiB, MiB + 123)] * 4:
        buf = bytearray(length)
        store.read_range_into("obj", offset, memoryview(buf), etag)
        scratch = memoryview(bytearray(64 * 1024))
        assert sum(len(p) for p in store.read_range_pieces("obj", offset, length, etag, scratch)) == length
    # 24 ranged GETs one after the other: every body was read to its end and its
    # connection went back to the pool (the PUT opened the first one).
    assert len(connections) == 1


@pytest.mark.parametrize("s3_server", ["rclone"], indirect=True)
def test_a_body_left_unread_closes_its_connection(store, connections):
    data, etag = _put(store, "obj", 2 * MiB)
    scratch = memoryview(bytearray(256 * 1024))
    pieces = store.read_range_pieces("obj", 0, 2 * MiB, etag, scratch)
    assert bytes(next(pieces)) == data[:256 * 1024]
    pieces.close()  # the consumer stopped: the rest of the body is never read
    buf = bytearray(1000)
    store.read_range_into("obj", 7, memoryview(buf), etag)
    assert bytes(buf) == data[7:1007]
    # The half-read connection could not be reused: the next GET needed a new one.
    assert len(connections) == 2


def test_pieces_check_the_etag_before_yielding(store):
    _, etag = _put(store, "obj", 1000)
    _put(store, "obj", 1000)  # replaced: another ETag
    with pytest.raises(PartChangedError):
        next(store.read_range_pieces("obj", 0, 10, etag, memoryview(bytearray(10))))


def test_pieces_of_a_range_past_the_end_are_refused(store):
    """Servers clip a range at the end (206 with fewer bytes): the Content-Range check refuses it."""
    _, etag = _put(store, "obj", 1000)
    with pytest.raises(IntegrityError) as caught:
        list(store.read_range_pieces("obj", 900, 200, etag, memoryview(bytearray(64))))
    assert "obj" in str(caught.value)


@pytest.mark.parametrize("way", ["into", "pieces"])
def test_a_socket_error_mid_body_is_a_transient_store_error(store, monkeypatch, way):
    """Read straight from http.client, socket errors arrive unwrapped (urllib3 used to turn
    them into ProtocolError): any OSError must still be retriable, e.g. EHOSTUNREACH."""
    import errno
    import socket

    data, etag = _put(store, "obj", 2 * MiB)
    real = socket.SocketIO.readinto
    reads = []

    def flaky(self, b):
        if len(memoryview(b)) > 8192:  # a body read, not the status line or headers
            reads.append(1)
            if len(reads) == 2:
                raise OSError(errno.EHOSTUNREACH, "No route to host")
        return real(self, b)

    monkeypatch.setattr(socket.SocketIO, "readinto", flaky)
    with pytest.raises(TransientStoreError) as caught:
        if way == "into":
            store.read_range_into("obj", 0, memoryview(bytearray(2 * MiB)), etag)
        else:
            list(store.read_range_pieces("obj", 0, 2 * MiB, etag, memoryview(bytearray(64 * 1024))))
    assert caught.value.retriable and "obj" in str(caught.value)


def _text(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _upload_requests(store: S3Store) -> list[tuple[str, dict[str, str], bytes]]:
    """Upload a 2-part object and a small one; check them back; return the requests that
    sent object data (UploadPart, PutObject) as (url, headers, body)."""
    sent: list[tuple[str, dict[str, str], bytes]] = []

    def capture(request, **_):
        body = request.body
        if hasattr(body, "read"):
            pos = body.tell()
            data = body.read()
            body.seek(pos)
        else:
            data = bytes(body or b"")
        sent.append((request.url, dict(request.headers), data))

    store.client.meta.events.register("before-send.s3", capture)
    data = os.urandom(5 * MiB + 123)
    store.upload("big", io.BytesIO(data), 5 * MiB)
    store.put("small.json", b"{}")
    assert store.get("small.json") == b"{}"
    assert store.client.get_object(Bucket=store.bucket, Key="big")["Body"].read() == data
    # CompleteMultipartUpload's body is an XML list of parts, not object data.
    uploads = [(url, h, b) for url, h, b in sent if b and ("partNumber=" in url or "uploadId=" not in url)]
    assert sum("partNumber=" in url for url, _, _ in uploads) == 2
    return uploads


def test_uploads_carry_a_crc32_and_an_unsigned_payload(store):
    """Every upload request (multipart parts, the manifest PUT) sends the body's CRC32 for
    the server to check and ``UNSIGNED-PAYLOAD`` instead of a SHA-256 of the body.

    Neither moto nor rclone checks either one (both accept a wrong CRC32 and a wrong
    payload SHA-256); S3 rejects a body that does not match its CRC32 with BadDigest.
    """
    for url, headers, body in _upload_requests(store):
        assert _text(headers["X-Amz-Content-SHA256"]) == "UNSIGNED-PAYLOAD", url
        assert _text(headers["x-amz-checksum-crc32"]) == base64.b64encode(
            zlib.crc32(body).to_bytes(4, "big")).decode(), url


def test_the_checksum_can_be_turned_off_as_for_aws_cli(s3_server, bucket, monkeypatch):
    """For servers that reject S3's flexible checksums, the AWS CLI's setting works; the
    payload is then signed (over http), so that the body is still covered by a digest."""
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    store = S3Store(make_client(S3Settings(endpoint_url=s3_server.endpoint_url)), bucket)
    try:
        for url, headers, body in _upload_requests(store):
            assert _text(headers["X-Amz-Content-SHA256"]) == hashlib.sha256(body).hexdigest(), url
            assert not any(k.lower().startswith("x-amz-checksum-") for k in headers), url
    finally:
        store.close()
