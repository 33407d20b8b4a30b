"""Every archive kind real tools write (tests/corpus.py: GNU tar in each format, sparse members,
bsdtar, git archive, `./` members, a top-level directory), cut into pieces by GNU split,
compressed by the real gzip/zstd/bzip2/xz for a few, uploaded to moto and pulled with
``pull_split``: the tree must be what GNU tar's own extraction of the same archive gives."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest
from corpus import (  # fixtures: tests/conftest.py
    KINDS,
    compare_trees,
    gnu_extract,
    implicit_dirs,
    require_tool,
)

from s3sync.config import Location, S3Settings, TransferSettings
from s3sync.errors import UnsafeArchiveError
from s3sync.sources import from_s3
from s3sync.splitpull import pull_split
from s3sync.stores.s3 import S3Store, make_client

SETTINGS = TransferSettings(concurrency=4, chunk_size=256 * 1024, window=8, retries=2, backoff_base_s=0.01,
                            backoff_max_s=0.05)
COMPRESSED = {"gnu": "gzip", "pax": "zstd", "bsdtar": "bzip2", "git": "xz"}


@pytest.fixture
def moto_store(moto_server, s3_client_factory):
    """A plain client and an S3Store on moto (the server does not matter to the tar layer)."""
    client = s3_client_factory(moto_server)
    client.create_bucket(Bucket="corpus")
    store = S3Store(make_client(S3Settings(endpoint_url=moto_server.endpoint_url)), "corpus", concurrency=4)
    yield client, store
    store.close()
    for page in client.get_paginator("list_objects_v2").paginate(Bucket="corpus"):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket="corpus", Key=obj["Key"])
    client.delete_bucket(Bucket="corpus")


def _upload_pieces(client, archive: Path, prefix: str, work: Path, pieces: int) -> None:
    work.mkdir()
    subprocess.run([require_tool("split"), "-n", str(pieces), str(archive), str(work / (archive.name + "."))],
                   check=True)
    for p in sorted(work.iterdir()):
        client.put_object(Bucket="corpus", Key=f"{prefix}/{p.name}", Body=p.read_bytes())


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_pulls_like_gnu_tar(moto_store, corpus_archive, tmp_path, kind):
    client, store = moto_store
    archive = plain = corpus_archive(kind)
    codec = COMPRESSED.get(kind, "")
    if codec:
        require_tool(codec)
        packed = tmp_path / (archive.name + "." + codec)
        with open(packed, "wb") as out:
            subprocess.run([codec, "-c", str(archive)], stdout=out, check=True)
        archive = packed
    _upload_pieces(client, archive, kind, tmp_path / "pieces", pieces=5)
    split = from_s3(store, Location("corpus", kind), "ds")
    assert len(split.pieces) == 5
    result = pull_split(split, tmp_path / "dest", store, SETTINGS)
    assert result.codec == (codec or "none")
    ref = gnu_extract(archive, tmp_path / "ref")
    # A directory with no member of its own (a name the format could not hold) is made at
    # extraction time, by GNU tar and by the pull alike: its mtime is "now" in both.
    assert compare_trees(result.dest, ref, ignore=(".s3sync",), mtime_ignored=implicit_dirs(plain)) == []
    if kind == "dot":  # the './' member gives the dataset directory its mode and mtime, as tar -C does
        assert compare_trees(result.dest, ref, root=True, ignore=(".s3sync",)) == []


def test_strip_components_as_gnu_tar(moto_store, corpus_archive, tmp_path):
    client, store = moto_store
    archive = corpus_archive("topdir")
    _upload_pieces(client, archive, "strip", tmp_path / "pieces", pieces=3)
    split = from_s3(store, Location("corpus", "strip"), "ds")
    result = pull_split(split, tmp_path / "dest", store, SETTINGS, strip_components=1)
    ref = gnu_extract(archive, tmp_path / "ref", strip=1)
    assert compare_trees(result.dest, ref, ignore=(".s3sync",), mtime_ignored=implicit_dirs(archive, 1)) == []
    # The archive's last members are all stripped away (a top-level file, as captions.json in a
    # dataset): the end-of-archive marker is still found where it is.
    flat = tmp_path / "flat"
    (flat / "top" / "sub").mkdir(parents=True)
    (flat / "top" / "sub" / "a.txt").write_text("a")
    (flat / "last.json").write_text("{}")
    packed = tmp_path / "flat.tar"
    subprocess.run([require_tool("tar"), "-cf", str(packed), "-C", str(flat), "top", "last.json"], check=True)
    _upload_pieces(client, packed, "flat", tmp_path / "flat-pieces", pieces=2)
    split_flat = from_s3(store, Location("corpus", "flat"), "flat")
    result = pull_split(split_flat, tmp_path / "dest", store, SETTINGS, strip_components=1)
    assert compare_trees(result.dest, gnu_extract(packed, tmp_path / "ref-flat", strip=1), ignore=(".s3sync",),
                         mtime_ignored=implicit_dirs(packed, 1)) == []
    # Two components: the long symlink's target (../ttt.../target.txt) now leaves the tree,
    # which s3sync refuses (GNU tar would write the link); nothing is committed.
    split = dataclasses.replace(split, name="ds2")
    with pytest.raises(UnsafeArchiveError, match="longsym"):
        pull_split(split, tmp_path / "dest", store, SETTINGS, strip_components=2)
    assert not (tmp_path / "dest" / "ds2").exists()
