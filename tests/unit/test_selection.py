"""The --include/--exclude matcher (s3sync/selection.py): gitignore-style globs on member paths."""

from __future__ import annotations

import pytest

from s3sync.errors import UsageError
from s3sync.selection import Selection

PATHS = ["captions.json", "images", "images/0000", "images/0000/a.jpg", "images/0001/captions.json",
         "meta/x.json", "meta/deep/y.json", "readme.txt"]


def picked(include=(), exclude=(), dirs=("images", "images/0000", "meta", "meta/deep")):
    sel = Selection.make(list(include), list(exclude))
    return [p for p in PATHS if sel.selects(p, p in dirs)]


@pytest.mark.parametrize(("include", "exclude", "want"), [
    ((), (), PATHS),
    (("captions.json",), (), ["captions.json", "images/0001/captions.json"]),
    (("/captions.json",), (), ["captions.json"]),
    (("*.json",), (), ["captions.json", "images/0001/captions.json", "meta/x.json", "meta/deep/y.json"]),
    (("images/0000",), (), ["images/0000", "images/0000/a.jpg"]),
    (("images/",), (), ["images", "images/0000", "images/0000/a.jpg", "images/0001/captions.json"]),
    (("meta/**/*.json",), (), ["meta/x.json", "meta/deep/y.json"]),
    (("**/y.json",), (), ["meta/deep/y.json"]),
    (("meta/**",), (), ["meta/x.json", "meta/deep/y.json"]),
    ((), ("images/",), ["captions.json", "meta/x.json", "meta/deep/y.json", "readme.txt"]),
    (("*.json",), ("meta",), ["captions.json", "images/0001/captions.json"]),
    (("readme.tx?",), (), ["readme.txt"]),
    (("[a-c]*.json",), (), ["captions.json", "images/0001/captions.json"]),
    (("[!c]*.json",), (), ["meta/x.json", "meta/deep/y.json"]),
])
def test_globs(include, exclude, want) -> None:
    assert picked(include, exclude) == want


def test_trailing_slash_matches_directories_only() -> None:
    sel = Selection.make(["readme.txt/"])
    assert not sel.selects("readme.txt", False) and sel.selects("readme.txt", True)


@pytest.mark.parametrize("bad", ["", "/", "../x", "a/../b", "a\x00"])
def test_unusable_patterns_are_refused(bad: str) -> None:
    with pytest.raises(UsageError):
        Selection.make([bad])


def test_to_json() -> None:
    assert Selection.make(["a"], ["b", "c"]).to_json() == {"include": ["a"], "exclude": ["b", "c"]}
