"""Captions at publish, in the manifest, and in verify, on moto and ``rclone serve s3`` (issue 12, section 4).

A good ``captions.json`` puts its counts in the manifest and a pull then verifies them; a
broken one (a caption pointing at a missing image, an image without caption, a missing file,
invalid JSON) stops the publish before anything is written to the bucket; a dataset without
one publishes as before; ``verify`` names a captions file whose counts changed after the pull.
The pipelines are called directly; tests/e2e/test_captions_cli.py drives the command.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from s3sync.config import Location, S3Settings, TransferSettings
from s3sync.errors import CaptionsError
from s3sync.manifest import MANIFEST_NAME, CaptionsSummary, Manifest
from s3sync.publish import publish
from s3sync.pull import pull
from s3sync.stores.s3 import S3Store, make_client
from s3sync.verify import verify

SMALL = TransferSettings(concurrency=4, chunk_size=64 * 1024, part_size=256 * 1024, window=8)


@pytest.fixture
def store(s3_server, bucket):
    s = S3Store(make_client(S3Settings(endpoint_url=s3_server.endpoint_url)), bucket, concurrency=4)
    yield s
    s.close()


def make_dataset(root: Path, n: int = 6, per_image: int = 2) -> dict:
    """``n`` small images under ``images/`` and a COCO-model ``captions.json`` naming them."""
    images, anns = [], []
    for i in range(n):
        rel = f"images/{i // 4:04d}/{i:09d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(os.urandom(2000 + i))
        images.append({"id": 1000 + i, "file_name": rel, "width": 4, "height": 3})
        anns += [{"id": 5000 + per_image * i + k, "image_id": 1000 + i, "caption": f"photo {i} caption {k}"}
                 for k in range(per_image)]
    doc = {"info": {"description": "test"}, "images": images, "annotations": anns}
    write_captions(root, doc)
    return doc


def write_captions(root: Path, doc: dict) -> None:
    (root / "captions.json").write_text(json.dumps(doc))


def objects(s3_client, bucket: str) -> dict[str, str]:
    """Key -> ETag of every object in the bucket."""
    out = {}
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        out.update({o["Key"]: o["ETag"] for o in page.get("Contents", [])})
    return out


def test_good_captions_go_into_the_manifest_and_verify_checks_them(store, bucket, s3_client, tmp_path: Path) -> None:
    src = tmp_path / "src" / "sbu"
    make_dataset(src, n=6, per_image=2)
    loc = Location(bucket, "sbu")
    result = publish(src, "sbu", loc, store, SMALL)
    assert result.manifest.captions == CaptionsSummary("captions.json", 6, 12)
    stored = Manifest.from_json(s3_client.get_object(Bucket=bucket, Key=f"sbu/{MANIFEST_NAME}")["Body"].read())
    assert stored.captions == CaptionsSummary("captions.json", 6, 12)
    assert json.loads(stored.to_json())["captions"] == {"path": "captions.json", "images": 6, "annotations": 12}

    pulled = pull(loc, None, tmp_path / "dest", store, SMALL)
    assert pulled.manifest.captions == CaptionsSummary("captions.json", 6, 12)
    ok = verify(pulled.dest)
    assert ok.problems == ()
    assert (ok.captions.images, ok.captions.annotations) == (6, 12)

    # Rewritten with fewer captions after the pull (every image keeps one: it still holds
    # together, only the counts tell): verify names it, beside the changed bytes.
    doc = json.loads((pulled.dest / "captions.json").read_text())
    doc["annotations"] = doc["annotations"][::2]
    write_captions(pulled.dest, doc)
    bad = verify(pulled.dest)
    kinds = {(p.path, p.kind) for p in bad.problems}
    assert ("captions.json", "captions") in kinds and ("captions.json", "changed") in kinds
    detail = next(p.detail for p in bad.problems if p.kind == "captions")
    assert "6 images and 6 captions, but the manifest records 6 images and 12 captions" in detail

    # A captions file that no longer holds together is named too.
    doc["annotations"] = doc["annotations"][1:]
    write_captions(pulled.dest, doc)
    lines = [p.detail for p in verify(pulled.dest).problems if p.kind == "captions"]
    assert any("1 image has no caption" in line for line in lines), lines


def test_a_dataset_without_captions_publishes_as_before(store, bucket, s3_client, tmp_path: Path) -> None:
    src = tmp_path / "plain"
    (src / "a").mkdir(parents=True)
    (src / "a" / "x.bin").write_bytes(b"x" * 5000)
    result = publish(src, "plain", Location(bucket, "plain"), store, SMALL)
    assert result.manifest.captions is None
    raw = json.loads(s3_client.get_object(Bucket=bucket, Key=f"plain/{MANIFEST_NAME}")["Body"].read())
    assert "captions" not in raw
    pulled = pull(Location(bucket, "plain"), None, tmp_path / "dest", store, SMALL)
    assert verify(pulled.dest).problems == () and verify(pulled.dest).captions is None


def _missing_image(root: Path, doc: dict) -> None:
    os.unlink(root / doc["images"][2]["file_name"])


def _orphan_caption(root: Path, doc: dict) -> None:
    doc["annotations"].append({"id": 1, "image_id": 424242, "caption": "points at nothing"})
    write_captions(root, doc)


def _uncaptioned_image(root: Path, doc: dict) -> None:
    doc["annotations"] = [a for a in doc["annotations"] if a["image_id"] != doc["images"][3]["id"]]
    write_captions(root, doc)


def _invalid_json(root: Path, doc: dict) -> None:
    (root / "captions.json").write_bytes(json.dumps(doc).encode()[:-40])  # cut short, as a torn copy


def _lost_captions(root: Path, doc: dict) -> None:
    # The ImageNet accident: most captions gone, the images still listed.
    doc["annotations"] = doc["annotations"][: len(doc["annotations"]) // 3]
    write_captions(root, doc)


@pytest.mark.parametrize("damage, words", [
    (_missing_image, "file_name 'images/0000/000000002.jpg' does not exist"),
    (_orphan_caption, "points at image_id 424242, which is not an image"),
    (_uncaptioned_image, "1 image has no caption (first: image 1003)"),
    (_invalid_json, "not valid JSON"),
    (_lost_captions, "4 images have no caption"),
], ids=["missing-image", "orphan-caption", "uncaptioned-image", "invalid-json", "lost-captions"])
def test_a_broken_captions_file_is_refused_before_any_upload(store, bucket, s3_client, tmp_path: Path,
                                                             damage, words: str) -> None:
    # A first, good generation: the refused publish must leave it exactly as it was.
    src = tmp_path / "ds"
    doc = make_dataset(src)
    publish(src, "ds", Location(bucket, "ds"), store, SMALL)
    before = objects(s3_client, bucket)
    damage(src, doc)
    with pytest.raises(CaptionsError) as err:
        publish(src, "ds", Location(bucket, "ds"), store, SMALL)
    message = str(err.value)
    assert message.startswith(str(src / "captions.json") + ": "), message
    assert words in message, message
    assert objects(s3_client, bucket) == before  # no lease, no part, no manifest change

    # And into an empty prefix: nothing at all is written.
    with pytest.raises(CaptionsError):
        publish(src, "fresh", Location(bucket, "fresh"), store, SMALL)
    assert not [k for k in objects(s3_client, bucket) if k.startswith("fresh/")]


def test_file_names_through_symlinks_inside_the_tree_count_as_files(store, bucket, tmp_path: Path) -> None:
    src = tmp_path / "linked"
    doc = make_dataset(src, n=4, per_image=1)
    (src / "imgs").symlink_to("images")  # a directory link, as a dataset reorganised in place
    (src / "first.jpg").symlink_to(doc["images"][0]["file_name"])
    doc["images"][1]["file_name"] = doc["images"][1]["file_name"].replace("images/", "imgs/", 1)
    doc["images"][0]["file_name"] = "first.jpg"
    doc["images"][2]["file_name"] = "images/./" + doc["images"][2]["file_name"][len("images/"):]
    (src / "captions-real.json").write_text(json.dumps(doc))
    (src / "captions.json").unlink()
    (src / "captions.json").symlink_to("captions-real.json")  # the captions file itself may be a link
    result = publish(src, "linked", Location(bucket, "linked"), store, SMALL)
    assert result.manifest.captions == CaptionsSummary("captions.json", 4, 4)
    pulled = pull(Location(bucket, "linked"), None, tmp_path / "dest", store, SMALL)
    assert verify(pulled.dest).problems == ()

    # A file_name that names a directory (through the link) is not a file.
    doc["images"][3]["file_name"] = "imgs/"
    (src / "captions-real.json").write_text(json.dumps(doc))
    with pytest.raises(CaptionsError, match="file_name 'imgs/' does not exist"):
        publish(src, "linked", Location(bucket, "linked"), store, SMALL)


@pytest.mark.parametrize("damage", ["truncated", "other counts"])
def test_repair_of_a_damaged_captions_file_is_a_success(store, tmp_path: Path, damage: str) -> None:
    """verify flags captions.json twice (its bytes, its counts); repair fetches it again and must
    then report nothing unrepaired (a second new user saw exit 1 after a repair that worked)."""
    from s3sync.repair import repair, source_of
    src = tmp_path / "src" / "ds"
    make_dataset(src)
    loc = Location(store.bucket, "ds")
    settings = TransferSettings(concurrency=2)
    publish(src, "ds", loc, store, settings)
    dest = pull(loc, None, tmp_path / "data", store, settings).dest
    caps = dest / "captions.json"
    if damage == "truncated":
        caps.write_bytes(caps.read_bytes()[:10])
    else:
        caps.write_text(json.dumps({"images": [], "annotations": []}))
    assert {p.kind for p in verify(dest).problems} >= {"captions"}
    result = repair(dest, source_of(dest), store, settings)
    assert result.fetched == ("captions.json",) and result.unrepaired == ()
    assert verify(dest).problems == ()
