"""Archives that real tools write extract through ``SafeExtractor`` to the tree GNU tar makes.

Issue 11: split archives that s3sync did not publish. Each archive of the corpus
(``tests/corpus.py``: GNU tar in every format, GNU sparse members, bsdtar, git archive, ``./``
names, a top-level directory) is streamed through ``SafeExtractor.extract`` over an
``engine.OrderedReader`` in odd-sized chunks, as a pull feeds it, and compared with
``tar -xf ARCHIVE -C REF --no-same-owner``: paths, types, bytes, link targets, hard links,
modes and mtimes. Then what s3sync refuses on purpose (it stays stricter than GNU tar), each
refusal naming the member.
"""

from __future__ import annotations

import io
import os
import stat
import subprocess
import tarfile
from pathlib import Path

import pytest
from corpus import (
    CODECS,
    KINDS,
    SPARSE_KINDS,
    SPARSE_SIZE,
    compare_trees,
    compress,
    gnu_extract,
    implicit_dirs,
    make_archive,
    require_tool,
    safe_extract,
    split_pieces,
)

from s3sync import archive
from s3sync.errors import UnsafeArchiveError

CHUNK = 10_007
"""Bytes per chunk fed to the extractor: odd, so headers and data straddle chunk boundaries."""


def _members(path: Path) -> list[tarfile.TarInfo]:
    with tarfile.open(path) as tar:
        return tar.getmembers()


def test_corpus_holds_the_shapes_it_claims(corpus_archive):
    """Each kind really has the shape its test is about (a tool that changed its default
    would otherwise make the comparisons below pass without testing anything)."""
    for kind in SPARSE_KINDS + ("bsdtar", "bsdtar-pax"):
        sparse = [m for m in _members(corpus_archive(kind)) if m.name.endswith("sparse.bin")]
        assert len(sparse) == 1 and sparse[0].issparse(), kind
        assert sparse[0].size == SPARSE_SIZE
    assert tarfile.GNUTYPE_SPARSE in {m.type for m in _members(corpus_archive("sparse-oldgnu"))}
    with tarfile.open(corpus_archive("git")) as tar:
        tar.getmembers()
        assert len(tar.pax_headers.get("comment", "")) == 40  # the commit id, in a pax global header
    dot = _members(corpus_archive("dot"))
    assert dot[0].name == "." and dot[0].isdir() and all(m.name.startswith("./") for m in dot[1:])
    assert all(m.name.split("/")[0] == "tree" for m in _members(corpus_archive("topdir")))
    for kind in ("gnu", "oldgnu", "bsdtar-gnutar"):
        assert any(m.islnk() for m in _members(corpus_archive(kind))), kind
        assert any(len(m.name) > 100 for m in _members(corpus_archive(kind))), kind
        assert any(len(m.linkname) > 100 for m in _members(corpus_archive(kind)) if m.issym()), kind
    assert implicit_dirs(corpus_archive("bsdtar-ustar")), "bsdtar's ustar has a directory with no member"
    assert _members(corpus_archive("gnu-label"))[0].type == archive.GNU_VOLUME_LABEL
    for kind in ("pax", "bsdtar-pax"):  # mtimes to the nanosecond, beyond what a float holds
        fractions = {m.pax_headers.get("mtime", "").partition(".")[2] for m in _members(corpus_archive(kind))}
        assert "123456789" in fractions, kind


@pytest.mark.parametrize("kind", KINDS)
def test_each_kind_extracts_as_gnu_tar_does(kind, corpus_archive, tmp_path):
    tar = corpus_archive(kind)
    ref = gnu_extract(tar, tmp_path / "ref")
    records = safe_extract(tar, tmp_path / "mine", block=CHUNK)
    diffs = compare_trees(tmp_path / "mine", ref, root=kind == "dot", mtime_ignored=implicit_dirs(tar))
    assert diffs == [], kind
    # What the index records is what verify will find: the digest of each file's bytes.
    for r in records:
        if r.kind == "file":
            assert archive.file_digest(tmp_path / "mine" / r.path) == r.digest, r.path
            assert (tmp_path / "mine" / r.path).stat().st_size == r.size
    assert "." not in {r.path for r in records}  # the root is not a member of the dataset


@pytest.mark.parametrize("kind", SPARSE_KINDS + ("bsdtar", "bsdtar-pax"))
def test_sparse_members_keep_their_holes(kind, corpus_archive, tmp_path):
    tar = corpus_archive(kind)
    ref = gnu_extract(tar, tmp_path / "ref") / "sparse.bin"
    records = safe_extract(tar, tmp_path / "mine", block=CHUNK)
    mine = tmp_path / "mine" / "sparse.bin"
    [record] = [r for r in records if r.path == "sparse.bin"]
    assert record.size == SPARSE_SIZE == mine.stat().st_size
    assert record.digest == archive.file_digest(ref)  # holes hashed as the zeros they read as
    if ref.stat().st_blocks * 512 < SPARSE_SIZE // 2:  # GNU tar made holes on this file system
        assert mine.stat().st_blocks * 512 < SPARSE_SIZE // 2, "the holes were written as zeros"


def test_root_member_gives_the_root_its_mode_and_mtime(corpus_archive, tmp_path):
    """``tar -C DIR .`` writes ``./`` first: GNU tar gives DIR its mode and mtime."""
    tar = corpus_archive("dot")
    ref = gnu_extract(tar, tmp_path / "ref")
    mine = tmp_path / "mine"
    mine.mkdir(mode=0o700)
    extractor = archive.SafeExtractor(mine)
    extractor.extract(_reader(tar), lambda _o, _r: None)
    assert extractor.root_record is not None
    assert (extractor.root_record.mode, extractor.root_record.mtime) == (0o755, os.stat(ref).st_mtime)
    assert stat.S_IMODE(mine.stat().st_mode) == 0o700  # untouched until finish_root
    extractor.finish_root()
    assert (stat.S_IMODE(mine.stat().st_mode), mine.stat().st_mtime_ns) == \
        (stat.S_IMODE(ref.stat().st_mode), ref.stat().st_mtime_ns)


@pytest.mark.parametrize(("kind", "strip"), [("dot", 1), ("topdir", 1)])
def test_strip_components_as_gnu_tar(kind, strip, corpus_archive, tmp_path):
    """Names lose their first N components ('.' counts, as in GNU tar); members with N or
    fewer are skipped; hard link targets are stripped too (the corpus's hard links point
    from the top level into sub/)."""
    tar = corpus_archive(kind)
    ref = gnu_extract(tar, tmp_path / "ref", strip=strip)
    safe_extract(tar, tmp_path / "mine", strip=strip, block=CHUNK)
    assert compare_trees(tmp_path / "mine", ref, mtime_ignored=implicit_dirs(tar, strip)) == []
    assert os.listdir(tmp_path / "mine")


def test_strip_components_leaves_symlink_targets_alone(corpus_archive, tmp_path):
    """Stripping two components moves ``sub/sym -> ../a.txt`` to the top level, where its
    target (not stripped, as in GNU tar) points out of the tree: refused, naming it."""
    with pytest.raises(UnsafeArchiveError, match=r"tree/sub/(long)?sym.*symlink target .* outside"):
        safe_extract(corpus_archive("topdir"), tmp_path / "mine", strip=2)


def _tar_of(*members: tuple[tarfile.TarInfo, bytes | None], fmt: int = tarfile.GNU_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _info(name: str, kind: bytes = tarfile.REGTYPE, data: bytes = b"", link: str = "") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mtime, info.size = kind, link, 1_600_000_000, len(data)
    return info, data


def _reader(path: Path):
    from corpus import stream_file
    return stream_file(path, CHUNK)


def test_hard_link_whose_target_is_stripped_away_is_refused(tmp_path):
    """``x`` and ``d/h`` (a hard link to ``x``) with one component stripped: GNU tar fails on
    ``h`` ("Cannot hard link to ''", exit 2); s3sync refuses the archive, naming ``d/h``."""
    path = tmp_path / "a.tar"
    path.write_bytes(_tar_of(_info("x", data=b"data"), _info("d", tarfile.DIRTYPE),
                             _info("d/h", tarfile.LNKTYPE, link="x")))
    proc = subprocess.run([require_tool("tar"), "-xf", path, "-C", tmp_path, "--strip-components=1"],
                          capture_output=True)
    assert proc.returncode == 2
    with pytest.raises(UnsafeArchiveError, match="'d/h': hard link target 'x' .*strip_components") as err:
        safe_extract(path, tmp_path / "mine", strip=1)
    assert "strip-components" in err.value.hint


@pytest.mark.parametrize("strip", [0, 1])
def test_special_files_stay_refused_naming_the_member(strip, tmp_path):
    """A FIFO archived by GNU tar (which would create it): refused, the message names it."""
    src = tmp_path / "top"
    (src / "d").mkdir(parents=True)
    (src / "d" / "a.txt").write_bytes(b"a")
    os.mkfifo(src / "d" / "pipe")
    tar = tmp_path / "fifo.tar"
    subprocess.run([require_tool("tar"), "-cf", tar, "-C", tmp_path, "top"], check=True)
    with pytest.raises(UnsafeArchiveError, match=r"'top/d/pipe': special file"):
        safe_extract(tar, tmp_path / "mine", strip=strip)
    assert not (tmp_path / "mine" / "d" / "pipe").exists() and not (tmp_path / "mine" / "top" / "d" / "pipe").exists()


@pytest.mark.parametrize("target", ["/etc/passwd", "../../outside"])
def test_symlinks_leaving_the_tree_stay_refused_naming_the_member(target, tmp_path):
    src = tmp_path / "top"
    src.mkdir()
    (src / "ln").symlink_to(target)
    tar = tmp_path / "ln.tar"
    subprocess.run([require_tool("tar"), "-cf", tar, "-C", src, "."], check=True)
    with pytest.raises(UnsafeArchiveError, match=r"'\./ln': symlink target .* outside"):
        safe_extract(tar, tmp_path / "mine")
    assert not os.path.lexists(tmp_path / "mine" / "ln")


@pytest.mark.parametrize("name", [".", "./", "a/..", "./."])
def test_a_file_named_as_the_root_is_refused(name, tmp_path):
    """Only a directory member may name the root; a file or link there is refused."""
    path = tmp_path / "a.tar"
    path.write_bytes(_tar_of(_info(name, data=b"x")))
    with pytest.raises(UnsafeArchiveError, match="unsafe path"):
        safe_extract(path, tmp_path / "mine")


def test_ustar_names_split_at_a_slash_and_v7_directories(tmp_path):
    """ustar's prefix field (a name over 100 bytes split at a slash) and v7's directories
    (a regular-file type with a trailing slash), against GNU tar."""
    src = tmp_path / "src"
    deep = src / ("p" * 60) / ("q" * 60)
    deep.mkdir(parents=True)
    (deep / "f.txt").write_bytes(b"split name")
    for p in (deep / "f.txt", deep, deep.parent):
        os.utime(p, (1_600_000_000, 1_600_000_000))
    for fmt in ("ustar", "v7"):
        tar = make_archive(fmt, src, tmp_path / f"{fmt}.tar")
        ref = gnu_extract(tar, tmp_path / f"ref-{fmt}")
        safe_extract(tar, tmp_path / f"mine-{fmt}", block=CHUNK)
        assert compare_trees(tmp_path / f"mine-{fmt}", ref) == [], fmt
    assert (tmp_path / "mine-ustar" / deep.relative_to(src) / "f.txt").read_bytes() == b"split name"


@pytest.mark.parametrize(("pax", "ns"), [("1600000000.123456789", 1_600_000_000_123_456_789), ("7", 7_000_000_000),
                                         ("1.5", 1_500_000_000), ("-1.25", -1_250_000_000),
                                         ("2.1234567891", 2_123_456_789)])
def test_pax_mtimes_are_read_to_the_nanosecond(pax, ns):
    """tarfile's float keeps ~0.2 us at today's dates; GNU tar sets the exact nanoseconds.
    The record keeps whole seconds, floored, as ``verify`` compares them."""
    info = tarfile.TarInfo("f")
    info.pax_headers = {"mtime": pax}
    assert archive.mtime_ns(info) == ns


def test_negative_fractional_mtime_extracts_and_records_its_floor(tmp_path):
    info, data = _info("old.txt", data=b"old")
    info.pax_headers = {"mtime": "-1.25"}
    path = tmp_path / "a.tar"
    path.write_bytes(_tar_of((info, data), fmt=tarfile.PAX_FORMAT))
    [record] = safe_extract(path, tmp_path / "mine")
    assert (tmp_path / "mine" / "old.txt").stat().st_mtime_ns == -1_250_000_000
    assert record.mtime == -2 == (tmp_path / "mine" / "old.txt").stat().st_mtime_ns // 1_000_000_000


def test_a_missing_tool_fails_under_ci_and_skips_elsewhere(monkeypatch, tmp_path):
    """``.ci/run`` installs every tool (scripts/ci-deps.sh) and sets CI=true: there a missing
    tool is a failure, naming the Debian package; elsewhere the test is skipped."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="bsdtar is not installed .*libarchive-tools"):
        require_tool("bsdtar")
    monkeypatch.delenv("CI")
    with pytest.raises(pytest.skip.Exception, match="libarchive-tools"):
        require_tool("bsdtar")


@pytest.mark.parametrize("codec", sorted(CODECS))
def test_compressed_pieces_are_made_by_the_real_tools(codec, corpus_archive, tmp_path):
    """The corpus's compressed and split archives, as the split-archive tests use them:
    GNU tar reads the compressed file back to the same tree, and the pieces are the bytes
    of the compressed file in order."""
    plain = tmp_path / "a.tar"
    plain.write_bytes(corpus_archive("gnu").read_bytes())
    packed = compress(plain, codec)
    assert packed.name == "a.tar" + CODECS[codec][1] and packed.stat().st_size < plain.stat().st_size
    pieces = split_pieces(packed, tmp_path / "pieces", 12, style="numeric")
    assert [p.name for p in pieces] == [f"{packed.name}.{i:02d}" for i in range(12)]
    assert b"".join(p.read_bytes() for p in pieces) == packed.read_bytes()
    ref = gnu_extract(plain, tmp_path / "ref")
    assert compare_trees(gnu_extract(packed, tmp_path / "from-packed"), ref) == []


def test_split_styles(tmp_path):
    blob = tmp_path / "b.bin"
    blob.write_bytes(bytes(range(256)) * 40)
    assert [p.name for p in split_pieces(blob, tmp_path / "a", 3, style="alpha", prefix="x")] == ["xaa", "xab", "xac"]
    assert [p.name for p in split_pieces(blob, tmp_path / "h", 17, style="hex")][-2:] == ["b.bin.0f", "b.bin.10"]


@pytest.mark.parametrize("name", ["../a/b.txt", "a/../../b.txt", "/abs/b.txt"])
def test_names_are_checked_before_they_are_stripped(name, tmp_path):
    """Stripping ``..`` or ``/`` away would make a hostile name look safe: it is refused."""
    path = tmp_path / "a.tar"
    path.write_bytes(_tar_of(_info("ok/x.txt", data=b"x"), _info(name, data=b"x")))
    root = tmp_path / "mine"
    with pytest.raises(UnsafeArchiveError, match="unsafe path"):
        safe_extract(path, root, strip=1)
    assert sorted(os.listdir(tmp_path)) == ["a.tar", "mine"]
    assert not (root / "b.txt").exists() and not (root / "a").exists()
