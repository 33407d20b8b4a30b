"""Pull of split archives s3sync did not publish (issue 11), on moto and rclone, through the
fault proxy: pieces made by GNU tar and split, sidecars by md5sum/sha256sum, compressed by
the real gzip and zstd; GNU tar's own extraction of the same archive is the reference.

- pieces in natural order (12 pieces: `.part1`..`.part12` would sort wrongly as text);
- each kind of evidence (sidecar, single-part ETag, multipart ETag) catches a byte flipped
  in transit; a piece corrupted at the source, with its original sidecar, is refused and
  nothing is committed; the rerun fetches that piece again, not the whole archive;
- no sidecar and an ETag that is not an MD5: pulled, and said to be unverified;
- an interrupted pull resumes; a missing last piece is named, not taken for the end.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import subprocess
from pathlib import Path

import pytest

from s3sync.config import Location
from s3sync.errors import (
    DamagedArchiveError,
    Interrupted,
    PieceDigestError,
    SplitArchiveError,
)
from s3sync.sources import from_s3
from s3sync.splitpull import pull_split

from .conftest import (
    FAST_TRANSFER,
    KiB,
    MessageLog,
    MiB,
    Rule,
    snapshot,
    standard_files,
    write_tree,
)

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


def make_pieces(tmp: Path, tree: Path, *, pieces: int = 12, compress: str = "", stem: str = "ds.tar",
                numbering: str = "part", sidecars: str = "md5") -> tuple[Path, list[Path]]:
    """tar the tree (GNU tar, members ``./...``), compress it, cut it with GNU split into
    ``pieces`` pieces named ``STEM.partN`` (unpadded: 1..12) or ``STEMxx`` and write sidecars
    (``md5``: PIECE.md5 each; ``MD5SUMS`` / ``SHA256SUMS``: one list; ``none``).
    Returns (the whole archive, the piece files in order)."""
    work = tmp / "pieces"
    work.mkdir(exist_ok=True)
    archive = tmp / stem
    subprocess.run(["tar", "--format=gnu", "-cf", str(archive), "-C", str(tree), "."], check=True)
    if compress:
        subprocess.run([compress, "-q", "-f", str(archive)] if compress == "zstd" else [compress, "-f", str(archive)],
                       check=True)
        archive = archive.with_name(archive.name + {"gzip": ".gz", "zstd": ".zst"}[compress])
    if numbering == "part":
        # split -n cannot write unpadded numbers: rename its x00.. to .part1..
        subprocess.run(["split", "-n", str(pieces), "-d", str(archive), str(work / "x")], check=True)
        files = []
        for i, f in enumerate(sorted(work.glob("x*")), start=1):
            files.append(f.rename(work / f"{archive.name}.part{i}"))
    else:
        subprocess.run(["split", "-n", str(pieces), str(archive), str(work / (archive.name + "."))], check=True)
        files = sorted(work.glob(archive.name + ".*"))
    if sidecars == "md5":
        for f in files:
            out = subprocess.run(["md5sum", f.name], cwd=work, check=True, capture_output=True).stdout
            (work / (f.name + ".md5")).write_bytes(out)
    elif sidecars in ("MD5SUMS", "SHA256SUMS"):
        tool = "md5sum" if sidecars == "MD5SUMS" else "sha256sum"
        out = subprocess.run([tool, *[f.name for f in files]], cwd=work, check=True, capture_output=True).stdout
        (work / sidecars).write_bytes(out)
    return archive, files


def upload_dir(kit, work: Path, prefix: str) -> None:
    for f in sorted(work.iterdir()):
        kit.client.put_object(Bucket=kit.bucket, Key=f"{prefix}/{f.name}", Body=f.read_bytes())


def gnu_extract(archive: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(archive), "-C", str(dest), "--no-same-owner"], check=True)
    return dest


def pull(kit, prefix: str, *, transfer=FAST_TRANSFER, progress=None, name=None, dest_parent=None):
    store = kit.store()
    archive = from_s3(store, Location(kit.bucket, prefix), name)
    try:
        return archive, pull_split(archive, dest_parent or kit.tmp / "dest", store, transfer, progress=progress)
    finally:
        kit.idle()


@pytest.fixture
def tree(kit) -> Path:
    return write_tree(kit.tmp / "src", standard_files(3 * MiB, 40), empty_dirs=("empty",))


def test_twelve_pieces_with_md5_sidecars_extract_like_gnu_tar(kit, tree):
    whole, files = make_pieces(kit.tmp, tree)
    upload_dir(kit, files[0].parent, "sbu")
    log = MessageLog()
    archive, result = pull(kit, "sbu", progress=log)
    assert [p.name for p in archive.pieces] == [f"ds.tar.part{i}" for i in range(1, 13)]
    assert {p.evidence.kind for p in archive.pieces} == {"sidecar"}
    assert result.codec == "none" and result.dest == kit.tmp / "dest" / "sbu"
    assert snapshot(result.dest) == snapshot(gnu_extract(whole, kit.tmp / "ref"))
    assert sum("matches" in line for line in log.lines) == 12
    assert not (kit.tmp / "dest" / ".sbu.s3sync-partial").exists()


@pytest.mark.parametrize("compress,sidecars", [("gzip", "MD5SUMS"), ("zstd", "SHA256SUMS")])
def test_compressed_pieces_with_a_checksum_list(kit, tree, compress, sidecars):
    whole, files = make_pieces(kit.tmp, tree, pieces=5, compress=compress, numbering="alpha", sidecars=sidecars)
    upload_dir(kit, files[0].parent, "coco")
    archive, result = pull(kit, "coco")
    assert [p.evidence.source for p in archive.pieces] == [sidecars] * 5
    assert result.codec == compress
    assert snapshot(result.dest) == snapshot(gnu_extract(whole, kit.tmp / "ref"))


def test_one_object_is_an_archive_named_after_its_key(kit, tree):
    whole, _ = make_pieces(kit.tmp, tree, pieces=1, compress="zstd", sidecars="none")
    kit.client.put_object(Bucket=kit.bucket, Key="mirror/coco2014.tar.zst", Body=whole.read_bytes())
    archive, result = pull(kit, "mirror/coco2014.tar.zst")
    assert archive.name == "coco2014" and len(archive.pieces) == 1
    assert archive.pieces[0].evidence.kind == "etag-md5"  # both servers: a single PUT's ETag is its MD5
    assert snapshot(result.dest) == snapshot(gnu_extract(whole, kit.tmp / "ref"))


def test_no_sidecar_falls_back_to_the_etag_and_says_so(kit, tree):
    whole, files = make_pieces(kit.tmp, tree, pieces=3, sidecars="none")
    upload_dir(kit, files[0].parent, "ds")
    archive, result = pull(kit, "ds")
    assert [p.evidence.kind for p in archive.pieces] == ["etag-md5"] * 3
    assert snapshot(result.dest) == snapshot(gnu_extract(whole, kit.tmp / "ref"))


@pytest.mark.parametrize("sidecars", ["md5", "none"])
def test_a_byte_flipped_in_transit_is_caught_and_only_that_piece_fetched_again(kit, tree, sidecars):
    whole, files = make_pieces(kit.tmp, tree, pieces=6, sidecars=sidecars)
    upload_dir(kit, files[0].parent, "ds")
    kit.add(Rule("flip", key="ds.tar.part4", times=1, match=lambda r: r.range_start is not None))
    with pytest.raises(PieceDigestError) as info:
        pull(kit, "ds")
    msg = str(info.value)
    assert "piece 4" in msg and "ds.tar.part4" in msg and "nothing was committed" in msg
    expected = hashlib.md5(files[3].read_bytes()).hexdigest()
    assert expected in msg
    assert not (kit.tmp / "dest" / "ds").exists()
    kit.proxy.clear()
    kit.proxy.reset_stats()
    archive, result = pull(kit, "ds")
    assert snapshot(result.dest) == snapshot(gnu_extract(whole, kit.tmp / "ref"))
    # The rerun resumes at the last member recorded before piece 4 began: piece 1 was checked
    # and extracted long before, and is not fetched again (only its first 512 bytes, which
    # tell the compression, and its sidecar); piece 4 is fetched whole.
    assert kit.sent("ds.tar.part1") < 1024
    assert kit.sent("ds.tar.part4") >= files[3].stat().st_size
    assert kit.sent("ds/ds.tar.part") < whole.stat().st_size


def test_a_piece_corrupted_at_the_source_is_refused_and_nothing_committed(kit, tree):
    whole, files = make_pieces(kit.tmp, tree, pieces=4)
    upload_dir(kit, files[0].parent, "ds")
    body = bytearray(files[2].read_bytes())
    body[len(body) // 2] ^= 0x01
    kit.client.put_object(Bucket=kit.bucket, Key="ds/ds.tar.part3", Body=bytes(body))
    for _ in range(2):  # the rerun fails the same way
        with pytest.raises(PieceDigestError) as info:
            pull(kit, "ds")
        assert "ds.tar.part3.md5" in str(info.value)
        assert hashlib.md5(bytes(body)).hexdigest() in str(info.value)
        assert not (kit.tmp / "dest" / "ds").exists()


def test_multipart_etag_is_recomputed_and_catches_a_flip(kit, s3_server):
    if s3_server.name != "moto":
        pytest.skip("rclone serve s3 gives every object its MD5 as ETag: no multipart ETag to check")
    src = write_tree(kit.tmp / "src", {"a.bin": 11 * MiB, "b/c.bin": 100 * KiB})
    whole, _ = make_pieces(kit.tmp, src, pieces=1, sidecars="none")
    data = whole.read_bytes()
    key = "mp/big.tar"
    upload = kit.client.create_multipart_upload(Bucket=kit.bucket, Key=key)["UploadId"]
    parts = []
    for n, at in enumerate(range(0, len(data), 5 * MiB), start=1):
        etag = kit.client.upload_part(Bucket=kit.bucket, Key=key, UploadId=upload, PartNumber=n,
                                      Body=data[at:at + 5 * MiB])["ETag"]
        parts.append({"ETag": etag, "PartNumber": n})
    kit.client.complete_multipart_upload(Bucket=kit.bucket, Key=key, UploadId=upload,
                                         MultipartUpload={"Parts": parts})
    kit.add(Rule("flip", key=key, times=1, match=lambda r: (r.range_start or 0) >= 6 * MiB))
    with pytest.raises(PieceDigestError, match="multipart ETag"):
        pull(kit, key)
    kit.proxy.clear()
    archive, result = pull(kit, key)
    ev = archive.pieces[0].evidence
    assert (ev.kind, ev.upload_part_size) == ("etag-multipart", 5 * MiB)
    assert ev.expected.endswith(f"-{len(parts)}")
    assert snapshot(result.dest) == snapshot(gnu_extract(whole, kit.tmp / "ref"))


@pytest.mark.parametrize("compress", ["", "gzip"])
def test_an_interrupted_pull_resumes(kit, tree, compress):
    whole, files = make_pieces(kit.tmp, tree, pieces=6, compress=compress)
    upload_dir(kit, files[0].parent, "ds")

    class StopAfter(MessageLog):
        seen = 0

        def advance(self, stage: str, n: int) -> None:
            if stage == "extract":
                self.seen += n
                if self.seen > 1 * MiB:
                    raise KeyboardInterrupt

    serial = dataclasses.replace(FAST_TRANSFER, concurrency=1, window=2)
    with pytest.raises((KeyboardInterrupt, Interrupted)):
        pull(kit, "ds", transfer=serial, progress=StopAfter())
    staging = kit.tmp / "dest" / ".ds.s3sync-partial"
    assert staging.is_dir()
    # The files the interrupted run recorded (within its last checkpoint) from pieces it had
    # checked are never written again; those from the piece it was reading when interrupted
    # are (they came from bytes no digest covered).
    state = json.loads((staging / "journal.json").read_text())
    current = json.loads((staging / "pieces.json").read_text())["current"]
    # No current piece when the last checkpoint fell between two pieces (seen under load):
    # then every record within the checkpoint came from a checked piece.
    limit = min(state["index_size"], current["mark"][1]) if current else state["index_size"]
    index = (staging / "tree" / ".s3sync" / "index.jsonl").read_bytes()[:limit]
    kept = {r[0]: (staging / "tree" / r[0]).stat().st_ino  # records: [path, kind, size, ...]
            for r in map(json.loads, index.splitlines()) if r[1] == "file"}
    assert kept
    kit.proxy.reset_stats()
    log = MessageLog()
    _, result = pull(kit, "ds", progress=log)
    assert result.resumed_from > 0
    assert any("resuming" in line for line in log.lines)
    assert snapshot(result.dest) == snapshot(gnu_extract(whole, kit.tmp / "ref"))
    assert {path: (result.dest / path).stat().st_ino for path in kept} == kept
    if not compress:  # checked by the first run, before the resume point: only the 512-byte head and the sidecar
        assert kit.sent("ds.tar.part1") < 1024


def test_a_missing_last_piece_is_not_taken_for_the_end(kit, tree):
    whole, files = make_pieces(kit.tmp, tree, pieces=6)
    upload_dir(kit, files[0].parent, "ds")
    kit.client.delete_object(Bucket=kit.bucket, Key="ds/ds.tar.part6")
    kit.client.delete_object(Bucket=kit.bucket, Key="ds/ds.tar.part6.md5")
    with pytest.raises(DamagedArchiveError, match="piece may be missing"):
        pull(kit, "ds")
    assert not (kit.tmp / "dest" / "ds").exists()


@pytest.mark.parametrize("names,what", [
    (["a.tar.001", "a.tar.002", "a.tar.003", "notes.txt"], "notes.txt"),
    (["a.tar.001", "a.tar.002", "a.tar.004"], "003"),
])
def test_unrelated_names_and_gaps_are_refused_listing_what_was_found(kit, names, what):
    for n in names:
        kit.client.put_object(Bucket=kit.bucket, Key=f"odd/{n}", Body=b"x")
    with pytest.raises(SplitArchiveError, match=what):
        from_s3(kit.store(), Location(kit.bucket, "odd"), None)


def test_the_etag_of_an_sse_kms_object_is_not_taken_for_its_md5(kit, tree, s3_server):
    if s3_server.name != "moto":
        pytest.skip("rclone serve s3 has no server-side encryption")
    whole, files = make_pieces(kit.tmp, tree, pieces=2, sidecars="none")
    kms = kit.client.put_object(Bucket=kit.bucket, Key="kms/ds.tar.part1", Body=files[0].read_bytes(),
                                ServerSideEncryption="aws:kms")
    assert kms.get("ServerSideEncryption") == "aws:kms"
    kit.client.put_object(Bucket=kit.bucket, Key="kms/ds.tar.part2", Body=files[1].read_bytes())
    archive, result = pull(kit, "kms")
    first, second = (p.evidence for p in archive.pieces)
    assert first.kind == "none" and "aws:kms" in first.source  # S3 gives SSE-KMS objects other ETags
    assert second.kind == "etag-md5"
    assert snapshot(result.dest) == snapshot(gnu_extract(whole, kit.tmp / "ref"))


def test_a_compressed_archive_missing_its_last_piece_says_so(kit, tree):
    whole, files = make_pieces(kit.tmp, tree, pieces=4, compress="gzip")
    upload_dir(kit, files[0].parent, "gz")
    kit.client.delete_object(Bucket=kit.bucket, Key="gz/ds.tar.gz.part4")
    kit.client.delete_object(Bucket=kit.bucket, Key="gz/ds.tar.gz.part4.md5")
    with pytest.raises(DamagedArchiveError, match="piece may be missing") as info:
        pull(kit, "gz")
    assert "ds.tar.gz.part1" not in str(info.value)  # not blamed on the first piece
    assert not (kit.tmp / "dest" / "gz").exists()
