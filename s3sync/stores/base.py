"""The object-store interface the pipelines use. No third-party imports."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """An object's key, size (bytes) and ETag (as the server sent it, quotes included)."""

    key: str
    size: int
    etag: str


class Store(Protocol):
    """One bucket of an object store. Keys are full keys within the bucket.

    Every method raises only ``s3sync.errors.StoreError`` subclasses (plus
    ``IntegrityError`` for short bodies); ``TransientStoreError`` marks what a
    retry may fix.
    """

    bucket: str

    def check_bucket(self) -> None:
        """Raise NotFoundError/AccessDeniedError if the bucket cannot be used."""

    def get(self, key: str) -> bytes:
        """The whole object (small objects only: the manifest)."""

    def head(self, key: str) -> ObjectInfo:
        """Size and ETag of ``key``."""

    def read_range_into(self, key: str, offset: int, buf: memoryview, etag: str | None,
                        on_bytes: Callable[[int], None] | None = None, *,
                        on_etag: Callable[[str], None] | None = None) -> None:
        """Fill ``buf`` with ``len(buf)`` bytes of ``key`` from ``offset`` (a ranged GET).

        Unless ``etag`` is None, the request is pinned with ``If-Match: etag`` and the
        response's ETag is compared too (some servers ignore If-Match); a mismatch raises
        ``PartChangedError``. ``on_etag(etag)`` gets the response's ETag as sent (``""``
        if none) before any byte of the body is used, and may raise to refuse it.
        ``on_bytes(n)`` is called as bytes arrive, for progress.
        """

    def read_range_pieces(self, key: str, offset: int, length: int, etag: str | None,
                          scratch: memoryview, *, on_etag: Callable[[str], None] | None = None
                          ) -> Generator[memoryview, None, None]:
        """Yield the ``length`` bytes of ``key`` from ``offset`` in order, as views into
        ``scratch``, each valid until the next is requested (a ranged GET, checked as in
        ``read_range_into``). Pieces are at most ``len(scratch)`` bytes; their lengths add
        up to ``length`` or an error is raised.
        """

    def put(self, key: str, data: bytes) -> ObjectInfo:
        """Write a small object in one request."""

    def upload(self, key: str, stream: BinaryIO, upload_part_size: int) -> None:
        """Multipart-upload a non-seekable stream of unknown length. The ETag a GET will
        show is ``head(key).etag``: some servers (rclone serve s3) answer
        CompleteMultipartUpload with another one."""

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order."""

    def delete(self, keys: list[str]) -> None:
        """Delete ``keys`` (missing keys are not an error)."""

    def close(self) -> None:
        """Release threads and connections."""
