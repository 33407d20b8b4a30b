"""Messages as users see them (issue 10, items 10 and 11): the exit code, one ``error:`` line
naming the thing, one ``hint:`` line that points the right way, no traceback.

Covers credentials and AWS config mistakes (were "internal error"), a missing bucket on pull
versus publish, a destination that is a file, ``--name ''``, ``--part-size`` below
``--chunk-size``, an endpoint URL with a path, and TLS: a self-signed certificate (hint:
``AWS_CA_BUNDLE``, which then works) and ``https://`` to a plain-http port.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

MOTO = pytest.mark.parametrize("s3_server", ["moto"], indirect=True)


SMALL = ["--chunk-size", "64KiB", "--part-size", "256KiB"]


def assert_error(result, code: int) -> None:
    """The error contract (as in test_cli.py): exit code, ``error:`` first, a ``hint:`` line,
    no traceback, no "internal error"."""
    assert result.code == code, result.describe()
    assert result.stderr.startswith("error: "), result.describe()
    lines = result.stderr.splitlines()
    assert any(line.startswith("hint: ") for line in lines[1:]), result.describe()
    assert "Traceback" not in result.stderr and "internal error" not in result.stderr, result.describe()
    assert result.stdout == "", result.describe()


def hint(result) -> str:
    return next(line for line in result.stderr.splitlines() if line.startswith("hint: "))


def error(result) -> str:
    return result.stderr.splitlines()[0]


def small_tree(root: Path) -> Path:
    root.mkdir(parents=True)
    (root / "a.txt").write_text("a\n")
    return root


# --------------------------------------------------------------------------- usage (exit 2)


def test_bad_names_sizes_and_endpoints_say_what_is_wrong(run_many, tmp_path: Path) -> None:
    src = small_tree(tmp_path / "ds")
    calls = [
        ["publish", src, "--name", "", "--to", "s3://bucket/x"],
        ["publish", src, "--name", "../up", "--to", "s3://bucket/x"],
        ["publish", src, "--to", "s3://bucket/x", "--part-size", "64KiB", "--chunk-size", "1MiB"],
        ["ls", "s3://bucket/x", "--endpoint-url", "http://127.0.0.1:9/bucket"],
    ]
    empty, dotdot, sizes, endpoint = run_many([(c, {}) for c in calls])
    for result in (empty, dotdot):
        assert_error(result, 2)
        assert "not a valid dataset name" in error(result)
        assert "letters, digits" in hint(result) and "--help" not in hint(result)
    assert "--name ''" in error(empty)
    assert_error(sizes, 2)
    assert "64.0 KiB" in error(sizes) and "1.0 MiB" in error(sizes)
    assert "--part-size at least 1.0 MiB" in hint(sizes)
    assert_error(endpoint, 2)
    assert "has a path ('/bucket')" in error(endpoint)
    assert "--endpoint-url http://127.0.0.1:9 " in hint(endpoint)


@MOTO
def test_endpoint_with_a_path_from_the_environment_is_refused(run, s3_server, bucket, tmp_path: Path) -> None:
    """AWS_ENDPOINT_URL_S3 is read by botocore, not by s3sync's flags: the same rule applies
    (was: 'no dataset at ...' for a bucket that exists)."""
    result = run("ls", f"s3://{bucket}/x", env={"AWS_ENDPOINT_URL_S3": f"{s3_server.endpoint_url}/{bucket}"})
    assert_error(result, 2)
    assert "has a path" in error(result)


# --------------------------------------------------------------------------- credentials and AWS config


@MOTO
def test_key_id_without_secret_is_a_credentials_error(run, s3_server, bucket, tmp_path: Path) -> None:
    result = run("pull", f"s3://{bucket}/x", tmp_path / "dest", "--endpoint-url", s3_server.endpoint_url,
                 env={"AWS_SECRET_ACCESS_KEY": None})
    assert_error(result, 1)
    assert "credentials" in error(result)
    assert "AWS_SECRET_ACCESS_KEY" in hint(result)
    assert not (tmp_path / "dest").exists()


@MOTO
@pytest.mark.parametrize("which", ["AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"])
def test_broken_aws_config_file_is_a_config_error(run, s3_server, bucket, tmp_path: Path, which: str) -> None:
    broken = tmp_path / "aws-file"
    broken.write_text("region = us-east-1\n[default\n")  # no section header: configparser gives up
    result = run("ls", f"s3://{bucket}/x", "--endpoint-url", s3_server.endpoint_url,
                 env={which: str(broken), "AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None})
    assert_error(result, 2)
    assert str(broken) in error(result)


# --------------------------------------------------------------------------- hints that depend on the command


@MOTO
def test_missing_bucket_hint_depends_on_the_command(run_many, s3_server, tmp_path: Path) -> None:
    ep = ["--endpoint-url", s3_server.endpoint_url]
    src = small_tree(tmp_path / "ds")
    calls = [["pull", "s3://no-such-bucket-s3sync/x", tmp_path / "dest", *ep],
             ["ls", "s3://no-such-bucket-s3sync/x", *ep],
             ["publish", src, "--to", "s3://no-such-bucket-s3sync/x", *ep]]
    pull, ls, publish = run_many([(c, {}) for c in calls])
    for result in (pull, ls):
        assert_error(result, 1)
        assert "bucket not found" in error(result)
        assert "create" not in hint(result) and "check the bucket name" in hint(result)
    assert_error(publish, 1)
    assert "create the bucket first" in hint(publish)


@MOTO
def test_destination_that_is_a_file_is_called_a_file(run, s3_server, bucket, tmp_path: Path) -> None:
    ep = ["--endpoint-url", s3_server.endpoint_url]
    assert run("publish", small_tree(tmp_path / "ds"), "--to", f"s3://{bucket}/ds", *ep, *SMALL, "-q").code == 0
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "ds").write_text("mine\n")
    result = run("pull", f"s3://{bucket}/ds", tmp_path / "dest", *ep)
    assert_error(result, 1)
    assert "(a file)" in error(result)
    assert "remove the file" in hint(result) and "directory" not in hint(result)
    assert (tmp_path / "dest" / "ds").read_text() == "mine\n"


# --------------------------------------------------------------------------- TLS


class TLSFront:
    """A TLS-terminating TCP relay on loopback in front of a plain-http server."""

    def __init__(self, upstream_port: int, cert: Path, key: Path) -> None:
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.upstream_port = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()  # the client refused our certificate: what the test is about
            return
        upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        self._pump(client, upstream)

    @staticmethod
    def _pump(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.stopped = True
        self.listener.close()


@pytest.fixture
def tls_front(s3_server, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(https endpoint URL, its self-signed certificate) in front of the S3 server."""
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("no openssl command to make a self-signed certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                    "-nodes", "-keyout", key, "-out", cert, "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    front = TLSFront(int(s3_server.endpoint_url.rsplit(":", 1)[1]), cert, key)
    try:
        yield f"https://127.0.0.1:{front.port}", cert
    finally:
        front.close()


@MOTO
def test_self_signed_certificate_hint_names_aws_ca_bundle(run, s3_server, bucket, tls_front, tmp_path: Path) -> None:
    endpoint, cert = tls_front
    result = run("ls", f"s3://{bucket}/x", "--endpoint-url", endpoint)
    assert_error(result, 1)
    assert "certificate is not trusted" in error(result)
    assert "AWS_CA_BUNDLE" in hint(result)
    # Following the hint works: the request gets through (and finds no dataset there).
    trusted = run("ls", f"s3://{bucket}/x", "--endpoint-url", endpoint, env={"AWS_CA_BUNDLE": str(cert)})
    assert_error(trusted, 1)
    assert "no dataset at" in error(trusted)


@MOTO
def test_https_to_a_plain_http_server_hints_at_http(run, s3_server, bucket) -> None:
    result = run("ls", f"s3://{bucket}/x", "--endpoint-url", s3_server.endpoint_url.replace("http://", "https://"))
    assert_error(result, 1)
    assert "TLS handshake failed" in error(result)
    assert "--endpoint-url http://" in hint(result)


@MOTO
def test_aws_ca_bundle_naming_no_file_is_a_config_error(run, s3_server, bucket, tls_front, tmp_path: Path) -> None:
    """Was a connection failure (botocore's HTTPClientError around urllib3's OSError), retried
    by a pull as if the network were at fault."""
    endpoint, _ = tls_front
    result = run("ls", f"s3://{bucket}/x", "--endpoint-url", endpoint, env={"AWS_CA_BUNDLE": str(tmp_path / "none.pem")})
    assert_error(result, 2)
    assert "AWS_CA_BUNDLE" in error(result) and "none.pem" in error(result)
