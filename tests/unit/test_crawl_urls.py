"""crawl.quote_url and crawl.retry_after_s: the pure parts of the crawler."""

from __future__ import annotations

import email.utils

import pytest

from s3sync.crawl import quote_url, retry_after_s


@pytest.mark.parametrize("given,expected", [
    ("http://static.flickr.com/2723/4385058960_b0f291553e.jpg",
     "http://static.flickr.com/2723/4385058960_b0f291553e.jpg"),
    ("  http://example.com/a b.jpg\n", "http://example.com/a%20b.jpg"),
    ("http://example.com/caf\u00e9/\u00fc.jpg", "http://example.com/caf%C3%A9/%C3%BC.jpg"),
    ("http://example.com/already%20quoted.jpg", "http://example.com/already%20quoted.jpg"),
    ("http://example.com/p?q=a b&r=\u00e9", "http://example.com/p?q=a%20b&r=%C3%A9"),
    ("HTTP://example.com:8080/x.jpg#frag", "http://example.com:8080/x.jpg"),
    ("http://b\u00fccher.example/x.jpg", "http://xn--bcher-kva.example/x.jpg"),
])
def test_quote_url(given: str, expected: str) -> None:
    assert quote_url(given) == expected


@pytest.mark.parametrize("bad", ["", "ftp://example.com/x.jpg", "example.com/x.jpg", "http:///x.jpg", "n0001_1"])
def test_quote_url_refuses_what_is_not_an_http_url(bad: str) -> None:
    with pytest.raises(ValueError):
        quote_url(bad)


def test_retry_after_seconds_and_dates() -> None:
    assert retry_after_s("7") == 7.0
    assert retry_after_s(" 0 ") == 0.0
    assert retry_after_s(None) is None
    assert retry_after_s("") is None
    assert retry_after_s("soon") is None
    now = 1_700_000_000.0
    assert retry_after_s(email.utils.formatdate(now + 30, usegmt=True), now=now) == pytest.approx(30.0)
    assert retry_after_s(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
