"""The member index round-trips, and ``index.parse`` answers any damage with MemberIndexError.

Trees are drawn as real directories and published through ``archive.write_tar`` (the writer
publish uses), so the property covers the offsets and digests publish computes: every entry's
header is at its offset in the stream, and the parsed index equals what the writer reported.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from s3sync import archive, hashing
from s3sync.errors import MemberIndexError
from s3sync.index import IndexEntry, encode, header_line, parse
from s3sync.manifest import Manifest, PartEntry

names = st.text(st.characters(codec="utf-8", exclude_characters="/\x00", exclude_categories=("Cs",)),
                min_size=1, max_size=12).filter(lambda n: n not in (".", "..", ".s3sync"))
trees = st.dictionaries(st.tuples(names, st.none() | names), st.integers(0, 3000), min_size=1, max_size=12)


def build(root: Path, tree: dict) -> None:
    for (top, sub), size in tree.items():
        path = root / top / sub if sub else root / top
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            if not path.exists():
                path.write_bytes(os.urandom(size))
        except (OSError, UnicodeEncodeError):
            continue  # a name taken as a file and a directory: skip


def published(tree: dict) -> tuple[list[IndexEntry], bytes, Manifest]:
    with tempfile.TemporaryDirectory() as tmp:
        build(Path(tmp), tree)
        entries: list[IndexEntry] = []
        out = io.BytesIO()
        stats = archive.write_tar(archive.scan_tree(Path(tmp)), out, lambda span: None,
                                  on_member=lambda off, rec: entries.append(IndexEntry(off, rec)))
    data = out.getvalue()
    d = hashing.digest(data)
    m = Manifest(name="ds", generation="g1", created="c", chunk_size=1 << 29, stream_size=len(data),
                 stream_digest=d, files=stats.files, extracted_size=stats.extracted_size, members=stats.members,
                 parts=(PartEntry("g1/part-00000.tar", len(data), '"e"', d, (d,)),))
    return entries, data, m


def lines(entries: list[IndexEntry]) -> list[bytes]:
    return [header_line("g1", len(entries))] + [encode(e.offset, e.record) for e in entries]


@given(trees)
def test_what_publish_writes_round_trips_and_matches_the_stream(tree: dict) -> None:
    entries, data, m = published(tree)
    assert list(parse(lines(entries), m)) == entries
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for e, t in zip(entries, tar.getmembers(), strict=True):
            assert e.offset == t.offset and e.record.path == t.name.rstrip("/")
            if t.isreg():
                assert e.record.digest == hashing.digest(data[t.offset_data:t.offset_data + t.size])


@given(trees, st.data())
def test_any_damage_to_a_line_is_refused_or_harmless(tree: dict, data: st.DataObject) -> None:
    """Change one value of one line to another JSON value: the parser either refuses with
    MemberIndexError or yields entries that still obey every rule (never another exception)."""
    entries, _, m = published(tree)
    raw = lines(entries)
    i = data.draw(st.integers(1, len(raw) - 1))
    value = json.loads(raw[i])
    j = data.draw(st.integers(0, 7))
    value[j] = data.draw(st.none() | st.booleans() | st.integers(-2**64, 2**64) | st.text(max_size=5)
                         | st.just("../x") | st.just("/abs"))
    raw[i] = json.dumps(value).encode() + b"\n"
    try:
        got = list(parse(raw, m))
    except MemberIndexError:
        return
    offsets = [e.offset for e in got]
    assert offsets == sorted(set(offsets)) and all(o % 512 == 0 for o in offsets)
    assert all(not e.record.path.startswith("/") and ".." not in e.record.path.split("/") for e in got)


@given(trees, st.data())
def test_dropping_or_duplicating_a_line_is_refused(tree: dict, data: st.DataObject) -> None:
    entries, _, m = published(tree)
    raw = lines(entries)
    i = data.draw(st.integers(1, len(raw) - 1))
    damaged = raw[:i] + raw[i + 1:] if data.draw(st.booleans()) else raw[:i + 1] + raw[i:]
    try:
        list(parse(damaged, m))
    except MemberIndexError:
        return
    raise AssertionError("a dropped or duplicated line was accepted")


@given(st.text(max_size=30) | st.text(st.characters(max_codepoint=127), max_size=30), st.text(max_size=10),
       st.integers(0, 2**63), st.integers(0, 2**40))
def test_encode_writes_what_json_dumps_writes(path: str, link: str, offset: int, size: int) -> None:
    from s3sync.index import MemberRecord

    r = MemberRecord(path, "file", size, 0o644, 1700000000, hashing.digest(b"x"), link)
    expect = (json.dumps((offset, r.path, r.kind, r.size, r.mode, r.mtime, r.digest, r.link), ensure_ascii=False,
                         separators=(",", ":")) + "\n").encode("utf-8", "surrogateescape")
    assert encode(offset, r) == expect


@given(st.lists(st.lists(names, min_size=1, max_size=3).map("/".join), max_size=20))
def test_the_one_step_order_is_the_order_of_component_lists(paths: list[str]) -> None:
    from s3sync.index import _sort_key

    def components(p: str) -> list[bytes]:
        return [c.encode("utf-8", "surrogateescape") for c in p.split("/")]

    assert sorted(paths, key=_sort_key) == sorted(paths, key=components)
