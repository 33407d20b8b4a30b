"""S3Store.head_part and S3Store.list_children on moto and rclone.

``head_part`` learns a multipart upload's part size (HeadObject ``partNumber``) so that a
multipart ETag can be recomputed from a piece's bytes (issue 11, section 2); a server that
ignores ``partNumber`` must give ``(0, 0)``, never the whole object's size as a part size.
"""

from __future__ import annotations

import os

import pytest

from s3sync.config import S3Settings
from s3sync.errors import NotFoundError
from s3sync.stores.s3 import S3Store, make_client

MiB = 1024 * 1024


@pytest.fixture
def store(s3_server, bucket):
    s = S3Store(make_client(S3Settings(endpoint_url=s3_server.endpoint_url, max_attempts=1), max_connections=2),
                bucket)
    yield s
    s.close()


def _multipart(store: S3Store, key: str, sizes: list[int]) -> None:
    c = store.client
    upload = c.create_multipart_upload(Bucket=store.bucket, Key=key)["UploadId"]
    parts = []
    for number, size in enumerate(sizes, 1):
        etag = c.upload_part(Bucket=store.bucket, Key=key, UploadId=upload, PartNumber=number,
                             Body=os.urandom(size))["ETag"]
        parts.append({"ETag": etag, "PartNumber": number})
    c.complete_multipart_upload(Bucket=store.bucket, Key=key, UploadId=upload, MultipartUpload={"Parts": parts})


def test_head_part_gives_the_upload_part_size_or_nothing(store, s3_server):
    _multipart(store, "mp", [5 * MiB, 1000])
    if s3_server.name == "moto":
        assert store.head_part("mp", 1) == (5 * MiB, 2)
        assert store.head_part("mp", 2) == (1000, 2)
    else:
        # rclone serve s3 ignores partNumber and answers for the whole object without
        # x-amz-mp-parts-count: its size is no part size.
        assert store.head_part("mp", 1) == (0, 0)


def test_head_part_of_a_single_part_object_is_nothing(store):
    store.client.put_object(Bucket=store.bucket, Key="single", Body=b"hello")
    assert store.head_part("single", 1) == (0, 0)


def test_head_part_of_a_missing_object_is_not_found(store):
    with pytest.raises(NotFoundError) as info:
        store.head_part("absent", 1)
    assert not info.value.bucket_missing
    assert f"s3://{store.bucket}/absent" in str(info.value)


def test_list_children_keeps_only_the_objects_directly_under_the_prefix(store, s3_server):
    for key in ("a/x.2", "a/x.10", "a/x.1", "a/sub/y", "ab/z", "top"):
        store.client.put_object(Bucket=store.bucket, Key=key, Body=key.encode())
    if s3_server.name == "moto":
        # A console's "folder" marker (rclone serve s3 stores directories, and refuses it).
        store.client.put_object(Bucket=store.bucket, Key="a/", Body=b"")
    children = store.list_children("a")
    assert [o.key for o in children] == ["a/x.1", "a/x.10", "a/x.2"]
    assert [o.size for o in children] == [5, 6, 5]
    assert all(o.etag and o.modified for o in children)
    assert store.list_children("a/") == children
    assert [o.key for o in store.list_children("")] == ["top"]
    assert store.list_children("nothing") == []


def test_list_children_reads_every_page(store):
    keys = [f"p/piece.{i:03d}" for i in range(7)]
    for key in keys + ["p/deeper/one", "p/deeper/two", "p/more/x"]:
        store.client.put_object(Bucket=store.bucket, Key=key, Body=b"x")
    assert [o.key for o in store.list_children("p", page_size=2)] == keys
