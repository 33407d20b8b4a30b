"""Is this body a whole image? The only module that imports Pillow (PIL).

A crawled body is kept only if Pillow identifies it as an image, decodes all of it, and it is
not a known placeholder. Pillow's ``Image.verify()`` alone is not enough: it reads chunk
structure only, and for JPEG it reads nothing past the headers, so a JPEG cut anywhere in its
entropy-coded data passes. Decoding catches those (Pillow raises "image file is truncated"
when the data ends before the decoder does, including a JPEG missing only its end marker
``FFD9``), but a PNG cut inside its final ``IEND`` chunk decodes; ``verify()`` catches that
(it walks every chunk up to ``IEND`` checking CRCs), except a cut in IEND's own CRC, which
is checked by hand. So both run: ``verify()`` on one
opening, a full decode on a second. JPEGs are decoded in draft mode (libjpeg's DCT scaling
to 1/8): all entropy-coded data is still read, so truncation is still seen, for about 25%
less time (measured: about 0.8 ms instead of 1.1 ms for a noisy 500x375 JPEG).

Every frame of a multi-frame image (animated GIF, multi-page TIFF, animated WebP...) is
decoded, up to ``MAX_FRAMES`` (a cut after the last whole frame is caught for GIF by its
trailer byte 0x3B, GIF89a specification section 27). Images of more than ``MAX_PIXELS``
are refused as ``too large`` before anything is decoded (a small PNG can declare
13000x13000 pixels: 684 MB to decode); Pillow's own ``DecompressionBombError`` is
reported the same way.

Bodies are never re-encoded: the caller stores the bytes it checked.

It must not import the pipelines or any HTTP library.
"""

from __future__ import annotations

import hashlib
import io
import struct
import warnings
from collections.abc import Collection
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

PLACEHOLDER_MD5S: frozenset[str] = frozenset({
    "880a7a58e05d3e83797f27573bb6d35c",  # Flickr's "This photo is no longer available", a 2,051-byte PNG
})
"""MD5 digests (hex) of bodies that are placeholders, not the requested photo."""

MAX_PIXELS = 64_000_000
"""Largest image (width x height) decoded; larger ones are refused as ``too large`` (a
decompression bomb: a small body that decodes to gigabytes). 64 Mpx keeps the largest
camera photos (a 61 Mpx sensor: 9504 x 6336) and bounds one decode to about 256 MB
(RGBA; 384 MB of coefficients for a progressive JPEG), times the crawler's threads."""

MAX_FRAMES = 64
"""Frames of a multi-frame image decoded (the first ``MAX_FRAMES``; GIF's trailer is
checked whatever the count)."""

REASON_NOT_IMAGE = "not an image"
REASON_TRUNCATED = "truncated"
REASON_PLACEHOLDER = "placeholder"
REASON_TOO_LARGE = "too large"

_PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"
_EXTENSIONS = {"JPEG": "jpg", "MPO": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp",
               "TIFF": "tif", "ICO": "ico", "JPEG2000": "jp2", "PPM": "ppm"}


@dataclass(frozen=True, slots=True)
class ImageInfo:
    """A body that is a whole image.

    Attributes:
        format: Pillow's format name (``JPEG``, ``PNG``, ``GIF``...).
        width: pixels.
        height: pixels.
        extension: the file name extension for this format, without the dot (``jpg``).
    """

    format: str
    width: int
    height: int
    extension: str


@dataclass(frozen=True, slots=True)
class Rejected:
    """A body that is not kept; ``reason`` is one of the ``REASON_*`` constants."""

    reason: str


def check_image(data: bytes, placeholders: Collection[str] = PLACEHOLDER_MD5S) -> ImageInfo | Rejected:
    """Tell whether ``data`` is a whole image, and which.

    Args:
        data: the body as served.
        placeholders: MD5 digests (lowercase hex) of bodies to refuse as placeholders
            (default: Flickr's "photo unavailable" PNG).

    Returns:
        ``ImageInfo`` for a whole image; ``Rejected`` with reason ``placeholder`` (its MD5 is
        in ``placeholders``), ``not an image`` (empty, HTML, text, anything Pillow cannot
        identify), ``truncated`` (identified, but its data is cut or damaged) or ``too large``
        (more than ``MAX_PIXELS`` pixels).
    """
    if not data:
        return Rejected(REASON_NOT_IMAGE)
    if placeholders and hashlib.md5(data, usedforsecurity=False).hexdigest() in placeholders:
        return Rejected(REASON_PLACEHOLDER)
    try:
        with warnings.catch_warnings():
            # Pillow warns (DecompressionBombWarning) above MAX_IMAGE_PIXELS; we test ourselves.
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                fmt, (width, height) = im.format or "", im.size
                if width * height > MAX_PIXELS:
                    return Rejected(REASON_TOO_LARGE)
                im.verify()
    except Image.DecompressionBombError:
        return Rejected(REASON_TOO_LARGE)
    except UnidentifiedImageError:
        return Rejected(REASON_NOT_IMAGE)
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error):
        # Identified, then verify() found a cut or broken chunk (Pillow raises OSError,
        # SyntaxError "broken PNG file", struct.error or EOFError depending on the plugin).
        return Rejected(REASON_TRUNCATED)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                if fmt in ("JPEG", "MPO"):
                    im.draft(im.mode, (max(1, width // 8), max(1, height // 8)))
                im.load()
                frames = getattr(im, "n_frames", 1) if fmt not in ("JPEG", "MPO") else 1
                for frame in range(1, min(frames, MAX_FRAMES)):
                    im.seek(frame)
                    if im.size[0] * im.size[1] > MAX_PIXELS:
                        return Rejected(REASON_TOO_LARGE)
                    im.load()
    except Image.DecompressionBombError:
        return Rejected(REASON_TOO_LARGE)
    except (OSError, SyntaxError, ValueError, EOFError, IndexError, TypeError, struct.error, MemoryError):
        return Rejected(REASON_TRUNCATED)
    if fmt == "GIF" and not data.endswith(b"\x3b"):
        return Rejected(REASON_TRUNCATED)  # a GIF ends with its trailer byte (GIF89a, section 27)
    if fmt == "PNG" and _PNG_END not in data:
        # verify() stops short of the last CRC bytes: a PNG must end with its IEND chunk
        # (PNG specification, section 11.2.5), whose CRC is always AE 42 60 82.
        return Rejected(REASON_TRUNCATED)
    return ImageInfo(fmt, width, height, _EXTENSIONS.get(fmt, fmt.lower() or "img"))


def make_jpeg(width: int, height: int, seed: int = 0, quality: int = 85) -> bytes:
    """A JPEG of ``width`` x ``height`` pixels (random noise, so it does not compress to
    nothing), for tests and benchmarks that need real images without importing Pillow.

    Args:
        width: pixels.
        height: pixels.
        seed: varies the noise's strength (the content is random either way).
        quality: JPEG quality (1-95).
    """
    im = Image.effect_noise((width, height), 30 + seed % 50).convert("RGB")
    out = io.BytesIO()
    im.save(out, "JPEG", quality=quality)
    return out.getvalue()


def make_png(width: int, height: int) -> bytes:
    """A PNG of ``width`` x ``height`` pixels (noise), for tests."""
    im = Image.effect_noise((width, height), 40)
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()
