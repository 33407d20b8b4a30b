"""zipstream against a real HTTP server on loopback (tests/httpserver.py): zips made at test time
with zipfile (stored, deflated, data descriptors, Zip64, comments, prefixes) are read from their
tail, extracted while streaming, and compared with what ``zipfile.extractall`` gives; hostile or
unstreamable zips are refused before any member is fetched; a byte flipped in transit costs one
member's refetch and leaves the whole-zip MD5 right.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import random
import zipfile
from pathlib import Path

import pytest
from httpserver import Fault

from s3sync import zipstream
from s3sync.config import TransferSettings
from s3sync.errors import BuildError, DamagedArchiveError, UnsafeArchiveError
from s3sync.stores.http import HttpStore

KiB = 1024
SETTINGS = TransferSettings(concurrency=2, chunk_size=64 * KiB, window=4, retries=3,
                            backoff_base_s=0.01, backoff_max_s=0.02)


def tree_of(root: Path) -> dict[str, bytes | None]:
    """Relative path -> bytes (None for a directory) of everything under ``root``."""
    out: dict[str, bytes | None] = {}
    for path in sorted(root.rglob("*")):
        out[path.relative_to(root).as_posix()] = None if path.is_dir() else path.read_bytes()
    return out


def reference(zip_path: Path, tmp: Path) -> dict[str, bytes | None]:
    out = tmp / f"ref-{zip_path.name}"
    with zipfile.ZipFile(zip_path) as zf:
        zf.extractall(out)
    return tree_of(out)


class Reader:
    """An HttpStore and the helpers a test reads a served zip with."""

    def __init__(self, server, settings: TransferSettings = SETTINGS) -> None:
        self.server = server
        self.settings = settings
        self.store = HttpStore(settings)

    def directory(self, name: str, tail_bytes: int = zipstream.TAIL_BYTES) -> tuple[zipstream.ZipDirectory, str]:
        url = self.server.url_of(name)
        info = self.store.head(url)
        return zipstream.read_directory(
            lambda off, n: zipstream.read_bytes(self.store, url, off, n, info.etag or None, self.settings),
            info.size, url, tail_bytes), info.etag

    def extract(self, name: str, dest: Path, **kw) -> tuple[zipstream.StreamResult, zipstream.ZipDirectory]:
        directory, etag = self.directory(name, kw.pop("tail_bytes", zipstream.TAIL_BYTES))
        kw.setdefault("full", True)
        return zipstream.stream_extract(self.store, directory, etag, dest, self.settings, **kw), directory


@pytest.fixture
def www(tmp_path: Path) -> Path:
    root = tmp_path / "www"
    root.mkdir()
    return root


def mixed_zip(path: Path, members: int = 30, **kw) -> Path:
    """Stored random members, a deflated text, directories, an empty file."""
    rng = random.Random(7)
    with zipfile.ZipFile(path, "w", **kw) as zf:
        zf.writestr("top/", b"")
        zf.writestr("top/empty.txt", b"")
        for i in range(members):
            zf.writestr(f"top/sub{i % 3}/m{i:03d}.bin", rng.randbytes(rng.randrange(1, 9000)), zipfile.ZIP_STORED)
        zf.writestr("top/words.txt", b"the quick brown fox " * 20000, zipfile.ZIP_DEFLATED)
        zf.writestr("top/noise.bin", rng.randbytes(200 * KiB), zipfile.ZIP_DEFLATED)
    return path


def test_extracts_what_extractall_gives_and_computes_the_md5(http_server, www, tmp_path):
    zpath = mixed_zip(www / "a.zip")
    reader = Reader(http_server(www))
    seen = []
    result, directory = reader.extract("a.zip", tmp_path / "out", on_member=seen.append)
    assert result.digest == hashlib.md5(zpath.read_bytes()).hexdigest()
    assert tree_of(tmp_path / "out") == reference(zpath, tmp_path)
    assert result.written == result.members == len(directory.members) == len(seen)
    assert result.refetched == 0
    assert not directory.zip64
    with zipfile.ZipFile(zpath) as zf:
        assert {m.name: m.crc for m in seen} == {i.filename: i.CRC for i in zf.infolist()}


def test_a_central_directory_larger_than_the_first_tail_is_fetched_in_a_second_read(http_server, www, tmp_path):
    zpath = mixed_zip(www / "a.zip", members=200)
    reader = Reader(http_server(www))
    result, directory = reader.extract("a.zip", tmp_path / "out", tail_bytes=2 * KiB)
    assert directory.tail_offset == directory.directory_offset < directory.size - 2 * KiB
    assert result.digest == hashlib.md5(zpath.read_bytes()).hexdigest()
    assert tree_of(tmp_path / "out") == reference(zpath, tmp_path)


def test_data_descriptors_a_comment_and_a_prefix_before_the_first_member(http_server, www, tmp_path):
    buffer = io.BytesIO()
    buffer.write(b"#!/bin/sh\necho self-extracting stub\n" * 10)  # bytes before the zip, as a SFX has

    class Pipe(io.RawIOBase):  # not seekable: zipfile writes data descriptors (flag bit 3)
        def writable(self):
            return True

        def write(self, data):
            return buffer.write(data)

        def tell(self):
            return buffer.tell()

    with zipfile.ZipFile(Pipe(), "w") as zf:
        zf.comment = b"a comment " * 100
        for i in range(5):
            zf.writestr(f"d/f{i}", os.urandom(3000), zipfile.ZIP_STORED)
        zf.writestr("d/z", b"zz" * 5000, zipfile.ZIP_DEFLATED)
    (www / "dd.zip").write_bytes(buffer.getvalue())
    with zipfile.ZipFile(www / "dd.zip") as zf:
        assert all(i.flag_bits & 0x08 for i in zf.infolist())
    result, _ = Reader(http_server(www)).extract("dd.zip", tmp_path / "out")
    assert result.digest == hashlib.md5(buffer.getvalue()).hexdigest()
    assert tree_of(tmp_path / "out") == reference(www / "dd.zip", tmp_path)


def test_zip64_members_and_end_record(http_server, www, tmp_path, monkeypatch):
    """Zip64 extra fields on every member (force_zip64) and a Zip64 end of central directory
    record and locator (zipfile writes them past 65,535 members; the limit is lowered while
    writing, so a few members are enough). unzip reads it too."""
    zpath = www / "z64.zip"
    monkeypatch.setattr(zipfile, "ZIP_FILECOUNT_LIMIT", 2)
    with zipfile.ZipFile(zpath, "w") as zf:
        for i in range(6):
            with zf.open(f"big/m{i}", "w", force_zip64=True) as out:
                out.write(os.urandom(5000))
        zf.writestr("big/t", b"text " * 4000, zipfile.ZIP_DEFLATED)
    monkeypatch.undo()
    data = zpath.read_bytes()
    eocd = data.rfind(b"PK\x05\x06")
    assert data[eocd - 20: eocd - 16] == b"PK\x06\x07"  # the Zip64 locator is there
    result, directory = Reader(http_server(www)).extract("z64.zip", tmp_path / "out")
    assert directory.zip64
    assert result.digest == hashlib.md5(data).hexdigest()
    assert tree_of(tmp_path / "out") == reference(zpath, tmp_path)


def test_zip64_by_member_count_reads_its_directory(http_server, www):
    """65,536 members: more than the 16-bit EOCD count holds, a real Zip64 end record."""
    zpath = www / "many.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        for i in range(65_536):
            zf.writestr(f"m/{i}", b"")
    directory, _ = Reader(http_server(www)).directory("many.zip")
    assert directory.zip64
    assert len(directory.members) == 65_536
    assert directory.members[-1].name == "m/65535"


@pytest.mark.parametrize("name, error", [
    ("../evil", UnsafeArchiveError),
    ("/etc/evil", UnsafeArchiveError),
    ("a/../../evil", UnsafeArchiveError),
    ("a\\..\\evil", UnsafeArchiveError),
    ("a/\x00evil.txt", UnsafeArchiveError),
    ("C:/evil", UnsafeArchiveError),
])
def test_unsafe_names_are_refused_before_any_member_is_fetched(http_server, www, tmp_path, name, error):
    with zipfile.ZipFile(www / "bad.zip", "w") as zf:
        zf.writestr("fine.txt", b"fine")
        zf.writestr(zipfile.ZipInfo(name.replace("\x00", "#")), b"evil")
    if "\x00" in name:  # zipfile cuts names at a NUL when writing: put it in the bytes
        data = (www / "bad.zip").read_bytes()
        (www / "bad.zip").write_bytes(data.replace(name.replace("\x00", "#").encode(), name.encode()))
    server = http_server(www)
    with pytest.raises(error, match="unsafe name"):
        Reader(server).extract("bad.zip", tmp_path / "out")
    assert not (tmp_path / "out").exists()
    assert all(r.headers.get("Range", "").startswith("bytes=") for r in server.requests_for("bad.zip"))
    assert not any(p.name == "evil" for p in tmp_path.rglob("*"))


def test_symlinks_encryption_and_other_compression_are_refused(http_server, www, tmp_path):
    link = zipfile.ZipInfo("link")
    link.create_system = 3
    link.external_attr = (0o120777 << 16)
    with zipfile.ZipFile(www / "link.zip", "w") as zf:
        zf.writestr(link, "/etc/passwd")
    with zipfile.ZipFile(www / "bz.zip", "w") as zf:
        zf.writestr("x", b"x" * 1000, zipfile.ZIP_BZIP2)
    with zipfile.ZipFile(www / "enc.zip", "w") as zf:
        zf.writestr("x", b"x" * 1000)
    data = bytearray((www / "enc.zip").read_bytes())
    cd = data.find(b"PK\x01\x02")
    data[cd + 8] |= 0x01  # the central directory's flag bits: encrypted
    (www / "enc.zip").write_bytes(data)
    reader = Reader(http_server(www))
    with pytest.raises(UnsafeArchiveError, match="symbolic link"):
        reader.extract("link.zip", tmp_path / "a")
    with pytest.raises(BuildError, match="bzip2.*stored and deflated"):
        reader.extract("bz.zip", tmp_path / "b")
    with pytest.raises(BuildError, match="encrypted"):
        reader.extract("enc.zip", tmp_path / "c")


def test_not_a_zip_and_overlapping_members_are_refused(http_server, www, tmp_path):
    (www / "html.zip").write_bytes(b"<html>not found</html>" * 100)
    with zipfile.ZipFile(www / "ov.zip", "w") as zf:
        zf.writestr("a", b"a" * 4000, zipfile.ZIP_STORED)
        zf.writestr("b", b"b" * 4000, zipfile.ZIP_STORED)
    data = bytearray((www / "ov.zip").read_bytes())
    second = data.find(b"PK\x01\x02", data.find(b"PK\x01\x02") + 4)
    data[second + 42: second + 46] = (100).to_bytes(4, "little")  # b's local header offset: inside a's data
    (www / "ov.zip").write_bytes(data)
    reader = Reader(http_server(www))
    with pytest.raises(DamagedArchiveError, match="central directory cannot be read"):
        reader.extract("html.zip", tmp_path / "a")
    with pytest.raises(DamagedArchiveError, match="overlaps"):
        reader.extract("ov.zip", tmp_path / "b")


def test_a_byte_flipped_in_transit_refetches_that_member_only(http_server, www, tmp_path):
    zpath = mixed_zip(www / "a.zip")
    server = http_server(www)
    with zipfile.ZipFile(zpath) as zf:
        victim = next(i for i in zf.infolist() if i.filename == "top/sub1/m004.bin")
    # The first chunk GET: the byte lies inside the victim's data (the 64 KiB chunk at 0 holds it).
    assert victim.header_offset + 100 < 64 * KiB
    # HEAD, the tail's GET, then the first chunk's GET (one connection: in order).
    server.fault("a.zip", Fault(), Fault(), Fault(corrupt_at=victim.header_offset + 30 + len(victim.filename) + 10))
    reader = Reader(server, dataclasses.replace(SETTINGS, concurrency=1))
    result, _ = reader.extract("a.zip", tmp_path / "out", tail_bytes=4 * KiB)
    assert result.refetched == 1
    assert result.digest == hashlib.md5(zpath.read_bytes()).hexdigest()
    assert tree_of(tmp_path / "out") == reference(zpath, tmp_path)
    ranges = [r.headers.get("Range") for r in server.requests_for("a.zip")]
    assert f"bytes={victim.header_offset}-" in " ".join(ranges)


def test_a_member_corrupt_at_the_source_fails_after_its_retries(http_server, www, tmp_path):
    zpath = www / "bad.zip"
    with zipfile.ZipFile(zpath, "w") as zf:
        zf.writestr("ok", b"o" * 1000, zipfile.ZIP_STORED)
        zf.writestr("rotten", b"r" * 1000, zipfile.ZIP_STORED)
    data = bytearray(zpath.read_bytes())
    data[data.find(b"r" * 100) + 50] ^= 0x01
    zpath.write_bytes(data)
    with pytest.raises(BuildError, match=r"member rotten .*failed its check in 4 fetches: CRC-32"):
        Reader(http_server(www)).extract("bad.zip", tmp_path / "out")
    assert not (tmp_path / "out" / "rotten").exists()
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["ok"]  # no temporary file or directory


def test_partial_pass_fetches_only_the_members_asked_for(http_server, www, tmp_path):
    zpath = mixed_zip(www / "a.zip")
    server = http_server(www)
    reader = Reader(server)
    directory, etag = reader.directory("a.zip", tail_bytes=4 * KiB)
    names = [m.name for m in directory.members]
    skip = frozenset(names[: len(names) // 2])
    server.requests.clear()
    result = zipstream.stream_extract(reader.store, directory, etag, tmp_path / "out", SETTINGS, full=False, skip=skip)
    assert result.digest == ""
    assert result.written == len(names) - len(skip)
    got = tree_of(tmp_path / "out")
    ref = reference(zpath, tmp_path)
    assert {k: v for k, v in ref.items() if v is not None and k not in skip} == \
        {k: v for k, v in got.items() if v is not None}
    first_wanted = min(m.offset for m in directory.members if m.name not in skip)
    starts = [int(r.headers["Range"].split("=")[1].split("-")[0]) for r in server.requests_for("a.zip")]
    assert starts and min(starts) >= first_wanted - first_wanted % SETTINGS.chunk_size


def _zip_with_raw_names(path: Path, members: list[tuple[bytes, bytes, bytes]]) -> Path:
    """A zip whose member names are the given raw bytes, flag bit 11 clear (as Info-ZIP and
    old tools write them): each (raw name, extra field, data). zipfile writes an ASCII
    placeholder of the same length, patched to the raw bytes in both headers."""
    placeholders = []
    with zipfile.ZipFile(path, "w") as zf:
        for i, (raw, extra, data) in enumerate(members):
            ph = (f"{i:03d}" + "q" * len(raw))[: len(raw)].encode()
            assert len(ph) == len(raw) >= 3
            info = zipfile.ZipInfo(ph.decode())
            info.extra = extra
            zf.writestr(info, data)
            placeholders.append(ph)
    blob = path.read_bytes()
    for ph, (raw, _extra, _data) in zip(placeholders, members, strict=True):
        assert blob.count(ph) == 2
        blob = blob.replace(ph, raw)
    path.write_bytes(blob)
    return path


def _unicode_path_field(name: str, raw: bytes, crc: int | None = None) -> bytes:
    import struct
    import zlib

    body = b"\x01" + struct.pack("<L", zlib.crc32(raw) if crc is None else crc) + name.encode("utf-8")
    return struct.pack("<2H", 0x7075, len(body)) + body


def test_names_without_the_utf8_flag_are_decoded_as_unzip_does(http_server, www, tmp_path):
    _zip_with_raw_names(www / "names.zip", [
        ("top/caf\u00e9.txt".encode(), b"", b"utf-8 bytes, no flag"),           # Info-ZIP zip on Linux
        (b"top/caf\x82.cp", _unicode_path_field("top/ca\u00ef.cp", b"top/caf\x82.cp"), b"unicode path field"),
        (b"top/old\x82.dos", b"", b"cp437: not UTF-8"),
        (b"top/stale.txt", _unicode_path_field("top/other.txt", b"top/stale.txt", crc=1), b"stale field ignored"),
    ])
    Reader(http_server(www)).extract("names.zip", tmp_path / "out")
    assert tree_of(tmp_path / "out") == {
        "top": None, "top/caf\u00e9.txt": b"utf-8 bytes, no flag", "top/ca\u00ef.cp": b"unicode path field",
        "top/old\u00e9.dos": b"cp437: not UTF-8", "top/stale.txt": b"stale field ignored"}


def test_names_that_decode_to_the_same_name_are_refused_as_listed_twice(http_server, www):
    raw = "top/\u00e9.txt".encode()
    path = www / "twice.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("q" * len(raw), b"raw")  # patched to the raw UTF-8 bytes, bit 11 clear
        zf.writestr("top/\u00e9.txt", b"flagged")  # bit 11 set: the same final name
    path.write_bytes(path.read_bytes().replace(b"q" * len(raw), raw))
    with pytest.raises(DamagedArchiveError, match="listed twice"):
        Reader(http_server(www)).directory("twice.zip")


def test_an_unsafe_name_in_a_unicode_path_field_is_refused(http_server, www):
    _zip_with_raw_names(www / "evil.zip", [(b"top/ok.txt", _unicode_path_field("../evil.txt", b"top/ok.txt"), b"x")])
    with pytest.raises(UnsafeArchiveError, match=r"'\.\./evil.txt'"):
        Reader(http_server(www)).directory("evil.zip")
