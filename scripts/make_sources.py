#!/usr/bin/env python3
"""Makes small stand-ins for the builders' original sources, to serve on loopback.

    python scripts/make_sources.py WWW --base-url URL [--coco-images 40] [--sbu-lines 60]

``WWW`` then holds what a web server at ``URL`` should serve:

- a COCO site for 2014, laid out as ``images.cocodataset.org``: ``zips/train2014.zip``,
  ``zips/val2014.zip`` (Pillow JPEGs, stored, as COCO's are) and
  ``annotations/annotations_trainval2014.zip`` (``captions_train2014.json`` and
  ``captions_val2014.json``, deflated), with ``coco.md5`` in md5sum format for
  ``s3sync build mscoco --mirror URL --checksums WWW/coco.md5``;
- a Flickr stand-in ``static.flickr/`` and the two line-aligned SBU lists ``sbu/urls.txt`` and
  ``sbu/captions.txt`` pointing at it through ``URL``; as in the real list, some lines are
  dead: every 7th URL names a photo that is not there (404), every 11th one is an HTML page.

Used by scripts/demo.sh (its build step). The JPEGs are noise, so they do not compress.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import random
import zipfile
from pathlib import Path

from PIL import Image


def jpeg(seed: int, size: tuple[int, int]) -> bytes:
    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=85)
    return out.getvalue()


def coco_site(www: Path, images: int) -> None:
    n_val = max(1, images // 4)
    splits = {"train": images - n_val, "val": n_val}
    zips = www / "zips"
    zips.mkdir(parents=True, exist_ok=True)
    docs = {}
    next_image, next_ann = 9, 1
    for split, count in splits.items():
        folder = f"{split}2014"
        doc = {"info": {"description": f"stand-in for COCO {folder}"}, "licenses": [{"id": 1, "name": "CC BY"}],
               "images": [], "annotations": []}
        with zipfile.ZipFile(zips / f"{folder}.zip", "w", zipfile.ZIP_STORED) as z:
            z.writestr(f"{folder}/", b"")
            for _ in range(count):
                size = (64 + next_image % 5 * 16, 48 + next_image % 3 * 16)
                name = f"COCO_{folder}_{next_image:012d}.jpg"
                z.writestr(f"{folder}/{name}", jpeg(next_image, size))
                doc["images"].append({"license": 1, "file_name": name, "width": size[0], "height": size[1],
                                      "id": next_image})
                for k in range(5):  # COCO has about five captions per image
                    doc["annotations"].append({"image_id": next_image, "id": next_ann,
                                               "caption": f"a made-up scene {next_image}, take {k}"})
                    next_ann += 1
                next_image += 1
        docs[folder] = doc
    ann_dir = www / "annotations"
    ann_dir.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(ann_dir / "annotations_trainval2014.zip", "w", zipfile.ZIP_DEFLATED) as z:
        for folder, doc in docs.items():
            z.writestr(f"annotations/captions_{folder}.json", json.dumps(doc))
    lines = []
    for path in ("zips/train2014.zip", "zips/val2014.zip", "annotations/annotations_trainval2014.zip"):
        lines.append(f"{hashlib.md5((www / path).read_bytes()).hexdigest()}  {Path(path).name}\n")
    (www / "coco.md5").write_text("".join(lines))


def sbu_lists(www: Path, base_url: str, lines: int) -> None:
    photos = www / "static.flickr"
    photos.mkdir(parents=True, exist_ok=True)
    urls, captions = [], []
    for i in range(lines):
        name = f"{1000 + i}_{i * 7919 % 100000:05x}.jpg"
        if i % 7 == 3:
            pass  # a photo that was deleted: the URL answers 404
        elif i % 11 == 5:
            (photos / name).write_text("<html><body>This photo is no longer available</body></html>")
        else:
            (photos / name).write_bytes(jpeg(100_000 + i, (80 + i % 4 * 20, 60 + i % 3 * 20)))
        urls.append(f"{base_url.rstrip('/')}/static.flickr/{name}\n")
        captions.append(f"Made-up caption number {i}, as a Flickr user might write it\n")
    (www / "sbu").mkdir(parents=True, exist_ok=True)
    (www / "sbu" / "urls.txt").write_text("".join(urls))
    (www / "sbu" / "captions.txt").write_text("".join(captions))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("www", type=Path, help="the directory to serve")
    parser.add_argument("--base-url", required=True, help="the URL WWW is served at (written into the SBU list)")
    parser.add_argument("--coco-images", type=int, default=40, help="images in the two COCO zips together")
    parser.add_argument("--sbu-lines", type=int, default=60, help="lines of the SBU lists")
    args = parser.parse_args()
    coco_site(args.www, args.coco_images)
    sbu_lists(args.www, args.base_url, args.sbu_lines)
    print(f"made a COCO 2014 site ({args.coco_images} images) and SBU lists ({args.sbu_lines} lines) in {args.www}")


if __name__ == "__main__":
    main()
