"""``archive.ArchiveScanner`` (what ``adopt`` counts an archive with) reports the same members
as ``SafeExtractor`` for every kind of archive real tools write, writes nothing, and refuses
exactly what an extraction refuses, naming the member."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from corpus import (  # noqa: F401 - corpus_tree, corpus_archive: fixtures
    KINDS,
    corpus_archive,
    corpus_tree,
    safe_extract,
    stream_file,
)

from s3sync.archive import ArchiveScanner
from s3sync.errors import UnsafeArchiveError


def scan(archive: Path) -> list:
    records = []
    ArchiveScanner().scan(stream_file(archive), lambda _offset, record: records.append(record))
    return records


@pytest.mark.parametrize("kind", KINDS)
def test_scan_reports_what_extraction_writes(corpus_archive, kind, tmp_path):  # noqa: F811
    archive = corpus_archive(kind)
    extracted = safe_extract(archive, tmp_path / "x")
    scanned = scan(archive)
    # Same members, kinds and sizes; file digests too (sparse members: not hashed by the scan).
    assert [(r.path, r.kind, r.size, r.mode, r.mtime, r.link) for r in scanned] == \
           [(r.path, r.kind, r.size, r.mode, r.mtime, r.link) for r in extracted]
    assert [r.digest for r in scanned if r.digest] == [e.digest for r, e in zip(scanned, extracted) if r.digest]
    assert not Path(ArchiveScanner._ROOT).exists()


def _tar(args: list[str], cwd: Path) -> None:
    subprocess.run(["tar", *args], cwd=cwd, check=True)


def test_scan_refuses_a_member_written_through_an_earlier_symlink(tmp_path):
    # GNU tar, two appends: a symlink 'd' -> 'real', then a file 'd/x' from another tree.
    one, two = tmp_path / "one", tmp_path / "two"
    (one / "real").mkdir(parents=True)
    os.symlink("real", one / "d")
    (two / "d").mkdir(parents=True)
    (two / "d" / "x").write_text("x")
    archive = tmp_path / "a.tar"
    _tar(["--format=gnu", "-cf", str(archive), "real", "d"], one)
    _tar(["--format=gnu", "-rf", str(archive), "d/x"], two)
    with pytest.raises(UnsafeArchiveError, match="'d/x' would be written through the symlink 'd'"):
        safe_extract(archive, tmp_path / "x")
    with pytest.raises(UnsafeArchiveError, match="'d/x' would be written through the symlink 'd'"):
        scan(archive)


def test_scan_refuses_special_files_and_escaping_names(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "fifo")
    archive = tmp_path / "a.tar"
    _tar(["-cf", str(archive), "fifo"], src)
    with pytest.raises(UnsafeArchiveError, match="'fifo': special file"):
        scan(archive)
    (src / "f").write_text("x")
    escaping = tmp_path / "b.tar"
    _tar(["-cf", str(escaping), "--transform", "s,^f$,../f,", "f"], src)
    with pytest.raises(UnsafeArchiveError, match="unsafe path '../f'"):
        scan(escaping)
