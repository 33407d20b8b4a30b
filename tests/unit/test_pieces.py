"""pieces.py: natural order of split archive pieces, sidecar parsing, ETag evidence.

Piece names come from GNU split itself, run in a temporary directory; checksum lines from
md5sum/sha256sum (GNU coreutils), shasum (Perl) and openssl where they are installed.
"""

from __future__ import annotations

import hashlib
import random
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from s3sync.errors import SplitArchiveError
from s3sync.manifest import valid_name
from s3sync.pieces import (
    Claim,
    Evidence,
    choose_evidence,
    claims_for,
    dataset_name,
    describe,
    etag_md5,
    is_sidecar,
    multipart_etag,
    multipart_etag_parts,
    natural_key,
    order_pieces,
    parse_checksums,
    parse_sidecar,
)

WHERE = "s3://bucket/data"
MD5_EMPTY = "d41d8cd98f00b204e9800998ecf8427e"
SHA256_EMPTY = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def gnu_split(tmp_path: Path, count: int, *args: str, prefix: str | None = None) -> tuple[list[str], Path, bytes]:
    """Run GNU split on ``count`` two-byte records (each its own big-endian number, so the
    pieces' concatenation shows their order); return (piece names, directory, original)."""
    out = tmp_path / "pieces"
    out.mkdir()
    data = b"".join(i.to_bytes(2, "big") for i in range(count))
    src = tmp_path / "whole"
    src.write_bytes(data)
    subprocess.run(["split", "-b", "2", *args, str(src), *([prefix] if prefix is not None else [])],
                   cwd=out, check=True)
    return [p.name for p in out.iterdir()], out, data


def shuffled(names: list[str], seed: int = 1) -> list[str]:
    names = list(names)
    random.Random(seed).shuffle(names)
    return names


# --- natural order ---------------------------------------------------------------------

def test_natural_key_compares_digit_runs_as_numbers() -> None:
    names = ["name.10", "name.9", "name.1", "x9000", "x89", "x990000", "xzaaa", "xyz", "a.part2", "a.part10"]
    assert sorted(names, key=natural_key) == [
        "a.part2", "a.part10", "name.1", "name.9", "name.10", "x89", "x9000", "x990000", "xyz", "xzaaa"]


def test_natural_key_is_total_for_names_that_differ_only_in_padding() -> None:
    assert sorted(["x.01", "x.1", "x.001"], key=natural_key) == sorted(["x.1", "x.001", "x.01"], key=natural_key)
    assert natural_key("x.01") != natural_key("x.1")


# --- order_pieces on names GNU split wrote ---------------------------------------------

SPLIT_FORMS = [
    pytest.param(5, (), None, "xaa", id="default"),
    pytest.param(12, ("-d",), None, "x00", id="numeric"),
    pytest.param(12, ("--numeric-suffixes=1",), None, "x01", id="numeric-from-1"),
    pytest.param(30, ("-a", "3"), None, "xaaa", id="a3"),
    pytest.param(4, ("-a", "1"), None, "xa", id="a1"),
    pytest.param(12, ("--additional-suffix=.part",), None, "xaa.part", id="additional-suffix"),
    pytest.param(12, ("-d", "--additional-suffix=.part"), None, "x00.part", id="numeric-additional-suffix"),
    pytest.param(12, ("-d", "-a", "3"), "images.tar.", "images.tar.000", id="dot-000"),
    pytest.param(30, (), "data.tar.gz.", "data.tar.gz.aa", id="prefix-letters"),
    pytest.param(15, ("--numeric-suffixes=1",), "sbu.tar.gz.part", "sbu.tar.gz.part01", id="part01"),
    pytest.param(120, ("-d",), None, "x00", id="numeric-widened"),        # x89, x9000...
    pytest.param(99, ("--numeric-suffixes=1",), None, "x01", id="numeric-from-1-to-99"),  # no widening
    pytest.param(700, (), None, "xaa", id="letters-widened"),            # xyz, xzaaa...
]


@pytest.mark.parametrize(("count", "args", "prefix", "first"), SPLIT_FORMS)
def test_split_pieces_come_back_in_stream_order(tmp_path: Path, count: int, args: tuple[str, ...],
                                                prefix: str | None, first: str) -> None:
    names, out, data = gnu_split(tmp_path, count, *args, prefix=prefix)
    assert len(names) == count
    ordered = order_pieces(shuffled(names), WHERE)
    assert ordered[0] == first
    assert b"".join((out / n).read_bytes() for n in ordered) == data


@pytest.mark.parametrize(("count", "args", "prefix", "first"), SPLIT_FORMS)
def test_a_missing_piece_is_named(tmp_path: Path, count: int, args: tuple[str, ...], prefix: str | None,
                                  first: str) -> None:
    names, _, _ = gnu_split(tmp_path, count, *args, prefix=prefix)
    ordered = order_pieces(names, WHERE)
    gone = ordered[len(ordered) // 2]
    with pytest.raises(SplitArchiveError) as err:
        order_pieces([n for n in names if n != gone], WHERE)
    assert f"{gone} is missing" in str(err.value)
    assert str(err.value).startswith(WHERE)
    assert f"({count - 1} pieces)" in str(err.value)
    assert err.value.hint


@pytest.mark.parametrize(("count", "args", "prefix", "first"), SPLIT_FORMS)
def test_a_missing_first_piece_is_reported(tmp_path: Path, count: int, args: tuple[str, ...],
                                           prefix: str | None, first: str) -> None:
    names, _, _ = gnu_split(tmp_path, count, *args, prefix=prefix)
    ordered = order_pieces(names, WHERE)
    # A numbered run may start at 0 or at 1: without its 0 piece it still reads as a whole
    # run from 1 (the tar or compression header then fails), so those lose two pieces.
    digits = re.findall(r"[0-9]+", first)
    gone = ordered[:2] if digits and int(digits[-1]) == 0 else ordered[:1]
    with pytest.raises(SplitArchiveError, match="the first piece seems missing"):
        order_pieces([n for n in names if n not in gone], WHERE)


@pytest.mark.parametrize(("count", "args", "boundary"), [
    (120, ("-d",), ["x89", "x9000"]),
    (700, (), ["xyz", "xzaaa"]),
])
def test_gnu_split_widening_is_not_a_gap_but_its_neighbours_are_checked(
        tmp_path: Path, count: int, args: tuple[str, ...], boundary: list[str]) -> None:
    names, _, _ = gnu_split(tmp_path, count, *args)
    assert set(boundary) <= set(names)
    ordered = order_pieces(names, WHERE)
    i = ordered.index(boundary[0])
    assert ordered[i:i + 2] == boundary
    for gone in boundary:
        with pytest.raises(SplitArchiveError, match=f"{gone} is missing"):
            order_pieces([n for n in names if n != gone], WHERE)


def test_many_gaps_are_counted_not_all_listed(tmp_path: Path) -> None:
    names, _, _ = gnu_split(tmp_path, 40, "-d", "-a", "3", prefix="a.tar.")
    keep = [n for n in names if n not in {f"a.tar.{i:03d}" for i in range(3, 30)}]
    with pytest.raises(SplitArchiveError) as err:
        order_pieces(keep, WHERE)
    message = str(err.value)
    assert "a.tar.003, a.tar.004, a.tar.005, a.tar.006, a.tar.007 and 22 more are missing" in message
    assert "a.tar.{000..039} (13 pieces)" in message


@pytest.mark.parametrize("names", [
    [f"name.{i}" for i in range(1, 13)],
    [f"name.{i}" for i in range(0, 11)],
    [f"sbu.tar.gz.part{i:02d}" for i in range(1, 13)],
    [f"images_{i:02d}.tar" for i in range(1, 4)],
    [f"d.tar.{i:03d}" for i in range(1, 1002)],   # padding outgrown: .999, .1000, .1001
    [f"a.part{i}of3" for i in range(1, 4)],
])
def test_numbered_forms_other_tools_write(names: list[str]) -> None:
    assert order_pieces(shuffled(names), WHERE) == names


def test_split_with_an_empty_prefix(tmp_path: Path) -> None:
    names, _, _ = gnu_split(tmp_path, 5, prefix="")
    assert order_pieces(shuffled(names), WHERE) == ["aa", "ab", "ac", "ad", "ae"]


def test_one_name_is_its_own_order() -> None:
    assert order_pieces(["SBU.tar.gz"], WHERE) == ["SBU.tar.gz"]
    assert order_pieces(["a.tar.007"], WHERE) == ["a.tar.007"]  # nothing to compare it with


def test_unrelated_families_are_refused_and_listed() -> None:
    with pytest.raises(SplitArchiveError) as err:
        order_pieces(["a.tar.001", "notes.txt", "a.tar.003", "a.tar.002"], WHERE)
    assert str(err.value) == (f"{WHERE}: the objects are not the pieces of one archive: 2 name families: "
                              "a.tar.{001..003} (3 pieces), notes.txt")


def test_families_beyond_five_are_counted() -> None:
    names = [f"{s}.tar.{i:03d}" for s in "abcdefg" for i in (1, 2)]
    with pytest.raises(SplitArchiveError) as err:
        order_pieces(names, WHERE)
    assert "7 name families: a.tar.{001..002} (2 pieces)" in str(err.value)
    assert "e.tar.{001..002} (2 pieces) and 2 more" in str(err.value)


@pytest.mark.parametrize("names", [
    ["notes.md", "notes.txt"],
    ["a.tar", "a.tar.1"],
    ["x.1", "x.02"],          # two paddings that cannot both be one run
    ["a", "b"],               # names that are nothing but an index
    ["a.tar.001", "b.tar.001"],
    ["a.tar.001", "b.tar.001", "c.tar.001"],
])
def test_names_that_are_not_one_family(names: list[str]) -> None:
    with pytest.raises(SplitArchiveError, match=f"not the pieces of one archive: {len(names)} name families"):
        order_pieces(names, WHERE)


def test_duplicates_that_differ_only_in_padding() -> None:
    with pytest.raises(SplitArchiveError, match=r"x\.01 and x\.1 differ only in padding"):
        order_pieces(["x.1", "x.01", "x.2"], WHERE)


@pytest.mark.parametrize(("names", "expected"), [
    (["a.tar.002", "a.tar.003"], "expected a.tar.000 or a.tar.001"),
    (["x.2", "x.3"], "expected x.0 or x.1"),
    (["x02", "x03"], "expected x00 or x01"),
    (["xab", "xac"], "expected xaa"),
])
def test_a_run_that_does_not_start_at_its_first_index(names: list[str], expected: str) -> None:
    with pytest.raises(SplitArchiveError, match="the first piece seems missing") as err:
        order_pieces(names, WHERE)
    assert expected in str(err.value)


def test_a_gap_in_an_unpadded_run() -> None:
    with pytest.raises(SplitArchiveError, match=r"name\.2, name\.3 are missing"):
        order_pieces(["name.1", "name.4", "name.10", "name.5", "name.6", "name.7", "name.8", "name.9"], WHERE)


def test_a_name_given_twice_and_no_name() -> None:
    with pytest.raises(SplitArchiveError, match="given twice"):
        order_pieces(["a.001", "a.001"], WHERE)
    with pytest.raises(SplitArchiveError, match="no pieces"):
        order_pieces([], WHERE)


# --- names -----------------------------------------------------------------------------

@pytest.mark.parametrize(("name", "expected"), [
    ("sbu.tar.gz.part01", "sbu"), ("images.tar.001", "images"), ("SBU.tar.gz", "SBU"), ("data.tgz", "data"),
    ("coco.tar.zst.aa", "coco"), ("x.tar.bz2", "x"), ("a.txz", "a"), ("a.tar.xz", "a"), ("a.tzst", "a"),
    ("ImageNet.TAR.GZ", "ImageNet"), ("data.tar.gzaa", "data"), ("data.tgzab", "data"), ("data.tar.gz00", "data"),
    ("cifar-10-python.tar.gz", "cifar-10-python"), ("sbu_part01", "sbu"), ("name.12", "name"),
    ("a.zstd", "a"), ("a.tbz2", "a"), ("archive", "archive"), ("dir/sub/sbu.tar.001", "sbu"),
    ("xaa", ""), ("x00", ""), ("x9000", ""), ("xzaaa", ""), ("my data.tar", ""), (".tar.gz", ""), ("", ""),
])
def test_dataset_name(name: str, expected: str) -> None:
    assert dataset_name(name) == expected
    assert expected == "" or valid_name(expected)


@pytest.mark.parametrize(("name", "expected"), [
    ("a.tar.001.md5", True), ("a.tar.001.MD5", True), ("a.sha256", True), ("a.sha1", True), ("a.sha512", True),
    ("a.tar.sha256sum", True), ("MD5SUMS", True), ("SHA256SUMS", True), ("SHA1SUMS", True), ("SHA512SUMS", True),
    ("md5sums.txt", True), ("sha256sums.txt", True), ("sha256sums", True),
    ("a.tar.001", False), ("md5", False), ("a.md5sums", False), ("notes.txt", False), ("MD5SUMS.asc", False),
    ("a.md5.001", False), ("xaa", False),
])
def test_is_sidecar(name: str, expected: bool) -> None:
    assert is_sidecar(name) is expected


# --- checksum files written by the real tools -------------------------------------------

def _run(cmd: list[str], cwd: Path) -> str:
    return subprocess.run(cmd, cwd=cwd, check=True, capture_output=True).stdout.decode()


@pytest.fixture
def files(tmp_path: Path) -> Path:
    (tmp_path / "a.tar.001").write_bytes(b"first")
    (tmp_path / "a b\\c").write_bytes(b"odd")
    (tmp_path / "line\nbreak").write_bytes(b"newline")
    return tmp_path


def _digests(folder: Path, algorithm: str) -> dict[str, str]:
    return {p.name: hashlib.new(algorithm, p.read_bytes()).hexdigest() for p in folder.iterdir()}


@pytest.mark.parametrize(("cmd", "algorithm", "source"), [
    (["md5sum"], "md5", "MD5SUMS"),
    (["md5sum", "-b"], "md5", "md5sums.txt"),
    (["sha256sum"], "sha256", "SHA256SUMS"),
    (["sha256sum", "--tag"], "sha256", "CHECKSUMS.sha256"),
    (["md5sum", "--tag"], "md5", "list.md5"),
    (["sha512sum", "-z"], None, None),  # NUL-terminated output is not a checksum file: see below
    (["sha1sum"], "sha1", "SHA1SUMS"),
])
def test_gnu_coreutils_lists_are_read(files: Path, cmd: list[str], algorithm: str | None,
                                      source: str | None) -> None:
    text = _run([*cmd, "--", *sorted(p.name for p in files.iterdir())], files)
    if algorithm is None:
        with pytest.raises(SplitArchiveError):
            parse_checksums(text, "SHA512SUMS")
        return
    assert "\\" in text  # coreutils escaped the backslash and the newline
    claims = parse_checksums(text, source)
    assert {n: c.digest for n, c in claims.items()} == _digests(files, algorithm)
    assert {c.algorithm for c in claims.values()} == {algorithm}
    assert {c.source for c in claims.values()} == {source}


@pytest.mark.skipif(not shutil.which("shasum"), reason="Perl's shasum is not installed")
@pytest.mark.parametrize("args", [["-a", "256"], ["-a", "1", "-b"], ["-a", "512", "--tag"]])
def test_shasum_output_is_read(tmp_path: Path, args: list[str]) -> None:
    (tmp_path / "a.tar.001").write_bytes(b"first")
    text = _run(["shasum", *args, "a.tar.001"], tmp_path)
    claim = parse_checksums(text, "SHASUMS")["a.tar.001"]
    assert claim.digest == hashlib.new(claim.algorithm, b"first").hexdigest()


@pytest.mark.skipif(not shutil.which("openssl"), reason="openssl is not installed")
@pytest.mark.parametrize(("args", "algorithm"), [(["dgst", "-sha256"], "sha256"), (["md5"], "md5"),
                                                 (["dgst", "-sha512"], "sha512"), (["sha1"], "sha1")])
def test_openssl_dgst_output_is_read(tmp_path: Path, args: list[str], algorithm: str) -> None:
    (tmp_path / "a.tar.001").write_bytes(b"first")
    text = _run(["openssl", *args, "a.tar.001"], tmp_path)
    assert parse_checksums(text, "digests") == {
        "a.tar.001": Claim(algorithm, hashlib.new(algorithm, b"first").hexdigest(), "digests")}


def test_bsd_forms_bom_crlf_comments_and_paths() -> None:
    text = ("\ufeff# made on a Mac\r\n\r\n"
            f"MD5 (./a.tar.001) = {MD5_EMPTY.upper()}\r\n"
            f"{MD5_EMPTY} dir/a.tar.002\r\n"               # md5 -r: one space
            f"SHA256 (a (copy).tar.003) = {SHA256_EMPTY}\n")
    claims = parse_checksums(text, "CHECKSUMS")
    assert claims["./a.tar.001"] == claims["a.tar.001"] == Claim("md5", MD5_EMPTY, "CHECKSUMS")
    assert claims["dir/a.tar.002"] == claims["a.tar.002"]
    assert claims["a (copy).tar.003"] == Claim("sha256", SHA256_EMPTY, "CHECKSUMS")


def test_a_basename_shared_by_two_paths_is_not_indexed() -> None:
    claims = parse_checksums(f"{MD5_EMPTY}  one/x\n{'0' * 32}  two/x\n", "MD5SUMS")
    assert "x" not in claims
    assert set(claims) == {"one/x", "two/x"}


@pytest.mark.parametrize(("text", "source", "why"), [
    ("not a checksum\n", "MD5SUMS", "line 1: not a checksum line"),
    (f"# ok\n{MD5_EMPTY}  a\n{MD5_EMPTY[:-1]}  b\n", "MD5SUMS", "line 3: a MD5 digest has 32 hex digits, not 31"),
    (f"{SHA256_EMPTY}  a\n", "MD5SUMS", "line 1: a MD5 digest has 32 hex digits, not 64"),
    (f"{'a' * 50}  a\n", "CHECKSUMS", "line 1: a digest of 50 hex digits"),
    (f"BLAKE2b (a) = {'0' * 128}\n", "CHECKSUMS", "line 1: unsupported checksum BLAKE2b"),
    (f"{MD5_EMPTY}\n", "MD5SUMS", "line 1: a digest without a file name"),
    (f"\\{MD5_EMPTY}  a\\tb\n", "MD5SUMS", "line 1: unknown escape"),
    (f"{MD5_EMPTY}  a\n{'0' * 32}  a\n", "MD5SUMS", "line 2: a is listed again"),
])
def test_malformed_lines_are_refused_with_their_line_number(text: str, source: str, why: str) -> None:
    with pytest.raises(SplitArchiveError) as err:
        parse_checksums(text, source)
    assert str(err.value).startswith(f"{source} {why}")
    assert "GNU" in err.value.hint


def test_algorithm_from_tag_then_suffix_then_length() -> None:
    sha1 = hashlib.sha1(b"").hexdigest()
    assert parse_checksums(f"{sha1}  a\n", "CHECKSUMS")["a"].algorithm == "sha1"
    assert parse_checksums(f"SHA256 (a) = {SHA256_EMPTY}\n", "x.md5")["a"].algorithm == "sha256"
    with pytest.raises(SplitArchiveError):
        parse_checksums(f"{sha1}  a\n", "x.sha256")


# --- per-piece sidecars and the claims they make -----------------------------------------

@pytest.mark.parametrize("text", [
    f"{MD5_EMPTY}\n", f"{MD5_EMPTY}  \r\n", f"{MD5_EMPTY}  a.tar.001\n", f"{MD5_EMPTY} *./a.tar.001\n",
    f"MD5 (a.tar.001) = {MD5_EMPTY}\n", f"{MD5_EMPTY}  a.tar.001\n{'0' * 32}  a.tar.002\n",
    f"{MD5_EMPTY}  -\n",  # md5sum < a.tar.001 > a.tar.001.md5
])
def test_parse_sidecar_forms(text: str) -> None:
    assert parse_sidecar(text, "a.tar.001", "a.tar.001.md5") == Claim("md5", MD5_EMPTY, "a.tar.001.md5")


def test_parse_sidecar_refuses_one_about_another_file_and_reads_empty_as_none() -> None:
    with pytest.raises(SplitArchiveError, match="a.tar.001.md5 is about a.tar.002, not the piece a.tar.001"):
        parse_sidecar(f"{MD5_EMPTY}  a.tar.002\n", "a.tar.001", "a.tar.001.md5")
    assert parse_sidecar("", "a.tar.001", "a.tar.001.md5") is None
    assert parse_sidecar("# nothing yet\n\n", "a.tar.001", "a.tar.001.md5") is None
    with pytest.raises(SplitArchiveError, match="second, different MD5"):
        parse_sidecar(f"{MD5_EMPTY}\n{'0' * 32}\n", "a.tar.001", "a.tar.001.md5")


def test_claims_for_prefers_the_pieces_own_sidecar_then_the_strongest() -> None:
    pieces = ["a.tar.001", "a.tar.002", "a.tar.003"]
    sidecars = {
        "a.tar.001.md5": f"{MD5_EMPTY}  a.tar.001\n",
        "SHA256SUMS": f"{SHA256_EMPTY}  a.tar.001\n{SHA256_EMPTY}  ./a.tar.002\n",
        "MD5SUMS": f"{MD5_EMPTY}  a.tar.002\n",
        "a.tar.md5": f"{'1' * 32}\n",   # the unsplit archive's digest: no piece's
    }
    assert claims_for(pieces, sidecars) == {
        "a.tar.001": Claim("md5", MD5_EMPTY, "a.tar.001.md5"),
        "a.tar.002": Claim("sha256", SHA256_EMPTY, "SHA256SUMS"),
    }
    sidecars["a.tar.001.SHA256"] = SHA256_EMPTY
    assert claims_for(pieces, sidecars)["a.tar.001"] == Claim("sha256", SHA256_EMPTY, "a.tar.001.SHA256")


def test_claims_for_refuses_sidecars_that_disagree() -> None:
    sidecars = {"a.tar.001.md5": MD5_EMPTY, "MD5SUMS": f"{'0' * 32}  a.tar.001\n"}
    with pytest.raises(SplitArchiveError) as err:
        claims_for(["a.tar.001", "a.tar.002"], sidecars)
    assert "a.tar.001.md5 and MD5SUMS disagree about a.tar.001" in str(err.value)


def test_claims_for_refuses_an_empty_sidecar_of_a_piece() -> None:
    with pytest.raises(SplitArchiveError, match="a.tar.001.md5 is empty"):
        claims_for(["a.tar.001"], {"a.tar.001.md5": "", "MD5SUMS": f"{MD5_EMPTY}  a.tar.001\n"})


def test_claims_for_reports_a_malformed_list() -> None:
    with pytest.raises(SplitArchiveError, match="SHA256SUMS line 2"):
        claims_for(["a.tar.001"], {"SHA256SUMS": f"{SHA256_EMPTY}  a.tar.001\ngarbage\n"})


# --- ETags -----------------------------------------------------------------------------

@pytest.mark.parametrize(("etag", "md5", "parts"), [
    (f'"{MD5_EMPTY}"', MD5_EMPTY, None),
    (f'"{MD5_EMPTY.upper()}"', MD5_EMPTY, None),
    (MD5_EMPTY, MD5_EMPTY, None),
    (f'W/"{MD5_EMPTY}"', None, None),
    (f'"{MD5_EMPTY}-12"', None, 12),
    (f'"{MD5_EMPTY}-1"', None, 1),
    (f'"{MD5_EMPTY}-10000"', None, 10000),
    (f'"{MD5_EMPTY}-10001"', None, None),
    (f'"{MD5_EMPTY}-0"', None, None),
    (f'"{MD5_EMPTY}-012"', None, None),
    (f'W/"{MD5_EMPTY}-2"', None, None),
    ('"5f3c-5a1b2c3d"', None, None),
    ("", None, None),
])
def test_etag_forms(etag: str, md5: str | None, parts: int | None) -> None:
    assert etag_md5(etag) == md5
    assert multipart_etag_parts(etag) == parts


def test_multipart_etag_matches_s3s_worked_example_and_real_bytes() -> None:
    # The two-part example quoted for S3 (part ETags bce6... and 8165...).
    parts = [bytes.fromhex("bce6bf66aeb76c7040fdd5f4eccb78e6"), bytes.fromhex("8165449fc15bbf43d3b674595cbcc406")]
    assert multipart_etag(parts) == "f77dc0eecdebcd774a2a22cb393ad2ff-2"
    data = bytes(range(256)) * 100
    md5s = [hashlib.md5(data[i:i + 5000]).digest() for i in range(0, len(data), 5000)]
    assert multipart_etag(md5s) == hashlib.md5(b"".join(md5s)).hexdigest() + "-6"
    assert multipart_etag_parts(f'"{multipart_etag(md5s)}"') == 6
    with pytest.raises(ValueError):
        multipart_etag([])
    with pytest.raises(ValueError):
        multipart_etag([b"short"])


MULTI = f'"{MD5_EMPTY}-12"'


@pytest.mark.parametrize(("claim", "etag", "part_size", "size", "expected", "phrase"), [
    (Claim("md5", MD5_EMPTY, "a.tar.001.md5"), MULTI, 8 << 20, None,
     Evidence("sidecar", "md5", MD5_EMPTY, "a.tar.001.md5"), "MD5 from a.tar.001.md5"),
    (Claim("sha256", SHA256_EMPTY, "SHA256SUMS"), f'"{MD5_EMPTY}"', None, None,
     Evidence("sidecar", "sha256", SHA256_EMPTY, "SHA256SUMS"), "SHA-256 from SHA256SUMS"),
    (None, f'"{MD5_EMPTY.upper()}"', None, None, Evidence("etag-md5", "md5", MD5_EMPTY, "ETag"),
     "S3 ETag (the object's MD5)"),
    (None, MULTI, 8 << 20, 95 << 20, Evidence("etag-multipart", "md5", f"{MD5_EMPTY}-12", "ETag", 8 << 20),
     "S3 ETag (multipart, 12 parts of 8 MiB, recomputed)"),
    (None, MULTI, None, None,
     Evidence("none", source="no sidecar, multipart ETag (12 parts) and the server does not give the upload part size"),
     "not verified: no sidecar, multipart ETag (12 parts) and the server does not give the upload part size"),
    (None, MULTI, 8 << 20, 100 << 20,
     Evidence("none", source="no sidecar, multipart ETag says 12 parts but 100 MiB in parts of 8 MiB make 13"),
     "not verified: no sidecar, multipart ETag says 12 parts but 100 MiB in parts of 8 MiB make 13"),
    (None, '"5f3c-5a1b2c3d"', None, None, Evidence("none", source="no sidecar, ETag is not an MD5"),
     "not verified: no sidecar, ETag is not an MD5"),
    (None, f'W/"{MD5_EMPTY}"', None, None, Evidence("none", source="no sidecar, ETag is weak (W/)"),
     "not verified: no sidecar, ETag is weak (W/)"),
    (None, "", None, None, Evidence("none", source="no sidecar, no ETag"), "not verified: no sidecar, no ETag"),
])
def test_choose_evidence_and_describe(claim: Claim | None, etag: str, part_size: int | None, size: int | None,
                                      expected: Evidence, phrase: str) -> None:
    evidence = choose_evidence(claim, etag, part_size, size=size)
    assert evidence == expected
    assert describe(evidence) == phrase


def test_describe_odd_sizes_and_unknown_kinds() -> None:
    assert describe(Evidence("etag-multipart", "md5", f"{MD5_EMPTY}-1", "ETag", 10_000_000)) == \
        "S3 ETag (multipart, 1 part of 10000000 bytes, recomputed)"
    with pytest.raises(ValueError):
        describe(Evidence("guess"))
