"""The object-store interface the pipelines use. No third-party imports."""

from __future__ import annotations

from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from typing import BinaryIO, Protocol


def error_chain(err: BaseException) -> Iterator[BaseException]:
    """``err`` and every exception it wraps, each once (at most 32): ``__cause__``,
    ``__context__``, exception ``args`` (urllib3 wraps the ssl error there), urllib3's
    ``reason`` (MaxRetryError) and botocore's ``error`` keyword. For classifying transport
    failures by type, never by message text."""
    todo, seen = [err], set()
    while todo and len(seen) < 32:
        e = todo.pop()
        if id(e) in seen:
            continue
        seen.add(id(e))
        yield e
        kwargs = getattr(e, "kwargs", None)
        inner = kwargs.get("error") if isinstance(kwargs, dict) else None
        todo += [x for x in (getattr(e, "reason", None), inner, e.__cause__, e.__context__, *e.args)
                 if isinstance(x, BaseException)]


def same_etag(a: str, b: str) -> bool:
    """Whether two ETags name the same object version, quotes aside (servers differ in
    quoting, e.g. rclone's listings; RFC 9110 section 8.8.3 puts them in quotes)."""
    return a.strip().strip('"') == b.strip().strip('"')


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """An object's key, size (bytes) and ETag (as the server sent it, quotes included)."""

    key: str
    size: int
    etag: str
    modified: float | None = None
    """LastModified as seconds since the epoch, where the request returns it (listings, GET)."""
    encryption: str = ""
    """Server-side encryption that makes the ETag something other than the MD5 of the bytes
    (S3 API reference, "Object" ETag: SSE-KMS, DSSE-KMS and SSE-C objects): ``aws:kms``,
    ``aws:kms:dsse`` or ``SSE-C``; "" otherwise or unknown (listings do not say; HEAD does)."""


@dataclass(frozen=True, slots=True)
class UploadInfo:
    """An incomplete multipart upload: its key, upload id and start (seconds since the epoch)."""

    key: str
    upload_id: str
    initiated: float


@dataclass(frozen=True, slots=True)
class DeleteFailure:
    """One key that DeleteObjects did not delete, with the server's code and message."""

    key: str
    code: str
    message: str


class Store(Protocol):
    """One bucket of an object store. Keys are full keys within the bucket.

    Every method raises only ``s3sync.errors.StoreError`` subclasses (plus
    ``IntegrityError`` for short bodies); ``TransientStoreError`` marks what a
    retry may fix.
    """

    bucket: str

    def url(self, key: str) -> str:
        """How messages name ``key``: ``s3://BUCKET/KEY`` for S3, the URL itself for HTTP."""

    def check_bucket(self) -> None:
        """Raise NotFoundError/AccessDeniedError if the bucket cannot be used."""

    def server_time(self) -> float | None:
        """The server's clock now, in seconds since the epoch, as its answer to
        ``check_bucket`` dated it (to the second); None before that or if unknown."""

    def get(self, key: str) -> bytes:
        """The whole object (small objects only: the manifest)."""

    def read(self, key: str) -> tuple[bytes, ObjectInfo]:
        """The whole object (small objects only) with its ETag and LastModified."""

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

    def put(self, key: str, data: bytes, *, if_match: str | None = None,
            if_none_match: bool = False) -> ObjectInfo:
        """Write a small object in one request.

        ``if_match`` (an ETag) or ``if_none_match`` (the key must not exist) make it an S3
        conditional write (PutObject ``If-Match`` / ``If-None-Match: *``): a server that
        honours them answers 412, raised as ``PartChangedError``. Some servers (rclone
        serve s3) ignore both and write anyway: callers read back what the server holds.
        """

    def upload(self, key: str, stream: BinaryIO, upload_part_size: int) -> None:
        """Multipart-upload a non-seekable stream of unknown length. The ETag a GET will
        show is ``head(key).etag``: some servers (rclone serve s3) answer
        CompleteMultipartUpload with another one."""

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Objects whose key starts with ``prefix``, in key order."""

    def list_dir(self, prefix: str) -> tuple[list[ObjectInfo], list[str]]:
        """One level below ``prefix`` (ListObjectsV2 with ``Delimiter='/'``): the objects whose key
        has no ``/`` after ``prefix``, and the sub-prefixes ("directories", ending in ``/``) below
        it, each once, whatever the number of keys under them."""

    def delete(self, keys: list[str]) -> list[DeleteFailure]:
        """Delete ``keys`` (missing keys are not an error); return the keys the server
        refused, one ``DeleteFailure`` each (DeleteObjects answers 200 with per-key errors)."""

    def list_uploads(self, prefix: str) -> list[UploadInfo]:
        """Incomplete multipart uploads whose key starts with ``prefix``."""

    def abort_upload(self, key: str, upload_id: str) -> None:
        """Abort one multipart upload (its uploaded parts are freed); a gone one is not an error."""

    def versioned(self) -> bool | None:
        """True if bucket versioning is Enabled or Suspended (deleted objects then remain as
        noncurrent versions), False if never enabled, None if the server cannot tell."""

    def close(self) -> None:
        """Release threads and connections."""
