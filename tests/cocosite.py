"""A small COCO site made at test time: the zips of one year laid out as on
``images.cocodataset.org`` (``zips/train2014.zip``, ``zips/val2014.zip``,
``annotations/annotations_trainval2014.zip``), with Pillow JPEGs stored (not deflated, as
COCO's are) and the annotations deflated, plus an md5sum-format checksums file.

It must not import ``s3sync``: the corpus describes what the real site serves.
"""

from __future__ import annotations

import hashlib
import io
import json
import random
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image


@dataclass
class Site:
    """The files of one made-up COCO year.

    Attributes:
        root: the directory to serve (``zips/``, ``annotations/`` under it).
        year: 2014 or 2017.
        paths: the three zips' paths under ``root``, train, val, annotations.
        md5: path -> MD5 hex of that zip.
        checksums: an md5sum-format file listing the three zips.
        captions: split (``train``/``val``) -> the COCO captions document in its zip.
    """

    root: Path
    year: int
    paths: tuple[str, str, str]
    md5: dict[str, str] = field(default_factory=dict)
    checksums: Path | None = None
    captions: dict[str, dict] = field(default_factory=dict)

    def zip(self, split: str) -> Path:
        """The zip file of ``train``, ``val`` or ``annotations``."""
        return self.root / self.paths[("train", "val", "annotations").index(split)]

    def write_checksums(self, overrides: dict[str, str] | None = None) -> Path:
        """(Re)write the checksums file, with ``overrides`` (zip name -> MD5) replacing true values."""
        lines = [f"{(overrides or {}).get(Path(p).name, self.md5[p])}  {Path(p).name}\n" for p in self.paths]
        assert self.checksums is not None
        self.checksums.write_text("".join(lines))
        return self.checksums


def jpeg(seed: int, size: tuple[int, int]) -> bytes:
    """A JPEG of noise (it does not compress: its size is about 1.2 bytes per pixel)."""
    rng = random.Random(seed)
    image = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    out = io.BytesIO()
    image.save(out, "JPEG", quality=90)
    return out.getvalue()


def file_name(year: int, split: str, image_id: int) -> str:
    """COCO's image file name: ``COCO_train2014_000000000009.jpg`` (2014), ``000000000009.jpg`` (2017)."""
    return f"COCO_{split}{year}_{image_id:012d}.jpg" if year == 2014 else f"{image_id:012d}.jpg"


def make_site(root: Path, year: int = 2014, train: int = 4, val: int = 3, size: tuple[int, int] = (48, 32),
              data_descriptors: bool = False) -> Site:
    """Write the three zips of ``year`` under ``root``.

    Args:
        train, val: images per split (image ids are distinct across the splits, as COCO's).
        size: pixels of every JPEG (bigger: larger zips, for interruption tests).
        data_descriptors: write the images zips to a pipe, so that every member has flag
            bit 3 and a data descriptor after its data (as ``zip`` writing to stdout does).
    """
    paths = (f"zips/train{year}.zip", f"zips/val{year}.zip", f"annotations/annotations_trainval{year}.zip")
    site = Site(root, year, paths, checksums=root / "MD5SUMS")
    (root / "zips").mkdir(parents=True, exist_ok=True)
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    licenses = [{"url": "http://creativecommons.org/licenses/by-nc-sa/2.0/", "id": 1,
                 "name": "Attribution-NonCommercial-ShareAlike License"}]
    next_ann = 1000
    for split, count, path in (("train", train, paths[0]), ("val", val, paths[1])):
        folder = f"{split}{year}"
        ids = [9 + 16 * i + (0 if split == "train" else 7) for i in range(count)]
        images, annotations = [], []
        buffer = io.BytesIO()
        sink = _Unseekable(buffer) if data_descriptors else buffer
        with zipfile.ZipFile(sink, "w", zipfile.ZIP_STORED) as zf:
            zf.writestr(zipfile.ZipInfo(f"{folder}/", (2014, 8, 16, 10, 0, 0)), b"")
            for n, image_id in enumerate(ids):
                name = file_name(year, split, image_id)
                info = zipfile.ZipInfo(f"{folder}/{name}", (2014, 8, 16, 10, n % 60, 0))
                zf.writestr(info, jpeg(image_id, size), zipfile.ZIP_STORED)
                images.append({"license": 1, "file_name": name, "coco_url": f"http://images.cocodataset.org/{folder}/"
                               f"{name}", "height": size[1], "width": size[0], "date_captured": "2013-11-14 16:28:13",
                               "flickr_url": f"http://farm4.staticflickr.com/{image_id}.jpg", "id": image_id})
                for k in range(2):
                    annotations.append({"image_id": image_id, "id": next_ann, "caption": f"{split} image {image_id}, "
                                        f"caption {k}: a caf\u00e9 on a street."})
                    next_ann += 1
        (root / path).write_bytes(buffer.getvalue())
        site.captions[split] = {"info": {"description": f"COCO {year} Dataset", "year": year}, "licenses": licenses,
                                "images": images, "annotations": annotations}
    write_annotations(site)
    return site


def write_annotations(site: Site) -> None:
    """(Re)write the annotations zip from ``site.captions`` (deflated, as COCO's), then the MD5s."""
    year = site.year
    with zipfile.ZipFile(site.zip("annotations"), "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("annotations/", b"")
        for split in ("train", "val"):
            zf.writestr(f"annotations/captions_{split}{year}.json",
                        json.dumps(site.captions[split], ensure_ascii=False, separators=(",", ":")).encode())
        zf.writestr(f"annotations/instances_val{year}.json",
                    json.dumps({"images": [], "annotations": [], "categories": [{"id": i} for i in range(300)]}))
    for path in site.paths:
        site.md5[path] = hashlib.md5((site.root / path).read_bytes()).hexdigest()
    site.write_checksums()


class _Unseekable(io.RawIOBase):
    """A write-only stream zipfile cannot seek in, so it writes data descriptors (flag bit 3)."""

    def __init__(self, out: io.BytesIO) -> None:
        self._out = out

    def writable(self) -> bool:
        return True

    def write(self, data) -> int:
        return self._out.write(data)

    def tell(self) -> int:
        return self._out.tell()

    def seekable(self) -> bool:
        return False

    def flush(self) -> None:
        pass


def bytes_served(server, path: str) -> int:
    """Body bytes the server was asked for by GETs of ``path`` (from the Range headers; a
    GET without Range counts the whole file)."""
    size = (server.root / path).stat().st_size
    total = 0
    for req in server.requests_for(path):
        wanted = req.headers.get("Range")
        if not wanted:
            total += size
            continue
        first, _, last = wanted.partition("=")[2].partition("-")
        total += min(size, int(last) + 1) - int(first)
    return total
