"""crawl.Crawler and crawl.crawl against a loopback web server that misbehaves like the web:
errors, redirects, Flickr's placeholder redirect, Retry-After, stalls, trickles, cut bodies,
several hosts. The server's request log tells what the crawler asked for."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from httpserver import Fault, serve_directory

from s3sync.crawl import Cancelled, Crawler, CrawlSettings, Failed, Fetched, crawl
from s3sync.images import make_jpeg

FAST = CrawlSettings(threads=4, timeout_s=0.5, deadline_s=4.0, retries=3, backoff_s=0.01, backoff_max_s=0.05)


@pytest.fixture
def site(tmp_path: Path, http_server):
    root = tmp_path / "www"
    root.mkdir()
    (root / "a.jpg").write_bytes(make_jpeg(64, 48))
    (root / "page.html").write_bytes(b"<html>not a photo</html>")
    (root / "big.jpg").write_bytes(make_jpeg(600, 600))
    return http_server(root)


@pytest.fixture
def crawler():
    c = Crawler(FAST)
    yield c
    c.close()


def test_a_200_is_fetched_whole(site, crawler) -> None:
    got = crawler.fetch(site.url_of("a.jpg"))
    assert isinstance(got, Fetched)
    assert got.data == (site.root / "a.jpg").read_bytes()
    assert (got.final_url, got.redirects, got.attempts) == (site.url_of("a.jpg"), (), 1)


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 451])
def test_a_4xx_is_a_permanent_failure_asked_once(site, crawler, status: int) -> None:
    site.fault("a.jpg", Fault(status=status))
    got = crawler.fetch(site.url_of("a.jpg"))
    assert got == Failed(site.url_of("a.jpg"), f"http {status}", True, (), 1)
    assert len(site.requests_for("a.jpg")) == 1


def test_a_missing_file_is_http_404(site, crawler) -> None:
    assert crawler.fetch(site.url_of("nothing.jpg")).reason == "http 404"


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503, 504])
def test_a_transient_status_is_retried_then_succeeds(site, crawler, status: int) -> None:
    site.fault("a.jpg", Fault(status=status), Fault(status=status))
    got = crawler.fetch(site.url_of("a.jpg"))
    assert isinstance(got, Fetched) and got.attempts == 3
    assert len(site.requests_for("a.jpg")) == 3


def test_a_transient_status_that_lasts_fails_not_permanently(site, crawler) -> None:
    site.fault("a.jpg", *[Fault(status=429)] * (FAST.retries + 1))
    got = crawler.fetch(site.url_of("a.jpg"))
    assert got == Failed(site.url_of("a.jpg"), "http 429", False, (), FAST.retries + 1)


def test_retry_after_seconds_is_honoured(site) -> None:
    settings = CrawlSettings(timeout_s=1, deadline_s=10, backoff_s=0.0, backoff_max_s=5)
    c = Crawler(settings)
    site.fault("a.jpg", Fault(status=503, headers=(("Retry-After", "1"),)))
    got = c.fetch(site.url_of("a.jpg"))
    assert isinstance(got, Fetched)
    first, second = site.requests_for("a.jpg")
    assert second.at - first.at >= 0.95  # waited as asked (a lower bound: never flaky)


def test_a_long_retry_after_is_capped(site) -> None:
    # Honouring an hour would exceed the URL's deadline: the cap makes it a short wait.
    c = Crawler(CrawlSettings(timeout_s=1, deadline_s=5, backoff_s=0.0, backoff_max_s=0.05))
    site.fault("a.jpg", Fault(status=503, headers=(("Retry-After", "3600"),)))
    assert isinstance(c.fetch(site.url_of("a.jpg")), Fetched)


def test_a_retry_after_beyond_the_deadline_fails_at_once(site) -> None:
    c = Crawler(CrawlSettings(timeout_s=1, deadline_s=2, backoff_s=0.0, backoff_max_s=600))
    site.fault("a.jpg", Fault(status=503, headers=(("Retry-After", "3600"),)))
    assert c.fetch(site.url_of("a.jpg")) == Failed(site.url_of("a.jpg"), "http 503", False, (), 1)


def test_redirects_are_followed_and_recorded(site, crawler) -> None:
    site.fault("a.jpg", Fault(redirect="/hop1.jpg"))
    site.fault("hop1.jpg", Fault(redirect=site.url_of("a.jpg")))
    got = crawler.fetch(site.url_of("a.jpg"))
    assert isinstance(got, Fetched)
    assert got.redirects == ("/hop1.jpg", site.url_of("a.jpg"))
    assert got.attempts == 3


def test_a_redirect_to_photo_unavailable_is_a_placeholder_not_downloaded(site, crawler) -> None:
    site.fault("a.jpg", Fault(redirect="/images/photo_unavailable.png"))
    got = crawler.fetch(site.url_of("a.jpg"))
    assert got == Failed(site.url_of("a.jpg"), "placeholder", True, ("/images/photo_unavailable.png",), 1)
    assert site.requests_for("images/photo_unavailable.png") == []


def test_a_redirect_loop_is_bounded(site, crawler) -> None:
    site.fault("a.jpg", *[Fault(redirect="/a.jpg")] * 20)
    got = crawler.fetch(site.url_of("a.jpg"))
    assert (got.reason, got.permanent, len(got.redirects)) == ("too many redirects", True, FAST.max_redirects)
    assert len(site.requests_for("a.jpg")) == FAST.max_redirects + 1


def test_a_body_shorter_than_its_content_length_is_retried(site, crawler) -> None:
    site.fault("a.jpg", Fault(cut_after=100))
    got = crawler.fetch(site.url_of("a.jpg"))
    assert isinstance(got, Fetched) and got.data == (site.root / "a.jpg").read_bytes()
    site.fault("a.jpg", *[Fault(cut_after=100)] * (FAST.retries + 1))
    assert crawler.fetch(site.url_of("a.jpg")).reason == "truncated"


def test_a_reset_connection_is_a_connection_failure(site, crawler) -> None:
    site.fault("a.jpg", *[Fault(cut_after=0, reset=True)] * (FAST.retries + 1))
    got = crawler.fetch(site.url_of("a.jpg"))
    assert isinstance(got, Failed) and got.reason in ("connection", "truncated") and not got.permanent


def test_a_stalled_server_times_out_within_the_deadline(site) -> None:
    c = Crawler(CrawlSettings(timeout_s=0.3, deadline_s=1.0, retries=10, backoff_s=0.01, backoff_max_s=0.01))
    site.fault("a.jpg", *[Fault(stall_s=2.0)] * 20)
    got = c.fetch(site.url_of("a.jpg"))
    assert (got.reason, got.permanent) == ("timeout", False)
    assert len(site.requests_for("a.jpg")) <= 4  # the deadline, not the retry count, ended it


def test_a_trickling_body_is_cut_by_the_deadline(site) -> None:
    # Each read gets bytes in time (no read timeout), but the whole would take ~60 s.
    c = Crawler(CrawlSettings(timeout_s=1.0, deadline_s=1.0, retries=0))
    site.fault("big.jpg", Fault(trickle_s=0.05, trickle_step=64))
    got = c.fetch(site.url_of("big.jpg"))
    assert (got.reason, got.permanent) == ("timeout", False)


def test_a_body_over_the_limit_is_refused(site) -> None:
    c = Crawler(CrawlSettings(max_body=1000))
    assert c.fetch(site.url_of("big.jpg")) == Failed(site.url_of("big.jpg"), "too large", True, (), 1)


def test_a_refused_connection_is_a_connection_failure(tmp_path: Path) -> None:
    server = serve_directory(tmp_path)
    url = server.url_of("x.jpg")
    server.stop()  # the port is closed now
    got = Crawler(FAST).fetch(url)
    assert (got.reason, got.permanent, got.attempts) == ("connection", False, FAST.retries + 1)


def test_a_bad_url_fails_without_a_request(crawler) -> None:
    assert crawler.fetch("n00004475_6590 not a url") == Failed("n00004475_6590 not a url", "bad url", True, (), 0)


def test_spaces_and_non_ascii_characters_are_quoted(site, crawler) -> None:
    (site.root / "caf\u00e9 au lait.jpg").write_bytes(b"x" * 10)
    got = crawler.fetch(f"{site.url}/caf\u00e9 au lait.jpg")
    assert isinstance(got, Fetched) and got.data == b"x" * 10
    assert got.final_url == f"{site.url}/caf%C3%A9%20au%20lait.jpg"


def test_several_hosts(tmp_path: Path, http_server, crawler) -> None:
    (tmp_path / "a.jpg").write_bytes(b"one")
    servers = [http_server(tmp_path, host=f"127.0.0.{n}") for n in (1, 2, 3)]
    assert [crawler.fetch(s.url_of("a.jpg")).data for s in servers] == [b"one"] * 3
    assert all(len(s.requests_for("a.jpg")) == 1 for s in servers)


def test_a_set_stop_event_cancels_a_fetch_in_its_backoff(site) -> None:
    stop = threading.Event()
    c = Crawler(CrawlSettings(timeout_s=1, deadline_s=30, backoff_s=0.0, backoff_max_s=60), stop)
    site.fault("a.jpg", Fault(status=503, headers=(("Retry-After", "20"),)))
    threading.Timer(0.2, stop.set).start()
    with pytest.raises(Cancelled):
        c.fetch(site.url_of("a.jpg"))


# ---------------------------------------------------------------------------- crawl()


def test_crawl_yields_one_result_per_job(site, crawler) -> None:
    urls = [site.url_of("a.jpg")] * 30 + [site.url_of("missing.jpg")] * 5
    stop = threading.Event()
    results = list(crawl(urls, crawler.fetch, 4, stop))
    assert sorted(type(r).__name__ for r in results) == ["Failed"] * 5 + ["Fetched"] * 30
    assert not stop.is_set()


def test_crawl_raises_what_a_job_raised(site) -> None:
    def work(n: int) -> int:
        if n == 7:
            raise OSError(28, "No space left on device")
        return n

    with pytest.raises(OSError, match="No space"):
        list(crawl(range(100), work, 3, threading.Event()))


def test_closing_the_crawl_stops_its_workers(site) -> None:
    stop = threading.Event()
    started: list[int] = []

    def work(n: int) -> int:
        started.append(n)
        return n

    results = crawl(range(1_000_000), work, 2, stop)
    taken = [next(results) for _ in range(10)]
    results.close()
    assert stop.is_set() and len(taken) == 10
    assert len(started) < 1000  # jobs are taken lazily: the million were never queued
