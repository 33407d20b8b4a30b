"""The ``s3sync`` command with captions (issue 12, section 4): ``publish`` refuses a broken
``captions.json`` with exit 1 and uploads nothing; ``ls``, ``pull`` and ``verify`` show and
check the counts (plain and ``--json``); ``captions merge`` combines files."""

from __future__ import annotations

import json
import os
from pathlib import Path

from test_cli import assert_error  # tests/e2e is on sys.path (rootdir-relative imports)

SMALL = ["--chunk-size", "64KiB", "--part-size", "256KiB"]


def make_dataset(root: Path, n: int = 4, per_image: int = 2) -> dict:
    images, anns = [], []
    for i in range(n):
        rel = f"images/{i:04d}.jpg"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(os.urandom(3000))
        images.append({"id": i, "file_name": rel})
        anns += [{"id": per_image * i + k, "image_id": i, "caption": f"c{i}.{k}"} for k in range(per_image)]
    doc = {"images": images, "annotations": anns}
    (root / "captions.json").write_text(json.dumps(doc))
    return doc


def keys(s3_client, bucket: str) -> dict[str, str]:
    resp = s3_client.list_objects_v2(Bucket=bucket)
    return {o["Key"]: o["ETag"] for o in resp.get("Contents", [])}


def test_counts_in_publish_ls_pull_and_verify(run, s3_server, bucket, s3_client, tmp_path: Path) -> None:
    src = tmp_path / "src" / "sbu"
    doc = make_dataset(src)
    url = f"s3://{bucket}/sbu"
    ep = ["--endpoint-url", s3_server.endpoint_url]

    pub = run("publish", src, "--to", url, *ep, *SMALL)
    assert pub.code == 0, pub.describe()
    assert "(captions.json: 4 images, 8 captions, checked)" in pub.stderr, pub.describe()

    ls = run("ls", url, *ep)
    assert ls.code == 0, ls.describe()
    assert any(line.split() == ["captions", "captions.json:", "4", "images,", "8", "captions"]
               for line in ls.stdout.splitlines()), ls.describe()
    ls_json = run("ls", url, *ep, "--json")
    assert ls_json.json()["captions"] == {"path": "captions.json", "images": 4, "annotations": 8}

    pull = run("pull", url, tmp_path / "dest", *ep)
    assert pull.code == 0, pull.describe()
    assert "(captions.json: 4 images, 8 captions)" in pull.stderr, pull.describe()
    again = run("pull", url, tmp_path / "dest2", *ep, "--json")
    assert again.json()["captions"] == {"path": "captions.json", "images": 4, "annotations": 8}

    dest = tmp_path / "dest" / "sbu"
    ok = run("verify", dest)
    assert ok.code == 0, ok.describe()
    assert "4 images and 8 captions as the manifest records" in ok.stderr, ok.describe()
    assert run("verify", dest, "--json").json()["captions"] == {"images": 4, "annotations": 8}

    doc["annotations"] = doc["annotations"][::2]  # one caption per image left: only the counts tell
    (dest / "captions.json").write_text(json.dumps(doc))
    bad = run("verify", dest)
    assert bad.code == 1, bad.describe()
    assert ("captions\tcaptions.json\t4 images and 4 captions, but the manifest records 4 images and 8 captions"
            in bad.stdout.splitlines()), bad.describe()
    assert any(line.startswith("error: ") for line in bad.stderr.splitlines()), bad.describe()
    problems = run("verify", dest, "--json").json()["problems"]
    assert {"path": "captions.json", "kind": "captions",
            "detail": "4 images and 4 captions, but the manifest records 4 images and 8 captions"} in problems


def test_publish_of_a_broken_captions_file_exits_1_and_uploads_nothing(run, s3_server, bucket, s3_client,
                                                                      tmp_path: Path) -> None:
    src = tmp_path / "imagenet"
    doc = make_dataset(src, n=9, per_image=1)
    doc["annotations"] = doc["annotations"][:3]  # 6 of 9 images lost their caption
    (src / "captions.json").write_text(json.dumps(doc))
    before = keys(s3_client, bucket)
    res = run("publish", src, "--to", f"s3://{bucket}/imagenet", "--endpoint-url", s3_server.endpoint_url)
    assert_error(res, 1)
    first = res.stderr.splitlines()[0]
    assert first.startswith(f"error: {src / 'captions.json'}: 6 problems in 9 images and 3 captions: "
                            "6 images have no caption (first: image 3); nothing was uploaded"), res.describe()
    assert keys(s3_client, bucket) == before == {}


def test_captions_merge_command(run, tmp_path: Path) -> None:
    make_dataset(tmp_path / "data" / "sbu", n=3, per_image=1)
    make_dataset(tmp_path / "data" / "mscoco", n=2, per_image=5)
    out = tmp_path / "data" / "captions.json"
    sbu, coco = tmp_path / "data" / "sbu" / "captions.json", tmp_path / "data" / "mscoco" / "captions.json"

    res = run("captions", "merge", out, sbu, f"{coco}:coco")
    assert res.code == 0, res.describe()
    assert res.stdout.splitlines() == [f"sbu\t3 images\t3 captions\t{sbu}", f"coco\t2 images\t10 captions\t{coco}",
                                       f"total\t5 images\t13 captions\t{out}"], res.describe()
    assert f"merged 2 files into {out}: 5 images, 13 captions" in res.stderr, res.describe()
    merged = json.loads(out.read_text())
    assert [im["dataset"] for im in merged["images"]] == ["sbu"] * 3 + ["coco"] * 2
    assert all((out.parent / im["file_name"]).is_file() for im in merged["images"])

    again = run("captions", "merge", out, sbu, coco)
    assert_error(again, 1)  # the destination exists: exit 1, as for pull (README, exit codes)
    assert "exists: not overwritten" in again.stderr and "--force" in again.stderr
    forced = run("captions", "merge", out, coco, sbu, "--force", "--json")
    assert forced.code == 0, forced.describe()
    doc = forced.json()
    assert (doc["images"], doc["annotations"]) == (5, 13)
    assert [(i["dataset"], i["prefix"]) for i in doc["inputs"]] == [("mscoco", "mscoco"), ("sbu", "sbu")]

    (tmp_path / "data" / "sbu" / "images" / "0001.jpg").unlink()
    broken = run("captions", "merge", tmp_path / "data" / "other.json", sbu)
    assert_error(broken, 1)
    assert "'images/0001.jpg' does not exist" in broken.stderr
    assert not (tmp_path / "data" / "other.json").exists()
