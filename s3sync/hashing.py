"""Digests: XXH3-128 from the xxHash family (https://github.com/Cyan4973/xxHash).

The only module that imports ``xxhash``. A digest is the lower-case hex string of
the 128-bit XXH3 value (32 characters), the canonical big-endian form xxHash's
own ``xxh128sum`` prints. xxhash releases the GIL while hashing buffers, so worker
threads hash in parallel.
"""

from __future__ import annotations

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
