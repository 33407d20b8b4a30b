"""Fixtures of the fault suite: a fault-injection proxy in front of each S3 server, and a kit
that publishes straight to the server, pulls through the proxy and compares trees.

Every test here runs on moto and on rclone (through ``s3_server``). Data sets are small (a few
MiB), chunks 256 KiB, timeouts short and backoff fast, so each case is bounded in time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import os
import random
import stat
import subprocess
import sysconfig
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from s3sync import hashing
from s3sync.config import Location, S3Settings, TransferSettings
from s3sync.manifest import Manifest, PartEntry
from s3sync.progress import NullProgress
from s3sync.publish import publish
from s3sync.pull import PullResult, pull
from s3sync.stores.s3 import S3Store, make_client

from .proxy import FaultProxy, KeyStats, Rule

KiB = 1024
MiB = 1024 * KiB
CHUNK = 256 * KiB
PART = 1 * MiB
METADATA_DIR = ".s3sync"

REPORT: dict[str, str] = {}
"""Numbers measured by the suite (re-fetched bytes, retry counts), printed at the end of the session."""

FAST_TRANSFER = TransferSettings(concurrency=4, chunk_size=CHUNK, part_size=PART, window=8, retries=6,
                                 backoff_base_s=0.01, backoff_max_s=0.05)
"""Pull settings of the suite: 4 workers, a window of 8 chunks (2 MiB), fast backoff."""


def s3_settings(endpoint_url: str, **overrides: Any) -> S3Settings:
    """Short timeouts, and botocore's own retries off (``max_attempts`` is botocore's retry count,
    not attempts) so s3sync's engine sees every fault."""
    values: dict[str, Any] = {"endpoint_url": endpoint_url, "connect_timeout_s": 2.0,
                              "read_timeout_s": 2.0, "max_attempts": 0}
    values.update(overrides)
    return S3Settings(**values)


def make_resigner(access_key: str, secret_key: str, region: str):
    """SigV4-sign a request again after the proxy dropped a signed header (Range)."""
    credentials = Credentials(access_key, secret_key)

    def resign(method: str, path: str, headers: dict[str, str]) -> dict[str, str]:
        host = next(v for k, v in headers.items() if k.lower() == "host")
        keep = {k: v for k, v in headers.items()
                if k.lower() not in ("authorization", "x-amz-date", "x-amz-content-sha256",
                                     "x-amz-security-token")}
        request = AWSRequest(method=method, url=f"http://{host}{path}", headers=keep, data=b"")
        S3SigV4Auth(credentials, "s3", region).add_auth(request)
        return dict(request.headers.items())

    return resign


# --------------------------------------------------------------------------- trees


def write_tree(root: Path, files: dict[str, int], empty_dirs: tuple[str, ...] = (), seed: int = 7) -> Path:
    """Create ``root`` with ``files`` (relative path -> size in bytes, seeded random content)."""
    root.mkdir(parents=True, exist_ok=True)
    for i, (rel, size) in enumerate(sorted(files.items())):
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(random.Random(f"{seed}/{i}/{rel}").randbytes(size))
    for rel in empty_dirs:
        (root / rel).mkdir(parents=True, exist_ok=True)
    return root


def standard_files(total: int = 3 * MiB, count: int = 24) -> dict[str, int]:
    """Files of uneven sizes adding up to about ``total`` bytes, in a few directories."""
    rng = random.Random(total * 31 + count)
    weights = [rng.uniform(0.2, 1.8) for _ in range(count)]
    scale = total / sum(weights)
    return {f"d{i % 3}/f{i:03d}.bin": max(1, int(w * scale)) for i, w in enumerate(weights)}


def snapshot(root: Path) -> dict[str, tuple]:
    """Type, permission bits, integer mtime (files) and content digest of everything under
    ``root``, ignoring the top-level ``.s3sync/`` a pull adds."""
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != METADATA_DIR]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode))
            else:
                with open(path, "rb") as f:
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
                out[rel] = ("file", stat.S_IMODE(st.st_mode), int(st.st_mtime), st.st_size, digest)
    return out


def files_outside(root: Path, allowed: Path) -> list[str]:
    """Every path under ``root`` that is not under ``allowed``."""
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            if path != allowed and allowed not in path.parents:
                found.append(str(path.relative_to(root)))
    return found


# --------------------------------------------------------------------------- kit


@dataclasses.dataclass(frozen=True)
class Published:
    src: Path
    name: str
    location: Location
    manifest: Manifest

    @property
    def url(self) -> str:
        return self.location.url()


class Kit:
    """Publish straight to the server; pull through the proxy; compare trees.

    Attributes:
        server: the S3 server (moto or rclone).
        bucket: this test's bucket.
        client: a plain boto3 client for the server (no proxy).
        proxy: the fault proxy in front of the server.
        tmp: this test's temporary directory.
    """

    def __init__(self, server, bucket: str, client, proxy: FaultProxy, tmp: Path,
                 clients: dict[S3Settings, Any]) -> None:
        self.server = server
        self.bucket = bucket
        self.client = client
        self.proxy = proxy
        self.tmp = tmp
        self._clients = clients
        self._stores: list[S3Store] = []

    def add(self, *rules: Rule) -> list[Rule]:
        """Add fault rules, limited to this test's bucket."""
        for rule in rules:
            rule.bucket = self.bucket
        return self.proxy.add(*rules)

    def stats(self, key: str = "") -> KeyStats:
        """The proxy's counters for this test's bucket and paths containing ``key``."""
        return self.proxy.stats(f"/{self.bucket}/", key)

    def sent(self, key: str = "") -> int:
        """Body bytes the proxy sent for this bucket's paths containing ``key``."""
        return self.stats(key).bytes

    def tree(self, files: dict[str, int] | None = None, empty_dirs: tuple[str, ...] = (),
             name: str = "ds") -> Path:
        return write_tree(self.tmp / "src" / name, standard_files() if files is None else files, empty_dirs)

    def store(self, endpoint_url: str | None = None, *, cached: bool = True, **s3: Any) -> S3Store:
        """An S3Store through the proxy (or ``endpoint_url``), from ``make_client``."""
        settings = s3_settings(endpoint_url or self.proxy.url, **s3)
        client = self._clients.get(settings) if cached else None
        if client is None:
            client = make_client(settings, max_connections=16)
            if cached:
                self._clients[settings] = client
        store = S3Store(client, self.bucket, concurrency=4)
        self._stores.append(store)
        return store

    def publish(self, src: Path, name: str | None = None, prefix: str | None = None,
                chunk_size: int = CHUNK, part_size: int = PART) -> Published:
        name = name or src.name
        location = Location(self.bucket, prefix or name)
        settings = dataclasses.replace(FAST_TRANSFER, chunk_size=chunk_size, part_size=part_size)
        result = publish(src, name, location, self.store(self.server.endpoint_url, max_attempts=3),
                         settings)
        return Published(src, name, location, result.manifest)

    def put_tar(self, tar_bytes: bytes, *, name: str = "ds", generation: str = "g1", files: int | None = None,
                extracted_size: int | None = None, members: int | None = None,
                chunk_size: int = 64 * KiB) -> Published:
        """Upload ``tar_bytes`` as the single part of a dataset, with a hand-written valid manifest
        (digests from ``s3sync.hashing``), straight to the server. The counts a pull checks at
        the end (members, regular files, their bytes) are read from the tar unless given."""
        if None in (files, extracted_size, members):
            counted = [0, 0, 0]
            with tarfile.open(fileobj=io.BytesIO(tar_bytes), mode="r:") as tar:
                for info in tar:
                    counted[0] += 1
                    if info.isreg():
                        counted[1] += 1
                        counted[2] += info.size
            members = counted[0] if members is None else members
            files = counted[1] if files is None else files
            extracted_size = counted[2] if extracted_size is None else extracted_size
        key = f"{generation}/part-00000.tar"
        location = Location(self.bucket, name)
        etag = self.client.put_object(Bucket=self.bucket, Key=location.key(key), Body=tar_bytes)["ETag"]
        chunks = tuple(hashing.digest(tar_bytes[i:i + chunk_size]) for i in range(0, len(tar_bytes), chunk_size))
        manifest = Manifest(
            name=name, generation=generation, created="2026-01-01T00:00:00Z", chunk_size=chunk_size,
            stream_size=len(tar_bytes), stream_digest=hashing.digest(tar_bytes), files=files,
            extracted_size=min(extracted_size, len(tar_bytes)), members=members,
            parts=(PartEntry(key, len(tar_bytes), etag, hashing.digest(tar_bytes), chunks),))
        self.put_manifest(location, manifest.to_json())
        return Published(self.tmp / "none", name, location, manifest)

    def put_manifest(self, location: Location, data: bytes) -> None:
        self.client.put_object(Bucket=self.bucket, Key=location.key("manifest.json"), Body=data)

    def pull(self, pub: Published, dest_parent: Path | None = None, *, store: S3Store | None = None,
             transfer: TransferSettings = FAST_TRANSFER, **kwargs: Any) -> PullResult:
        dest_parent = dest_parent or self.tmp / "dest"
        try:
            return pull(pub.location, pub.name, dest_parent, store or self.store(), transfer, **kwargs)
        finally:
            self.idle()

    def idle(self) -> None:
        """Wait until the proxy has finished every response of this test (counters final)."""
        self.proxy.wait_idle(f"/{self.bucket}/", timeout_s=3.0)

    def assert_same_tree(self, src: Path, dest: Path) -> None:
        assert (dest / METADATA_DIR).is_dir(), f"{dest} has no completion metadata"
        assert snapshot(dest) == snapshot(src)

    def assert_same_parts(self, pub: Published, dest: Path) -> None:
        """``dest`` holds exactly the part objects of ``pub``, byte for byte (a --no-extract pull)."""
        assert (dest / METADATA_DIR).is_dir(), f"{dest} has no completion metadata"
        names = sorted(p.name for p in dest.iterdir() if p.name != METADATA_DIR)
        assert names == [part.key.rsplit("/", 1)[-1] for part in pub.manifest.parts]
        for part in pub.manifest.parts:
            body = self.client.get_object(Bucket=self.bucket, Key=pub.location.key(part.key))["Body"].read()
            assert (dest / part.key.rsplit("/", 1)[-1]).read_bytes() == body, part.key

    def assert_pulled(self, pub: Published, dest: Path, extract: bool) -> None:
        """The tree (extract) or the part files (--no-extract) of ``pub`` are in ``dest``."""
        if extract:
            self.assert_same_tree(pub.src, dest)
        else:
            self.assert_same_parts(pub, dest)

    def cli(self, *args: str | os.PathLike, **popen: Any) -> subprocess.Popen:
        """Start the installed ``s3sync`` command (the console script next to this Python)."""
        exe = Path(sysconfig.get_path("scripts")) / "s3sync"
        return subprocess.Popen([str(exe), *map(str, args)], stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ), **popen)

    def close(self) -> None:
        for store in self._stores:
            store.close()


@pytest.fixture(scope="session")
def _proxies() -> Iterator[dict[str, FaultProxy]]:
    """One proxy per server for the whole session (clients built for its URL are reused)."""
    proxies: dict[str, FaultProxy] = {}
    try:
        yield proxies
    finally:
        for p in proxies.values():
            p.stop()


@pytest.fixture(scope="session")
def _clients() -> dict[S3Settings, Any]:
    """boto3 clients by settings: building one costs ~0.3 s (botocore loads its models)."""
    return {}


@pytest.fixture(scope="session")
def _plain_clients() -> dict[str, Any]:
    return {}


@pytest.fixture
def s3_client(s3_server, s3_client_factory, _plain_clients):
    """Overrides the top-level ``s3_client`` with one client per server for the session (the
    ``bucket`` fixture uses it too): building a client per test costs more than the test."""
    client = _plain_clients.get(s3_server.name)
    if client is None:
        client = _plain_clients[s3_server.name] = s3_client_factory(s3_server)
    return client


@pytest.fixture
def proxy(s3_server, _proxies) -> Iterator[FaultProxy]:
    """The fault proxy in front of ``s3_server``, with no rules, throttle or hold."""
    p = _proxies.get(s3_server.name)
    if p is None:
        p = _proxies[s3_server.name] = FaultProxy(
            s3_server.endpoint_url,
            resign=make_resigner(s3_server.access_key, s3_server.secret_key, s3_server.region)).start()
    p.clear()
    try:
        yield p
    finally:
        p.clear()


@pytest.fixture
def kit(s3_server, bucket, s3_client, proxy, tmp_path, _clients) -> Iterator[Kit]:
    k = Kit(s3_server, bucket, s3_client, proxy, tmp_path, _clients)
    try:
        yield k
    finally:
        k.close()


def pytest_terminal_summary(terminalreporter) -> None:
    if REPORT:
        terminalreporter.section("fault suite measurements")
        for key in sorted(REPORT):
            terminalreporter.write_line(f"{key}: {REPORT[key]}")


class MessageLog(NullProgress):
    """A progress sink that keeps the messages a pipeline gives (what -v and warnings show)."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)
