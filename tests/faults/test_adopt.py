"""``s3sync adopt`` (issue 11, section 4) on moto and rclone: a split archive made by GNU tar,
split and md5sum (gzip and zstd for the compressed cases) is adopted in place, then pulled as
an ordinary s3sync dataset (manifest format version 2) and verified.

- adopt then pull then verify: uncompressed, gzip, zstd, 12 pieces in natural order;
- nothing is written when adopt refuses: an existing manifest (ours or not), a piece
  corrupted at the source (with its original sidecar), an archive with a member a pull
  would refuse;
- a compressed adopted dataset resumes by reading again from byte 0, writing nothing twice;
- a piece changed after adopt is named by the pull;
- a later publish to the prefix (and its clean-up of leftovers) never touches the pieces.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import tarfile
from pathlib import Path

import pytest

from s3sync import hashing
from s3sync.adopt import adopt
from s3sync.config import Location
from s3sync.errors import (
    DamagedArchiveError,
    DamagedDatasetError,
    Interrupted,
    PartChangedError,
    PieceDigestError,
    StoreError,
    UnsafeArchiveError,
    UsageError,
)
from s3sync.manifest import Manifest
from s3sync.verify import verify

from .conftest import (
    FAST_TRANSFER,
    MessageLog,
    MiB,
    Published,
    snapshot,
    standard_files,
    write_tree,
)
from .test_split_pull import gnu_extract, make_pieces, upload_dir

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def tree(kit) -> Path:
    return write_tree(kit.tmp / "src", standard_files(2 * MiB, 30), empty_dirs=("empty",))


def do_adopt(kit, prefix: str, **kwargs):
    try:
        return adopt(Location(kit.bucket, prefix), kit.store(), FAST_TRANSFER, **kwargs)
    finally:
        kit.idle()


def objects(kit, prefix: str) -> dict[str, bytes]:
    """Every object under ``prefix/`` and its bytes."""
    out = {}
    for page in kit.client.get_paginator("list_objects_v2").paginate(Bucket=kit.bucket, Prefix=prefix + "/"):
        for o in page.get("Contents", []):
            out[o["Key"]] = kit.client.get_object(Bucket=kit.bucket, Key=o["Key"])["Body"].read()
    return out


@pytest.mark.parametrize("compress", ["", "gzip", "zstd"])
def test_adopt_then_pull_then_verify(kit, tree, compress):
    whole, files = make_pieces(kit.tmp, tree, pieces=12, compress=compress)
    upload_dir(kit, files[0].parent, "sbu")
    before = objects(kit, "sbu")
    log = MessageLog()
    result = do_adopt(kit, "sbu", progress=log)
    m = result.manifest
    assert result.url == f"s3://{kit.bucket}/sbu/manifest.json"
    assert m.version == 2 and m.compression == (compress or "none")
    assert [p.key for p in m.parts] == [f.name for f in files]  # natural order: part1..part12, in place
    assert {e.kind for e in m.adopted.evidence} == {"sidecar"}
    assert sum("matches" in line for line in log.lines) == 12
    ref = gnu_extract(whole, kit.tmp / "ref")
    assert m.files == sum(1 for p in ref.rglob("*") if p.is_file())
    assert m.tar_stream_size == len(subprocess.run(
        ["sh", "-c", f"{'zstd -dc' if compress == 'zstd' else 'gzip -dc' if compress else 'cat'} {whole}"],
        check=True, capture_output=True).stdout)
    after = objects(kit, "sbu")
    assert {k: v for k, v in after.items() if k != "sbu/manifest.json"} == before  # no piece touched
    assert Manifest.from_json(after["sbu/manifest.json"]) == m
    pulled = kit.pull(_published(kit, "sbu", m))
    assert snapshot(pulled.dest) == snapshot(ref)
    assert pulled.manifest.generation == m.generation
    assert verify(pulled.dest).problems == ()
    if compress == "gzip":  # --no-extract stores the pieces under their own names
        pub = _published(kit, "sbu", m)
        parts = kit.pull(pub, kit.tmp / "parts", extract=False)
        stored = {p.name: p.read_bytes() for p in parts.dest.iterdir() if p.name != ".s3sync"}
        assert stored == {f.name: f.read_bytes() for f in files}
        assert verify(parts.dest).problems == ()


def _published(kit, prefix: str, manifest: Manifest) -> Published:
    return Published(kit.tmp / "none", manifest.name, Location(kit.bucket, prefix), manifest)


def test_an_existing_manifest_is_never_overwritten(kit, tree):
    _, files = make_pieces(kit.tmp, tree, pieces=3)
    upload_dir(kit, files[0].parent, "ds")
    first = do_adopt(kit, "ds")
    body = objects(kit, "ds")["ds/manifest.json"]
    kit.proxy.reset_stats()
    with pytest.raises(UsageError, match="manifest.json exists .* never overwrites a manifest") as info:
        do_adopt(kit, "ds")
    assert "ds/manifest.json" in str(info.value) and "--replace" in info.value.hint
    assert objects(kit, "ds")["ds/manifest.json"] == body
    assert kit.sent("ds/ds.tar.part") == 0  # refused before any piece was read
    # --replace: the s3sync manifest is replaced, and kept as its history copy (as publish does).
    second = do_adopt(kit, "ds", replace=True)
    now = objects(kit, "ds")
    assert second.replaced == first.manifest.generation and second.manifest.previous == first.manifest.generation
    assert now[f"ds/{first.manifest.generation}/manifest.json"] == body
    assert Manifest.from_json(now["ds/manifest.json"]).generation == second.manifest.generation
    # An object that is not an s3sync manifest is never replaced, not even with --replace.
    kit.client.put_object(Bucket=kit.bucket, Key="ds/manifest.json", Body=b'{"mine": true}')
    with pytest.raises(StoreError, match="not a valid s3sync manifest"):
        do_adopt(kit, "ds", replace=True)
    assert objects(kit, "ds")["ds/manifest.json"] == b'{"mine": true}'


def test_a_piece_corrupted_at_the_source_writes_no_manifest(kit, tree):
    _, files = make_pieces(kit.tmp, tree, pieces=4)
    upload_dir(kit, files[0].parent, "ds")
    body = bytearray(files[2].read_bytes())
    body[len(body) // 2] ^= 0x01
    kit.client.put_object(Bucket=kit.bucket, Key="ds/ds.tar.part3", Body=bytes(body))
    with pytest.raises(PieceDigestError) as info:
        do_adopt(kit, "ds")
    assert "ds.tar.part3" in str(info.value) and "ds.tar.part3.md5" in str(info.value)
    assert "ds/manifest.json" not in objects(kit, "ds")


def test_an_archive_a_pull_would_refuse_writes_no_manifest(kit, tree):
    os.mkfifo(tree / "a-fifo")  # GNU tar archives it; a pull refuses special files
    _, files = make_pieces(kit.tmp, tree, pieces=3)
    upload_dir(kit, files[0].parent, "ds")
    with pytest.raises(UnsafeArchiveError, match="a-fifo.*special file"):
        do_adopt(kit, "ds")
    assert "ds/manifest.json" not in objects(kit, "ds")


def test_a_piece_without_evidence_is_adopted_with_a_warning(kit, s3_server):
    if s3_server.name != "moto":
        pytest.skip("rclone serve s3 gives every object its MD5 as ETag: every piece has evidence")
    src = write_tree(kit.tmp / "src", {"a.bin": 11 * MiB})
    whole, _ = make_pieces(kit.tmp, src, pieces=1, sidecars="none")
    data = whole.read_bytes()
    # A multipart upload whose first part is smaller than the next: its ETag is not an MD5,
    # and no upload part size tiles the object, so nothing checks its bytes.
    key = "mp/big.tar"
    upload = kit.client.create_multipart_upload(Bucket=kit.bucket, Key=key)["UploadId"]
    parts = []
    for n, (at, end) in enumerate([(0, 5 * MiB), (5 * MiB, len(data))], start=1):
        etag = kit.client.upload_part(Bucket=kit.bucket, Key=key, UploadId=upload, PartNumber=n,
                                      Body=data[at:end])["ETag"]
        parts.append({"ETag": etag, "PartNumber": n})
    kit.client.complete_multipart_upload(Bucket=kit.bucket, Key=key, UploadId=upload,
                                         MultipartUpload={"Parts": parts})
    log = MessageLog()
    result = do_adopt(kit, "mp", progress=log)
    assert result.unverified == ("big.tar",) and result.manifest.adopted.evidence[0].kind == "none"
    assert any(line.startswith("warning:") and "never checked against a checksum" in line for line in log.lines)
    pulled = kit.pull(_published(kit, "mp", result.manifest))
    assert snapshot(pulled.dest) == snapshot(gnu_extract(whole, kit.tmp / "ref"))


def test_one_object_is_adopted_with_the_manifest_beside_it(kit, tree):
    whole, _ = make_pieces(kit.tmp, tree, pieces=1, sidecars="none")
    kit.client.put_object(Bucket=kit.bucket, Key="one/archive.tar", Body=whole.read_bytes())
    log = MessageLog()
    result = do_adopt(kit, "one/archive.tar", progress=log)
    # One object: the manifest goes beside it, in its directory, and names that one piece.
    assert result.url == f"s3://{kit.bucket}/one/manifest.json"
    assert [p.key for p in result.manifest.parts] == ["archive.tar"]
    assert result.manifest.adopted.evidence[0].kind == "etag-md5"
    assert not result.unverified and not any("never checked" in line for line in log.lines)
    assert result.manifest.name == "archive"
    pulled = kit.pull(_published(kit, "one", result.manifest))
    assert snapshot(pulled.dest) == snapshot(gnu_extract(whole, kit.tmp / "ref"))


def test_a_compressed_adopted_dataset_resumes_without_writing_anything_twice(kit, tree):
    whole, files = make_pieces(kit.tmp, tree, pieces=6, compress="gzip")
    upload_dir(kit, files[0].parent, "ds")
    m = do_adopt(kit, "ds").manifest
    pub = _published(kit, "ds", m)

    interrupt(kit, pub)
    staged = kit.tmp / "dest" / ".ds.s3sync-partial" / "tree"
    done = {str(p.relative_to(staged)): (p.stat().st_ino, p.stat().st_ctime_ns)
            for p in staged.rglob("*") if p.is_file() and ".s3sync" not in p.parts}
    assert done, "the interrupted run extracted nothing"
    kit.proxy.reset_stats()
    log = MessageLog()
    result = kit.pull(pub, progress=log)
    assert result.resumed_from > 0
    assert any("read again from the start; nothing before byte" in line for line in log.lines)
    assert kit.sent(f"ds/{files[0].name}") >= files[0].stat().st_size  # read again from byte 0
    # Members that end before the resume point (the journal checkpoints every chunk's worth
    # of members; later ones are extracted again, as for an uncompressed pull) were never
    # written again: same inode, untouched since.
    tar_bytes = subprocess.run(["gzip", "-dc", str(whole)], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as t:
        before = [os.path.normpath(i.name) for i in t if i.isreg()
                  and i.offset_data + -(-i.size // 512) * 512 <= result.resumed_from]
    assert before and set(before) <= set(done)
    for rel in before:
        st = (result.dest / rel).stat()
        assert (st.st_ino, st.st_ctime_ns) == done[rel], rel
    assert snapshot(result.dest) == snapshot(gnu_extract(whole, kit.tmp / "ref"))
    assert verify(result.dest).problems == ()


class StopAfter(MessageLog):
    """Ctrl-C once 1 MiB of file data is extracted."""

    seen = 0

    def advance(self, stage: str, n: int) -> None:
        if stage == "extract":
            self.seen += n
            if self.seen > 1 * MiB:
                raise KeyboardInterrupt


def interrupt(kit, pub: Published) -> None:
    serial = dataclasses.replace(FAST_TRANSFER, concurrency=1, window=2)
    with pytest.raises((KeyboardInterrupt, Interrupted)):
        kit.pull(pub, transfer=serial, progress=StopAfter())


def test_a_resumed_compressed_pull_still_checks_the_stream_digest(kit, tree):
    # A compressed stream is always read from byte 0, so even a resumed pull hashes all of it.
    _, files = make_pieces(kit.tmp, tree, pieces=3, compress="zstd")
    upload_dir(kit, files[0].parent, "ds")
    m = do_adopt(kit, "ds").manifest
    wrong = dataclasses.replace(m, stream_digest=hashing.digest(b"not the stream"))
    kit.put_manifest(Location(kit.bucket, "ds"), wrong.to_json())
    pub = _published(kit, "ds", wrong)
    interrupt(kit, pub)
    with pytest.raises(DamagedDatasetError, match="stream's digest"):
        kit.pull(pub)
    assert not (kit.tmp / "dest" / "ds").exists()


def test_a_piece_changed_after_adopt_is_named_by_the_pull(kit, tree):
    _, files = make_pieces(kit.tmp, tree, pieces=4)
    upload_dir(kit, files[0].parent, "ds")
    m = do_adopt(kit, "ds").manifest
    body = bytearray(files[1].read_bytes())
    body[100] ^= 0x01
    kit.client.put_object(Bucket=kit.bucket, Key="ds/ds.tar.part2", Body=bytes(body))
    with pytest.raises(PartChangedError, match="ds.tar.part2") as info:
        kit.pull(_published(kit, "ds", m))
    assert "adopt --replace" in info.value.hint and "republish" not in info.value.hint
    assert not (kit.tmp / "dest" / "ds").exists()


def test_publish_to_an_adopted_prefix_leaves_every_piece_in_place(kit, tree):
    _, files = make_pieces(kit.tmp, tree, pieces=3)
    upload_dir(kit, files[0].parent, "ds")
    adopted = do_adopt(kit, "ds").manifest
    pieces = {k: v for k, v in objects(kit, "ds").items() if "/" not in k[len("ds/"):] and k != "ds/manifest.json"}
    assert len(pieces) == 6  # 3 pieces, 3 sidecars
    other = write_tree(kit.tmp / "other", {"x.bin": 300_000})
    for _ in range(2):  # the second publish surveys and cleans up what the first left
        pub = kit.publish(other, "ds", prefix="ds")
    now = objects(kit, "ds")
    assert {k: now.get(k) for k in pieces} == pieces
    assert pub.manifest.version == 1
    assert Manifest.from_json(now[f"ds/{adopted.generation}/manifest.json"]).generation == adopted.generation
    assert snapshot(kit.pull(pub).dest) == snapshot(other)


def test_ls_shows_an_adopted_prefix_and_http_sources_are_refused(kit, tree):
    _, files = make_pieces(kit.tmp, tree, pieces=2, compress="zstd")
    upload_dir(kit, files[0].parent, "ds")
    do_adopt(kit, "ds")
    proc = kit.cli("ls", f"s3://{kit.bucket}/ds", "--json", "--endpoint-url", kit.proxy.url)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    doc = json.loads(out)
    assert (doc["version"], doc["compression"], doc["adopted"]) == (2, "zstd", f"s3://{kit.bucket}/ds")
    proc = kit.cli("adopt", "https://example.org/a.tar.gz")
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 2 and b"only s3:// sources" in err


@pytest.mark.parametrize("compress", ["", "gzip"])
def test_a_missing_last_piece_writes_no_manifest(kit, tree, compress):
    _, files = make_pieces(kit.tmp, tree, pieces=4, compress=compress)
    upload_dir(kit, files[0].parent, "ds")
    last = files[-1].name
    kit.client.delete_objects(Bucket=kit.bucket, Delete={"Objects": [{"Key": f"ds/{last}"},
                                                                     {"Key": f"ds/{last}.md5"}]})
    with pytest.raises(DamagedArchiveError, match="piece may be missing|the gzip stream is cut short"):
        do_adopt(kit, "ds")
    assert "ds/manifest.json" not in objects(kit, "ds")
