"""The S3 store: the only module that imports botocore and s3transfer (boto3's stack).

Requests follow the S3 API reference (GetObject with ``Range`` and ``If-Match``,
HeadObject, PutObject, ListObjectsV2, DeleteObjects, and multipart upload through
s3transfer's TransferManager). botocore exceptions are translated here into
``s3sync.errors`` classes by error code and HTTP status, never by message text.
"""

from __future__ import annotations

import http.client
import re
from collections.abc import Callable, Generator, Iterator
from typing import TYPE_CHECKING, Any, BinaryIO

import botocore.exceptions as bexc
import botocore.session
from botocore import UNSIGNED
from botocore.config import Config

from ..config import S3Settings
from ..errors import (
    AccessDeniedError,
    ConfigError,
    CredentialsError,
    IntegrityError,
    NotFoundError,
    PartChangedError,
    StoreError,
    TransientStoreError,
    UsageError,
)
from .base import ObjectInfo

if TYPE_CHECKING:
    from s3transfer.manager import TransferManager

_READ_STEP = 1024 * 1024
_CONTENT_RANGE_RE = re.compile(r"^bytes (\d+)-(\d+)/(\d+|\*)$")

_NOT_FOUND = {"NoSuchKey", "NoSuchBucket", "NotFound", "404", "NoSuchUpload"}
# rclone serve s3 (gofakes3) answers a request without a signature, e.g. --no-sign-request
# against a server started with --auth-key, with UnsupportedAlgorithm (HTTP 400).
_DENIED = {"AccessDenied", "403", "Forbidden", "AllAccessDisabled", "AccountProblem", "UnsupportedAlgorithm"}
_BAD_CREDENTIALS = {"InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
                    "InvalidToken", "TokenRefreshRequired", "ExpiredTokenException"}
_CHANGED = {"PreconditionFailed", "412"}
_TRANSIENT = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
              "InternalError", "ServiceUnavailable", "503", "500", "502", "504",
              "RequestTimeTooSkewed"}


def make_client(settings: S3Settings, max_connections: int = 10) -> Any:
    """Build an S3 client from ``settings`` and the usual AWS credential chain.

    The client comes from botocore's session, as ``boto3.client`` builds it, without
    boto3's own layer: importing boto3 also imports s3transfer and its handlers
    (~50 ms of every command's start-up). The client is the same object either way.

    Uploads carry a CRC32 checksum that the server checks (S3's flexible checksums,
    botocore's default, as in the AWS CLI; ``AWS_REQUEST_CHECKSUM_CALCULATION`` or the
    profile's ``request_checksum_calculation = when_required`` turns it off for servers
    that reject it) and then an unsigned payload (SigV4's ``UNSIGNED-PAYLOAD``, S3 API
    reference "Authenticating Requests"): the headers, checksum included, are signed,
    but the body is not hashed a second time with SHA-256. botocore does this by itself
    over https; over http it would also SHA-256 every byte (0.7 s of CPU per GiB here,
    10 % of a publish), on top of the CRC32 and s3sync's own XXH3-128 digests, which
    pulls verify end to end. With checksums turned off, payloads are signed as botocore
    does by default, so a server can still check every body.

    Responses are validated only when the API requires it: s3sync verifies every byte
    with its own digests, and S3-compatible servers differ (rclone sends the whole
    object's CRC32 on ranged GETs, which botocore's default validation rejects).

    Raises:
        CredentialsError: if the named profile does not exist.
        ConfigError: if the AWS request checksum setting has an unknown value.
        UsageError: if the endpoint URL or region is malformed.
    """
    session = botocore.session.Session(profile=settings.profile)
    try:
        s3: dict[str, Any] = {"addressing_style": "path"} if settings.endpoint_url else {}
        checksums = str(session.get_config_variable("request_checksum_calculation"))
        if checksums.strip().lower() != "when_required":
            s3["payload_signing_enabled"] = False
        config = Config(
            signature_version=UNSIGNED if settings.no_sign_request else None,
            connect_timeout=settings.connect_timeout_s,
            read_timeout=settings.read_timeout_s,
            # total_max_attempts counts the first request too, as AWS_MAX_ATTEMPTS does;
            # botocore's "max_attempts" key counts retries only.
            retries={"mode": "standard", "total_max_attempts": max(1, settings.max_attempts)},
            max_pool_connections=max_connections,
            response_checksum_validation="when_required",
            s3=s3 or None,
        )
        return session.create_client("s3", endpoint_url=settings.endpoint_url,
                                     region_name=settings.region, config=config)
    except bexc.ProfileNotFound as err:
        profile = err.kwargs.get("profile") or settings.profile
        raise CredentialsError(f"AWS profile {profile!r} not found") from err
    except bexc.InvalidChecksumConfigError as err:
        raise ConfigError(str(err), hint="set AWS_REQUEST_CHECKSUM_CALCULATION (or request_checksum_calculation "
                                         "in the AWS profile) to when_supported or when_required") from err
    except ValueError as err:  # e.g. AWS_ENDPOINT_URL_S3 without http://
        raise UsageError(f"invalid S3 endpoint or region: {err}",
                         hint="an endpoint URL starts with http:// or https://") from err


def translate(err: Exception, what: str) -> StoreError:
    """Map a botocore/urllib3 exception to an s3sync error naming ``what`` (an s3:// URL)."""
    if isinstance(err, bexc.ClientError):
        error = err.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = str(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _CHANGED or status == "412":
            return PartChangedError(f"{what} changed on the server since the manifest was written (ETag mismatch)")
        if code in _NOT_FOUND or status == "404":
            if code == "NoSuchBucket":
                return NotFoundError(f"{what}: bucket not found", bucket_missing=True,
                                     hint="create the bucket first or check its name")
            return NotFoundError(f"{what}: object not found ({code or status})")
        if code in _BAD_CREDENTIALS:
            return CredentialsError(f"{what}: credentials rejected ({code})")
        if code in _DENIED or status == "403":
            return AccessDeniedError(f"{what}: access denied ({code or status})")
        if code in _TRANSIENT or status.startswith("5"):
            return TransientStoreError(f"{what}: server error {code or status}")
        return StoreError(f"{what}: {code or status} {error.get('Message', '')}".strip())
    if isinstance(err, (bexc.NoCredentialsError, bexc.PartialCredentialsError,
                        bexc.CredentialRetrievalError, bexc.TokenRetrievalError)):
        return CredentialsError(f"{what}: no usable AWS credentials ({type(err).__name__})")
    if isinstance(err, bexc.EndpointConnectionError):
        return TransientStoreError(f"{what}: cannot connect to {err.kwargs.get('endpoint_url')}",
                                   hint="check --endpoint-url and the network")
    if isinstance(err, (bexc.ConnectionError, bexc.ReadTimeoutError, bexc.ResponseStreamingError,
                        bexc.IncompleteReadError, http.client.HTTPException, OSError)):
        return TransientStoreError(f"{what}: connection failed ({type(err).__name__})")
    if isinstance(err, bexc.BotoCoreError):
        return StoreError(f"{what}: {err}")
    raise err


def _body_readinto(body: Any) -> Callable[[memoryview], int]:
    """The ``readinto`` that fills the caller's buffer straight from the socket.

    botocore's ``StreamingBody.readinto`` calls urllib3 2.x's ``HTTPResponse.readinto``,
    which is ``read(n)`` plus a copy: with ``http.client``'s own ``read(n)`` that is three
    copies of every byte (measured: 0.2 s more CPU per GiB, 10 % of a pull's wall time).
    The ``http.client.HTTPResponse`` under them (``StreamingBody._raw_stream._fp``, private
    attributes of botocore and urllib3) reads into the buffer with one copy. botocore asks
    urllib3 not to decode content, so both return the same bytes; lengths are checked by
    the caller. Falls back to ``body.readinto`` if the layers ever look different.
    """
    fp = _http_response(body)
    return fp.readinto if fp is not None else body.readinto


def _http_response(body: Any) -> http.client.HTTPResponse | None:
    """The http.client response under a botocore StreamingBody and urllib3, if it is there."""
    fp = getattr(getattr(body, "_raw_stream", None), "_fp", None)
    return fp if isinstance(fp, http.client.HTTPResponse) else None


_STREAM_ERRORS = (bexc.BotoCoreError, http.client.HTTPException, OSError)
"""What reading a response body may raise: translated by ``translate``. Read straight from
http.client, a socket error arrives as itself (ECONNRESET, EHOSTUNREACH, an SSL error, a
timeout), not wrapped by urllib3 and botocore: every OSError is a transient store error."""


def _skip(readinto: Callable[[memoryview], int], skip: int, url: str) -> None:
    """Read and drop ``skip`` bytes of a body."""
    if not skip:
        return
    scratch = memoryview(bytearray(min(skip, _READ_STEP)))
    while skip:
        n = readinto(scratch[: min(skip, len(scratch))])
        if not n:
            raise IntegrityError(f"{url}: body ended while skipping to the requested range")
        skip -= n


def _finish(body: Any) -> None:
    """Close a GET body; if it was read to its end, hand the connection back to the pool.

    When ``_body_readinto`` read past urllib3, urllib3 does not know the body is complete;
    ``release_conn()`` (urllib3's public method) returns the connection for reuse, as
    urllib3 does itself after a complete read. Otherwise the connection is closed.
    """
    fp = _http_response(body)
    if fp is not None and fp.isclosed():
        body._raw_stream.release_conn()
    body.close()


def _bare(etag: str) -> str:
    """An ETag without its quotes (servers differ in quoting, e.g. rclone's listings)."""
    return etag.strip().strip('"')


class S3Store:
    """One bucket of an S3-compatible server.

    Args:
        client: a botocore S3 client (see ``make_client``); owned by the caller.
        bucket: bucket name.
        concurrency: threads s3transfer may use for one multipart upload.
    """

    def __init__(self, client: Any, bucket: str, concurrency: int = 8) -> None:
        self.client = client
        self.bucket = bucket
        self._concurrency = concurrency
        self._manager: TransferManager | None = None

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def check_bucket(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except bexc.ClientError as err:
            status = str(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
            if status == "404":
                raise NotFoundError(f"s3://{self.bucket}: bucket not found", bucket_missing=True,
                                    hint="create the bucket first or check its name") from err
            if status == "400":
                # A HEAD response has no body, so no error code: ask with a request that
                # gets one (rclone's UnsupportedAlgorithm for an unsigned request, say).
                try:
                    self.client.list_objects_v2(Bucket=self.bucket, MaxKeys=1)
                except Exception as why:
                    raise translate(why, f"s3://{self.bucket}") from why
            raise translate(err, f"s3://{self.bucket}") from err
        except Exception as err:
            raise translate(err, f"s3://{self.bucket}") from err

    def get(self, key: str) -> bytes:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
            return resp["Body"].read()
        except Exception as err:
            raise translate(err, self._url(key)) from err

    def head(self, key: str) -> ObjectInfo:
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as err:
            raise translate(err, self._url(key)) from err
        return ObjectInfo(key, int(resp["ContentLength"]), resp["ETag"])

    def read_range_into(self, key: str, offset: int, buf: memoryview, etag: str | None,
                        on_bytes: Callable[[int], None] | None = None, *,
                        on_etag: Callable[[str], None] | None = None) -> None:
        url = self._url(key)
        if len(buf) == 0:
            return
        body, skip = self._get_range(key, offset, len(buf), etag, on_etag)
        try:
            readinto = _body_readinto(body)
            _skip(readinto, skip, url)
            pos, length = 0, len(buf)
            while pos < length:
                n = readinto(buf[pos: min(length, pos + _READ_STEP)])
                if not n:
                    raise IntegrityError(f"{url}: body ended after {pos} of {length} bytes")
                pos += n
                if on_bytes is not None:
                    on_bytes(n)
        except _STREAM_ERRORS as err:
            raise translate(err, url) from err
        finally:
            _finish(body)

    def read_range_pieces(self, key: str, offset: int, length: int, etag: str | None,
                          scratch: memoryview, *, on_etag: Callable[[str], None] | None = None
                          ) -> Generator[memoryview, None, None]:
        url = self._url(key)
        if length == 0:
            return
        body, skip = self._get_range(key, offset, length, etag, on_etag)
        # The consumer's own errors are never thrown in here (a generator only sees
        # GeneratorExit on close), so everything caught below comes from reading the body.
        try:
            readinto = _body_readinto(body)
            _skip(readinto, skip, url)
            pos = 0
            while pos < length:
                view = scratch[: min(len(scratch), length - pos)]
                n = readinto(view)
                if not n:
                    raise IntegrityError(f"{url}: body ended after {pos} of {length} bytes")
                pos += n
                yield view[:n]
        except _STREAM_ERRORS as err:
            raise translate(err, url) from err
        finally:
            _finish(body)

    def _get_range(self, key: str, offset: int, length: int, etag: str | None,
                   on_etag: Callable[[str], None] | None = None) -> tuple[Any, int]:
        """Send a ranged GET for ``length`` (> 0) bytes at ``offset``, pinned to ``etag``
        (``If-Match``; None: not pinned); check the answer, and hand its ETag to
        ``on_etag`` before any byte of the body is read (it may raise to refuse the
        response). Returns the body and how many bytes to skip in it first (the server
        ignored Range). The caller closes the body with ``_finish``."""
        url = self._url(key)
        pin = {"IfMatch": etag} if etag else {}
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key, Range=f"bytes={offset}-{offset + length - 1}",
                                          **pin)
        except Exception as err:
            translated = translate(err, url)
            if etag and isinstance(translated, PartChangedError):
                # 412 Precondition Failed (S3 API reference, GetObject, If-Match).
                translated = PartChangedError(f"{url} no longer has ETag {etag}, to which the request was "
                                              "pinned (412 Precondition Failed)")
            raise translated from err
        body = resp["Body"]
        try:
            got = resp.get("ETag") or ""
            if etag and got and _bare(got) != _bare(etag):
                # Some servers (rclone serve s3) ignore If-Match: compare ourselves.
                raise PartChangedError(f"{url} has ETag {got}, but the request was pinned to {etag}")
            if on_etag is not None:
                on_etag(got)
            status = resp["ResponseMetadata"]["HTTPStatusCode"]
            content_range = resp.get("ContentRange")
            if status not in (200, 206):
                raise TransientStoreError(f"{url}: unexpected HTTP status {status} for a ranged GET")
            if content_range:
                # 206, or 200 with Content-Range as rclone serve s3 sends it.
                m = _CONTENT_RANGE_RE.match(content_range)
                if not m or int(m[1]) != offset or int(m[2]) != offset + length - 1:
                    raise IntegrityError(f"{url}: Content-Range {content_range!r} does not match "
                                         f"the requested bytes {offset}-{offset + length - 1}")
                return body, 0
            if status == 200:
                # No Content-Range: the server ignored Range (RFC 9110 section 14.2 allows
                # it) and sends the whole object. Skip to our bytes rather than take the
                # body's first bytes as the chunk.
                return body, offset
            raise IntegrityError(f"{url}: 206 response without Content-Range")
        except BaseException:
            _finish(body)
            raise

    def put(self, key: str, data: bytes) -> ObjectInfo:
        try:
            resp = self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                          ContentType="application/json")
        except Exception as err:
            raise translate(err, self._url(key)) from err
        return ObjectInfo(key, len(data), resp["ETag"])

    def upload(self, key: str, stream: BinaryIO, upload_part_size: int) -> None:
        if self._manager is not None and self._manager.config.multipart_chunksize != upload_part_size:
            self.close()
        if self._manager is None:
            # Imported here: only publish uploads (s3transfer adds ~20 ms to every start-up).
            from s3transfer.manager import TransferConfig, TransferManager

            self._manager = TransferManager(self.client, TransferConfig(
                multipart_threshold=upload_part_size,
                multipart_chunksize=upload_part_size,
                max_request_concurrency=self._concurrency,
                max_in_memory_upload_chunks=self._concurrency,
            ))
        try:
            self._manager.upload(stream, self.bucket, key,
                                 extra_args={"ContentType": "application/x-tar"}).result()
        except Exception as err:
            raise translate(err, self._url(key)) from err

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    yield ObjectInfo(obj["Key"], int(obj["Size"]), obj.get("ETag", ""))
        except Exception as err:
            raise translate(err, self._url(prefix)) from err

    def delete(self, keys: list[str]) -> None:
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i: i + 1000]]
            try:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            except Exception as err:
                raise translate(err, self._url(keys[i])) from err

    def close(self) -> None:
        if self._manager is not None:
            self._manager.shutdown()
            self._manager = None
