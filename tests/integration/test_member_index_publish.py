"""The member index published with the manifest (issue 13 section 1), on moto and rclone.

A publish writes ``<generation>/index.jsonl.zst`` before the manifest and names it there; the
index agrees with the tar stream (every member's header is at its offset, its data hashes to its
digest) and with a pull's own record of what it extracted; ``indexfile.fetch`` refuses an index
whose bytes differ from the manifest's digest.
"""

from __future__ import annotations

import dataclasses
import io
import os
import tarfile
from pathlib import Path

import pytest

from s3sync import hashing, indexfile
from s3sync.config import Location, TransferSettings
from s3sync.errors import MemberIndexError
from s3sync.journal import iter_index
from s3sync.leftovers import survey
from s3sync.manifest import INDEX_NAME, MANIFEST_NAME, Manifest
from s3sync.publish import publish
from s3sync.pull import pull
from s3sync.stores.s3 import S3Store

SMALL = TransferSettings(concurrency=4, chunk_size=64 * 1024, part_size=256 * 1024, window=8)


def make_tree(root: Path) -> Path:
    """Small and large files (one above archive.SMALL_FILE, streamed and hashed on the way),
    an empty file, an empty directory, a symlink, a non-ASCII and a long name."""
    (root / "images" / "0000").mkdir(parents=True)
    (root / "empty_dir").mkdir()
    for i in range(40):
        (root / "images" / "0000" / f"{i:09d}.jpg").write_bytes(os.urandom(100 + 997 * i))
    (root / "big.bin").write_bytes(os.urandom(1024 * 1024 + 4097))
    (root / "empty.txt").write_bytes(b"")
    (root / "captions.json").write_text('{"images": [], "annotations": []}')
    (root / "résumé é.txt").write_text("accents")
    (root / ("x" * 150 + ".txt")).write_text("long name: a pax header")
    os.symlink("images/0000/000000001.jpg", root / "link.jpg")
    return root


def published(store: S3Store, tmp_path: Path, name: str = "ds") -> tuple[Path, Location, Manifest]:
    src = make_tree(tmp_path / "src" / name)
    loc = Location(store.bucket, name)
    m = publish(src, name, loc, store, SMALL).manifest
    return src, loc, m


def read_all(store: S3Store, loc: Location, m: Manifest, tmp_path: Path) -> list[indexfile.IndexEntry]:
    path = indexfile.fetch(store, loc, m, tmp_path / "index.zst")
    return list(indexfile.read(path, m, loc.url(m.index.key)))


def stream(store: S3Store, loc: Location, m: Manifest) -> bytes:
    return b"".join(store.get(loc.key(p.key)) for p in m.parts)


def test_publish_writes_an_index_that_matches_the_stream(store: S3Store, tmp_path: Path) -> None:
    src, loc, m = published(store, tmp_path)
    assert m.index is not None and m.index.key == f"{m.generation}/{INDEX_NAME}"
    head = store.head(loc.key(m.index.key))
    assert head.size == m.index.size
    assert hashing.digest(store.get(loc.key(m.index.key))) == m.index.digest
    again = Manifest.from_json(store.get(loc.key(MANIFEST_NAME)))
    assert again.index == m.index

    entries = read_all(store, loc, m, tmp_path)
    assert len(entries) == m.members
    data = stream(store, loc, m)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        members = tar.getmembers()
    assert [e.offset for e in entries] == [t.offset for t in members]
    for e, t in zip(entries, members, strict=True):
        r = e.record
        assert r.path == t.name.rstrip("/")
        assert r.mode == t.mode and r.mtime == int(t.mtime)
        if t.isreg():
            assert r.kind == "file" and r.size == t.size
            assert r.digest == hashing.digest(data[t.offset_data:t.offset_data + t.size])
        elif t.isdir():
            assert r.kind == "dir" and r.digest == ""
        else:
            assert r.kind == "symlink" and r.link == t.linkname
    assert {e.record.path for e in entries} >= {"big.bin", "résumé é.txt", "x" * 150 + ".txt", "empty_dir"}


def test_index_agrees_with_what_a_pull_records(store: S3Store, tmp_path: Path) -> None:
    _, loc, m = published(store, tmp_path)
    pull(loc, None, tmp_path / "dest", store, SMALL)
    pulled = {r.path: r for r in iter_index(tmp_path / "dest" / "ds" / ".s3sync" / "index.jsonl")}
    for e in read_all(store, loc, m, tmp_path):
        got = pulled[e.record.path]
        assert (got.kind, got.size, got.digest, got.link) == (e.record.kind, e.record.size, e.record.digest,
                                                              e.record.link)


def test_fetch_refuses_an_index_that_is_not_the_manifests(store: S3Store, tmp_path: Path) -> None:
    _, loc, m = published(store, tmp_path)
    key = loc.key(m.index.key)
    good = store.get(key)
    store.put(key, good[:-1] + bytes([good[-1] ^ 1]))  # same size, one bit off
    with pytest.raises(MemberIndexError, match="differs from the manifest"):
        indexfile.fetch(store, loc, m, tmp_path / "i")
    store.put(key, good[: len(good) // 2])  # cut short
    with pytest.raises(MemberIndexError):
        indexfile.fetch(store, loc, m, tmp_path / "i")
    store.delete([key])
    with pytest.raises(MemberIndexError, match="missing"):
        indexfile.fetch(store, loc, m, tmp_path / "i")
    with pytest.raises(MemberIndexError, match="has no member index"):
        indexfile.fetch(store, loc, dataclasses.replace(m, index=None), tmp_path / "i")


def test_the_index_is_one_of_the_generations_own_objects(store: S3Store, tmp_path: Path) -> None:
    src, loc, m1 = published(store, tmp_path)
    (src / "new.txt").write_text("second generation")
    m2 = publish(src, "ds", loc, store, SMALL).manifest
    found = survey(store, loc, m2.generation)
    kinds = {g.name: g.kind for g in found.generations}
    assert kinds == {m1.generation: "history", m2.generation: "current"}
    names = {o.key.rsplit("/", 1)[1] for g in found.generations for o in g.objects}
    assert INDEX_NAME in names
