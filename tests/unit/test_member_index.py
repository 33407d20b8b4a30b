"""The member index format (s3sync/index.py) and its compressed file (s3sync/indexfile.py):
round trip, and hostile input refused with a message naming the line."""

from __future__ import annotations

import dataclasses
import io
import json
from pathlib import Path

import pytest

from s3sync import hashing, indexfile
from s3sync.codecs import ZstdWriter
from s3sync.errors import ManifestError, MemberIndexError
from s3sync.index import (
    MAX_LINE,
    IndexEntry,
    MemberRecord,
    encode,
    header_line,
    member_span,
    parse,
)
from s3sync.manifest import IndexRef, Manifest, PartEntry

D = hashing.digest(b"x")


def manifest_for(entries: list[IndexEntry], tar_size: int | None = None, generation: str = "g1") -> Manifest:
    """A manifest whose counts agree with ``entries`` (its parts are not used by the parser)."""
    end = max((e.offset + member_span(e.record.size) for e in entries), default=0)
    size = tar_size if tar_size is not None else end + 1024 + -(end + 1024) % 10240
    files = [e.record for e in entries if e.record.kind == "file"]
    return Manifest(name="ds", generation=generation, created="2026-01-01T00:00:00Z", chunk_size=1 << 20,
                    stream_size=size, stream_digest=D, files=len(files),
                    extracted_size=sum(r.size for r in files), members=len(entries),
                    parts=(PartEntry(f"{generation}/part-00000.tar", size, '"e"', D, (D,)),))


def sample() -> list[IndexEntry]:
    recs = [MemberRecord("a", "dir", 0, 0o755, 1700000000),
            MemberRecord("a/b.jpg", "file", 1000, 0o644, 1700000001, D),
            MemberRecord("a/c", "symlink", 0, 0o777, 1700000002, link="b.jpg"),
            MemberRecord("z é", "file", 0, 0o600, -5, hashing.digest(b""))]
    out, off = [], 0
    for r in recs:
        out.append(IndexEntry(off, r))
        off += member_span(r.size)
    return out


def lines_of(entries: list[IndexEntry], generation: str = "g1") -> list[bytes]:
    return [header_line(generation, len(entries))] + [encode(e.offset, e.record) for e in entries]


def parsed(lines: list[bytes], m: Manifest) -> list[IndexEntry]:
    return list(parse(lines, m, "s3://b/ds/g1/index.jsonl.zst"))


def test_round_trip() -> None:
    entries = sample()
    assert parsed(lines_of(entries), manifest_for(entries)) == entries


def test_round_trip_through_the_compressed_file(tmp_path: Path) -> None:
    entries = sample()
    w = indexfile.IndexWriter("g1", len(entries))
    for e in entries:
        w.add(e.offset, e.record)
    ref = w.finish()
    w._file.seek(0)
    data = w._file.read()
    w.close()
    assert ref.size == len(data) and ref.digest == hashing.digest(data)
    path = tmp_path / "i.zst"
    path.write_bytes(data)
    assert list(indexfile.read(path, manifest_for(entries))) == entries


def test_a_non_utf8_name_round_trips() -> None:
    name = b"caf\xe9.txt".decode("utf-8", "surrogateescape")
    entries = [IndexEntry(0, MemberRecord(name, "file", 3, 0o644, 0, D))]
    assert parsed(lines_of(entries), manifest_for(entries)) == entries


def replaced(entries: list[IndexEntry], i: int, **fields) -> list[IndexEntry]:
    out = list(entries)
    offset = fields.pop("offset", out[i].offset)
    out[i] = IndexEntry(offset, dataclasses.replace(out[i].record, **fields))
    return out


@pytest.mark.parametrize("path", ["/etc/passwd", "../x", "a/../../x", "a//b", "./a", "a/.", ".s3sync/index.jsonl",
                                  "a\x00b", ""])
def test_a_path_escaping_or_not_normal_is_refused(path: str) -> None:
    entries = sample()
    bad = replaced(entries, 3, path=path) if path and path[0] > "a" else replaced(entries, 0, path=path)
    with pytest.raises(MemberIndexError, match="is not a relative path inside the dataset|out of order"):
        parsed(lines_of(bad), manifest_for(entries))


@pytest.mark.parametrize("target", ["/etc/passwd", "../../x", "b/../../..", "", "a\x00"])
def test_a_symlink_leaving_the_tree_is_refused(target: str) -> None:
    entries = sample()
    with pytest.raises(MemberIndexError, match="may point outside"):
        parsed(lines_of(replaced(entries, 2, link=target)), manifest_for(entries))


def test_members_out_of_order_or_twice_are_refused() -> None:
    entries = sample()
    swapped = [entries[0], entries[2], entries[1], entries[3]]
    with pytest.raises(MemberIndexError, match="line 4: .*out of order"):
        parsed(lines_of(swapped), manifest_for(entries))
    twice = [entries[0], entries[1], IndexEntry(entries[2].offset, entries[1].record), entries[3]]
    with pytest.raises(MemberIndexError, match="out of order"):
        parsed(lines_of(twice), manifest_for(entries))


@pytest.mark.parametrize("offset", [0, 100, 512])  # overlaps the previous member, not a block
def test_offsets_out_of_order_are_refused(offset: int) -> None:
    entries = sample()
    with pytest.raises(MemberIndexError, match="line 4: offset"):
        parsed(lines_of(replaced(entries, 2, offset=offset)), manifest_for(entries))


def test_an_offset_past_the_stream_is_refused() -> None:
    entries = sample()
    m = manifest_for(entries)
    with pytest.raises(MemberIndexError, match="runs past the end"):
        parsed(lines_of(replaced(entries, 3, offset=m.tar_stream_size)), m)
    with pytest.raises(MemberIndexError, match="runs past the end"):
        parsed(lines_of(entries), dataclasses.replace(m, stream_size=entries[3].offset + 512))


@pytest.mark.parametrize("line,what", [
    (b'[0,"a","dir",0,493,0,"",""]', "cut short"),
    (b'not json\n', "not valid JSON"),
    (b'{"a": 1}\n', "array of 8"),
    (b'[0,"a","dir",0,493,0,""]\n', "array of 8"),
    (b'[0,"a","dir",0,493,true,"",""]\n', "integers"),
    (b'[0.0,"a","dir",0,493,0,"",""]\n', "integers"),
    (b'[0,"a","fifo",0,493,0,"",""]\n', "kind"),
    (b'[0,"a","hardlink",0,493,0,"",""]\n', "kind"),
    (b'[0,"a","dir",5,493,0,"",""]\n', "size"),
    (b'[0,"a","dir",0,70000,0,"",""]\n', "mode"),
    (b'[0,"a","dir",0,493,0,"abc",""]\n', "no digest"),
    (b'[0,"a","dir",0,493,0,"","x"]\n', "no link target"),
    (b'[0,"a","file",1,420,0,"ABC",""]\n', "digest"),
    (b'[0,"a","file",-1,420,0,"' + D.encode() + b'",""]\n', "size"),
    (b'[0,1,"dir",0,493,0,"",""]\n', "strings"),
    (b"[" * 100000 + b"\n", "longer than"),
])
def test_a_bad_line_is_refused_naming_it(line: bytes, what: str) -> None:
    entries = [IndexEntry(0, MemberRecord("a", "dir", 0, 0o755, 0))]
    with pytest.raises(MemberIndexError, match=f"line 2: .*{what}"):
        parsed([header_line("g1", 1), line], manifest_for(entries))


def test_a_deep_json_nesting_is_refused() -> None:
    entries = [IndexEntry(0, MemberRecord("a", "dir", 0, 0o755, 0))]
    line = b"[" * (MAX_LINE - 10) + b"\n"
    with pytest.raises(MemberIndexError, match="line 2"):
        parsed([header_line("g1", 1), line], manifest_for(entries))


def test_the_header_must_match_the_manifest() -> None:
    entries = sample()
    m = manifest_for(entries)
    with pytest.raises(MemberIndexError, match="generation 'g2'"):
        parsed(lines_of(entries, "g2"), m)
    with pytest.raises(MemberIndexError, match="not a member index"):
        parsed([b'{"format":"other"}\n'] + lines_of(entries)[1:], m)
    with pytest.raises(MemberIndexError, match="version 2 is not supported"):
        doc = json.loads(header_line("g1", 4))
        parsed([json.dumps(doc | {"version": 2}).encode() + b"\n"] + lines_of(entries)[1:], m)
    with pytest.raises(MemberIndexError, match="members"):
        parsed([header_line("g1", 3)] + lines_of(entries)[1:], m)
    with pytest.raises(MemberIndexError, match="empty"):
        parsed([], m)
    assert issubclass(MemberIndexError, ManifestError)


def test_missing_or_extra_members_are_found_at_the_end() -> None:
    entries = sample()
    m = manifest_for(entries)
    with pytest.raises(MemberIndexError, match="3 members, 1 files, 1000 bytes"):
        parsed(lines_of(entries)[:-1], m)  # the header says 4: the last member is missing
    with pytest.raises(MemberIndexError, match="more members"):
        parsed(lines_of(entries) + [encode(1024 * 1000, MemberRecord("zz", "dir", 0, 0o755, 0))],
               dataclasses.replace(m, stream_size=10 ** 7))
    with pytest.raises(MemberIndexError, match="bytes of file data"):
        parsed(lines_of(replaced(entries, 1, size=999)), m)


def compressed(lines: list[bytes]) -> bytes:
    out = io.BytesIO()
    w = ZstdWriter(out)
    w.write(b"".join(lines))
    w.close()
    return out.getvalue()


@pytest.mark.parametrize("cut", [1, 5, 20])
def test_truncated_compressed_data_is_refused(tmp_path: Path, cut: int) -> None:
    entries = sample()
    data = compressed(lines_of(entries))
    path = tmp_path / "i.zst"
    path.write_bytes(data[:-cut])
    with pytest.raises(MemberIndexError):
        list(indexfile.read(path, manifest_for(entries)))


def test_garbage_instead_of_zstd_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "i.zst"
    path.write_bytes(b"".join(lines_of(sample())))  # not compressed
    with pytest.raises(MemberIndexError):
        list(indexfile.read(path, manifest_for(sample())))


def test_the_manifest_field_round_trips_and_is_checked() -> None:
    m = manifest_for(sample())
    ref = IndexRef("g1/index.jsonl.zst", 123, D)
    with_index = dataclasses.replace(m, index=ref)
    assert Manifest.from_json(with_index.to_json()) == with_index
    assert Manifest.from_json(m.to_json()).index is None
    doc = json.loads(with_index.to_json())
    for field, value, what in [("key", "g2/index.jsonl.zst", "index.key"), ("key", "../x/index.jsonl.zst", "index.key"),
                               ("size", 0, "index.size"), ("size", "1", "index.size"),
                               ("digest", "zz", "index.digest")]:
        bad = json.loads(json.dumps(doc))
        bad["index"][field] = value
        with pytest.raises(ManifestError, match=what):
            Manifest.from_json(json.dumps(bad).encode())
