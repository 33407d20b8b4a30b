"""verify's plain output: one problem, one line of three tab-separated fields, whatever
the file's name holds (issue 10, item 12). --json keeps raw strings."""

from __future__ import annotations

import pytest

from s3sync import cli


@pytest.mark.parametrize(("text", "shown"), [
    ("plain/ünïcode name.txt", "plain/ünïcode name.txt"),
    ("a\\b\tc\nd\re", "a\\\\b\\tc\\nd\\re"),
    ("nul\x00del\x7fesc\x1b", "nul\\x00del\\x7fesc\\x1b"),
    ("latin1-\udce9.txt", "latin1-\\xe9.txt"),  # byte E9 of a non-UTF-8 name (surrogateescape)
    ("c1-\x85 nbsp-\xa0", "c1-\\u0085 nbsp-\\u00a0"),  # never confused with a raw byte's \\xHH
    ("zw\u200bj", "zw\\u200bj"),
])
def test_escape_field(text: str, shown: str) -> None:
    assert cli.escape_field(text) == shown
