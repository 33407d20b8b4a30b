"""Manifest format version 2 (``adopt``: pieces in place, compression; docs/manifest.md
section 7): written only for adopted datasets, read and validated as strictly as version 1;
a reader that does not know a version says to upgrade."""

from __future__ import annotations

import copy
import json

import pytest

from s3sync import codecs, hashing, manifest, pieces
from s3sync.errors import ManifestError
from s3sync.manifest import Adoption, Manifest, PartEntry, PieceEvidence

CHUNK = 64 * 1024


def adopted(compression: str = "gzip", sizes: tuple[int, ...] = (100_000, 60_001), tar_size: int = 409_600,
            evidence: str = "sidecar") -> Manifest:
    parts = []
    for i, size in enumerate(sizes):
        chunks = tuple(hashing.digest(bytes([i, n])) for n in range(-(-size // CHUNK)))
        parts.append(PartEntry(f"sbu.tar.gz.part{i + 1}", size, f'"etag{i}"',
                               chunks[0] if len(chunks) == 1 else hashing.digest(bytes([i])), chunks))
    ev = PieceEvidence("sidecar", "md5", "0" * 32, "MD5SUMS") if evidence == "sidecar" else \
        PieceEvidence("none", source="no sidecar")
    stream = sum(sizes)
    return Manifest(name="sbu", generation="adopted-20260101T000000Z-0a1b2c3d", created="2026-01-01T00:00:00Z",
                    chunk_size=CHUNK, stream_size=stream, stream_digest=hashing.digest(b"s"),
                    files=10, extracted_size=500_000, members=12, parts=tuple(parts), version=2,
                    compression=compression, tar_size=tar_size if compression != "none" else stream,
                    adopted=Adoption("s3://b/sbu", (ev,) * len(sizes)))


def doc(m: Manifest) -> dict:
    return json.loads(m.to_json())


def parse(d: dict) -> Manifest:
    return Manifest.from_json(json.dumps(d).encode(), "s3://b/sbu/manifest.json")


def test_compressions_and_evidence_kinds_agree_with_codecs_and_pieces() -> None:
    assert manifest.COMPRESSIONS == codecs.CODECS
    assert manifest.EVIDENCE_KINDS == pieces.EVIDENCE_KINDS


def test_the_metadata_directory_name_agrees_with_archive() -> None:
    from s3sync import archive
    assert manifest.METADATA_DIR == archive.METADATA_DIR


@pytest.mark.parametrize("compression", ["gzip", "none"])
def test_a_version_2_manifest_round_trips(compression: str) -> None:
    # Uncompressed: the tar stream is the stored one; extracted_size may exceed it (sparse files).
    m = adopted(compression, sizes=(100_352, 61_440) if compression == "none" else (100_000, 60_001))
    data = m.to_json()
    assert Manifest.from_json(data) == m and Manifest.from_json(data).to_json() == data
    d = json.loads(data)
    assert (d["version"], d["compression"], d["tar_size"]) == (2, compression, m.tar_stream_size)
    assert d["adopted"]["evidence"][0] == {"kind": "sidecar", "algorithm": "md5", "expected": "0" * 32,
                                           "source": "MD5SUMS"}


def test_publish_keeps_writing_version_1_without_the_new_fields() -> None:
    m = adopted()
    v1 = Manifest(name="d", generation="g1", created="c", chunk_size=CHUNK, stream_size=1024,
                  stream_digest=hashing.digest(b"x"), files=0, extracted_size=0, members=0,
                  parts=(PartEntry("g1/part-00000.tar", 1024, "e", hashing.digest(b"x"), (hashing.digest(b"x"),)),))
    d = json.loads(v1.to_json())
    assert d["version"] == 1 and not {"compression", "tar_size", "adopted"} & set(d)
    assert m.version == 2


def test_a_newer_version_is_refused_saying_to_upgrade() -> None:
    d = doc(adopted())
    d["version"] = 3
    with pytest.raises(ManifestError, match="format version 3 is not supported .*upgrade s3sync") as info:
        parse(d)
    assert "upgrade s3sync" in info.value.hint


def _set(path, value):
    def mutate(d):
        target = d
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value
    return mutate


BAD = [
    ("piece key with a slash", _set(("parts", 0, "key"), "g1/part-00000.tar")),
    ("piece key dot-dot", _set(("parts", 0, "key"), "..")),
    ("piece key is the manifest", _set(("parts", 0, "key"), "manifest.json")),
    ("piece key with a newline", _set(("parts", 0, "key"), "a\nb")),
    ("piece key with DEL", _set(("parts", 0, "key"), "a\x7fb")),
    ("piece key too long", _set(("parts", 0, "key"), "é" * 513)),
    ("piece key named twice", lambda d: d["parts"][1].__setitem__("key", d["parts"][0]["key"])),
    ("unknown compression", _set(("compression",), "lz4")),
    ("no compression", lambda d: d.pop("compression")),
    ("tar_size missing", lambda d: d.pop("tar_size")),
    ("tar_size negative", _set(("tar_size",), -1)),
    ("tar_size too small for the headers", _set(("tar_size",), 512)),
    ("uncompressed tar_size differs from stream.size", lambda d: d.update(compression="none")),
    ("adopted missing", lambda d: d.pop("adopted")),
    ("evidence count differs from parts", lambda d: d["adopted"]["evidence"].pop()),
    ("unknown evidence kind", _set(("adopted", "evidence", 0, "kind"), "trust-me")),
    ("evidence digest not hex", _set(("adopted", "evidence", 0, "expected"), "zz")),
    ("evidence none with a digest", lambda d: d["adopted"]["evidence"][0].update(kind="none")),
    ("adopted source empty", _set(("adopted", "source"), "")),
    ("more files than members", _set(("dataset", "files"), 13)),
    ("one-chunk part digest differs", lambda d: d["parts"][1].__setitem__("digest", "4" * 32)),
    ("chunk count wrong", lambda d: d["parts"][0]["chunks"].pop()),
]


@pytest.mark.parametrize("mutate", [m for _, m in BAD], ids=[n for n, _ in BAD])
def test_version_2_is_validated_as_strictly_as_version_1(mutate) -> None:
    d = copy.deepcopy(doc(adopted()))
    parse(d)  # valid before the damage
    mutate(d)
    with pytest.raises(ManifestError):
        parse(d)
