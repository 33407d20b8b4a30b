"""A published dataset that does not hold what its manifest promises is refused at the end of
the pull, with nothing renamed into place (issue 10, item 4): a manifest that lost its last part,
counts or digests that disagree with the stream, data after the end-of-archive marker.

Each case edits the manifest (or the tar) of a tiny dataset so that ``Manifest.from_json``
still accepts it, pulls, and checks the error and that no destination appeared.
"""

from __future__ import annotations

import io
import json
import tarfile
from pathlib import Path

import pytest

from s3sync import hashing
from s3sync.errors import DamagedDatasetError, ManifestError
from s3sync.journal import staging_dir
from s3sync.manifest import Manifest

from .conftest import KiB, Kit, Published
from .test_hostile_input import reg, tar_of

FILES = {f"d{i % 2}/f{i:02d}.bin": 3 * KiB + 100 * i for i in range(40)}
"""40 small files (190 KiB): with 64 KiB chunks and parts, four parts cut at member boundaries."""


def _published(kit: Kit) -> Published:
    pub = kit.publish(kit.tree(FILES), chunk_size=64 * KiB, part_size=64 * KiB)
    assert len(pub.manifest.parts) >= 3
    return pub


def _edit(kit: Kit, pub: Published, edit) -> Published:
    """Write ``edit(doc)`` as the dataset's manifest; it must still pass validation."""
    doc = json.loads(pub.manifest.to_json())
    edit(doc)
    data = json.dumps(doc).encode()
    kit.put_manifest(pub.location, data)
    return Published(pub.src, pub.name, pub.location, Manifest.from_json(data))


def _refused(kit: Kit, pub: Published, *, extract: bool = True) -> DamagedDatasetError:
    dest_parent = kit.tmp / "dest"
    with pytest.raises(DamagedDatasetError) as caught:
        kit.pull(pub, dest_parent, extract=extract)
    err = caught.value
    print(f"[{kit.server.name}] {err}")
    assert err.exit_code == 1 and "damaged" in str(err) and "republish" in err.hint
    assert not (dest_parent / pub.name).exists(), "a damaged dataset was renamed into place"
    return err


def _tar_truth(data: bytes) -> tuple[int, int, int]:
    """(members, regular files, file bytes) that tarfile finds in ``data`` before it stops."""
    members = files = size = 0
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as tar:
        for info in tar:
            members += 1
            if info.isreg():
                files, size = files + 1, size + info.size
    return members, files, size


def test_manifest_that_lost_its_last_part_is_refused(kit):
    """The last part dropped, stream.size (and extracted_size, which may not exceed it) fixed up
    just enough for the old validation: either the cross-field rules refuse it before any GET,
    or the end of the pull does; never a 'successful' pull of three quarters of the files."""
    pub = _published(kit)

    def drop_last(doc: dict) -> None:
        lost = doc["parts"].pop()
        doc["stream"]["size"] -= lost["size"]
        doc["dataset"]["extracted_size"] = min(doc["dataset"]["extracted_size"], doc["stream"]["size"])

    doc = json.loads(pub.manifest.to_json())
    drop_last(doc)
    kit.put_manifest(pub.location, json.dumps(doc).encode())
    dest_parent = kit.tmp / "dest"
    with pytest.raises(ManifestError):
        kit.pull(pub, dest_parent)
    assert not (dest_parent / pub.name).exists()


def test_lost_part_with_counts_fixed_up_is_refused_at_the_end(kit):
    """Dropped last part, and stream.size and every count fixed up to what the remaining parts
    hold: only the missing end-of-archive marker (and the stream digest) tell."""
    pub = _published(kit)
    kept = b"".join(kit.client.get_object(Bucket=kit.bucket, Key=pub.location.key(p.key))["Body"].read()
                    for p in pub.manifest.parts[:-1])
    members, files, size = _tar_truth(kept)
    assert files < len(FILES)

    def drop_last(doc: dict) -> None:
        doc["parts"].pop()
        doc["stream"]["size"] = len(kept)
        doc["dataset"] = {"files": files, "extracted_size": size, "members": members}

    err = _refused(kit, _edit(kit, pub, drop_last))
    assert "end-of-archive marker" in str(err)


@pytest.mark.parametrize("field,what", [("members", "members"), ("files", "files"),
                                        ("extracted_size", "bytes of file data")])
def test_counts_that_disagree_with_the_stream_are_refused(kit, field, what):
    pub = _published(kit)
    want = getattr(pub.manifest, field) - 1
    err = _refused(kit, _edit(kit, pub, lambda doc: doc["dataset"].__setitem__(field, want)))
    assert f"promises {want} {what}; the stream held {want + 1}" in str(err)


@pytest.mark.parametrize("extract", [True, False], ids=["extract", "no-extract"])
def test_stream_digest_that_disagrees_is_refused_and_a_rerun_too(kit, extract):
    pub = _edit(kit, _published(kit), lambda doc: doc["stream"].__setitem__("digest", "0" * 32))
    err = _refused(kit, pub, extract=extract)
    assert "digest" in str(err)
    # The rerun cannot resume past the check: it starts over (or re-hashes the part files).
    err = _refused(kit, pub, extract=extract)
    assert "digest" in str(err)


def test_part_digest_that_disagrees_is_refused_without_extract(kit):
    pub = kit.publish(kit.tree(FILES), chunk_size=64 * KiB, part_size=128 * KiB)
    many = next(i for i, p in enumerate(pub.manifest.parts) if len(p.chunks) > 1)  # else refused at once
    pub = _edit(kit, pub, lambda doc: doc["parts"][many].__setitem__("digest", "0" * 32))
    err = _refused(kit, pub, extract=False)
    assert f"part {many} " in str(err)


def _put(kit: Kit, data: bytes, members: int = 1) -> Published:
    return kit.put_tar(data, files=1, extracted_size=5, members=members)


def test_data_after_the_end_of_archive_marker_is_refused(kit):
    data = bytearray(tar_of(reg("a.txt", b"hello")))
    data[-1] = 1  # in tar's record padding, after the two zero blocks
    err = _refused(kit, _put(kit, bytes(data)))
    assert "after its end-of-archive marker" in str(err)


def test_a_block_that_is_no_header_where_the_archive_should_end_is_refused(kit):
    """tarfile takes a block with a bad checksum after the first member for the end of the
    archive; a member hidden behind it would be silently dropped."""
    data = bytearray(tar_of(reg("a.txt", b"hello"), reg("b.txt", b"world")))
    data[1024:1024 + 8] = b"garbage!"  # b.txt's header: name field, checksum now wrong
    err = _refused(kit, _put(kit, bytes(data), members=2))
    assert "neither a tar header nor the end-of-archive marker" in str(err)


def test_a_stream_cut_inside_a_member_is_refused(kit):
    """The stream ends inside a member's data (a hard cut, then the parts after it lost)."""
    full = tar_of(reg("a.txt", b"x" * 20_000))
    cut = full[: 512 + 10_240]  # header plus half the data: whole blocks, room for nothing else
    pub = kit.put_tar(cut, files=1, extracted_size=0, members=1)
    err = _refused(kit, pub)
    assert "inside a tar member" in str(err)


def test_hand_made_consistent_dataset_still_pulls(kit):
    """Control: the checks accept a stream that holds exactly what its manifest says."""
    pub = _put(kit, tar_of(reg("a.txt", b"hello")))
    result = kit.pull(pub)
    assert (result.dest / "a.txt").read_bytes() == b"hello"
    assert not staging_dir(kit.tmp / "dest", pub.name).exists()
    assert hashing.digest((Path(result.dest) / "a.txt").read_bytes()) == hashing.digest(b"hello")


def test_verify_compares_what_the_pull_recorded_with_the_manifest(kit):
    """A dataset pulled before the end checks existed, from a manifest that had lost parts, has
    an index that agrees with its tree: verify compares the index's counts with the manifest."""
    from s3sync.verify import verify

    pub = _published(kit)
    result = kit.pull(pub)
    assert verify(result.dest).problems == ()
    local = result.dest / ".s3sync" / "manifest.json"  # as if the pull had missed one file
    doc = json.loads(local.read_bytes())
    doc["dataset"]["files"] += 1
    doc["dataset"]["members"] += 1
    local.write_text(json.dumps(doc))
    problems = verify(result.dest).problems
    assert [(p.path, p.kind) for p in problems] == [(".", "incomplete")] * 2
    assert f"promises {pub.manifest.files + 1} files, the pull recorded {pub.manifest.files}" in problems[1].detail
