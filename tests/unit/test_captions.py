"""captions: parse, check, merge and the NeuralTalk2 list on small documents."""

from __future__ import annotations

import json

import pytest

from s3sync import captions
from s3sync.errors import CaptionsError


def doc(n_images: int = 2, prefix: str = "images/") -> dict:
    images = [{"id": 10 + i, "file_name": f"{prefix}{i}.jpg", "width": 4, "height": 3} for i in range(n_images)]
    anns = [{"id": 100 + i, "image_id": 10 + i, "caption": f"a photo {i}"} for i in range(n_images)]
    anns.append({"id": 999, "image_id": 10, "caption": "another"})
    return captions.new_document("test", images, anns)


def test_a_sound_document_checks_and_round_trips() -> None:
    d = doc()
    parsed = captions.parse(captions.dumps(d), "c.json")
    assert captions.check(parsed, "c.json", exists=lambda name: True) == captions.CaptionCounts(2, 3)


@pytest.mark.parametrize("data, words", [
    (b"{", "not valid JSON"),
    (b"\xff{}", "not UTF-8"),
    (b"[]", "top level is a JSON list"),
    (b'{"images": []}', "'annotations' is missing"),
    (b'{"images": {}, "annotations": []}', "'images' is a dict, not a list"),
])
def test_unparsable_files_are_named(data: bytes, words: str) -> None:
    with pytest.raises(CaptionsError, match=words) as err:
        captions.parse(data, "x/captions.json")
    assert str(err.value).startswith("x/captions.json: ")


def test_check_names_the_first_problems_and_counts_them_all() -> None:
    d = doc(5)
    d["annotations"] = d["annotations"][:2]  # images 12..14 lose their only caption
    d["annotations"].append({"id": 7, "image_id": 999, "caption": "orphan"})
    with pytest.raises(CaptionsError) as err:
        captions.check(d, "captions.json", exists=lambda name: name != "images/1.jpg")
    text = str(err.value)
    assert text.startswith("captions.json: 5 problems in 5 images and 3 captions")
    assert "'images/1.jpg' does not exist" in text and "image_id 999" in text
    assert "3 images have no caption (first: image 12)" in text
    assert "more)" not in text  # the three shown lines name all five problems


def test_the_problems_beyond_the_shown_lines_are_counted_right() -> None:
    d = doc(6)
    d["annotations"] = [a for a in d["annotations"] if a["image_id"] == 10]  # 5 images lose their caption
    with pytest.raises(CaptionsError) as err:
        captions.check(d, "c.json")
    assert str(err.value) == "c.json: 5 problems in 6 images and 2 captions: 5 images have no caption (first: image 11)"
    for name in ("../a", "../b", "../c"):
        d["images"].append({"id": len(d["images"]) + 100, "file_name": name})
    with pytest.raises(CaptionsError) as err:
        captions.check(d, "c.json")
    # 3 bad names shown; the 8 images without caption are the "more"
    assert str(err.value).startswith("c.json: 11 problems in 9 images") and str(err.value).endswith("(and 8 more)")


@pytest.mark.parametrize("name", ["/etc/passwd", "../x.jpg", "a/../../x.jpg", "", "."])
def test_file_names_must_stay_inside(name: str) -> None:
    d = doc(1)
    d["images"][0]["file_name"] = name
    with pytest.raises(CaptionsError):
        captions.check(d, "c.json")


def test_duplicate_ids_and_bools_are_refused() -> None:
    d = doc(2)
    d["images"][1]["id"] = 10
    with pytest.raises(CaptionsError, match="id 10 is used twice"):
        captions.check(d, "c.json")
    d = doc(1)
    d["annotations"][0]["image_id"] = True
    with pytest.raises(CaptionsError, match="not an image"):
        captions.check(d, "c.json")


def test_merge_keeps_counts_makes_ids_unique_and_tags_datasets() -> None:
    a, b = doc(2, "images/"), doc(3, "train2014/")
    merged = captions.merge([captions.MergeInput("sbu", a, "sbu"), captions.MergeInput("mscoco", b, "coco")])
    assert captions.check(merged, "m.json") == captions.CaptionCounts(5, 7)
    assert [im["dataset"] for im in merged["images"]] == ["sbu"] * 2 + ["mscoco"] * 3
    assert merged["images"][2]["file_name"] == "coco/train2014/0.jpg"
    assert merged["images"][2]["source_id"] == 10
    # captions follow their images through the renumbering
    by_id = {im["id"]: im for im in merged["images"]}
    assert {by_id[a["image_id"]]["file_name"] for a in merged["annotations"] if a["caption"] == "another"} == {
        "sbu/images/0.jpg", "coco/train2014/0.jpg"}


def test_neuraltalk2_list() -> None:
    out = captions.to_neuraltalk2(doc(2))
    assert out == [{"file_path": "images/0.jpg", "captions": ["a photo 0", "another"], "id": 10},
                   {"file_path": "images/1.jpg", "captions": ["a photo 1"], "id": 11}]
    json.dumps(out)


def test_parse_refuses_json_nested_too_deeply_naming_the_file():
    with pytest.raises(CaptionsError, match="deep.json: its JSON is nested too deeply"):
        captions.parse(b'{"images": [], "annotations": [], "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
                       "deep.json")


def test_lone_surrogates_are_refused_naming_where_and_pairs_are_kept():
    doc = {"images": [{"id": 1, "file_name": "a.jpg"}],
           "annotations": [{"id": 1, "image_id": 1, "caption": "x \\ud800 y"}]}
    data = json.dumps(doc).replace("\\\\ud800", "\\ud800").encode()
    with pytest.raises(CaptionsError, match=r"c.json: annotations\[0\].caption holds a lone UTF-16 surrogate"):
        captions.parse(data, "c.json")
    paired = captions.parse(data.replace(b"\\ud800", b"\\ud83d\\ude00"), "c.json")
    assert paired["annotations"][0]["caption"] == "x \U0001F600 y"
    built = {"images": [{"id": 1, "file_name": "a.jpg"}],
             "annotations": [{"id": 1, "image_id": 1, "caption": "bad \udcff"}]}  # as surrogateescape makes
    with pytest.raises(CaptionsError, match=r"annotations\[0\].caption"):
        captions.check(built, "mem.json")


def test_merge_leaves_a_licence_value_that_names_no_licence_as_it_is():
    doc = {"licenses": [{"id": [1], "name": "odd"}, {"id": 3, "name": "cc"}],
           "images": [{"id": 1, "file_name": "a.jpg", "license": [1, 2]}, {"id": 2, "file_name": "b.jpg", "license": 3}],
           "annotations": [{"id": 1, "image_id": 1, "caption": "a"}, {"id": 2, "image_id": 2, "caption": "b"}]}
    merged = captions.merge([captions.MergeInput("x", doc)])
    assert [im["license"] for im in merged["images"]] == [[1, 2], 1]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_parse_refuses_nan_and_infinity(constant):
    data = ('{"images": [{"id": 1, "width": %s}], "annotations": []}' % constant).encode()
    with pytest.raises(CaptionsError, match=f"n.json: not valid JSON: it holds {constant}"):
        captions.parse(data, "n.json")
