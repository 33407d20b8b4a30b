"""The S3 store: the only module that imports botocore, s3transfer and urllib3 (boto3's stack).

Requests follow the S3 API reference (GetObject with ``Range`` and ``If-Match``,
HeadObject, PutObject, ListObjectsV2, DeleteObjects, and multipart upload through
s3transfer's TransferManager). botocore exceptions are translated here into
``s3sync.errors`` classes by error code and HTTP status, never by message text.
"""

from __future__ import annotations

import http.client
import os
import re
import ssl
import time
from collections.abc import Callable, Generator, Iterator
from email.utils import parsedate_to_datetime
from typing import TYPE_CHECKING, Any, BinaryIO

import botocore.exceptions as bexc
import botocore.session
import urllib3.exceptions
from botocore import UNSIGNED
from botocore.config import Config

from ..config import S3Settings, check_endpoint_url
from ..errors import (
    AccessDeniedError,
    ConfigError,
    CredentialsError,
    IntegrityError,
    NotFoundError,
    PartChangedError,
    S3SyncError,
    StoreError,
    TLSError,
    TransientStoreError,
    UsageError,
)
from .base import DeleteFailure, ObjectInfo, UploadInfo, error_chain, same_etag

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
BUCKET_HINT = "check the bucket name and --endpoint-url (or AWS_ENDPOINT_URL_S3)"
"""Hint of a missing bucket; the CLI says more for publish (create the bucket first)."""
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout",
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
        CredentialsError: if the named profile does not exist, or credentials cannot be
            resolved (a key id without its secret, an expired SSO session...).
        ConfigError: if an AWS config file or setting is invalid (an unparsable
            ~/.aws/config, an unknown checksum or retry mode...).
        UsageError: if the endpoint URL or region is malformed.
    """
    try:
        session = botocore.session.Session(profile=settings.profile)
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
        client = session.create_client("s3", endpoint_url=settings.endpoint_url,
                                       region_name=settings.region, config=config)
        if settings.endpoint_url is None:
            # An endpoint from AWS_ENDPOINT_URL_S3 or the profile: the same rule as --endpoint-url.
            check_endpoint_url(client.meta.endpoint_url)
        ca_bundle = session.get_config_variable("ca_bundle")
        if ca_bundle and client.meta.endpoint_url.startswith("https:") and not os.path.isfile(ca_bundle):
            # urllib3 would fail every connection with a bare OSError (botocore's SSLError or
            # HTTPClientError around it): a failure no retry can fix, and that names no setting.
            raise ConfigError(f"AWS_CA_BUNDLE (or ca_bundle in the AWS profile) names {ca_bundle!r}: no such file",
                              hint="point AWS_CA_BUNDLE at the server's CA certificate (a PEM file), or unset it")
        return client
    except bexc.ProfileNotFound as err:
        profile = err.kwargs.get("profile") or settings.profile
        raise CredentialsError(f"AWS profile {profile!r} not found") from err
    except bexc.InvalidChecksumConfigError as err:
        raise ConfigError(str(err), hint="set AWS_REQUEST_CHECKSUM_CALCULATION (or request_checksum_calculation "
                                         "in the AWS profile) to when_supported or when_required") from err
    except bexc.BotoCoreError as err:
        # Credentials are resolved here (Session.create_client), so a partial key pair, a
        # broken ~/.aws/config or an expired SSO session surface now, not at the first request.
        raise translate(err, "") from err
    except ValueError as err:  # e.g. AWS_ENDPOINT_URL_S3 without http://
        raise UsageError(f"invalid S3 endpoint or region: {err}",
                         hint="an endpoint URL starts with http:// or https://") from err


# --------------------------------------------------------------------------- error classification
#
# Every exception class of botocore.exceptions that a user, their configuration or the network
# can cause is listed below with what it means for s3sync (tests/unit/test_store_errors.py fails
# when botocore grows a class that is in neither table). Classes are matched by type along the
# MRO, never by message text, so a subclass botocore adds later inherits its base's meaning.

_TRANSIENT = "transient"      # the request or its answer was lost: ask again (TransientStoreError)
_CREDENTIALS = "credentials"  # no usable credentials (CredentialsError, exit 1)
_CONFIG = "config"            # the AWS config file, profile or AWS_* variables are wrong (ConfigError, exit 2)
_USAGE = "usage"              # a flag or name s3sync passed on is impossible (UsageError, exit 2)
_TLS = "tls"                  # TLS could not be set up (TLSError, or transient: see _tls_error)

_KINDS: dict[type[BaseException], str] = {
    # Transport. botocore's URLLib3Session.send wraps urllib3's failures: ProtocolError (a
    # malformed status line, a connection closed before any response: http.client's
    # BadStatusLine and RemoteDisconnected) becomes ConnectionClosedError; anything else it
    # did not expect, HTTPClientError. Neither says the server acted on the request, and
    # every request s3sync sends is idempotent (GET, HEAD, PUT of the same bytes, LIST,
    # DELETE), so each may be sent again.
    bexc.HTTPClientError: _TRANSIENT,          # base of the three below
    bexc.ConnectionClosedError: _TRANSIENT,
    bexc.ReadTimeoutError: _TRANSIENT,
    bexc.ResponseStreamingError: _TRANSIENT,   # urllib3 ProtocolError while reading a body
    bexc.ConnectionError: _TRANSIENT,          # base of the four below
    bexc.EndpointConnectionError: _TRANSIENT,  # refused, unreachable, DNS failure
    bexc.ConnectTimeoutError: _TRANSIENT,
    bexc.ProxyConnectionError: _TRANSIENT,
    bexc.SSLError: _TLS,
    bexc.IncompleteReadError: _TRANSIENT,      # body shorter than its Content-Length
    bexc.ChecksumError: _TRANSIENT,            # a response checksum mismatch: corrupted in transit
    bexc.FlexibleChecksumError: _TRANSIENT,    # the same for S3's flexible checksums
    bexc.CapacityNotAvailableError: _TRANSIENT,  # botocore's retry quota is spent for now
    # Credentials: resolved by botocore's chain (environment, profile, SSO, IMDS...).
    bexc.NoCredentialsError: _CREDENTIALS,
    bexc.PartialCredentialsError: _CREDENTIALS,  # e.g. AWS_ACCESS_KEY_ID without the secret
    bexc.CredentialRetrievalError: _CREDENTIALS,  # credential_process, assume-role, container...
    bexc.TokenRetrievalError: _CREDENTIALS,
    bexc.NoAuthTokenError: _CREDENTIALS,
    bexc.SSOError: _CREDENTIALS,
    bexc.SSOTokenLoadError: _CREDENTIALS,
    bexc.UnauthorizedSSOTokenError: _CREDENTIALS,
    bexc.LoginError: _CREDENTIALS,             # 'aws login' sessions
    bexc.LoginAuthorizationCodeError: _CREDENTIALS,
    bexc.LoginInsufficientPermissions: _CREDENTIALS,
    bexc.LoginRefreshRequired: _CREDENTIALS,
    bexc.LoginTokenLoadError: _CREDENTIALS,
    bexc.RefreshWithMFAUnsupportedError: _CREDENTIALS,
    bexc.MetadataRetrievalError: _CREDENTIALS,  # EC2 instance metadata (IMDS)
    bexc.UnknownCredentialError: _CREDENTIALS,
    bexc.ProfileNotFound: _CREDENTIALS,        # --profile / AWS_PROFILE names no profile
    # Configuration: ~/.aws/config (AWS_CONFIG_FILE), AWS_* variables, s3sync's flags.
    bexc.ConfigParseError: _CONFIG,
    bexc.ConfigNotFound: _CONFIG,
    bexc.InvalidConfigError: _CONFIG,          # e.g. a source_profile that cannot work
    bexc.InfiniteLoopConfigError: _CONFIG,
    bexc.InvalidChecksumConfigError: _CONFIG,  # request_checksum_calculation = bogus
    bexc.InvalidRetryConfigurationError: _CONFIG,
    bexc.InvalidRetryModeError: _CONFIG,       # retry_mode / AWS_RETRY_MODE
    bexc.InvalidMaxRetryAttemptsError: _CONFIG,  # max_attempts / AWS_MAX_ATTEMPTS
    bexc.InvalidS3AddressingStyleError: _CONFIG,
    bexc.InvalidS3UsEast1RegionalEndpointConfigError: _CONFIG,
    bexc.InvalidSTSRegionalEndpointsConfigError: _CONFIG,
    bexc.InvalidEndpointConfigurationError: _CONFIG,
    bexc.InvalidEndpointDiscoveryConfigurationError: _CONFIG,
    bexc.InvalidIMDSEndpointError: _CONFIG,
    bexc.InvalidIMDSEndpointModeError: _CONFIG,
    bexc.InvalidProxiesConfigError: _CONFIG,
    bexc.InvalidDefaultsMode: _CONFIG,
    bexc.UnknownSignatureVersionError: _CONFIG,
    bexc.UnsupportedSignatureVersionError: _CONFIG,
    bexc.MissingDependencyException: _CONFIG,  # a setting that needs botocore[crt] (SigV4a, CRC64)
    bexc.MD5UnavailableError: _CONFIG,         # a FIPS system without MD5
    bexc.UnsupportedS3ConfigurationError: _CONFIG,
    bexc.UnsupportedS3AccesspointConfigurationError: _CONFIG,
    bexc.AwsChunkedWrapperError: _CONFIG,      # an aws-chunked upload body botocore cannot rewind
    # Region and endpoint, from --region / AWS_REGION / the profile.
    bexc.BaseEndpointResolverError: _USAGE,
    bexc.NoRegionError: _USAGE,
    bexc.UnknownEndpointError: _USAGE,
    bexc.UnknownFIPSEndpointError: _USAGE,
    bexc.EndpointVariantError: _USAGE,
    bexc.EndpointProviderError: _USAGE,
    bexc.EndpointResolutionError: _USAGE,      # e.g. a region that is not a valid host label
    bexc.InvalidRegionError: _USAGE,
    bexc.UnknownRegionError: _USAGE,
    bexc.ServiceNotInRegionError: _USAGE,
    bexc.InvalidHostLabelError: _USAGE,
    bexc.InvalidDNSNameError: _USAGE,          # a bucket name virtual-hosted addressing cannot use
}

UNREACHABLE: dict[type[BaseException], str] = {
    # Request building: s3sync builds every request from validated values; one of these is a
    # bug of s3sync, shown as an error naming the request (no retry).
    bexc.ValidationError: "request parameters are built by s3sync from validated values",
    bexc.ParamValidationError: "request parameters are built by s3sync from validated values",
    bexc.RangeError: "request parameters are built by s3sync from validated values",
    bexc.UnknownKeyError: "request parameters are built by s3sync from validated values",
    bexc.UnknownParameterError: "request parameters are built by s3sync from validated values",
    bexc.AliasConflictParameterError: "request parameters are built by s3sync from validated values",
    bexc.MissingParametersError: "request parameters are built by s3sync from validated values",
    bexc.UnknownClientMethodError: "s3sync calls only S3 operations botocore defines",
    bexc.OperationNotPageableError: "s3sync paginates list_objects_v2 only",
    bexc.PaginationError: "raised for paginator arguments (PageSize, StartingToken) s3sync does not pass",
    bexc.InvalidExpressionError: "JMESPath expressions of paginators; s3sync passes none",
    bexc.UnseekableStreamError: "s3transfer and put() send bytes in memory, always seekable",
    # Bucket ARNs: parse_s3_url admits no ':' in a bucket name.
    bexc.UnsupportedS3ArnError: "a bucket name from parse_s3_url cannot be an ARN",
    bexc.UnsupportedS3ControlArnError: "s3sync does not use S3 Control",
    bexc.UnsupportedS3ControlConfigurationError: "s3sync does not use S3 Control",
    bexc.UnsupportedOutpostResourceError: "a bucket name from parse_s3_url cannot be an Outposts ARN",
    # botocore's own data files and other services.
    bexc.DataNotFoundError: "botocore's service models are installed with it",
    bexc.UnknownServiceError: "s3sync creates 's3' clients only",
    bexc.ApiVersionNotFoundError: "s3sync pins no API version",
    bexc.UnknownServiceStyle: "S3's model is REST-XML",
    bexc.UnsupportedServiceProtocolsError: "S3's model is REST-XML",
    bexc.UnknownEndpointResolutionBuiltInName: "the endpoint ruleset ships with botocore",
    bexc.StubResponseError: "botocore.stub is for tests; s3sync does not use it",
    bexc.StubAssertionError: "botocore.stub is for tests; s3sync does not use it",
    bexc.UnStubbedResponseError: "botocore.stub is for tests; s3sync does not use it",
    bexc.WaiterError: "s3sync uses no waiters",
    bexc.WaiterConfigError: "s3sync uses no waiters",
}
"""BotoCoreError subclasses s3sync cannot meet, each with the reason. If one arrives anyway it
becomes a plain StoreError naming the request, never a retry or an 'internal error'."""

_HINTS: dict[type[BaseException], str] = {
    bexc.EndpointConnectionError: "check --endpoint-url (or AWS_ENDPOINT_URL_S3) and the network",
    bexc.ConnectTimeoutError: "check --endpoint-url (or AWS_ENDPOINT_URL_S3) and the network",
    bexc.ProxyConnectionError: "check the proxy in HTTPS_PROXY / HTTP_PROXY (or exclude the endpoint with NO_PROXY)",
    bexc.PartialCredentialsError: "set both AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or neither, to use "
                                  "the profile), or complete the profile named by AWS_PROFILE/--profile",
    bexc.NoCredentialsError: CredentialsError.hint,
    bexc.SSOError: "run 'aws sso login' (with the same --profile), then run the command again",
    bexc.LoginError: "run 'aws login' (with the same --profile), then run the command again",
    bexc.MetadataRetrievalError: "outside EC2, configure credentials (AWS_PROFILE, aws configure) "
                                 "or use --no-sign-request for public buckets",
    bexc.ConfigParseError: "fix the AWS config or credentials file named above (AWS_CONFIG_FILE, "
                           "AWS_SHARED_CREDENTIALS_FILE, ~/.aws/)",
    bexc.ConfigNotFound: "fix AWS_CONFIG_FILE / AWS_SHARED_CREDENTIALS_FILE or create the file",
    bexc.MissingDependencyException: "change the AWS setting named above, or install botocore[crt]",
    bexc.BaseEndpointResolverError: "check --region (or AWS_REGION / the profile's region), e.g. us-east-1",
    bexc.EndpointProviderError: "check --region (or AWS_REGION / the profile's region) and --endpoint-url",
    bexc.InvalidRegionError: "check --region (or AWS_REGION / the profile's region), e.g. us-east-1",
    bexc.InvalidHostLabelError: "check --region (or AWS_REGION / the profile's region), e.g. us-east-1",
    bexc.InvalidDNSNameError: "use a bucket name without '_' or upper case, or set addressing_style = path "
                              "in the profile's s3 settings",
}
_KIND_HINTS = {
    _CONFIG: "fix the AWS setting named above (~/.aws/config, AWS_CONFIG_FILE or an AWS_* variable)",
    _CREDENTIALS: CredentialsError.hint,
    _USAGE: "check --region, --endpoint-url and the s3:// URL",
}

# What a body read can raise outside botocore: urllib3 2.x lets its SSLError (and DecodeError,
# never met: botocore does not ask urllib3 to decode) out of StreamingBody.read, and
# _body_readinto reads http.client directly (IncompleteRead, BadStatusLine, socket errors).
_WIRE_ERRORS = (urllib3.exceptions.HTTPError, http.client.HTTPException, OSError)


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


def _tls_error(err: BaseException, what: str) -> StoreError:
    """botocore's SSLError: the TLS handshake failed (TLSError, not retriable), unless the
    peer just closed or reset the connection during it (a transient failure).

    A certificate that does not verify is ``ssl.SSLCertVerificationError`` under urllib3's
    SSLError; ``https://`` to a plain-http port fails with another ``ssl.SSLError``
    (WRONG_VERSION_NUMBER). Python's ssl module, "Exceptions".
    """
    chain = list(error_chain(err))
    prefix = f"{what}: " if what else ""
    if any(isinstance(e, ssl.SSLCertVerificationError) for e in chain):
        reason = next(e for e in chain if isinstance(e, ssl.SSLCertVerificationError))
        return TLSError(f"{prefix}the server's TLS certificate is not trusted "
                        f"({getattr(reason, 'verify_message', '') or 'certificate verify failed'})",
                        hint="if the server uses a private or self-signed certificate, set AWS_CA_BUNDLE to its "
                             "CA certificate (PEM file); check that --endpoint-url names the server's host")
    if any(isinstance(e, (ssl.SSLEOFError, ssl.SSLZeroReturnError, ConnectionResetError)) for e in chain):
        return TransientStoreError(f"{prefix}connection closed during the TLS handshake")
    return TLSError(f"{prefix}TLS handshake failed ({_one_line(err)})",
                    hint="if the server speaks plain http, write --endpoint-url http://...; if it uses a private "
                         "certificate, set AWS_CA_BUNDLE to its CA certificate (PEM file)")


def kind_of(cls: type[BaseException]) -> str | None:
    """The kind (``_KINDS``) of a botocore exception class, by its nearest listed ancestor."""
    return next((_KINDS[c] for c in cls.__mro__ if c in _KINDS), None)


def translate(err: Exception, what: str) -> S3SyncError:
    """Map a botocore, urllib3, http.client or socket exception to an s3sync error.

    Classification is by exception type and, for S3's answers, by error code and HTTP status
    (S3 API reference, "Error responses"), never by message text.

    Args:
        err: the exception raised by a client call or while reading a response body.
        what: the s3:// URL the request was about ("" for client set-up: no request yet).

    Returns:
        A ``StoreError`` (``TransientStoreError`` when asking again may succeed, ``TLSError``,
        ``CredentialsError``...), or a ``UsageError``/``ConfigError`` for a bad setting.

    Raises:
        Exception: ``err`` itself if it is none of these (a bug: the CLI reports it as one).
    """
    prefix = f"{what}: " if what else ""
    if isinstance(err, bexc.ClientError):
        error = err.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = str(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))
        if code in _CHANGED or status == "412":
            return PartChangedError(f"{what} changed on the server since the manifest was written (ETag mismatch)")
        if code in _NOT_FOUND or status == "404":
            if code == "NoSuchBucket":
                return NotFoundError(f"{what}: bucket not found", bucket_missing=True, hint=BUCKET_HINT)
            return NotFoundError(f"{what}: object not found ({code or status})")
        if code in _BAD_CREDENTIALS:
            return CredentialsError(f"{what}: credentials rejected ({code})")
        if code in _DENIED or status == "403":
            return AccessDeniedError(f"{what}: access denied ({code or status})")
        if code in _TRANSIENT_CODES or status.startswith("5"):
            return TransientStoreError(f"{what}: server error {code or status}")
        if code == "MissingContentLength" or status == "411":
            # Over https botocore streams an upload with its CRC32 in a trailer
            # (Content-Encoding: aws-chunked, no Content-Length); servers that do not
            # implement S3's flexible checksums answer 411 MissingContentLength.
            return StoreError(f"{what}: the server refused the upload ({code or status}: it wants a "
                              "Content-Length, and botocore sent the body aws-chunked with a trailing checksum)",
                              hint="the server does not support S3 flexible checksums: set "
                                   "AWS_REQUEST_CHECKSUM_CALCULATION=when_required (or request_checksum_calculation "
                                   "= when_required in the AWS profile)")
        return StoreError(f"{what}: {code or status} {error.get('Message', '')}".strip())
    if isinstance(err, bexc.BotoCoreError):
        kind = None if type(err) in UNREACHABLE else kind_of(type(err))
        hint = next((_HINTS[c] for c in type(err).__mro__ if c in _HINTS), None)
        if kind == _TLS:
            return _tls_error(err, what)
        if kind == _TRANSIENT:
            return TransientStoreError(f"{prefix}{_one_line(err)}", hint=hint)
        if kind == _CREDENTIALS:
            return CredentialsError(f"{prefix}no usable AWS credentials: {_one_line(err)}",
                                    hint=hint or _KIND_HINTS[kind])
        if kind == _CONFIG:
            return ConfigError(f"AWS configuration: {_one_line(err)}", hint=hint or _KIND_HINTS[kind])
        if kind == _USAGE:
            return UsageError(f"{prefix}{_one_line(err)}", hint=hint or _KIND_HINTS[kind])
        return StoreError(f"{prefix}{type(err).__name__}: {_one_line(err)}")
    if isinstance(err, urllib3.exceptions.SSLError) or isinstance(err, ssl.SSLError):
        # After a handshake that succeeded: the stream broke (truncated record, reset).
        return TransientStoreError(f"{prefix}TLS stream broken while reading ({type(err).__name__})")
    if isinstance(err, _WIRE_ERRORS):
        return TransientStoreError(f"{prefix}connection failed ({type(err).__name__})")
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


_STREAM_ERRORS = (bexc.BotoCoreError, *_WIRE_ERRORS)
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
        self._clock_offset_s: float | None = None

    def url(self, key: str) -> str:
        """``s3://BUCKET/KEY``: how messages name ``key``."""
        return f"s3://{self.bucket}/{key}"

    def server_time(self) -> float | None:
        # The Date header of check_bucket's answer (whole seconds), against this clock.
        return None if self._clock_offset_s is None else time.time() + self._clock_offset_s

    def check_bucket(self) -> None:
        try:
            resp = self.client.head_bucket(Bucket=self.bucket)
            try:
                date = parsedate_to_datetime(resp["ResponseMetadata"]["HTTPHeaders"]["date"])
                self._clock_offset_s = date.timestamp() - time.time()
            except (KeyError, TypeError, ValueError, IndexError, OverflowError):
                self._clock_offset_s = None  # no usable Date header: this clock is all there is
        except bexc.ClientError as err:
            status = str(err.response.get("ResponseMetadata", {}).get("HTTPStatusCode"))
            if status == "404":
                raise NotFoundError(f"s3://{self.bucket}: bucket not found", bucket_missing=True,
                                    hint=BUCKET_HINT) from err
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
            raise translate(err, self.url(key)) from err

    def read(self, key: str) -> tuple[bytes, ObjectInfo]:
        try:
            resp = self.client.get_object(Bucket=self.bucket, Key=key)
            data = resp["Body"].read()
        except Exception as err:
            raise translate(err, self.url(key)) from err
        modified = resp.get("LastModified")
        return data, ObjectInfo(key, len(data), resp.get("ETag", ""),
                                modified.timestamp() if modified is not None else None)

    def head(self, key: str) -> ObjectInfo:
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=key)
        except Exception as err:
            raise translate(err, self.url(key)) from err
        sse = str(resp.get("ServerSideEncryption") or "")
        encryption = "SSE-C" if resp.get("SSECustomerAlgorithm") else sse if sse.startswith("aws:kms") else ""
        return ObjectInfo(key, int(resp["ContentLength"]), resp["ETag"], encryption=encryption)

    def head_part(self, key: str, part_number: int) -> tuple[int, int]:
        """The size of one multipart upload part of ``key`` and how many parts it has.

        Sends HeadObject with ``partNumber`` (S3 API reference, HeadObject: "a 'ranged'
        HEAD request for the part specified"); S3 answers with that part's Content-Length
        and ``x-amz-mp-parts-count``. A server that ignores ``partNumber`` answers for the
        whole object without a parts count (rclone serve s3 v1.75 does); so does S3 for an
        object that was not a multipart upload. GetObjectAttributes ``ObjectParts`` is no
        fallback here: it lists part sizes only for objects uploaded with checksums, moto
        5.2 leaves ``ObjectParts`` out and rclone answers 500 (which botocore retries).

        Args:
            key: the object's key.
            part_number: 1-based multipart upload part number (never a chunk index).

        Returns:
            ``(size, parts)``: the part's size in bytes and the upload's part count; ``(0, 0)``
            if the server does not tell (or the object was not a multipart upload).

        Raises:
            StoreError: as ``head`` (NotFoundError, AccessDeniedError, TransientStoreError...);
                a part number beyond the last part is S3's 416 InvalidPartNumber.
        """
        url = self.url(key)
        try:
            resp = self.client.head_object(Bucket=self.bucket, Key=key, PartNumber=part_number)
        except Exception as err:
            raise translate(err, f"{url} (part {part_number})") from err
        parts = int(resp.get("PartsCount") or 0)
        size = int(resp.get("ContentLength") or 0)
        if parts >= part_number and size > 0:
            return size, parts
        return 0, 0

    def read_range_into(self, key: str, offset: int, buf: memoryview, etag: str | None,
                        on_bytes: Callable[[int], None] | None = None, *,
                        on_etag: Callable[[str], None] | None = None) -> None:
        url = self.url(key)
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
        url = self.url(key)
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
        url = self.url(key)
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
            if etag and got and not same_etag(got, etag):
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

    def put(self, key: str, data: bytes, *, if_match: str | None = None,
            if_none_match: bool = False) -> ObjectInfo:
        # S3 conditional writes (PutObject If-Match / If-None-Match, S3 API reference,
        # "Conditional requests"): 412 PreconditionFailed is translated to PartChangedError.
        extra: dict[str, str] = {}
        if if_match is not None:
            extra["IfMatch"] = if_match
        if if_none_match:
            extra["IfNoneMatch"] = "*"
        try:
            resp = self.client.put_object(Bucket=self.bucket, Key=key, Body=data,
                                          ContentType="application/json", **extra)
        except Exception as err:
            raise translate(err, self.url(key)) from err
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
            raise translate(err, self.url(key)) from err

    def list_children(self, prefix: str, *, page_size: int | None = None) -> list[ObjectInfo]:
        """The objects directly under ``prefix/``, in key order, over all pages.

        ListObjectsV2 with ``Delimiter`` ``/`` (S3 API reference): keys with a further ``/``
        after the prefix come back as CommonPrefixes and are left out, and so is a
        "folder" marker object named ``prefix/`` itself (what consoles create).

        Args:
            prefix: a key prefix without trailing ``/`` (``""``: the bucket's top level).
            page_size: keys per ListObjectsV2 request (``MaxKeys``); None: the server's
                default (S3: 1000).

        Raises:
            StoreError: as ``list``.
        """
        base = prefix.strip("/")
        base = f"{base}/" if base else ""
        out: list[ObjectInfo] = []
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base, Delimiter="/",
                PaginationConfig={"PageSize": page_size} if page_size else {})
            for page in pages:
                for obj in page.get("Contents", []):
                    key = obj["Key"]
                    if key == base or "/" in key[len(base):]:
                        continue  # the folder marker; a server that ignores Delimiter
                    modified = obj.get("LastModified")
                    out.append(ObjectInfo(key, int(obj["Size"]), obj.get("ETag", ""),
                                          modified.timestamp() if modified is not None else None))
        except Exception as err:
            raise translate(err, self.url(base)) from err
        return sorted(out, key=lambda o: o.key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        try:
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for obj in page.get("Contents", []):
                    modified = obj.get("LastModified")
                    yield ObjectInfo(obj["Key"], int(obj["Size"]), obj.get("ETag", ""),
                                     modified.timestamp() if modified is not None else None)
        except Exception as err:
            raise translate(err, self.url(prefix)) from err

    def list_dir(self, prefix: str) -> tuple[list[ObjectInfo], list[str]]:
        try:
            objects: list[ObjectInfo] = []
            prefixes: list[str] = []
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix,
                                                                          Delimiter="/")
            for page in pages:
                for obj in page.get("Contents", []):
                    modified = obj.get("LastModified")
                    objects.append(ObjectInfo(obj["Key"], int(obj["Size"]), obj.get("ETag", ""),
                                              modified.timestamp() if modified is not None else None))
                prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", []) if p.get("Prefix")]
            return objects, prefixes
        except Exception as err:
            raise translate(err, self.url(prefix)) from err

    def delete(self, keys: list[str]) -> list[DeleteFailure]:
        # DeleteObjects answers 200 even when some keys were refused: with Quiet the answer
        # lists only those, under "Errors" (S3 API reference, DeleteObjects).
        failures: list[DeleteFailure] = []
        for i in range(0, len(keys), 1000):
            batch = [{"Key": k} for k in keys[i: i + 1000]]
            try:
                resp = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            except Exception as err:
                raise translate(err, self.url(keys[i])) from err
            for e in resp.get("Errors", []):
                failures.append(DeleteFailure(str(e.get("Key", "")), str(e.get("Code", "")),
                                              str(e.get("Message", ""))))
        return failures

    def list_uploads(self, prefix: str) -> list[UploadInfo]:
        out: list[UploadInfo] = []
        try:
            pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                for up in page.get("Uploads", []):
                    initiated = up.get("Initiated")
                    out.append(UploadInfo(up["Key"], up["UploadId"],
                                          initiated.timestamp() if initiated is not None else 0.0))
        except bexc.ClientError as err:
            # rclone serve s3 (gofakes3) answers NoSuchUpload when no upload matches the prefix.
            if str(err.response.get("Error", {}).get("Code", "")) == "NoSuchUpload":
                return out
            raise translate(err, self.url(prefix)) from err
        except Exception as err:
            raise translate(err, self.url(prefix)) from err
        return out

    def abort_upload(self, key: str, upload_id: str) -> None:
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except bexc.ClientError as err:
            if str(err.response.get("Error", {}).get("Code", "")) == "NoSuchUpload":
                return
            raise translate(err, self.url(key)) from err
        except Exception as err:
            raise translate(err, self.url(key)) from err

    def versioned(self) -> bool | None:
        try:
            resp = self.client.get_bucket_versioning(Bucket=self.bucket)
        except Exception:
            return None  # not implemented by every server (or not allowed): cannot tell
        return resp.get("Status") in ("Enabled", "Suspended")

    def close(self) -> None:
        if self._manager is not None:
            self._manager.shutdown()
            self._manager = None
