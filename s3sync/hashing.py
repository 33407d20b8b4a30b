"""Digests: XXH3-128 from the xxHash family (https://github.com/Cyan4973/xxHash).

The only module that imports ``xxhash``. A digest is the lower-case hex string of
the 128-bit XXH3 value (32 characters), the canonical big-endian form xxHash's
own ``xxh128sum`` prints. xxhash releases the GIL while hashing buffers, so worker
threads hash in parallel.
"""

from __future__ import annotations

import hashlib

import xxhash

ALGORITHM = "xxh3-128"
"""The name written to the manifest's ``hash`` field."""

DIGEST_HEX_LENGTH = 32


def digest(data: bytes | bytearray | memoryview) -> str:
    """Return the XXH3-128 hex digest of ``data`` (one call, no state)."""
    return xxhash.xxh3_128_hexdigest(data)


class Hasher:
    """Incremental XXH3-128: feeding bytes in any split gives the same digest as one call."""

    __slots__ = ("_h",)

    def __init__(self) -> None:
        self._h = xxhash.xxh3_128()

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add ``data`` to the hash."""
        self._h.update(data)

    def hexdigest(self) -> str:
        """Return the digest of everything fed so far (the hasher stays usable)."""
        return self._h.hexdigest()


def is_digest(value: object) -> bool:
    """True if ``value`` looks like a digest this module produces."""
    return (
        isinstance(value, str)
        and len(value) == DIGEST_HEX_LENGTH
        and all(c in "0123456789abcdef" for c in value)
    )


class PieceHasher:
    """The digest a piece's evidence promises, computed over its bytes in order.

    ``algorithm`` is a hashlib name (``md5``, ``sha256``, ``sha1``, ``sha512``). With
    ``upload_part_size`` > 0 it computes an S3 multipart ETag instead: the MD5 of the
    concatenated binary MD5s of each ``upload_part_size``-byte span (the last may be
    shorter), followed by ``-N``, N the number of spans (the convention S3 has used for
    multipart uploads since 2010; not part of the API reference, but relied on by s3cmd,
    rclone and the AWS CLI's own tests). hashlib releases the GIL for buffers over 2 KiB.
    """

    __slots__ = ("_algorithm", "_part_size", "_h", "_in_part", "_md5s")

    def __init__(self, algorithm: str, upload_part_size: int = 0) -> None:
        self._algorithm = algorithm
        self._part_size = upload_part_size
        self._h = hashlib.new(algorithm)
        self._in_part = 0
        self._md5s: list[bytes] = []

    def update(self, data: bytes | bytearray | memoryview) -> None:
        """Add ``data`` (the next bytes of the piece)."""
        if not self._part_size:
            self._h.update(data)
            return
        view = memoryview(data)
        while view:
            take = view[: self._part_size - self._in_part]
            self._h.update(take)
            self._in_part += len(take)
            view = view[len(take):]
            if self._in_part == self._part_size:
                self._md5s.append(self._h.digest())
                self._h, self._in_part = hashlib.new(self._algorithm), 0

    def hexdigest(self) -> str:
        """The digest of everything fed: lower-case hex, or ``HEX-N`` for a multipart ETag."""
        if not self._part_size:
            return self._h.hexdigest()
        md5s = self._md5s + ([self._h.digest()] if self._in_part or not self._md5s else [])
        return f"{hashlib.md5(b''.join(md5s)).hexdigest()}-{len(md5s)}"
