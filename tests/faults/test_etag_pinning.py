"""ETag pinning (issue 10, items 9 and 11): the manifest's digests decide integrity, each part is
pinned to the ETag its first response in this pull carried, and a real change is named.

- A byte-identical server-side copy of a dataset (new ETags) pulls and verifies.
- A part replaced while the pull runs: PartChangedError naming the part and both ETags; the
  rerun finds that the part no longer matches the manifest; once restored, the rerun finishes.
- A deleted part: "this dataset is damaged: part K (s3://...) is missing", not "check the name".
"""

from __future__ import annotations

import dataclasses
import json
import threading

import pytest

from s3sync.config import Location
from s3sync.errors import DamagedDatasetError, PartChangedError
from s3sync.stores.s3 import S3Store

from .conftest import FAST_TRANSFER, Kit, MessageLog, Published

SERIAL = dataclasses.replace(FAST_TRANSFER, concurrency=1, window=1)
"""One chunk at a time: the chunk after the first of a part is always requested pinned."""



def _etag(kit: Kit, key: str) -> str:
    return kit.client.head_object(Bucket=kit.bucket, Key=key)["ETag"]


def _multipart_put(kit: Kit, key: str, body: bytes) -> None:
    """Upload ``body`` again as a one-part multipart upload: same bytes, another kind of ETag."""
    upload = kit.client.create_multipart_upload(Bucket=kit.bucket, Key=key)["UploadId"]
    etag = kit.client.upload_part(Bucket=kit.bucket, Key=key, UploadId=upload, PartNumber=1, Body=body)["ETag"]
    kit.client.complete_multipart_upload(Bucket=kit.bucket, Key=key, UploadId=upload,
                                         MultipartUpload={"Parts": [{"ETag": etag, "PartNumber": 1}]})


def test_server_side_copy_of_a_dataset_pulls_and_verifies(kit):
    src = kit.tree()
    pub = kit.publish(src)
    copy = Location(kit.bucket, "copy")
    manifest_doc = json.loads(pub.manifest.to_json())
    for i, part in enumerate(pub.manifest.parts):
        key = copy.key(part.key)
        kit.client.copy_object(Bucket=kit.bucket, Key=key,
                               CopySource={"Bucket": kit.bucket, "Key": pub.location.key(part.key)})
        if _etag(kit, key).strip('"') == part.etag.strip('"'):
            # A plain upload's ETag is the MD5 of the bytes, and so is a copy's: make this
            # part a multipart upload of the same bytes, whose ETag differs (moto, S3).
            body = kit.client.get_object(Bucket=kit.bucket, Key=key)["Body"].read()
            _multipart_put(kit, key, body)
        if _etag(kit, key).strip('"') == part.etag.strip('"'):
            # rclone serve s3 gives identical bytes the same ETag whatever the upload: record
            # another one in the copy's manifest, as a publish to another server would have.
            manifest_doc["parts"][i]["etag"] = '"0123456789abcdef0123456789abcdef"'
    kit.put_manifest(copy, json.dumps(manifest_doc).encode())
    copied = Published(src, pub.name, copy, pub.manifest)
    assert all(_etag(kit, copy.key(p["key"])) != p["etag"] for p in manifest_doc["parts"])

    messages = MessageLog()
    result = kit.pull(copied, progress=messages)
    kit.assert_same_tree(src, result.dest)
    assert any("is checked" in line or "are checked" in line for line in messages.lines), messages.lines
    parts = kit.pull(copied, kit.tmp / "parts", extract=False)
    kit.assert_same_parts(Published(src, pub.name, copy, pub.manifest), parts.dest)


class ReplacingStore(S3Store):
    """Replaces the object ``target`` by ``replacement`` right after the first chunk of it was read."""

    def __init__(self, client, bucket: str, target: str, replace) -> None:
        super().__init__(client, bucket, concurrency=4)
        self.target, self.replace, self.done = target, replace, threading.Event()

    def _after(self, key: str) -> None:
        if key == self.target and not self.done.is_set():
            self.done.set()
            self.replace()

    def read_range_into(self, key, offset, buf, etag, on_bytes=None, **kw):
        super().read_range_into(key, offset, buf, etag, on_bytes, **kw)
        self._after(key)

    def read_range_pieces(self, key, offset, length, etag, scratch, **kw):
        yield from super().read_range_pieces(key, offset, length, etag, scratch, **kw)
        self._after(key)


@pytest.mark.parametrize("extract", [True, False], ids=["extract", "no-extract"])
def test_part_replaced_during_the_pull_is_named(kit, extract):
    src = kit.tree()
    pub = kit.publish(src)
    part = pub.manifest.parts[1]
    key = pub.location.key(part.key)
    original = kit.client.get_object(Bucket=kit.bucket, Key=key)["Body"].read()
    assert len(part.chunks) > 1

    def replace() -> None:
        kit.client.put_object(Bucket=kit.bucket, Key=key, Body=bytes(b ^ 0x5A for b in original))

    store = ReplacingStore(kit.store().client, kit.bucket, key, replace)
    dest_parent = kit.tmp / "dest"
    with pytest.raises(PartChangedError) as caught:
        kit.pull(pub, dest_parent, store=store, transfer=SERIAL, extract=extract)
    err = caught.value
    print(f"[{kit.server.name}] {err}")
    assert store.done.is_set()
    assert "part 1 changed on the server during this pull" in str(err) and part.key in str(err)
    assert "run the same command again" in err.hint
    assert not (dest_parent / pub.name).exists()

    # The rerun pins the part afresh: its new bytes do not match the manifest.
    with pytest.raises(PartChangedError) as caught:
        kit.pull(pub, dest_parent, transfer=SERIAL, extract=extract)
    print(f"[{kit.server.name}] {caught.value}")
    assert "part 1 " in str(caught.value) and "no longer matches the manifest" in str(caught.value)
    assert not (dest_parent / pub.name).exists()

    # Restored: the rerun finishes.
    kit.client.put_object(Bucket=kit.bucket, Key=key, Body=original)
    result = kit.pull(pub, dest_parent, transfer=SERIAL, extract=extract)
    kit.assert_pulled(pub, result.dest, extract)


def test_deleted_part_says_the_dataset_is_damaged(kit):
    src = kit.tree()
    pub = kit.publish(src)
    part = pub.manifest.parts[2]
    kit.client.delete_object(Bucket=kit.bucket, Key=pub.location.key(part.key))
    dest_parent = kit.tmp / "dest"
    with pytest.raises(DamagedDatasetError) as caught:
        kit.pull(pub, dest_parent)
    err = caught.value
    assert str(err) == (f"this dataset is damaged: part 2 ({pub.location.url(part.key)}) is missing")
    assert "republish" in err.hint and "check the name" not in err.hint
    assert err.exit_code == 1
    assert not (dest_parent / pub.name).exists()

    proc = kit.cli("pull", pub.url, kit.tmp / "cli", "--endpoint-url", kit.proxy.url)
    _out, stderr = proc.communicate(timeout=60)
    lines = stderr.decode().strip().splitlines()
    assert proc.returncode == 1, stderr
    assert lines[-2] == f"error: this dataset is damaged: part 2 ({pub.location.url(part.key)}) is missing"
    assert lines[-1].startswith("hint: ") and "republish" in lines[-1]
    assert not (kit.tmp / "cli" / pub.name).exists()
