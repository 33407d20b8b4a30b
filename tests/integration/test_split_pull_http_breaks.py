"""Slice G of issue 11: http(s) servers that misbehave the ways real ones do, for a pull of
an archive's pieces: a server that advertises ``Accept-Ranges`` but answers a Range request
with the whole file (200), connections cut mid-piece with and without Range, a redirect.
GNU tar's extraction of the same archive is the reference."""

from __future__ import annotations

import pytest
from httpserver import Fault
from test_split_pull_http import SETTINGS, _pieces, _ref, _snapshot

from s3sync.sources import from_urls
from s3sync.splitpull import pull_split
from s3sync.stores.http import HttpStore


def _pull(tmp_path, server, names, faults=()):
    store = HttpStore(SETTINGS)
    try:
        split = from_urls(store, [server.url_of(n) for n in names], None)
        for name, fault in faults:  # queued after the HEADs: they hit the GETs of the pull
            server.fault(name, fault)
        return split, pull_split(split, tmp_path / "dest", store, SETTINGS)
    finally:
        store.close()


@pytest.mark.parametrize("compress", [False, True], ids=["tar", "gzip"])
def test_a_server_that_ignores_range_despite_accept_ranges(tmp_path, http_server, compress):
    archive, www, names = _pieces(tmp_path, compress=compress, sidecar="MD5SUMS")
    server = http_server(www, lying_accept_ranges=True, ranges=False)
    _, result = _pull(tmp_path, server, names)
    assert _snapshot(result.dest) == _snapshot(_ref(archive, tmp_path / "ref"))


@pytest.mark.parametrize("ranges", [True, False], ids=["ranges", "no-ranges"])
def test_connections_cut_mid_piece_are_retried(tmp_path, http_server, ranges):
    archive, www, names = _pieces(tmp_path, compress=True, sidecar="sha256")
    server = http_server(www, ranges=ranges)
    faults = [(names[1], Fault(cut_after=5000)), (names[1], Fault(cut_after=9000, reset=True)),
              (names[2], Fault(cut_after=0))]
    split, result = _pull(tmp_path, server, names, faults)
    assert {p.evidence.kind for p in split.pieces} == {"sidecar"}
    assert _snapshot(result.dest) == _snapshot(_ref(archive, tmp_path / "ref"))


def test_a_redirected_piece(tmp_path, http_server):
    archive, www, names = _pieces(tmp_path, compress=False, sidecar="MD5SUMS")
    (www / "moved").mkdir()
    (www / "moved" / names[1]).write_bytes((www / names[1]).read_bytes())
    server = http_server(www)
    _, result = _pull(tmp_path, server, names, [(names[1], Fault(redirect=f"/moved/{names[1]}"))])
    assert _snapshot(result.dest) == _snapshot(_ref(archive, tmp_path / "ref"))


@pytest.mark.parametrize("options", [{"weak_etags": True}, {"etags": False, "last_modified": False},
                                     {"preconditions": False}], ids=["weak-etags", "no-validators", "no-preconditions"])
def test_servers_with_weak_or_no_validators(tmp_path, http_server, options):
    """A weak ETag (If-Match never matches it, RFC 9110 section 13.1.1), no ETag nor
    Last-Modified, or validators sent but preconditions ignored: still pulled, checked by
    the sidecars."""
    archive, www, names = _pieces(tmp_path, compress=True, sidecar="MD5SUMS")
    server = http_server(www, **options)
    _, result = _pull(tmp_path, server, names)
    assert _snapshot(result.dest) == _snapshot(_ref(archive, tmp_path / "ref"))
