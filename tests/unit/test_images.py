"""images.check_image: whole images pass with their size; non-images, cut bodies and
placeholders are refused with a stable reason. Corpora made with Pillow at test time."""

from __future__ import annotations

import hashlib
import io

import pytest
from PIL import Image

from s3sync.images import (
    PLACEHOLDER_MD5S,
    REASON_NOT_IMAGE,
    REASON_PLACEHOLDER,
    REASON_TRUNCATED,
    ImageInfo,
    Rejected,
    check_image,
    make_jpeg,
    make_png,
)


def _encode(fmt: str, size=(37, 23)) -> bytes:
    out = io.BytesIO()
    Image.effect_noise(size, 40).convert("RGB").save(out, fmt)
    return out.getvalue()


@pytest.mark.parametrize("width,height", [(1, 1), (64, 48), (500, 375), (333, 1000)])
def test_a_jpeg_passes_with_its_size(width: int, height: int) -> None:
    assert check_image(make_jpeg(width, height)) == ImageInfo("JPEG", width, height, "jpg")


@pytest.mark.parametrize("fmt,ext", [("PNG", "png"), ("GIF", "gif"), ("BMP", "bmp"), ("WEBP", "webp"),
                                     ("TIFF", "tif")])
def test_other_formats_pass_with_their_extension(fmt: str, ext: str) -> None:
    assert check_image(_encode(fmt)) == ImageInfo(fmt, 37, 23, ext)


@pytest.mark.parametrize("body", [b"", b"<!DOCTYPE html><html><body>Flickr: page not found</body></html>",
                                  b"hello\n", b"\x00" * 5000, b"GIF89a", b"\xff\xd8\xff"])
def test_what_is_not_an_image_is_refused(body: bytes) -> None:
    assert check_image(body) in (Rejected(REASON_NOT_IMAGE), Rejected(REASON_TRUNCATED))
    if body[:3] != b"\xff\xd8\xff" and body[:3] != b"GIF":
        assert check_image(body) == Rejected(REASON_NOT_IMAGE)


def test_a_jpeg_cut_anywhere_after_its_headers_is_truncated() -> None:
    data = make_jpeg(200, 150)
    assert data.endswith(b"\xff\xd9")
    for cut in (len(data) // 3, len(data) // 2, len(data) - 100, len(data) - 2, len(data) - 1):
        assert check_image(data[:cut]) == Rejected(REASON_TRUNCATED), cut


def test_a_png_cut_anywhere_is_truncated_even_inside_its_iend_chunk() -> None:
    data = make_png(120, 80)
    # Pillow decodes a PNG cut inside IEND without complaint; verify() does not.
    for cut in (len(data) // 2, len(data) - 12, len(data) - 5, len(data) - 1):
        assert check_image(data[:cut]) == Rejected(REASON_TRUNCATED), cut


def test_a_damaged_png_chunk_is_refused() -> None:
    data = bytearray(make_png(60, 40))
    data[len(data) // 2] ^= 0xFF  # inside IDAT: its CRC no longer matches
    assert isinstance(check_image(bytes(data)), Rejected)


def test_the_flickr_placeholder_is_known_by_its_digest() -> None:
    assert "880a7a58e05d3e83797f27573bb6d35c" in PLACEHOLDER_MD5S
    png = make_png(50, 50)
    digest = hashlib.md5(png).hexdigest()
    assert check_image(png) == ImageInfo("PNG", 50, 50, "png")  # a whole image...
    assert check_image(png, placeholders={digest}) == Rejected(REASON_PLACEHOLDER)  # ...unless it is a placeholder
    assert check_image(png, placeholders=()) == ImageInfo("PNG", 50, 50, "png")


def test_an_image_is_checked_as_served_not_reencoded() -> None:
    data = make_jpeg(80, 60)
    before = bytes(data)
    check_image(data)
    assert data == before
