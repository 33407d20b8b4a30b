"""The manifest's optional ``captions`` field (docs/manifest.md section 2a), the symlink
resolution publish's captions check uses, and ``captions merge``'s IN.json:TAG argument."""

from __future__ import annotations

import json

import pytest

from s3sync import hashing
from s3sync.captionfiles import resolve
from s3sync.cli.captions import parse_input
from s3sync.errors import ManifestError, UsageError
from s3sync.manifest import CaptionsSummary, Manifest, PartEntry

DIGEST = hashing.digest(b"stream")


def manifest(captions: CaptionsSummary | None = None, version: int = 1) -> Manifest:
    part = PartEntry("20260101T000000Z-0a1b2c3d/part-00000.tar", 10240, '"e"', DIGEST, (DIGEST,))
    return Manifest("sbu", "20260101T000000Z-0a1b2c3d", "2026-01-01T00:00:00Z", 64 * 1024, 10240, DIGEST,
                    1, 100, 2, (part,), captions=captions)


def test_the_field_round_trips_and_is_absent_without_captions() -> None:
    m = manifest(CaptionsSummary("captions.json", 1_000_000, 1_000_003))
    doc = json.loads(m.to_json())
    assert doc["captions"] == {"path": "captions.json", "images": 1_000_000, "annotations": 1_000_003}
    assert Manifest.from_json(m.to_json()) == m
    plain = manifest()
    assert "captions" not in json.loads(plain.to_json())
    assert Manifest.from_json(plain.to_json()).captions is None


def test_unknown_fields_are_ignored_so_older_readers_read_the_new_field() -> None:
    # What a version-1 reader before the field does with it: ignore it (from_json reads the
    # fields it knows by name). The same holds for fields added after this one.
    doc = json.loads(manifest(CaptionsSummary("captions.json", 3, 4)).to_json())
    doc["captions"]["languages"] = ["en"]
    doc["a_later_field"] = {"x": 1}
    got = Manifest.from_json(json.dumps(doc).encode())
    assert got.captions == CaptionsSummary("captions.json", 3, 4)


@pytest.mark.parametrize("value, words", [
    ("captions.json", "must be an object"),
    ({"path": "../../etc/passwd", "images": 1, "annotations": 1}, "not a relative path inside the dataset"),
    ({"path": "/etc/passwd", "images": 1, "annotations": 1}, "not a relative path inside the dataset"),
    ({"path": "a//b.json", "images": 1, "annotations": 1}, "not a relative path inside the dataset"),
    ({"path": ".s3sync/index", "images": 1, "annotations": 1}, "not a relative path inside the dataset"),
    ({"path": "c\x1b[2J.json", "images": 1, "annotations": 1}, "invalid value"),
    ({"path": "", "images": 1, "annotations": 1}, "non-empty string"),
    ({"path": "captions.json", "images": -1, "annotations": 1}, "captions.images"),
    ({"path": "captions.json", "images": 1, "annotations": True}, "captions.annotations' must be an integer"),
    ({"path": "captions.json", "images": 1}, "captions.annotations' must be an integer"),
])
def test_a_hostile_captions_field_is_refused(value, words: str) -> None:
    doc = json.loads(manifest().to_json())
    doc["captions"] = value
    with pytest.raises(ManifestError, match="captions") as err:
        Manifest.from_json(json.dumps(doc).encode(), "s3://b/sbu/manifest.json")
    assert words in str(err.value)
    assert str(err.value).startswith("s3://b/sbu/manifest.json: ")


def test_resolve_follows_the_trees_symlinks_and_refuses_escapes_and_loops() -> None:
    links = {"latest": "images/0004.jpg", "imgs": "images", "up": "../outside", "a": "b", "b": "a",
             "images/alias": "../imgs/0001.jpg", "here": "."}
    assert resolve("images/0001.jpg", {}) == "images/0001.jpg"
    assert resolve("images/0001.jpg", links) == "images/0001.jpg"
    assert resolve("latest", links) == "images/0004.jpg"
    assert resolve("imgs/0002.jpg", links) == "images/0002.jpg"
    assert resolve("images/alias", links) == "images/0001.jpg"
    assert resolve("here/imgs/0003.jpg", links) == "images/0003.jpg"
    assert resolve("up/x.jpg", links) is None
    assert resolve("a/x.jpg", links) is None


def test_merge_inputs_take_a_tag_after_the_last_colon_unless_the_file_exists(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_input("sbu/captions.json") == (tmp_path.joinpath("sbu/captions.json").relative_to(tmp_path), None)
    assert parse_input("coco/captions.json:mscoco")[1] == "mscoco"
    assert str(parse_input("coco/captions.json:mscoco")[0]) == "coco/captions.json"
    (tmp_path / "odd:name.json").write_text("{}")
    assert parse_input("odd:name.json") == (tmp_path.joinpath("odd:name.json").relative_to(tmp_path), None)
    with pytest.raises(UsageError):
        parse_input("x.json:")
