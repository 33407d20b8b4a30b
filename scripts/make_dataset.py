#!/usr/bin/env python3
"""Builds a synthetic dataset shaped like SBU Captions, for tests and benchmarks.

Layout (``per_dir`` files per sub-directory at most, ids from 1)::

    DEST/images/0000/000000001.jpg
    DEST/images/0000/000000002.jpg
    ...
    DEST/images/0001/000001001.jpg
    DEST/captions.json

Each image is a JPEG-looking but incompressible blob: SOI + a minimal JFIF APP0 segment,
seeded random bytes, EOI. Nothing decodes as a picture; the point is realistic file sizes,
counts and entropy (so compression cannot flatter a transfer). ``captions.json`` follows the
COCO captions model, with one caption per image as in SBU::

    {"info": {...},
     "images": [{"id": 1, "file_name": "images/0000/000000001.jpg", "width": 500, "height": 375}],
     "annotations": [{"id": 1, "image_id": 1, "caption": "..."}]}

``file_name`` is relative to ``DEST``, the dataset's root, as s3sync's builders write it and
as ``s3sync publish`` checks it (issue 12; it was relative to ``DEST/images`` before).

Everything is a pure function of the seed and the file's id: file ``i`` has the same size,
bytes, dimensions and caption whatever the file count, and two runs give identical trees.

Usage::

    python scripts/make_dataset.py DEST [--files N | --size 1GiB] [--min-kb 40] [--max-kb 160]
                                        [--per-dir 1000] [--seed 0]

Standard library only: the script runs before (and without) the s3sync package.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import re
import sys
import time
from pathlib import Path

KiB = 1024

# SOI, then an APP0 "JFIF" segment: length 16 (it counts itself), identifier, version 1.1,
# no density units, 1x1 density, no thumbnail.
JPEG_HEADER = (
    b"\xff\xd8"
    + b"\xff\xe0"
    + (16).to_bytes(2, "big")
    + b"JFIF\x00"
    + b"\x01\x01"
    + b"\x00"
    + (1).to_bytes(2, "big")
    + (1).to_bytes(2, "big")
    + b"\x00\x00"
)
JPEG_TRAILER = b"\xff\xd9"
MIN_FILE_BYTES = len(JPEG_HEADER) + len(JPEG_TRAILER)

# SBU captions are the user-written Flickr descriptions kept by Ordonez et al. (2011):
# short, lower case, one per image, e.g. "the bridge over the river at night".
_SUBJECTS = (
    "the old bridge", "a little boat", "my dog", "the red barn", "a lonely tree", "the lighthouse",
    "our cat", "a small church", "the harbour", "two horses", "the garden gate", "a yellow flower",
    "the city skyline", "an old car", "the mountain road", "a wooden bench", "the train station",
    "some sheep", "the waterfall", "a snowy field",
)
_PLACES = (
    "on the lake", "in the park", "near the beach", "by the river", "in the snow",
    "at the market", "in the forest", "on the hill", "in our backyard", "along the coast",
    "in the old town", "under the bridge",
)
_TIMES = (
    "at sunset", "in the morning", "at night", "after the rain", "in the fog", "last summer",
    "on a cloudy day", "in autumn", "during our trip", "",
)


@dataclasses.dataclass(frozen=True, slots=True)
class DatasetInfo:
    """What ``make_dataset`` wrote: the whole tree, i.e. what a publish of DEST would count.

    Attributes:
        files: Regular files written: every image plus ``captions.json``.
        bytes: Their total size in bytes.
    """

    files: int
    bytes: int


def image_relpath(image_id: int, per_dir: int) -> str:
    """Returns an image's path relative to ``DEST/images``, e.g. ``0000/000000001.jpg``.

    Args:
        image_id: 1-based image id.
        per_dir: Maximum number of images per sub-directory.
    """
    return f"{(image_id - 1) // per_dir:04d}/{image_id:09d}.jpg"


def make_dataset(
    dest: Path,
    *,
    files: int = 200,
    min_bytes: int = 40 * KiB,
    max_bytes: int = 160 * KiB,
    per_dir: int = 1000,
    seed: int = 0,
) -> DatasetInfo:
    """Writes an SBU-shaped sample dataset into ``dest``.

    Args:
        dest: Target directory; created (with parents) if missing, refused if not empty.
        files: Number of images.
        min_bytes: Smallest image size in bytes (inclusive); at least 22 (header + trailer).
        max_bytes: Largest image size in bytes (inclusive).
        per_dir: Maximum number of images per sub-directory of ``images/``.
        seed: Seed for every size, byte, dimension and caption.

    Returns:
        The number of files written (images and ``captions.json``) and their total bytes.

    Raises:
        ValueError: An argument is out of range.
        FileExistsError: ``dest`` exists and is not an empty directory.
    """
    if files < 0:
        raise ValueError(f"files must be >= 0, got {files}")
    if per_dir < 1:
        raise ValueError(f"per_dir must be >= 1, got {per_dir}")
    if not MIN_FILE_BYTES <= min_bytes <= max_bytes:
        raise ValueError(
            f"need {MIN_FILE_BYTES} <= min_bytes <= max_bytes, got {min_bytes} and {max_bytes}"
        )
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise FileExistsError(f"destination exists and is not an empty directory: {dest}")

    images_dir = dest / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    images: list[dict] = []
    annotations: list[dict] = []
    total_bytes = 0
    for image_id in range(1, files + 1):
        # One generator per image, seeded by (seed, id): deterministic across runs and
        # Python processes (str seeds are hashed with SHA-512, not with hash()).
        rng = random.Random(f"s3sync-sample:{seed}:{image_id}")
        size = rng.randint(min_bytes, max_bytes)
        width, height = rng.choice(((500, 375), (375, 500), (500, 333), (333, 500), (500, 500)))
        caption = " ".join(
            part for part in (rng.choice(_SUBJECTS), rng.choice(_PLACES), rng.choice(_TIMES)) if part
        )
        relpath = image_relpath(image_id, per_dir)
        path = images_dir / relpath
        if (image_id - 1) % per_dir == 0:
            path.parent.mkdir()
        path.write_bytes(JPEG_HEADER + rng.randbytes(size - MIN_FILE_BYTES) + JPEG_TRAILER)
        total_bytes += size
        images.append({"id": image_id, "file_name": f"images/{relpath}", "width": width, "height": height})
        annotations.append({"id": image_id, "image_id": image_id, "caption": caption})

    document = {
        "info": {
            "description": "Synthetic SBU-shaped sample dataset (scripts/make_dataset.py); "
            "random bytes, not real images",
            "version": "1.0",
            "seed": seed,
            "contributor": "s3sync",
        },
        "images": images,
        "annotations": annotations,
    }
    encoded = (json.dumps(document, separators=(",", ":")) + "\n").encode()
    (dest / "captions.json").write_bytes(encoded)
    return DatasetInfo(files=files + 1, bytes=total_bytes + len(encoded))


_SIZE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(i?B?)\s*$", re.IGNORECASE)


def parse_size(text: str) -> int:
    """Parses a byte size: ``1GiB``, ``1G`` and ``1.5GiB`` are binary, ``1GB`` is decimal.

    Bare suffixes are binary, as in rclone and s5cmd.

    Args:
        text: The size as typed.

    Returns:
        The size in bytes.

    Raises:
        ValueError: ``text`` is not a size.
    """
    match = _SIZE_RE.match(text)
    if match is None:
        raise ValueError(f"not a size: {text!r} (try 500MiB or 2GiB)")
    number, prefix, suffix = match.groups()
    exponent = "KMGT".find(prefix.upper()) + 1 if prefix else 0
    base = 1000 if suffix.upper() == "B" and prefix else 1024
    return int(float(number) * base**exponent)


def _size_arg(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from err


def _parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="make_dataset.py",
        description="Build an SBU-shaped sample dataset (random JPEG-like files + COCO captions).",
    )
    parser.add_argument("dest", type=Path, help="target directory (must be missing or empty)")
    count = parser.add_mutually_exclusive_group()
    count.add_argument("--files", type=int, help="number of images (default 200)")
    count.add_argument(
        "--size",
        type=_size_arg,
        help="approximate total size, e.g. 1GiB; the file count is SIZE / mean file size",
    )
    parser.add_argument("--min-kb", type=int, default=40, help="smallest file in KiB (default 40)")
    parser.add_argument("--max-kb", type=int, default=160, help="largest file in KiB (default 160)")
    parser.add_argument("--per-dir", type=int, default=1000, help="files per sub-directory (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Runs the command line; returns the exit status (2 for usage and destination errors)."""
    args = _parse_args(argv)
    min_bytes, max_bytes = args.min_kb * KiB, args.max_kb * KiB
    if args.size is not None:
        files = max(1, round(args.size / ((min_bytes + max_bytes) / 2)))
    else:
        files = 200 if args.files is None else args.files
    started = time.monotonic()
    try:
        info = make_dataset(
            args.dest,
            files=files,
            min_bytes=min_bytes,
            max_bytes=max_bytes,
            per_dir=args.per_dir,
            seed=args.seed,
        )
    except (ValueError, FileExistsError, NotADirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    elapsed_s = time.monotonic() - started
    print(
        f"make_dataset: {info.files} files, {info.bytes} bytes ({info.bytes / KiB**2:.1f} MiB) "
        f"in {args.dest} ({elapsed_s:.1f} s)",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
