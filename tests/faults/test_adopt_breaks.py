"""Attempts to break ``s3sync adopt`` and the pull of an adopted (format version 2) manifest,
on moto and rclone through the fault proxy: hostile or inconsistent version 2 manifests,
archives of unusual shapes (sparse members, hard links, data after the end-of-archive
marker, concatenated gzip members), adopt racing a publish, adopt stopped at each write,
a piece replaced after adopt, resume of a compressed pull interrupted several times, a
later publish's clean-up next to a user's own objects under the prefix.

Each case is a problem found (fixed, or ``xfail(strict=True)`` with the reason) or a
guarantee that held under attack.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import re
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from s3sync.adopt import adopt
from s3sync.config import Location
from s3sync.errors import (
    DamagedArchiveError,
    DamagedDatasetError,
    DestinationError,
    IntegrityError,
    ManifestError,
    PartChangedError,
    S3SyncError,
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
from .test_adopt import do_adopt, objects
from .test_split_pull import gnu_extract, make_pieces, upload_dir

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")


@pytest.fixture
def one_server(s3_server) -> None:
    """For a case whose outcome is the client's alone (validation, extraction, resume): one
    server is enough; the cases about conditional writes, ETags and keys run on both."""
    if s3_server.name != "moto":
        pytest.skip("the client's behaviour: one server is enough")


@pytest.fixture
def tree(kit) -> Path:
    return write_tree(kit.tmp / "src", standard_files(1 * MiB, 12), empty_dirs=("empty",))


def published(kit, prefix: str, manifest: Manifest) -> Published:
    return Published(kit.tmp / "none", manifest.name, Location(kit.bucket, prefix), manifest)


def rewrite(kit, prefix: str, doc: dict) -> Published:
    """Put a hand-edited manifest ``doc`` at ``prefix`` (straight to the server)."""
    data = json.dumps(doc).encode()
    kit.put_manifest(Location(kit.bucket, prefix), data)
    return published(kit, prefix, Manifest.from_json(data))


def adopted_doc(kit, tree, prefix: str = "ds", **kwargs) -> tuple[dict, Path, list[Path]]:
    whole, files = make_pieces(kit.tmp, tree, **kwargs)
    upload_dir(kit, files[0].parent, prefix)
    do_adopt(kit, prefix)
    return json.loads(objects(kit, prefix)[f"{prefix}/manifest.json"]), whole, files


# --------------------------------------------------------------------------- hostile manifests


def test_no_extract_never_writes_a_piece_over_the_metadata_directory(kit, tree, one_server):
    # A version 2 manifest whose piece is named ".s3sync" (the object exists, with the same
    # bytes and ETag): --no-extract stores pieces under their own names, in the tree whose
    # .s3sync/ holds the completion marker and the manifest.
    doc, _, files = adopted_doc(kit, tree, pieces=1, sidecars="none")
    kit.client.put_object(Bucket=kit.bucket, Key="ds/.s3sync", Body=files[0].read_bytes())
    doc["parts"][0]["key"] = ".s3sync"
    # Before: accepted, and the --no-extract pull failed late with "tree: Is a directory".
    with pytest.raises(ManifestError, match=r"parts\[0\]\.key '\.s3sync' .*metadata"):
        rewrite(kit, "ds", doc)


def test_a_piece_name_too_long_for_the_local_file_system_is_a_destination_error(kit, tree, s3_server):
    if s3_server.name == "rclone":
        pytest.skip("rclone serve s3 stores objects as local files: it cannot hold a 304-byte name either")
    long = "p" * 300 + ".tar"  # S3 allows 1,024 bytes; ext4 and most file systems 255
    whole, _ = make_pieces(kit.tmp, tree, pieces=1, sidecars="none")
    kit.client.put_object(Bucket=kit.bucket, Key=f"ds/{long}", Body=whole.read_bytes())
    m = do_adopt(kit, "ds", name="ds").manifest
    assert m.parts[0].key == long
    assert snapshot(kit.pull(published(kit, "ds", m)).dest) == snapshot(gnu_extract(whole, kit.tmp / "ref"))
    with pytest.raises(DestinationError, match="too long|File name"):
        kit.pull(published(kit, "ds", m), kit.tmp / "parts", extract=False)


@pytest.mark.parametrize("lie", ["zstd", "none-on-gzip", "gzip-on-plain"])
def test_a_compression_lie_is_refused_and_nothing_is_committed(kit, tree, lie, one_server):
    compress = "" if lie == "gzip-on-plain" else "gzip"
    doc, _, _ = adopted_doc(kit, tree, pieces=2, compress=compress)
    if lie == "none-on-gzip":
        doc["compression"], doc["tar_size"] = "none", doc["stream"]["size"]
    else:
        doc["compression"] = lie.split("-")[0]
    pub = rewrite(kit, "ds", doc)
    # Before: the decoder's DamagedArchiveError ("the archive at the source is damaged")
    # reached the user; every chunk matched its digest, so it is the manifest that is wrong.
    expected = UnsafeArchiveError if lie == "none-on-gzip" else DamagedDatasetError  # gzip bytes read as tar
    with pytest.raises(expected, match="unreadable|does not decode"):
        kit.pull(pub)
    assert not (kit.tmp / "dest" / "ds").exists()


@pytest.mark.parametrize("delta", [-512, 10 * MiB])
def test_a_tar_size_lie_is_refused_and_nothing_is_committed(kit, tree, delta, one_server):
    doc, _, _ = adopted_doc(kit, tree, pieces=2, compress="zstd")
    doc["tar_size"] += delta
    pub = rewrite(kit, "ds", doc)
    # Before: 512 and 10 MiB too many ended in the decoder's DamagedArchiveError.
    with pytest.raises(DamagedDatasetError, match="tar_size|too soon|ends at byte"):
        kit.pull(pub)
    assert not (kit.tmp / "dest" / "ds").exists()


def test_a_piece_key_naming_another_object_under_the_prefix_is_refused(kit, tree, one_server):
    # Keys cannot leave the prefix ('/' is refused); one naming a sidecar beside the pieces
    # reads that object, which is shorter than the size the manifest gives: refused.
    doc, _, _ = adopted_doc(kit, tree, pieces=2)
    doc["parts"][1]["key"] = "ds.tar.part1.md5"
    pub = rewrite(kit, "ds", doc)
    with pytest.raises((PartChangedError, IntegrityError), match=r"ds\.tar\.part1\.md5"):
        kit.pull(pub)
    assert not (kit.tmp / "dest" / "ds").exists()


def test_unicode_and_spaces_in_piece_names(kit, tree):
    whole, files = make_pieces(kit.tmp, tree, pieces=3, stem="données été.tar")
    upload_dir(kit, files[0].parent, "ds")
    m = do_adopt(kit, "ds").manifest
    assert [p.key for p in m.parts] == [f.name for f in files]
    assert snapshot(kit.pull(published(kit, "ds", m)).dest) == snapshot(gnu_extract(whole, kit.tmp / "ref"))
    parts = kit.pull(published(kit, "ds", m), kit.tmp / "parts", extract=False)
    assert sorted(p.name for p in parts.dest.iterdir() if p.name != ".s3sync") == sorted(f.name for f in files)
    assert verify(parts.dest).problems == ()


# --------------------------------------------------------------------------- archive shapes


def _odd_tree(root: Path) -> Path:
    """A tree with a sparse file (a hole of 3 MiB), hard links and an empty directory."""
    root.mkdir(parents=True)
    with open(root / "sparse.img", "wb") as f:
        f.write(b"head" * 1000)
        f.seek(3 * MiB)
        f.write(b"tail" * 1000)
    (root / "d").mkdir()
    (root / "d" / "a.txt").write_bytes(os.urandom(200_000))
    os.link(root / "d" / "a.txt", root / "d" / "b.txt")
    os.link(root / "d" / "a.txt", root / "a-again.txt")
    (root / "empty").mkdir()
    return root


@pytest.mark.parametrize("compress,fmt", [("", "gnu"), ("gzip", "pax"), ("", "posix-0.1")])
def test_sparse_members_hard_links_and_dot_root_adopt_pull_and_verify(kit, compress, fmt, one_server):
    src = _odd_tree(kit.tmp / "odd")
    archive = kit.tmp / "odd.tar"
    opts = ["--sparse"] + (["--format=pax", "--sparse-version=0.1"] if fmt == "posix-0.1" else [f"--format={fmt}"])
    subprocess.run(["tar", *opts, "-cf", str(archive), "-C", str(src), "."], check=True)
    if compress:
        subprocess.run([compress, "-f", str(archive)], check=True)
        archive = archive.with_name(archive.name + ".gz")
    data = archive.read_bytes()
    cut = len(data) // 3
    for i, piece in enumerate([data[:cut], data[cut:2 * cut], data[2 * cut:]], start=1):
        kit.client.put_object(Bucket=kit.bucket, Key=f"odd/{archive.name}.{i:03d}", Body=piece)
    m = do_adopt(kit, "odd").manifest
    result = kit.pull(published(kit, "odd", m))
    ref = gnu_extract(archive, kit.tmp / "ref")
    assert snapshot(result.dest) == snapshot(ref)
    assert os.stat(result.dest / "d" / "a.txt").st_ino == os.stat(result.dest / "a-again.txt").st_ino
    assert verify(result.dest).problems == ()


def test_data_after_the_end_of_archive_marker_writes_no_manifest(kit, tree, one_server):
    whole, _ = make_pieces(kit.tmp, tree, pieces=1, sidecars="none")
    data = whole.read_bytes() + b"trailing junk after the archive\n"
    kit.client.put_object(Bucket=kit.bucket, Key="ds/ds.tar", Body=data)
    with pytest.raises(DamagedArchiveError, match="after"):
        do_adopt(kit, "ds/ds.tar")
    assert "ds/manifest.json" not in objects(kit, "ds")


def test_two_tars_concatenated_are_refused_not_half_adopted(kit, tree, one_server):
    # GNU tar without -i stops at the first end-of-archive marker; adopt must not write a
    # manifest that silently drops the second archive's members.
    whole, _ = make_pieces(kit.tmp, tree, pieces=1, sidecars="none")
    other = write_tree(kit.tmp / "other", {"z.bin": 5000})
    second = kit.tmp / "second.tar"
    subprocess.run(["tar", "-cf", str(second), "-C", str(other), "."], check=True)
    kit.client.put_object(Bucket=kit.bucket, Key="ds/ds.tar", Body=whole.read_bytes() + second.read_bytes())
    with pytest.raises(DamagedArchiveError):
        do_adopt(kit, "ds/ds.tar")
    assert "ds/manifest.json" not in objects(kit, "ds")


def test_a_gzip_of_several_members_is_adopted_whole(kit, tree, one_server):
    # `cat a.gz b.gz` is one valid gzip file (RFC 1952 section 2.2: members in a row);
    # gzip -dc and GNU tar read all members. pigz -i, bgzip and appended logs write these.
    plain = kit.tmp / "ds.tar"
    subprocess.run(["tar", "--format=gnu", "-cf", str(plain), "-C", str(tree), "."], check=True)
    data = plain.read_bytes()
    half = len(data) // 2
    gz = b"".join(subprocess.run(["gzip", "-c"], input=p, check=True, capture_output=True).stdout
                  for p in (data[:half], data[half:]))
    kit.client.put_object(Bucket=kit.bucket, Key="ds/ds.tar.gz", Body=gz)
    m = do_adopt(kit, "ds/ds.tar.gz", name="ds").manifest
    assert m.compression == "gzip" and m.tar_stream_size == len(data)
    result = kit.pull(published(kit, "ds", m))
    assert snapshot(result.dest) == snapshot(gnu_extract(plain, kit.tmp / "ref"))


# --------------------------------------------------------------------------- pieces changed after adopt


def test_a_piece_uploaded_again_with_the_same_bytes_still_pulls(kit, tree, s3_server):
    # A multipart upload of identical bytes gives the piece another ETag: the chunk digests
    # decide, and the pull says the ETag differs.
    doc, whole, files = adopted_doc(kit, tree, pieces=2)
    data = files[1].read_bytes()
    key = f"ds/{files[1].name}"
    upload = kit.client.create_multipart_upload(Bucket=kit.bucket, Key=key)["UploadId"]
    etag = kit.client.upload_part(Bucket=kit.bucket, Key=key, UploadId=upload, PartNumber=1, Body=data)["ETag"]
    kit.client.complete_multipart_upload(Bucket=kit.bucket, Key=key, UploadId=upload,
                                         MultipartUpload={"Parts": [{"ETag": etag, "PartNumber": 1}]})
    new = kit.client.head_object(Bucket=kit.bucket, Key=key)["ETag"]
    pub = published(kit, "ds", Manifest.from_json(json.dumps(doc).encode()))
    log = MessageLog()
    result = kit.pull(pub, progress=log)
    assert snapshot(result.dest) == snapshot(gnu_extract(whole, kit.tmp / "ref"))
    if new.strip('"') != doc["parts"][1]["etag"].strip('"'):  # rclone's listing gives ETags unquoted
        assert any("not the published" in line for line in log.lines), (new, doc["parts"][1]["etag"], log.lines)


def test_a_piece_that_grew_after_adopt_still_pulls_the_bytes_adopt_read(kit, tree):
    # Bytes appended to a piece: the ranges the manifest names still hold what adopt
    # checked (every chunk digest matches), so the pull succeeds, saying the ETag differs.
    doc, whole, files = adopted_doc(kit, tree, pieces=3)
    kit.client.put_object(Bucket=kit.bucket, Key=f"ds/{files[1].name}", Body=files[1].read_bytes() + b"x" * 1000)
    log = MessageLog()
    result = kit.pull(published(kit, "ds", Manifest.from_json(json.dumps(doc).encode())), progress=log)
    assert snapshot(result.dest) == snapshot(gnu_extract(whole, kit.tmp / "ref"))
    assert any("not the published" in line for line in log.lines)


@pytest.mark.xfail(strict=True, reason=(
    "a piece now shorter than the manifest's size fails every attempt with IntegrityError "
    "'Content-Range ... does not match the requested bytes' (retriable; hint: corrupted in transit), "
    "not PartChangedError naming the piece as changed since adopt: the check is in "
    "stores/s3.py _get_range, which could compare Content-Range's total with offset + length"))
def test_a_piece_truncated_after_adopt_is_named_as_changed(kit, tree):
    doc, _, files = adopted_doc(kit, tree, pieces=3)
    kit.client.put_object(Bucket=kit.bucket, Key=f"ds/{files[1].name}", Body=files[1].read_bytes()[:-1000])
    pub = published(kit, "ds", Manifest.from_json(json.dumps(doc).encode()))
    try:
        with pytest.raises(PartChangedError, match=files[1].name):
            kit.pull(pub)
    finally:
        assert not (kit.tmp / "dest" / "ds").exists()


# --------------------------------------------------------------------------- resume


class StopAt(MessageLog):
    """Ctrl-C once ``limit`` bytes of file data count as extracted (earlier runs' included)."""

    def __init__(self, limit: int) -> None:
        super().__init__()
        self.limit = limit
        self.seen = 0

    def advance(self, stage: str, n: int) -> None:
        if stage == "extract":
            self.seen += n
            if self.seen > self.limit:
                raise KeyboardInterrupt


def _files(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_ino, p.stat().st_ctime_ns)
            for p in root.rglob("*") if p.is_file() and ".s3sync" not in p.parts}


def _ends(whole: Path, compress: str) -> dict[str, int]:
    """Each regular file's path and the tar stream offset (bytes) where its data ends."""
    tar_bytes = subprocess.run([compress, "-dc", str(whole)], check=True, capture_output=True).stdout
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as t:
        return {os.path.normpath(i.name): i.offset_data + -(-i.size // 512) * 512 for i in t if i.isreg()}


@pytest.mark.parametrize("compress", ["zstd"])  # gzip: the kill -9 case below
def test_a_compressed_pull_interrupted_three_times_writes_nothing_twice_before_each_resume_point(kit, compress, one_server):
    src = write_tree(kit.tmp / "src", standard_files(3 * MiB, 48))
    whole, files = make_pieces(kit.tmp, src, pieces=4, compress=compress)
    upload_dir(kit, files[0].parent, "ds")
    m = do_adopt(kit, "ds").manifest
    pub = published(kit, "ds", m)
    ends = _ends(whole, compress)
    serial = dataclasses.replace(FAST_TRANSFER, concurrency=1, window=2)
    staged = kit.tmp / "dest" / ".ds.s3sync-partial" / "tree"
    before: dict[str, tuple[int, int]] = {}
    resumed = []
    for limit in (MiB // 2, 5 * MiB // 4, 2 * MiB, None):
        log = StopAt(limit) if limit else MessageLog()
        if limit:
            with pytest.raises(KeyboardInterrupt):
                kit.pull(pub, transfer=serial, progress=log)
            now = _files(staged)
        else:
            result = kit.pull(pub, progress=log)
            now = _files(result.dest)
        said = [int(re.search(r"nothing before byte ([0-9,]+)", line)[1].replace(",", ""))
                for line in log.lines if "nothing before byte" in line]
        if before:  # a resumed run: it says from where, and wrote nothing that ends before it
            assert len(said) == 1, log.lines
            resumed.append(said[0])
            rewritten = [rel for rel, st in before.items() if ends[rel] <= said[0] and now.get(rel) != st]
            assert not rewritten, (said[0], rewritten)
        before = now
    assert resumed == sorted(resumed) and resumed[0] > 0 and result.resumed_from == resumed[-1]
    assert snapshot(result.dest) == snapshot(gnu_extract(whole, kit.tmp / "ref"))
    assert verify(result.dest).problems == ()


# --------------------------------------------------------------------------- commit protocol


class Hooked:
    """An S3Store passed through, calling ``hook(name, key, when)`` before and after each call."""

    def __init__(self, inner, hook) -> None:
        self._inner = inner
        self._hook = hook

    def __getattr__(self, name):
        attr = getattr(self._inner, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def call(*args, **kwargs):
            key = args[0] if args and isinstance(args[0], str) else ""
            self._hook(name, key, "before")
            out = attr(*args, **kwargs)
            self._hook(name, key, "after")
            return out
        return call


class Killed(BaseException):
    pass


@pytest.mark.parametrize("call,when", [("read", "after"), ("put-history", "after"), ("put-manifest", "after")])
def test_adopt_replace_stopped_at_each_write_step_leaves_a_whole_manifest(kit, tree, call, when, one_server):
    # The three states a stop can leave: nothing written (after the last check), the old
    # manifest's history copy only, the new manifest written but not read back.
    _, files = make_pieces(kit.tmp, tree, pieces=2)
    upload_dir(kit, files[0].parent, "ds")
    first = do_adopt(kit, "ds")
    before = objects(kit, "ds")
    old = before["ds/manifest.json"]
    reading_done = []

    def hook(name: str, key: str, at: str) -> None:
        if name == "list" or (name in ("read_range_into", "read_range_pieces") and at == "after"):
            reading_done.clear()
            reading_done.append(False)
        step = {"read": name == "read" and key.endswith("/manifest.json"),
                "put-history": name == "put" and key.endswith(f"{first.manifest.generation}/manifest.json"),
                "put-manifest": name == "put" and key == "ds/manifest.json",
                "get": name == "get" and key == "ds/manifest.json"}[call]
        if step and at == when and reading_done:  # in _commit (after the archive was read)
            raise Killed

    store = Hooked(kit.store(), hook)
    with pytest.raises(Killed):
        try:
            adopt(Location(kit.bucket, "ds"), store, FAST_TRANSFER, replace=True)
        finally:
            kit.idle()
    now = objects(kit, "ds")
    assert {k: v for k, v in now.items() if k.count("/") == 1 and k != "ds/manifest.json"} == \
        {k: v for k, v in before.items() if k != "ds/manifest.json"}  # pieces and sidecars untouched
    current = Manifest.from_json(now["ds/manifest.json"])  # whole, valid
    assert now["ds/manifest.json"] == old or current.previous == first.manifest.generation
    # Run again: the adoption completes, and the first manifest is reachable as history.
    again = do_adopt(kit, "ds", replace=True)
    final = objects(kit, "ds")
    assert Manifest.from_json(final["ds/manifest.json"]).generation == again.manifest.generation
    assert final[f"ds/{first.manifest.generation}/manifest.json"] == old
    assert snapshot(kit.pull(published(kit, "ds", again.manifest)).dest) == \
        snapshot(gnu_extract(kit.tmp / "ds.tar", kit.tmp / "ref"))


# --------------------------------------------------------------------------- around the adopted prefix


def test_a_later_publish_cleans_up_nothing_of_a_users_own_subdirectory(kit, tree, one_server):
    # Beside the pieces, the user keeps an older split of the same data under ds/old/
    # (`split -d data.tar part-`). A publish to the adopted prefix cleans up "leftovers":
    # directories named like a generation whose objects start with "part-".
    import time as _time

    from s3sync.lease import LeaseSettings
    from s3sync.leftovers import clean, survey

    _, files = make_pieces(kit.tmp, tree, pieces=2)
    upload_dir(kit, files[0].parent, "ds")
    m = do_adopt(kit, "ds").manifest
    for name in ("part-00", "part-01"):
        kit.client.put_object(Bucket=kit.bucket, Key=f"ds/old/{name}", Body=b"user data " + name.encode())
    store = kit.store(kit.server.endpoint_url)
    found = survey(store, Location(kit.bucket, "ds"), m.generation, settings=LeaseSettings(),
                   now=_time.time() + 30 * 86400)
    clean(store, Location(kit.bucket, "ds"), found)
    assert {"ds/old/part-00", "ds/old/part-01"} <= set(objects(kit, "ds"))


def test_ls_verbose_of_an_adopted_prefix(kit, tree, one_server):
    _, files = make_pieces(kit.tmp, tree, pieces=3, compress="gzip")
    upload_dir(kit, files[0].parent, "ds")
    m = do_adopt(kit, "ds").manifest
    proc = kit.cli("ls", "-v", f"s3://{kit.bucket}/ds", "--endpoint-url", kit.proxy.url)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    text = out.decode() + err.decode()
    assert m.generation in text and "compression  gzip" in text and "format version 2; pieces in place" in text
    assert "in 3 parts" in text and "leftovers\tnone" in text  # the pieces are no generation of ours


def test_a_prefix_that_is_not_a_valid_dataset_name_asks_for_a_name(kit, tree, one_server):
    _, files = make_pieces(kit.tmp, tree, pieces=2)
    upload_dir(kit, files[0].parent, "my data")
    with pytest.raises(S3SyncError) as info:
        do_adopt(kit, "my data")
    assert "--name" in (info.value.hint or "") + str(info.value), (str(info.value), info.value.hint)
    assert "my data/manifest.json" not in objects(kit, "my data")


@pytest.mark.parametrize("rival", ["publish", "adopt", "publish-over-replace"])
def test_adopt_racing_another_writer_of_the_manifest_loses_cleanly(kit, tree, s3_server, request, rival):
    if s3_server.name == "rclone":
        request.applymarker(pytest.mark.xfail(strict=True, reason=(
            "rclone serve s3 ignores If-None-Match: a rival that commits between adopt's last check "
            "and its PUT is overwritten, and the read-back sees adopt's own bytes; only a server "
            "honouring conditional writes closes the window")))
    _, files = make_pieces(kit.tmp, tree, pieces=2)
    upload_dir(kit, files[0].parent, "ds")
    other = write_tree(kit.tmp / "other", {"x.bin": 100_000})
    replace = rival == "publish-over-replace"  # adopt --replace (If-Match) against a publish
    if replace:
        do_adopt(kit, "ds")
    raced: list[str] = []

    def hook(name: str, key: str, at: str) -> None:
        if name == "put" and key == "ds/manifest.json" and at == "before" and not raced:
            raced.append("")
            won = do_adopt(kit, "ds").manifest if rival == "adopt" else kit.publish(other, "ds", prefix="ds").manifest
            raced[0] = won.generation

    store = Hooked(kit.store(), hook)
    with pytest.raises(StoreError, match="someone else|another manifest"):
        try:
            adopt(Location(kit.bucket, "ds"), store, FAST_TRANSFER, replace=replace)
        finally:
            kit.idle()
    assert Manifest.from_json(objects(kit, "ds")["ds/manifest.json"]).generation == raced[0]


def test_an_empty_piece_in_the_middle(kit, tree, one_server):
    whole, _ = make_pieces(kit.tmp, tree, pieces=1, sidecars="none")
    data = whole.read_bytes()
    for i, body in enumerate([data[:300_000], b"", data[300_000:]], start=1):
        kit.client.put_object(Bucket=kit.bucket, Key=f"ds/ds.tar.{i:03d}", Body=body)
    m = do_adopt(kit, "ds").manifest
    assert [p.size for p in m.parts] == [300_000, 0, len(data) - 300_000]
    result = kit.pull(published(kit, "ds", m))
    assert snapshot(result.dest) == snapshot(gnu_extract(whole, kit.tmp / "ref"))
    assert verify(result.dest).problems == ()


def test_pieces_at_the_bucket_root(kit, tree):
    whole, files = make_pieces(kit.tmp, tree, pieces=3)
    for f in files:
        kit.client.put_object(Bucket=kit.bucket, Key=f.name, Body=f.read_bytes())
    m = do_adopt(kit, "", name="root").manifest
    assert "manifest.json" in {o["Key"] for o in kit.client.list_objects_v2(Bucket=kit.bucket)["Contents"]}
    result = kit.pull(Published(kit.tmp / "none", "root", Location(kit.bucket, ""), m))
    assert snapshot(result.dest) == snapshot(gnu_extract(whole, kit.tmp / "ref"))


@pytest.mark.parametrize("replace", [False, True])
def test_adopting_a_generation_directory_of_a_published_dataset_is_refused(kit, tree, replace, one_server):
    # s3sync's own parts are a tar split in pieces, and PREFIX/<generation>/manifest.json is
    # that generation's history copy. Before, --replace overwrote the history copy with the
    # adopted manifest (and nested the old one at PREFIX/<gen>/<gen>/manifest.json).
    pub = kit.publish(tree, "pub", prefix="pub")
    gen = pub.manifest.generation
    before = objects(kit, "pub")
    assert f"pub/{gen}/manifest.json" in before
    with pytest.raises(UsageError, match="history copy"):
        do_adopt(kit, f"pub/{gen}", replace=replace)
    assert objects(kit, "pub") == before


@pytest.mark.parametrize("compress,resumed", [("", False), ("gzip", False), ("", True), ("gzip", True)])
def test_the_dot_root_member_gives_the_dataset_directory_its_mode_and_mtime(kit, tree, compress, resumed, one_server):
    # GNU tar -x -C DEST of an archive made with `tar -C SRC .` gives DEST the mode and mtime
    # of its "./" member; a pull of the split archive itself does so (splitpull), and so
    # must a pull of the same archive once adopted, resumed or not. Before: 0755 and now.
    os.chmod(tree, 0o750)
    os.utime(tree, (1_600_000_000, 1_600_000_000))
    whole, files = make_pieces(kit.tmp, tree, pieces=2, compress=compress)
    upload_dir(kit, files[0].parent, "ds")
    m = do_adopt(kit, "ds").manifest
    pub = published(kit, "ds", m)
    if resumed:
        with pytest.raises(KeyboardInterrupt):
            kit.pull(pub, transfer=dataclasses.replace(FAST_TRANSFER, concurrency=1, window=2),
                     progress=StopAt(300_000))
    result = kit.pull(pub)
    assert (result.resumed_from > 0) == resumed
    ref = gnu_extract(whole, kit.tmp / "ref")
    st, want = result.dest.stat(), ref.stat()
    assert (oct(st.st_mode & 0o7777), int(st.st_mtime)) == (oct(want.st_mode & 0o7777), int(want.st_mtime))
    assert verify(result.dest).problems == ()


@pytest.mark.parametrize("shape", ["gzip+zeros", "bzip2x2", "xzx2", "zstdx2"])
def test_what_the_real_decompressors_accept_is_adopted(kit, tree, shape, one_server):
    # gzip -dc ignores zero padding after the last member (tape blocking); pbzip2 and
    # lbzip2 write several bzip2 streams, xz and zstd decode concatenated streams/frames.
    plain = kit.tmp / "ds.tar"
    subprocess.run(["tar", "--format=gnu", "-cf", str(plain), "-C", str(tree), "."], check=True)
    data = plain.read_bytes()
    tool = shape.split("+")[0].removesuffix("x2")
    half = len(data) // 2
    halves = (data,) if "+" in shape else (data[:half], data[half:])
    body = b"".join(subprocess.run([tool, "-c"], input=h, check=True, capture_output=True).stdout for h in halves)
    if shape == "gzip+zeros":
        body += bytes(10_000)
    whole = kit.tmp / "ds.tar.x"
    whole.write_bytes(body)
    check = subprocess.run(["sh", "-c", f"{tool} -dc < {whole} | cmp - {plain}"], capture_output=True)
    assert check.returncode == 0, check.stderr  # the real tool reads it back whole
    kit.client.put_object(Bucket=kit.bucket, Key="ds/ds.tar.x", Body=body)
    m = do_adopt(kit, "ds/ds.tar.x", name="ds").manifest
    assert m.tar_stream_size == len(data)
    result = kit.pull(published(kit, "ds", m))
    assert snapshot(result.dest) == snapshot(gnu_extract(plain, kit.tmp / "ref"))


def test_an_archive_cut_right_after_its_last_member_writes_no_manifest(kit, tree, one_server):
    plain = kit.tmp / "ds.tar"
    subprocess.run(["tar", "--format=gnu", "-cf", str(plain), "-C", str(tree), "."], check=True)
    data = plain.read_bytes()
    with tarfile.open(plain) as t:
        last = t.getmembers()[-1]
    end = last.offset_data + -(-last.size // 512) * 512
    kit.client.put_object(Bucket=kit.bucket, Key="ds/ds.tar", Body=data[:end])
    with pytest.raises(DamagedArchiveError, match="end-of-archive|missing"):
        do_adopt(kit, "ds/ds.tar")
    assert "ds/manifest.json" not in objects(kit, "ds")


def test_kill_9_of_a_compressed_adopted_pull_at_three_points_then_rerun(kit, one_server):
    # The installed command, killed with SIGKILL (no clean-up at all) while the network is
    # frozen at the first GET of piece 2, then 3, then 4: each rerun reads the stored stream
    # again from byte 0 and must write nothing that ends before its resume point (the
    # journal's durable offset when the previous run died); a last run completes.
    import signal

    from .test_interruptions import hold_at, journal_offset, pull_cmd, settle, wait_for

    src = write_tree(kit.tmp / "src", standard_files(3 * MiB, 40))
    whole, files = make_pieces(kit.tmp, src, pieces=4, compress="gzip")
    upload_dir(kit, files[0].parent, "ds")
    m = do_adopt(kit, "ds").manifest
    pub = published(kit, "ds", m)
    ends = _ends(whole, "gzip")
    dest_parent = kit.tmp / "dest"
    staged = dest_parent / ".ds.s3sync-partial" / "tree"
    before: dict[str, tuple[int, int]] = {}
    offsets = []
    for piece in (files[1].name, files[2].name, files[3].name):
        kit.proxy.clear()
        hold_at(kit, piece)
        proc = pull_cmd(kit, pub, dest_parent)
        try:
            wait_for(lambda: not kit.proxy._gate.is_set(), 30, "the hang", proc)
            settle(kit, key="ds.tar.gz", quiet_s=0.2)
            time.sleep(0.2)  # let the decoder and the extraction catch up with what arrived
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        now = _files(staged)
        if offsets:  # this run resumed at offsets[-1]: nothing that ends before it written again
            rewritten = [rel for rel, st in before.items() if ends[rel] <= offsets[-1] and now.get(rel) != st]
            assert not rewritten, (offsets[-1], rewritten)
        offsets.append(journal_offset(dest_parent, "ds"))
        before = now
    kit.proxy.clear()
    assert offsets == sorted(offsets) and offsets[-1] > 0, offsets
    result = kit.pull(pub, dest_parent)
    assert result.resumed_from == offsets[-1]
    final = _files(result.dest)
    assert not [rel for rel, st in before.items() if ends[rel] <= offsets[-1] and final.get(rel) != st]
    assert snapshot(result.dest) == snapshot(gnu_extract(whole, kit.tmp / "ref"))
    assert verify(result.dest).problems == ()


def test_replace_of_a_damaged_s3sync_manifest(kit, tree, one_server):
    # A manifest of ours that no longer validates (edited by hand): publish replaces it
    # without asking; adopt refused it even with --replace ("not a valid s3sync manifest:
    # remove that object"). Now: refused without --replace (saying so), replaced with it.
    _, files = make_pieces(kit.tmp, tree, pieces=2)
    upload_dir(kit, files[0].parent, "ds")
    damaged = b'{"format": "s3sync-manifest", "version": 1, "name": "ds", "parts": []}'
    kit.client.put_object(Bucket=kit.bucket, Key="ds/manifest.json", Body=damaged)
    with pytest.raises(UsageError, match="damaged s3sync manifest") as info:
        do_adopt(kit, "ds")
    assert "--replace" in info.value.hint and objects(kit, "ds")["ds/manifest.json"] == damaged
    result = do_adopt(kit, "ds", replace=True)
    assert result.replaced is None
    assert Manifest.from_json(objects(kit, "ds")["ds/manifest.json"]) == result.manifest


@pytest.mark.parametrize("field", ["adopted.source", "created"])
def test_ls_never_prints_a_control_character_from_a_manifest(kit, tree, field, one_server):
    # `s3sync ls` prints adopted.source and created as they are; the evidence strings were
    # already refused with a control character, these two were not: a hostile manifest
    # could send terminal escape sequences (clear the screen, retitle the window, OSC 8).
    doc, _, _ = adopted_doc(kit, tree, pieces=1)
    evil = "\x1b]0;pwned\x07\x1b[2J"
    if field == "created":
        doc["created"] = evil
    else:
        doc["adopted"]["source"] = evil
    kit.put_manifest(Location(kit.bucket, "ds"), json.dumps(doc).encode())
    proc = kit.cli("ls", f"s3://{kit.bucket}/ds", "--endpoint-url", kit.proxy.url)
    out, err = proc.communicate(timeout=60)
    assert b"\x1b" not in out + err
    assert proc.returncode != 0
    with pytest.raises(ManifestError, match=field.split(".")[-1]):
        Manifest.from_json(json.dumps(doc).encode())


def test_a_pull_interrupted_then_the_prefix_adopted_again_starts_over_cleanly(kit, tree, one_server):
    # adopt --replace between two runs: a new generation of the same pieces (other chunk
    # size too). The staging directory of the first run belongs to the old manifest.
    _, files = make_pieces(kit.tmp, tree, pieces=3, compress="gzip")
    whole = kit.tmp / "ds.tar.gz"
    upload_dir(kit, files[0].parent, "ds")
    first = do_adopt(kit, "ds").manifest
    with pytest.raises(KeyboardInterrupt):
        kit.pull(published(kit, "ds", first), transfer=dataclasses.replace(FAST_TRANSFER, concurrency=1, window=2),
                 progress=StopAt(300_000))
    second = adopt(Location(kit.bucket, "ds"), kit.store(), dataclasses.replace(FAST_TRANSFER, chunk_size=64 * 1024),
                   replace=True).manifest
    kit.idle()
    assert second.chunk_size != first.chunk_size
    log = MessageLog()
    result = kit.pull(published(kit, "ds", second), progress=log)
    assert result.resumed_from == 0 and result.manifest.generation == second.generation
    assert snapshot(result.dest) == snapshot(gnu_extract(whole, kit.tmp / "ref"))
    assert verify(result.dest).problems == ()


@pytest.mark.parametrize("shape", ["git-archive", "bsdtar", "one-zero-block"])
def test_archives_of_other_writers_adopt_and_pull_like_gnu_tar(kit, tree, shape, one_server):
    plain = kit.tmp / "ds.tar"
    if shape == "git-archive":  # a pax global header (the commit id) first
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@t", "GIT_AUTHOR_DATE": "2026-01-01T00:00:00Z",
               "GIT_COMMITTER_DATE": "2026-01-01T00:00:00Z"}
        for cmd in (["git", "init", "-q"], ["git", "add", "-A"], ["git", "commit", "-qm", "x"]):
            subprocess.run(cmd, cwd=tree, check=True, env=env)
        subprocess.run(["git", "archive", "--format=tar", "-o", str(plain), "HEAD"], cwd=tree, check=True)
    elif shape == "bsdtar":
        subprocess.run(["bsdtar", "-cf", str(plain), "-C", str(tree), "."], check=True)
    else:  # GNU tar extracts a stream that ends with one zero block (with a warning)
        subprocess.run(["tar", "--format=gnu", "-cf", str(plain), "-C", str(tree), "."], check=True)
        with tarfile.open(plain) as t:
            last = t.getmembers()[-1]
        end = last.offset_data + -(-last.size // 512) * 512
        plain.write_bytes(plain.read_bytes()[:end + 512])
    data = plain.read_bytes()
    for i, at in enumerate(range(0, len(data), len(data) // 3 + 1), start=1):
        kit.client.put_object(Bucket=kit.bucket, Key=f"ds/ds.tar.{i:02d}", Body=data[at:at + len(data) // 3 + 1])
    m = do_adopt(kit, "ds").manifest
    result = kit.pull(published(kit, "ds", m))
    assert snapshot(result.dest) == snapshot(gnu_extract(plain, kit.tmp / "ref"))
    assert verify(result.dest).problems == ()


@pytest.mark.parametrize("botocore_retries,replace", [(0, False), (2, False), (2, True)])
def test_a_lost_answer_to_the_manifest_put_is_not_a_failure(kit, tree, replace, botocore_retries):
    # The server applies adopt's conditional PUT of the manifest, and the answer is lost
    # (connection reset). Before: without retries adopt failed ("Connection was closed")
    # with its manifest in place, and a rerun was refused ("exists"); with botocore's
    # retries (the CLI's default) the retry failed its own condition (412) and adopt said
    # "written by someone else meanwhile; adopt wrote nothing". The manifest there is
    # adopt's own, byte for byte: that is success.
    from .proxy import Rule

    _, files = make_pieces(kit.tmp, tree, pieces=2)
    upload_dir(kit, files[0].parent, "ds")
    if replace:
        do_adopt(kit, "ds")
    kit.add(Rule("lose", method="PUT", key="ds/manifest.json", times=1))
    try:
        result = adopt(Location(kit.bucket, "ds"), kit.store(max_attempts=botocore_retries), FAST_TRANSFER,
                       replace=replace)
    finally:
        kit.idle()
    assert objects(kit, "ds")["ds/manifest.json"] == result.manifest.to_json()
