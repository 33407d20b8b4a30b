"""Every exception botocore, urllib3, http.client or a socket can raise into the S3 store maps
to a deliberate s3sync error (issue 10, items 8 and 10).

The enumeration walks ``botocore.exceptions`` itself, so a botocore upgrade that adds a class
fails here until someone decides what it means (a kind in ``_KINDS``, or ``UNREACHABLE`` with
a reason). No server is needed: these are the store's translation rules, by exception type.
"""

from __future__ import annotations

import http.client
import inspect
import socket
import ssl
import string

import botocore.exceptions as bexc
import pytest
import urllib3.exceptions

from s3sync.errors import (
    ConfigError,
    CredentialsError,
    S3SyncError,
    StoreError,
    TLSError,
    TransientStoreError,
    UsageError,
)
from s3sync.stores import s3 as store

URL = "s3://bucket/ds/g1/part-00000.tar"

BOTOCORE_CLASSES = sorted((c for c in vars(bexc).values()
                           if inspect.isclass(c) and issubclass(c, bexc.BotoCoreError) and c is not bexc.BotoCoreError),
                          key=lambda c: c.__name__)

EXPECTED = {
    "transient": TransientStoreError,
    "credentials": CredentialsError,
    "config": ConfigError,
    "usage": UsageError,
    "tls": TLSError,
}


def make(cls: type[bexc.BotoCoreError], **given: object) -> bexc.BotoCoreError:
    """An instance of ``cls`` with every field of its message format filled in."""
    fields = {name for _, name, _, _ in string.Formatter().parse(cls.fmt) if name}
    fields |= {name for name, param in inspect.signature(cls.__init__).parameters.items()
               if name != "self" and param.default is param.empty and param.kind is param.POSITIONAL_OR_KEYWORD}
    return cls(**{name: f"<{name}>" for name in fields} | given)


def check_message(err: S3SyncError) -> None:
    """The CLI prints ``error: <str(err)>`` and ``hint: <hint>``: one line each."""
    assert "\n" not in str(err) and str(err).strip()
    assert err.hint and "\n" not in err.hint
    assert "internal error" not in str(err)


def test_every_botocore_exception_is_classified() -> None:
    listed = set(store._KINDS) | set(store.UNREACHABLE)
    missing = [c.__name__ for c in BOTOCORE_CLASSES if c not in listed]
    assert not missing, f"classify these botocore exceptions in s3sync/stores/s3.py: {missing}"
    assert not set(store._KINDS) & set(store.UNREACHABLE)
    assert all(reason for reason in store.UNREACHABLE.values())


@pytest.mark.parametrize("cls", [c for c in BOTOCORE_CLASSES if c in store._KINDS], ids=lambda c: c.__name__)
def test_botocore_exception_maps_to_its_kind(cls: type[bexc.BotoCoreError]) -> None:
    err = store.translate(make(cls), URL)
    expected = EXPECTED[store._KINDS[cls]]
    assert type(err) is expected, (cls.__name__, type(err).__name__, str(err))
    assert err.retriable == (expected is TransientStoreError)
    check_message(err)


@pytest.mark.parametrize("cls", sorted(store.UNREACHABLE, key=lambda c: c.__name__), ids=lambda c: c.__name__)
def test_unreachable_botocore_exception_is_a_plain_store_error(cls: type[bexc.BotoCoreError]) -> None:
    """Should one arrive anyway: an error naming the request and the class, not retried."""
    err = store.translate(make(cls), URL)
    assert type(err) is StoreError and not err.retriable
    assert URL in str(err) and cls.__name__ in str(err)
    check_message(err)


def test_connection_closed_before_a_response_is_retriable() -> None:
    """Issue 10 item 8: urllib3's ProtocolError around BadStatusLine / RemoteDisconnected
    reaches s3sync as ConnectionClosedError, an HTTPClientError (was: fatal StoreError)."""
    for inner in (http.client.BadStatusLine("HTTP/1.1 ??? garbage"),
                  http.client.RemoteDisconnected("Remote end closed connection without response")):
        wrapped = urllib3.exceptions.ProtocolError("Connection aborted.", inner)
        err = store.translate(bexc.ConnectionClosedError(error=wrapped, endpoint_url="http://127.0.0.1:1/b/k"), URL)
        assert isinstance(err, TransientStoreError) and err.retriable
    assert store.translate(bexc.HTTPClientError(error=ValueError("x")), URL).retriable


# What reaches translate without botocore's wrapping: urllib3 2.x lets its SSLError out of
# StreamingBody.read; _body_readinto reads http.client directly.
WIRE_ERRORS = [
    urllib3.exceptions.ProtocolError("Connection broken", ConnectionResetError(104, "reset")),
    urllib3.exceptions.ReadTimeoutError(None, "/b/k", "Read timed out."),
    urllib3.exceptions.SSLError(ssl.SSLError(1, "[SSL: DECRYPTION_FAILED_OR_BAD_RECORD_MAC]")),
    urllib3.exceptions.IncompleteRead(10, 20),
    urllib3.exceptions.ResponseNotChunked("not chunked"),
    urllib3.exceptions.DecodeError("bad gzip"),
    http.client.BadStatusLine("garbage"),
    http.client.RemoteDisconnected("closed"),
    http.client.IncompleteRead(b"abc", 10),
    http.client.LineTooLong("header line"),
    ConnectionResetError(104, "Connection reset by peer"),
    BrokenPipeError(32, "Broken pipe"),
    TimeoutError("timed out"),
    socket.timeout("timed out"),
    ssl.SSLEOFError(8, "EOF occurred in violation of protocol"),
    ssl.SSLError(1, "[SSL: BAD_RECORD_MAC]"),
]


@pytest.mark.parametrize("raw", WIRE_ERRORS, ids=lambda e: f"{type(e).__module__}.{type(e).__name__}")
def test_wire_exception_while_reading_a_body_is_retriable(raw: BaseException) -> None:
    err = store.translate(raw, URL)
    assert isinstance(err, TransientStoreError) and err.retriable
    assert URL in str(err)
    check_message(err)


def test_untrusted_certificate_is_a_tls_error_naming_aws_ca_bundle() -> None:
    verify = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    verify.verify_message = "self-signed certificate"
    wrapped = urllib3.exceptions.SSLError(verify)
    err = store.translate(bexc.SSLError(endpoint_url="https://127.0.0.1:9000/b", error=wrapped), URL)
    assert type(err) is TLSError and not err.retriable
    assert "self-signed certificate" in str(err) and "AWS_CA_BUNDLE" in err.hint


def test_https_to_a_plain_http_port_is_a_tls_error_naming_http() -> None:
    wrapped = urllib3.exceptions.SSLError(ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number"))
    err = store.translate(bexc.SSLError(endpoint_url="https://127.0.0.1:9000/b", error=wrapped), URL)
    assert type(err) is TLSError and not err.retriable
    assert "http://" in err.hint


def test_peer_closing_during_the_handshake_is_retriable() -> None:
    wrapped = urllib3.exceptions.SSLError(ssl.SSLEOFError(8, "EOF occurred in violation of protocol"))
    assert store.translate(bexc.SSLError(endpoint_url="https://h/b", error=wrapped), URL).retriable


def test_partial_credentials_hint_names_both_variables() -> None:
    err = store.translate(make(bexc.PartialCredentialsError, provider="env", cred_var="aws_secret_access_key"), "")
    assert type(err) is CredentialsError
    assert "AWS_SECRET_ACCESS_KEY" in err.hint and "AWS_ACCESS_KEY_ID" in err.hint


def test_config_parse_error_is_a_config_error_naming_the_file() -> None:
    err = store.translate(bexc.ConfigParseError(path="/home/u/.aws/config"), "")
    assert type(err) is ConfigError and err.exit_code == 2
    assert "/home/u/.aws/config" in str(err)


def test_missing_content_length_hints_at_the_checksum_setting() -> None:
    """Issue 10 item 11: a server without S3 flexible checksums refuses botocore's aws-chunked
    upload with 411 MissingContentLength: the hint names the setting that avoids it."""
    response = {"Error": {"Code": "MissingContentLength", "Message": "You must provide the Content-Length"},
                "ResponseMetadata": {"HTTPStatusCode": 411}}
    err = store.translate(bexc.ClientError(response, "PutObject"), URL)
    assert isinstance(err, StoreError) and not err.retriable
    assert "AWS_REQUEST_CHECKSUM_CALCULATION=when_required" in err.hint


def test_a_bug_is_not_disguised_as_a_store_error() -> None:
    with pytest.raises(KeyError):
        raise store.translate(KeyError("x"), URL)
