"""Untrusted input a pull must refuse with a clear error, writing nothing outside its staging
directory and never presenting a destination: damaged or hostile manifests, a part replaced on
the server after publish, and hostile tar members (issue 3, "Refuse ...")."""

from __future__ import annotations

import io
import json
import os
import tarfile
import uuid
from pathlib import Path

import pytest

from s3sync.errors import ManifestError, PartChangedError, UnsafeArchiveError
from s3sync.journal import staging_dir

from .conftest import Kit, snapshot


def tar_of(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return out.getvalue()


def reg(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size, info.mode, info.mtime = len(data), 0o644, 1_700_000_000
    return info, data


def special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode, info.mtime = kind, linkname, 0o755, 1_700_000_000
    if kind in (tarfile.CHRTYPE, tarfile.BLKTYPE):
        info.devmajor, info.devminor = 1, 3
    return info, None


def pax_named(name: str, pax_path: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    """A member whose ustar name is harmless but whose PAX ``path`` record escapes."""
    info, data = reg(name, data)
    info.pax_headers = {"path": pax_path}
    return info, data


# --------------------------------------------------------------------------- manifests


def _baseline(kit: Kit):
    """A small valid dataset (one part, two chunks) and its manifest document."""
    pub = kit.put_tar(tar_of(reg("a.txt", b"a" * 70_000), reg("b.txt", b"bee\n")), files=2,
                      extracted_size=70_004, members=2)
    return pub, json.loads(pub.manifest.to_json())


def _set(path: str, value):
    def mutate(doc: dict) -> dict:
        *parents, last = path.split(".")
        node = doc
        for p in parents:
            node = node[int(p)] if p.isdigit() else node[p]
        node[int(last) if last.isdigit() else last] = value(node[int(last) if last.isdigit() else last]) \
            if callable(value) else value
        return doc
    return mutate


MANIFESTS = {
    "not-json": b"<html><body>Service Unavailable</body></html>",
    "binary-garbage": bytes(range(256)) * 4,
    "empty": b"",
    "truncated": lambda raw, doc: raw[: len(raw) // 2],
    "truncated-by-one-byte": lambda raw, doc: raw.rstrip()[:-1],
    "top-level-list": b"[]",
    "unknown-version": _set("version", 2),
    "version-as-string": _set("version", "1"),
    "version-true": _set("version", True),  # True == 1 in Python
    "version-float": _set("version", 1.0),
    "other-format": _set("format", "tar-index"),
    "other-hash": _set("hash", "md5"),
    "negative-part-size": _set("parts.0.size", -1),
    "negative-stream-size": _set("stream.size", -1),
    "negative-extracted-size": _set("dataset.extracted_size", -1),
    "negative-file-count": _set("dataset.files", -3),
    "size-as-float": _set("stream.size", 1.5),
    "size-as-bool": _set("parts.0.size", True),
    "stream-size-disagrees": _set("stream.size", lambda v: v + 1),
    "part-size-disagrees": _set("parts.0.size", lambda v: v - 1),
    "extracted-exceeds-stream": _set("dataset.extracted_size", lambda v: 10 ** 12),
    "chunk-missing": _set("parts.0.chunks", lambda v: v[:-1]),
    "chunk-extra": _set("parts.0.chunks", lambda v: v + [v[-1]]),
    "no-chunks": _set("parts.0.chunks", []),
    "chunk-not-a-digest": _set("parts.0.chunks", lambda v: ["../../etc/passwd"] + v[1:]),
    "chunk-size-zero": _set("chunk_size", 0),
    "chunk-size-negative": _set("chunk_size", -65536),
    "chunk-size-huge": _set("chunk_size", 1 << 40),
    "no-parts": _set("parts", []),
    "part-key-dotdot": _set("parts.0.key", "../x"),
    "part-key-absolute": _set("parts.0.key", "/abs"),
    "part-key-dotdot-inside": _set("parts.0.key", "g1/../../other/part-00000.tar"),
    "part-key-other-generation": _set("parts.0.key", "g2/part-00000.tar"),
    "generation-dotdot": _set("generation", ".."),
    "name-with-slash": _set("name", "../evil"),
    # Internally inconsistent (docs/manifest.md section 6, rule 10): refused before any GET.
    "files-exceed-members": _set("dataset.files", 3),
    "members-exceed-stream": _set("dataset.members", 10 ** 6),
    "stream-not-whole-blocks": lambda doc: _set("stream.size", lambda v: v - 100)(
        _set("parts.0.size", lambda v: v - 100)(doc)),
    "single-part-stream-digest-differs": _set("stream.digest", "0" * 32),
}


@pytest.mark.parametrize("case", list(MANIFESTS))
def test_hostile_manifest_is_refused(kit, case):
    pub, doc = _baseline(kit)
    raw = pub.manifest.to_json()
    bad = MANIFESTS[case]
    if callable(bad):
        try:
            bad = bad(doc)
        except TypeError:
            bad = bad(raw, doc)
        if isinstance(bad, dict):
            bad = json.dumps(bad).encode()
    kit.put_manifest(pub.location, bad)
    dest_parent = kit.tmp / "dest"

    with pytest.raises(ManifestError) as caught:
        kit.pull(pub, dest_parent)
    assert caught.value.exit_code == 1
    assert not (dest_parent / pub.name).exists()
    assert not staging_dir(dest_parent, pub.name).exists(), "resume state was written for a bad manifest"
    assert kit.stats("/part-").requests == 0, "a part was fetched for a bad manifest"


def test_valid_handmade_manifest_pulls(kit):
    """Control for the cases above: the unmodified hand-written manifest is accepted."""
    pub, _ = _baseline(kit)
    result = kit.pull(pub)
    assert (result.dest / "a.txt").read_bytes() == b"a" * 70_000
    assert (result.dest / "b.txt").read_bytes() == b"bee\n"


# --------------------------------------------------------------------------- replaced part


@pytest.mark.parametrize("index", [0, 2])
def test_part_replaced_after_publish(kit, index):
    src = kit.tree()
    pub = kit.publish(src)
    part = pub.manifest.parts[index]
    key = pub.location.key(part.key)
    original = kit.client.get_object(Bucket=kit.bucket, Key=key)["Body"].read()
    replacement = bytes(b ^ 0x5A for b in original)  # same key, same size, other bytes
    kit.client.put_object(Bucket=kit.bucket, Key=key, Body=replacement)
    dest_parent = kit.tmp / "dest"

    with pytest.raises(PartChangedError) as caught:
        kit.pull(pub, dest_parent)
    assert part.key in str(caught.value)
    assert caught.value.exit_code == 1
    assert not (dest_parent / pub.name).exists()


# --------------------------------------------------------------------------- hostile tar


def _hostile_cases(outside: Path, token: str):
    victim = outside / "victim.txt"
    victim_dir = outside / "victim-dir"
    return {
        "dotdot-member": [reg("../../outside.txt", b"escaped")],
        "dotdot-deep": [reg("sub/../../../../outside.txt", b"escaped")],
        "absolute-member": [reg(f"/tmp/abs-{token}.txt", b"escaped")],
        "symlink-to-etc-then-member-through-it": [special("lnk", tarfile.SYMTYPE, "/etc"),
                                                   reg(f"lnk/s3sync-probe-{token}", b"escaped")],
        "symlink-absolute-outside-then-member": [special("lnk", tarfile.SYMTYPE, str(victim_dir)),
                                                  reg("lnk/x", b"escaped")],
        "symlink-relative-escape-then-member": [special("lnk", tarfile.SYMTYPE, "../../../.."),
                                                 reg("lnk/x", b"escaped")],
        "hardlink-to-outside-then-overwrite": [special("hl", tarfile.LNKTYPE, "../../../victim.txt"),
                                               reg("hl", b"overwritten")],
        "hardlink-absolute": [special("hl", tarfile.LNKTYPE, str(victim)), reg("hl", b"overwritten")],
        "char-device": [special("dev", tarfile.CHRTYPE)],
        "block-device": [special("blk", tarfile.BLKTYPE)],
        "fifo": [special("fifo", tarfile.FIFOTYPE)],
        "pax-path-header-escape": [pax_named("innocent.txt", "../../pax-outside.txt", b"escaped")],
        "reserved-metadata-dir": [reg(".s3sync/complete.json", b'{"generation": "forged"}')],
    }


HOSTILE = list(_hostile_cases(Path("/x"), "t"))


@pytest.mark.parametrize("case", HOSTILE)
def test_hostile_tar_member_is_refused(kit, case):
    outside = kit.tmp / "outside"
    victim_dir = outside / "victim-dir"
    victim_dir.mkdir(parents=True)
    (outside / "victim.txt").write_bytes(b"original")
    token = uuid.uuid4().hex
    members = [reg("ok.txt", b"benign\n")] + _hostile_cases(outside, token)[case]
    pub = kit.put_tar(tar_of(*members), files=1, extracted_size=7, members=len(members))
    dest_parent = kit.tmp / "deep" / "a" / "b" / "dest"
    before = snapshot(kit.tmp / "outside")
    probes = [Path(f"/tmp/abs-{token}.txt"), Path(f"/etc/s3sync-probe-{token}")]
    try:
        with pytest.raises(UnsafeArchiveError) as caught:
            kit.pull(pub, dest_parent)
        print(f"[{kit.server.name}] {case}: {caught.value}")
        assert caught.value.exit_code == 1
        assert not (dest_parent / pub.name).exists()
        staging = staging_dir(dest_parent, pub.name)
        stray = [str(p) for p in (kit.tmp / "deep").rglob("*")
                 if p != staging and staging not in p.parents and p not in staging.parents]
        assert stray == [], f"written outside the staging directory: {stray}"
        assert snapshot(kit.tmp / "outside") == before
        assert (outside / "victim.txt").read_bytes() == b"original"
        assert [p for p in probes if os.path.lexists(p)] == []
    finally:
        for p in probes:
            if os.path.lexists(p):
                os.unlink(p)
