"""Edge-shaped datasets that must round-trip, and credential failures (issue 3: "zero-byte files,
an empty directory, a dataset with no files"; "expired or missing credentials")."""

from __future__ import annotations

import io
import tarfile

import pytest

from s3sync import hashing
from s3sync.config import Location
from s3sync.errors import AccessDeniedError, CredentialsError
from s3sync.journal import staging_dir
from s3sync.manifest import Manifest, PartEntry

from .conftest import KiB
from .proxy import Rule

TREES = {
    "zero-byte-files-and-empty-dirs": ({"empty-a": 0, "d/empty-b": 0, "d/data.bin": 300 * KiB, "z.txt": 5},
                                       ("e", "d/e2/e3")),
    "only-empty-dirs": ({}, ("a", "b/c", "b/d")),
    "empty-source": ({}, ()),
}


@pytest.mark.parametrize("case", list(TREES))
def test_edge_tree_round_trips(kit, case):
    files, dirs = TREES[case]
    src = kit.tree(files, dirs)
    pub = kit.publish(src)
    result = kit.pull(pub)
    kit.assert_same_tree(src, result.dest)
    assert result.manifest.files == len(files)
    assert 416 not in kit.stats().statuses, "a 0-byte range was requested"


def test_modes_survive_a_default_acl_on_the_destination(kit, set_default_acl):
    """A default POSIX ACL on DEST_PARENT replaces the umask for new files (here: group and
    others get nothing); extraction must still set every mode as published."""
    import os

    src = kit.tree({"a.bin": 1000, "d/b.bin": 2000, "d/c.sh": 10})
    os.chmod(src / "d" / "c.sh", 0o755)
    os.chmod(src / "a.bin", 0o664)
    pub = kit.publish(src)
    dest_parent = kit.tmp / "acl"
    dest_parent.mkdir()
    set_default_acl(dest_parent)
    result = kit.pull(pub, dest_parent)
    kit.assert_same_tree(src, result.dest)


def test_empty_part_is_not_fetched_with_a_range(kit):
    """A manifest whose second part is a 0-byte object: valid, and never GET with Range (416)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("a.txt")
        info.size, info.mtime, info.mode = 3, 1_700_000_000, 0o644
        tar.addfile(info, io.BytesIO(b"abc"))
    data = buf.getvalue()
    location = Location(kit.bucket, "ds")
    parts = []
    # rclone serve s3 leaves a keep-alive connection unusable after a 0-byte PutObject (the next
    # request on it times out): upload the empty part with a client used for nothing else.
    throwaway = kit.store(kit.server.endpoint_url, cached=False).client
    for i, body in enumerate((data, b"")):
        key = f"g1/part-{i:05d}.tar"
        etag = (throwaway if not body else kit.client).put_object(
            Bucket=kit.bucket, Key=location.key(key), Body=body)["ETag"]
        chunks = tuple(hashing.digest(body[o:o + 64 * KiB]) for o in range(0, len(body), 64 * KiB))
        parts.append(PartEntry(key, len(body), etag, hashing.digest(body), chunks))
    manifest = Manifest("ds", "g1", "2026-01-01T00:00:00Z", 64 * KiB, len(data), hashing.digest(data),
                        1, 3, 1, tuple(parts))
    kit.put_manifest(location, manifest.to_json())
    from .conftest import Published

    result = kit.pull(Published(kit.tmp, "ds", location, manifest))
    assert (result.dest / "a.txt").read_bytes() == b"abc"
    assert kit.stats("part-00001").requests == 0
    assert 416 not in kit.stats().statuses


# --------------------------------------------------------------------------- credentials


def test_wrong_secret_key_is_a_credentials_error(kit, monkeypatch):
    if kit.server.name != "rclone":
        pytest.skip("moto does not check signatures; rclone does")
    src = kit.tree({"a.bin": 10 * KiB})
    pub = kit.publish(src)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    dest_parent = kit.tmp / "dest"
    with pytest.raises((CredentialsError, AccessDeniedError)) as caught:
        kit.pull(pub, dest_parent, store=kit.store(cached=False))
    assert caught.value.exit_code == 1
    assert not (dest_parent / pub.name).exists()

    proc = kit.cli("pull", pub.url, dest_parent, "--endpoint-url", kit.proxy.url)
    _out, err = proc.communicate(timeout=30)
    assert proc.returncode == 1, err
    assert err.decode().startswith("error: ") and "hint: " in err.decode()
    assert b"Traceback" not in err
    assert not (dest_parent / pub.name).exists()


def test_unsigned_requests_to_a_server_that_wants_signatures_are_access_denied(kit):
    if kit.server.name != "rclone":
        pytest.skip("moto does not check signatures; rclone does")
    src = kit.tree({"a.bin": 10 * KiB})
    pub = kit.publish(src)
    for args in (("ls", pub.url), ("pull", pub.url, kit.tmp / "dest"), ("publish", src, "--to", pub.url)):
        proc = kit.cli(*args, "--endpoint-url", kit.proxy.url, "--no-sign-request")
        _out, err = proc.communicate(timeout=30)
        assert proc.returncode == 1, (args, err)
        assert "access denied" in err.decode() and "hint: check the credentials" in err.decode(), (args, err)
        assert b"Traceback" not in err


def test_missing_credentials_is_a_credentials_error(kit, monkeypatch):
    src = kit.tree({"a.bin": 10 * KiB})
    pub = kit.publish(src)
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(CredentialsError):
        kit.pull(pub, store=kit.store(cached=False))


def test_credentials_expire_mid_transfer_then_rerun_resumes(kit):
    src = kit.tree()
    pub = kit.publish(src)
    # From the 7th part GET on, the server says the session token expired (HTTP 400, as S3 does).
    kit.add(Rule("error", key="part-", first=7, status=400, code="ExpiredToken"))
    dest_parent = kit.tmp / "dest"
    with pytest.raises(CredentialsError) as caught:
        kit.pull(pub, dest_parent)
    assert caught.value.exit_code == 1 and not caught.value.retriable
    assert not (dest_parent / pub.name).exists()
    assert staging_dir(dest_parent, pub.name).is_dir()

    kit.proxy.clear()
    before = kit.sent("part-")
    result = kit.pull(pub, dest_parent)
    kit.assert_same_tree(src, result.dest)
    assert result.resumed_from > 0
    assert kit.sent("part-") - before < pub.manifest.stream_size
