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


def test_extra_entries_are_counted_apart_from_the_checked_ones(monkeypatch, capsys, tmp_path) -> None:
    """'9 of 7 entries differ' counted extra files among the dataset's entries."""
    import importlib

    verify_mod = importlib.import_module("s3sync.verify")  # s3sync.verify is the API's function

    problems = tuple(verify_mod.Problem(path, kind, "x") for path, kind in [
        ("g", "changed"), ("g", "mtime"), ("sub/f", "missing"), ("new1", "extra"), ("new2", "extra")])
    result = verify_mod.VerifyResult(tmp_path, "ds", "gen-1", 7, 10, problems, 0.0)
    monkeypatch.setattr(verify_mod, "verify", lambda *a, **k: result)
    assert cli.main(["verify", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "2 of 7 entries differ from generation gen-1, and 2 extra entries are not part of it" in err, err
