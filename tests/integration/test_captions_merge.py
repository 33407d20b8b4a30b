"""``captionfiles.merge_files`` on files on disk: an SBU-like and a COCO-like captions file
become one whose counts are the sum, whose ids are unique, whose ``file_name``s resolve from
the output's directory, and whose images carry the dataset they came from (issue 12, section 4).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from s3sync import captions
from s3sync.captionfiles import MergeSource, default_tag, merge_files
from s3sync.errors import CaptionsError, DestinationError, UsageError


def sbu_like(root: Path, n: int = 5) -> Path:
    """SBU as the builder writes it: ids = 0-based line numbers, one caption each, flickr_url."""
    images, anns = [], []
    for i in range(n):
        rel = f"images/{i // 3:04d}/{i:09d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(os.urandom(100))
        images.append({"id": i, "file_name": rel, "flickr_url": f"http://static.flickr.com/{i}.jpg",
                       "width": 500, "height": 375})
        anns.append({"id": i, "image_id": i, "caption": f"sbu caption {i}"})
    path = root / "captions.json"
    path.write_bytes(captions.dumps(captions.new_document("SBU", images, anns)))
    return path


def coco_like(root: Path, n: int = 3) -> Path:
    """COCO's shape: large sparse ids, five captions per image, licences, two splits."""
    images, anns = [], []
    for i in range(n):
        split = "train2014" if i % 2 == 0 else "val2014"
        image_id = 9 + 1000 * i
        rel = f"{split}/COCO_{split}_{image_id:012d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(os.urandom(100))
        images.append({"id": image_id, "file_name": rel, "license": 3, "width": 640, "height": 480})
        anns += [{"id": 48 + 7 * (5 * i + k), "image_id": image_id, "caption": f"coco {i}.{k} café"}
                 for k in range(5)]
    path = root / "captions.json"
    lic = [{"id": 3, "name": "Attribution-NonCommercial License", "url": "http://creativecommons.org/"}]
    path.write_bytes(captions.dumps(captions.new_document("COCO", images, anns, lic)))
    return path


def test_sbu_and_coco_merge_into_one_file_relative_to_its_directory(tmp_path: Path) -> None:
    sbu = sbu_like(tmp_path / "data" / "sbu")
    coco = coco_like(tmp_path / "data" / "mscoco")
    out = tmp_path / "data" / "captions.json"
    result = merge_files(out, [MergeSource(sbu, default_tag(sbu)), MergeSource(coco, "coco")])

    assert [(i.dataset, i.prefix, i.images, i.annotations) for i in result.inputs] == [
        ("sbu", "sbu", 5, 5), ("coco", "mscoco", 3, 15)]
    assert (result.images, result.annotations) == (8, 20)
    doc = captions.parse(out.read_bytes(), str(out))
    # counts preserved, ids unique, every file_name a file relative to OUT's directory
    assert captions.check(doc, str(out), lambda name: (out.parent / name).is_file()) == captions.CaptionCounts(8, 20)
    assert len({im["id"] for im in doc["images"]}) == 8
    assert len({a["id"] for a in doc["annotations"]}) == 20
    assert [im["dataset"] for im in doc["images"]] == ["sbu"] * 5 + ["coco"] * 3
    assert doc["images"][0]["file_name"] == "sbu/images/0000/000000000.jpg"
    assert doc["images"][5]["file_name"] == "mscoco/train2014/COCO_train2014_000000000009.jpg"
    assert doc["images"][5]["source_id"] == 9 and doc["images"][0]["flickr_url"].startswith("http://")
    # each caption still describes its own image
    by_id = {im["id"]: im for im in doc["images"]}
    for ann in doc["annotations"]:
        image = by_id[ann["image_id"]]
        if image["dataset"] == "coco":
            assert ann["caption"].startswith(f"coco {(image['source_id'] - 9) // 1000}.")
        else:
            assert ann["caption"] == f"sbu caption {image['source_id']}"
    assert doc["licenses"][0]["id"] == doc["images"][5]["license"]
    assert result.size == out.stat().st_size
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary file left


def test_merge_in_the_inputs_own_directory_keeps_file_names(tmp_path: Path) -> None:
    sbu = sbu_like(tmp_path)
    out = tmp_path / "merged.json"
    result = merge_files(out, [MergeSource(sbu, "sbu")])
    assert result.inputs[0].prefix == ""
    assert json.loads(out.read_text())["images"][0]["file_name"] == "images/0000/000000000.jpg"


def test_merge_refuses_to_overwrite_unless_forced_and_never_an_input(tmp_path: Path) -> None:
    sbu = sbu_like(tmp_path / "sbu")
    out = tmp_path / "captions.json"
    out.write_text("keep me")
    with pytest.raises(DestinationError, match="exists: not overwritten"):
        merge_files(out, [MergeSource(sbu, "sbu")])
    assert out.read_text() == "keep me"
    merge_files(out, [MergeSource(sbu, "sbu")], force=True)
    assert json.loads(out.read_text())["images"][0]["dataset"] == "sbu"
    before = sbu.read_bytes()
    with pytest.raises(UsageError, match="is also an input"):
        merge_files(sbu, [MergeSource(sbu, "sbu")], force=True)
    assert sbu.read_bytes() == before


def test_merge_refuses_inputs_outside_the_outputs_directory(tmp_path: Path) -> None:
    sbu = sbu_like(tmp_path / "sbu")
    (tmp_path / "out").mkdir()
    with pytest.raises(UsageError, match=r"is not under .* file_names would start with '\.\./sbu/'"):
        merge_files(tmp_path / "out" / "captions.json", [MergeSource(sbu, "sbu")])
    assert not (tmp_path / "out" / "captions.json").exists()


def test_a_broken_input_is_named_and_nothing_is_written(tmp_path: Path) -> None:
    sbu = sbu_like(tmp_path / "sbu")
    coco = coco_like(tmp_path / "coco")
    os.unlink(tmp_path / "coco" / "val2014" / "COCO_val2014_000000001009.jpg")
    out = tmp_path / "captions.json"
    with pytest.raises(CaptionsError, match=r"coco/captions.json: 1 problem .* does not exist"):
        merge_files(out, [MergeSource(sbu, "sbu"), MergeSource(coco, "coco")])
    with pytest.raises(CaptionsError, match="cannot read"):
        merge_files(out, [MergeSource(tmp_path / "nope.json", "x")])
    assert not out.exists()


def test_an_input_given_twice_or_two_inputs_with_one_tag_are_refused(tmp_path: Path) -> None:
    sbu = sbu_like(tmp_path / "sbu")
    out = tmp_path / "captions.json"
    with pytest.raises(UsageError, match="is given twice"):
        merge_files(out, [MergeSource(sbu, "sbu"), MergeSource(tmp_path / "sbu" / ".." / "sbu" / sbu.name, "x")])
    other = sbu_like(tmp_path / "b" / "sbu")
    with pytest.raises(UsageError, match="would both tag their images 'sbu'") as err:
        merge_files(out, [MergeSource(sbu, "sbu"), MergeSource(other, "sbu")])
    assert "IN.json:TAG" in err.value.hint
    assert not out.exists()
