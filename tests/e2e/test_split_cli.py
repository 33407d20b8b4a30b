"""The installed command on split archives (issue 11): `pull` of a prefix of pieces, of http(s)
URLs, the per-piece lines of -v, the --json fields, the one-line errors, then `verify`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from test_cli import (  # tests/e2e is on sys.path (rootdir-relative imports)
    assert_error,
    make_tree,
    tree,
)


def _pieces(tmp: Path, src: Path, n: int = 12) -> Path:
    work = tmp / "pieces"
    work.mkdir()
    archive = tmp / "photos.tar"
    subprocess.run(["tar", "-cf", str(archive), "-C", str(src.parent), src.name], check=True)
    subprocess.run(["split", "-n", str(n), "-d", "-a", "2", str(archive), str(work / "photos.tar.")], check=True)
    for p in sorted(work.iterdir()):
        (work / (p.name + ".md5")).write_bytes(
            subprocess.run(["md5sum", p.name], cwd=work, check=True, capture_output=True).stdout)
    return work


def _upload(s3_client, bucket: str, work: Path, prefix: str) -> None:
    for p in work.iterdir():
        s3_client.put_object(Bucket=bucket, Key=f"{prefix}/{p.name}", Body=p.read_bytes())


@pytest.mark.parametrize("s3_server", ["moto"], indirect=True)
def test_pull_a_prefix_of_pieces_then_verify(run, s3_server, s3_client, bucket, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src" / "photos")
    _upload(s3_client, bucket, _pieces(tmp_path, src), "old/photos")
    ep = ["--endpoint-url", s3_server.endpoint_url]
    dest = tmp_path / "dest"
    verbose = run("pull", f"s3://{bucket}/old/photos", dest, *ep, "-v", "--strip-components", "1")
    assert verbose.code == 0, verbose.describe()
    lines = [line for line in verbose.stderr.splitlines() if line.startswith("piece ")]
    assert len(lines) == 12 and all("MD5 from photos.tar." in line for line in lines), verbose.describe()
    assert "verified 12 of 12 pieces" in verbose.stderr, verbose.describe()
    assert tree(dest / "photos") == tree(src)
    check = run("verify", dest / "photos", "--json")
    assert check.code == 0, check.describe()

    # ls of the prefix: the pieces and their evidence, as a pull would see them (a dry run).
    listed = run("ls", f"s3://{bucket}/old/photos", *ep)
    assert listed.code == 0, listed.describe()
    assert "s3sync pull" in listed.stdout and "photos.tar.11" in listed.stdout, listed.describe()
    doc = run("ls", f"s3://{bucket}/old/photos", *ep, "--json").json()
    assert doc["kind"] == "split-archive" and doc["codec"] == "none" and len(doc["pieces"]) == 12

    again = run("pull", f"s3://{bucket}/old/photos", dest, *ep, "--strip-components", "1", "--json")
    assert again.code == 0 and again.json()["up_to_date"] is True, again.describe()

    other = run("pull", f"s3://{bucket}/old/photos", tmp_path / "named", *ep, "--name", "sbu", "--json")
    assert other.code == 0, other.describe()
    doc = other.json()
    assert doc["kind"] == "split-archive" and doc["codec"] == "none" and len(doc["pieces"]) == 12
    assert {p["evidence"] for p in doc["pieces"]} == {"sidecar"}
    assert tree(tmp_path / "named" / "sbu" / "photos") == tree(src)

    # A catalog name whose location holds pieces, not a manifest (how SBU was shipped).
    _upload(s3_client, bucket, tmp_path / "pieces", "sbu")
    by_name = run("pull", "sbu", tmp_path / "by-name", *ep, "-q", env={"S3SYNC_BUCKET": bucket})
    assert by_name.code == 0, by_name.describe()
    assert tree(tmp_path / "by-name" / "sbu" / "photos") == tree(src)


@pytest.mark.parametrize("s3_server", ["moto"], indirect=True)
def test_split_archive_errors_are_one_line(run_many, s3_server, s3_client, bucket, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src" / "photos")
    work = _pieces(tmp_path, src, n=3)
    _upload(s3_client, bucket, work, "bad")
    body = bytearray((work / "photos.tar.01").read_bytes())
    body[10] ^= 1
    s3_client.put_object(Bucket=bucket, Key="bad/photos.tar.01", Body=bytes(body))
    for name in ("a.tar.001", "a.tar.002", "README.txt"):
        s3_client.put_object(Bucket=bucket, Key=f"mixed/{name}", Body=b"x")
    ep = ["--endpoint-url", s3_server.endpoint_url]
    dest = tmp_path / "dest"
    bad, mixed = run_many([(["pull", f"s3://{bucket}/bad", dest, *ep], {}),
                           (["pull", f"s3://{bucket}/mixed", dest, *ep], {})])
    assert_error(bad, 1)
    assert "photos.tar.01" in bad.stderr and "photos.tar.01.md5" in bad.stderr
    assert_error(mixed, 1)
    assert "README.txt" in mixed.stderr
    assert not (dest / "bad").exists()


def test_pull_pieces_from_http_urls(run, http_server, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src" / "photos")
    work = _pieces(tmp_path, src, n=4)
    server = http_server(work)
    urls = [server.url_of(f"photos.tar.{i:02d}") for i in range(4)]
    result = run("pull", *urls, tmp_path / "dest", "--json")
    assert result.code == 0, result.describe()
    assert result.json()["kind"] == "split-archive"
    assert tree(tmp_path / "dest" / "photos" / "photos") == tree(src)
