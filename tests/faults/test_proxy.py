"""Self-test of the fault proxy: each action does to the bytes on the wire what it claims,
counters are exact, and stopping is bounded even with stalled and held connections."""

from __future__ import annotations

import http.client
import threading
import time
import urllib.parse

import pytest

from .conftest import KiB, make_resigner
from .proxy import FaultProxy, Rule

SIZE = 300 * KiB


@pytest.fixture
def obj(kit, s3_server):
    """An object straight on the server, and ``get(proxy, headers)``: a SigV4-signed raw GET of
    it through a proxy (rclone refuses presigned URLs: UnsupportedAlgorithm)."""
    data = bytes(range(256)) * (SIZE // 256)
    kit.client.put_object(Bucket=kit.bucket, Key="obj.bin", Body=data)
    sign = make_resigner(s3_server.access_key, s3_server.secret_key, s3_server.region)
    path = f"/{kit.bucket}/obj.bin"

    def get(proxy: FaultProxy, headers: dict[str, str] | None = None):
        netloc = urllib.parse.urlsplit(proxy.url).netloc
        host, port = netloc.split(":")
        conn = http.client.HTTPConnection(host, int(port), timeout=5)
        conn.request("GET", path, headers=sign("GET", path, {"Host": netloc, **(headers or {})}))
        return conn, conn.getresponse()

    return data, get


def test_passthrough_counts_exactly(kit, obj):
    data, get = obj
    _conn, resp = get(kit.proxy, {"Range": "bytes=1000-1999"})
    body = resp.read()
    assert resp.status in (200, 206) and body == data[1000:2000]
    assert resp.getheader("Connection") == "close"
    assert kit.proxy.wait_idle()
    st = kit.stats("obj.bin")
    assert st.requests == 1 and st.bytes == 1000


def test_cut_keeps_content_length_and_closes_early(kit, obj):
    data, get = obj
    kit.add(Rule("cut", key="obj.bin", cut_before_end=3000))
    _conn, resp = get(kit.proxy)
    assert int(resp.getheader("Content-Length")) == SIZE
    with pytest.raises(http.client.IncompleteRead) as caught:
        resp.read()
    assert caught.value.partial == data[: SIZE - 3000]


def test_reset_mid_body(kit, obj):
    _, get = obj
    kit.add(Rule("reset", key="obj.bin", reset_after=64 * KiB))
    with pytest.raises((ConnectionResetError, http.client.IncompleteRead, http.client.RemoteDisconnected)):
        _conn, resp = get(kit.proxy)
        resp.read()


def test_error_is_an_s3_xml_error(kit, obj):
    _, get = obj
    kit.add(Rule("error", key="obj.bin", first=2, every=3, status=503, code="SlowDown"))
    statuses = []
    for _ in range(6):
        _conn, resp = get(kit.proxy)
        body = resp.read()
        statuses.append(resp.status)
        if resp.status == 503:
            assert b"<Code>SlowDown</Code>" in body and resp.getheader("Content-Type") == "application/xml"
    assert statuses == [200, 503, 200, 200, 503, 200]


def test_flip_changes_exactly_one_byte(kit, obj):
    data, get = obj
    kit.add(Rule("flip", key="obj.bin", flip_at=12345))
    _conn, resp = get(kit.proxy)
    body = resp.read()
    assert len(body) == SIZE
    assert [i for i in range(SIZE) if body[i] != data[i]] == [12345]


def test_stall_then_close(kit, obj):
    data, get = obj
    kit.add(Rule("stall", key="obj.bin", stall_after=10 * KiB, stall_s=0.5))
    _conn, resp = get(kit.proxy)
    started = time.monotonic()
    with pytest.raises(http.client.IncompleteRead) as caught:
        resp.read()
    assert caught.value.partial == data[: 10 * KiB]
    assert 0.4 < time.monotonic() - started < 3


def test_stop_is_bounded_with_stalled_and_held_connections(kit, s3_server, obj):
    _, get = obj
    proxy = FaultProxy(s3_server.endpoint_url).start()
    proxy.add(Rule("stall", key="obj.bin", times=1, stall_after=1, stall_s=60))
    outcomes: list[str] = []

    def client() -> None:
        try:
            _conn, resp = get(proxy)
            resp.read()
            outcomes.append("complete")
        except Exception as err:  # noqa: BLE001 - any failure is the expected outcome
            outcomes.append(type(err).__name__)

    threads = [threading.Thread(target=client) for _ in range(2)]
    threads[0].start()
    time.sleep(0.2)
    proxy.hold()
    threads[1].start()
    time.sleep(0.2)
    started = time.monotonic()
    proxy.stop(timeout_s=2)
    assert time.monotonic() - started < 2.5
    for t in threads:
        t.join(timeout=5)
    assert len(outcomes) == 2 and "complete" not in outcomes
