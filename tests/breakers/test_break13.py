"""Adversarial tests of issue 13's update in place, --include/--exclude, --generation, repair
(on moto and rclone through ``s3_server``) and the selection matcher.

Each test marked ``xfail(strict=True)`` states what a user should get and fails on the code as
it is: the reason names what happens instead. The unmarked ones held up and stay as guards.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s3sync import cli
from s3sync.config import Location, S3Settings, TransferSettings
from s3sync.errors import S3SyncError, UsageError
from s3sync.publish import publish
from s3sync.pull import pull
from s3sync.selection import Selection
from s3sync.stores.s3 import S3Store, make_client
from s3sync.verify import verify

WORKTREE = Path(__file__).resolve().parents[2]
SMALL = TransferSettings(concurrency=4, chunk_size=64 * 1024, part_size=256 * 1024, window=8)


@pytest.fixture
def store(s3_server, bucket):
    client = make_client(S3Settings(endpoint_url=s3_server.endpoint_url))
    s = S3Store(client, bucket, concurrency=4)
    yield s
    s.close()


def tree_of(root: Path) -> dict[str, object]:
    """Type, content, mode and whole-second mtime of everything under ``root`` but ``.s3sync``."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not (d == ".s3sync" and Path(dirpath) == root)]
        for name in filenames + dirnames:
            p = Path(dirpath, name)
            rel = p.relative_to(root).as_posix()
            st = p.lstat()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", st.st_mode & 0o777)
            else:
                out[rel] = ("file", p.read_bytes(), st.st_mode & 0o777, int(st.st_mtime))
    return out


def rm(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink()
    elif path.exists():
        shutil.rmtree(path)


def base_tree(root: Path) -> Path:
    root.mkdir(parents=True)
    for i in range(12):
        (root / "d" / f"{i:02d}").parent.mkdir(exist_ok=True)
        (root / "d" / f"{i:02d}.bin").write_bytes(random.Random(i).randbytes(30_000 + 311 * i))
    (root / "x").write_bytes(b"x is a file")
    (root / "y").mkdir()
    (root / "y" / "inner").write_bytes(b"inner")
    os.symlink("d/00.bin", root / "z")
    (root / "empty").write_bytes(b"")
    (root / "emptydir").mkdir()
    return root


def fresh(store: S3Store, loc: Location, tmp: Path, tag: str, **kw) -> Path:
    return pull(loc, None, tmp / f"fresh-{tag}", store, SMALL, **kw).dest


# --------------------------------------------------------------------------- selection (pure)


@pytest.mark.xfail(strict=True, reason="a reversed range '[z-a]' escapes as re.error: the CLI calls "
                                       "it an internal error (exit 1), not a one-line usage error")
def test_a_reversed_character_range_is_a_usage_error() -> None:
    with pytest.raises(UsageError):
        Selection.make(["[z-a].jpg"])


@pytest.mark.xfail(strict=True, reason="gitignore negation '!keep.jpg' is taken as a literal name: "
                                       "keep.jpg is silently excluded (neither re-included nor refused)")
def test_negation_re_includes_or_is_refused() -> None:
    try:
        sel = Selection.make([], ["*.jpg", "!keep.jpg"])
    except UsageError:
        return
    assert sel.selects("keep.jpg")


@pytest.mark.xfail(strict=True, reason="'[[:digit:]]' (a POSIX class, gitignore/wildmatch) is cut at the "
                                       "first ']': matches nothing it should, with a FutureWarning")
def test_posix_class_in_a_glob_works_or_is_refused() -> None:
    try:
        sel = Selection.make(["[[:digit:]].jpg"])
    except UsageError:
        return
    assert sel.selects("1.jpg")


@pytest.mark.xfail(strict=True, reason="'\\*' (gitignore escape of a literal '*') matches a backslash "
                                       "and a star, never the name '*.jpg'")
def test_backslash_escapes_a_special_character() -> None:
    assert Selection.make([r"\*.jpg"]).selects("*.jpg")


def test_held_selection_basics() -> None:
    assert Selection.make(["a/**/b"]).selects("a/b")
    assert Selection.make(["a/**/b"]).selects("a/x/y/b")
    assert not Selection.make([], ["images/"]).selects("images/0000/1.jpg")
    assert Selection.make(["my file.jpg"]).selects("d/my file.jpg")
    assert Selection.make(["é*"]).selects("d/été.jpg")
    assert not Selection.make(["a[/]b"]).selects("a/b")
    assert not Selection.make(["/x"]).selects("d/x")
    assert Selection.make(["x"]).selects("d/x")
    with pytest.raises(UsageError):
        Selection.make(["../x"])


def test_cli_reversed_range_exit_code(capsys) -> None:
    code = cli.main(["pull", "s3://nob/ds", "/nonexistent/x", "--include", "[z-a]",
                     "--endpoint-url", "http://127.0.0.1:1"])
    err = capsys.readouterr().err
    assert code != 0 and "Traceback" not in err
