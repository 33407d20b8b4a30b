"""Slice G of issue 11: attempts to break the split-archive pull's promises ("a mismatch
commits nothing; a rerun fetches that piece again", "never a torn or partial result
presented as complete"), with archives made by GNU tar and split, on moto and rclone,
faults injected in transit by the proxy. GNU tar's extraction is the reference.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from s3sync.archive import SafeExtractor
from s3sync.config import Location
from s3sync.errors import InsufficientSpaceError, Interrupted, PieceDigestError
from s3sync.journal import Journal
from s3sync.sources import from_s3
from s3sync.splitpull import pull_split

from .conftest import CHUNK, FAST_TRANSFER, KiB, MessageLog, Rule, snapshot

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

LONG = "d/" + "n" * 130 + ".txt"  # > 100 bytes: a GNU 'L' block or a pax 'path' record


def _tar(kit, fmt: str, piece_size: int = 512 * KiB) -> tuple[Path, list[Path]]:
    """pad.bin (600 KiB), LONG (10 KiB), z.bin (600 KiB), in that order, as ``tar
    --format=fmt``, cut by ``split -b`` into ``a.tar.00``.. with ``.md5`` sidecars."""
    src = kit.tmp / "src"
    (src / "d").mkdir(parents=True)
    (src / "pad.bin").write_bytes(os.urandom(600 * KiB))
    (src / LONG).write_bytes(os.urandom(10 * KiB))
    (src / "z.bin").write_bytes(os.urandom(600 * KiB))
    whole = kit.tmp / "a.tar"
    subprocess.run(["tar", f"--format={fmt}", "-cf", str(whole), "-C", str(src), "pad.bin", "d", "z.bin"],
                   check=True)
    work = kit.tmp / "pieces"
    work.mkdir()
    subprocess.run(["split", "-d", "-b", str(piece_size), str(whole), str(work / "a.tar.")], check=True)
    files = sorted(work.glob("a.tar.*"))
    for f in files:
        out = subprocess.run(["md5sum", f.name], cwd=work, check=True, capture_output=True).stdout
        (work / (f.name + ".md5")).write_bytes(out)
    for f in sorted(work.iterdir()):
        kit.client.put_object(Bucket=kit.bucket, Key=f"ds/{f.name}", Body=f.read_bytes())
    return whole, files


def _flip_in_transit(kit, files: list[Path], at: int) -> None:
    """Flip the stored stream's byte ``at`` once, in the ranged GET of its chunk."""
    for f in files:
        size = f.stat().st_size
        if at < size:
            break
        at -= size
    start = at - at % CHUNK
    kit.add(Rule("flip", key=f"ds/{f.name}", times=1, flip_at=at - start,
                 match=lambda r: r.range_start == start))


def _pull(kit, transfer=FAST_TRANSFER, progress=None):
    store = kit.store()
    archive = from_s3(store, Location(kit.bucket, "ds"), None)
    try:
        return pull_split(archive, kit.tmp / "dest", store, transfer, progress=progress)
    finally:
        kit.idle()


def _gnu(whole: Path, dest: Path) -> Path:
    dest.mkdir(parents=True)
    subprocess.run(["tar", "-xf", str(whole), "-C", str(dest), "--no-same-owner"], check=True)
    return dest


@pytest.mark.parametrize("fmt,record", [("gnu", b""), ("pax", b"path=")])
def test_a_name_damaged_in_transit_leaves_no_extra_file_after_the_rerun(kit, fmt, record):
    """A GNU long-name block or a pax record has no checksum: a flipped byte there gives a
    member another valid name, extracted before the piece's digest is known. The piece is
    refused; the rerun must not commit the misnamed file beside the right one."""
    whole, files = _tar(kit, fmt)
    data = whole.read_bytes()
    at = data.index(record + LONG.encode()) + len(record) + 10  # inside the run of 'n'
    assert 512 * KiB < at < 1024 * KiB  # in the second piece
    _flip_in_transit(kit, files, at)
    with pytest.raises(PieceDigestError, match="piece 2"):
        _pull(kit)
    assert not (kit.tmp / "dest" / "ds").exists()
    kit.proxy.clear()
    result = _pull(kit)
    assert snapshot(result.dest) == snapshot(_gnu(whole, kit.tmp / "ref"))


class _StopAfterFirstFile:
    """A progress that interrupts (Ctrl-C) once the first file has been extracted."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def message(self, text: str) -> None:
        self.lines.append(text)

    def start(self, stage: str, total: int) -> None:
        pass

    def finish(self, stage: str) -> None:
        pass

    def advance(self, stage: str, n: int) -> None:
        if stage == "extract" and n:
            raise KeyboardInterrupt


@pytest.mark.parametrize("state", ["kept", "lost", "other-chunk-size"])
def test_an_interrupt_before_a_damaged_piece_is_checked_does_not_keep_its_files(kit, state):
    """A byte of pad.bin flipped in transit in piece 2; the pull is interrupted once pad.bin is
    extracted, before piece 2's digest is known. The rerun reads piece 2 again (and it now
    matches): pad.bin, written from the damaged bytes, must be written again, not kept; also
    when the rerun cannot use the pieces' resume state (pieces.json gone, another chunk size)."""
    whole, files = _tar(kit, "gnu")
    _flip_in_transit(kit, files, 520 * KiB)  # pad.bin's data runs from byte 512 to 600 KiB + 512
    serial = dataclasses.replace(FAST_TRANSFER, concurrency=1, window=2)
    with pytest.raises((KeyboardInterrupt, Interrupted)):
        store = kit.store()
        archive = from_s3(store, Location(kit.bucket, "ds"), None)
        try:
            pull_split(archive, kit.tmp / "dest", store, serial, progress=_StopAfterFirstFile())
        finally:
            kit.idle()
    journal = json.loads((kit.tmp / "dest" / ".ds.s3sync-partial" / "journal.json").read_text())
    assert journal["offset"] > 600 * KiB  # pad.bin was recorded as extracted
    kit.proxy.clear()
    log = MessageLog()
    transfer = FAST_TRANSFER
    if state == "lost":
        (kit.tmp / "dest" / ".ds.s3sync-partial" / "pieces.json").unlink()
    elif state == "other-chunk-size":
        transfer = dataclasses.replace(FAST_TRANSFER, chunk_size=CHUNK // 2)
    result = _pull(kit, transfer, progress=log)
    if state == "kept":
        assert any("extracting its members again" in line for line in log.lines), log.lines
    assert snapshot(result.dest) == snapshot(_gnu(whole, kit.tmp / "ref"))


def _shape(kit, shape: str) -> Path:
    """An archive of an odd but real shape, made by GNU tar, gzip and cat."""
    src = kit.tmp / "src"
    (src / "top" / "sub").mkdir(parents=True)
    (src / "top" / "sub" / "f.bin").write_bytes(os.urandom(300 * KiB))
    (src / "top" / "g.txt").write_bytes(b"g\n")
    out = kit.tmp / "a.tar"
    if shape == "empty":
        subprocess.run(["tar", "-cf", str(out), "--files-from", "/dev/null"], check=True)
    elif shape == "gzip-members":  # two gzip members (pigz --independent, bgzip, cat a.gz b.gz)
        subprocess.run(["tar", "--format=gnu", "-cf", str(out), "-C", str(src), "top"], check=True)
        data = out.read_bytes()
        half = len(data) // 2
        gz = [subprocess.run(["gzip", "-nc"], input=part, capture_output=True, check=True).stdout
              for part in (data[:half], data[half:])]
        out = kit.tmp / "a.tar.gz"
        out.write_bytes(gz[0] + gz[1])
    elif shape == "hardlink-other-piece":
        os.link(src / "top" / "sub" / "f.bin", src / "top" / "zz-link.bin")
        subprocess.run(["tar", "--format=gnu", "-cf", str(out), "-C", str(src), "top"], check=True)
    return out


def _upload_pieces(kit, whole: Path, pieces: int) -> None:
    work = kit.tmp / "pieces"
    work.mkdir()
    subprocess.run(["split", "-d", "-n", str(pieces), str(whole), str(work / (whole.name + "."))], check=True)
    for f in sorted(work.iterdir()):
        out = subprocess.run(["md5sum", f.name], cwd=work, check=True, capture_output=True).stdout
        kit.client.put_object(Bucket=kit.bucket, Key=f"ds/{f.name}", Body=f.read_bytes())
        kit.client.put_object(Bucket=kit.bucket, Key=f"ds/{f.name}.md5", Body=out)


@pytest.mark.parametrize("shape,pieces", [("empty", 3), ("empty", 12), ("gzip-members", 3),
                                          ("hardlink-other-piece", 4)])
def test_odd_archive_shapes_extract_like_gnu_tar(kit, shape, pieces):
    """An empty archive (10 KiB of zeros: with 12 pieces, some hold only zeros), a gzip stream
    of two members, a hard link to a file of an earlier piece: the same tree as GNU tar."""
    whole = _shape(kit, shape)
    _upload_pieces(kit, whole, pieces)
    result = _pull(kit)
    assert snapshot(result.dest) == snapshot(_gnu(whole, kit.tmp / "ref"))


def _killed_in_child(kit, owner, attr: str, k: int) -> bool:
    """Fork; the child pulls ``ds`` (through the proxy and its faults) and SIGKILLs itself
    after the k-th call of ``owner.attr``. True if it was killed (else it ended on its own:
    refused the damaged piece)."""
    pid = os.fork()
    if pid == 0:  # the child: no pytest machinery, no cleanup, as after kill -9
        try:
            real = getattr(owner, attr)
            calls = itertools.count(1)

            def hooked(*args, **kwargs):
                result = real(*args, **kwargs)
                if next(calls) == k:
                    os.kill(os.getpid(), signal.SIGKILL)
                return result

            setattr(owner, attr, hooked)
            store = kit.store(cached=False)
            pull_split(from_s3(store, Location(kit.bucket, "ds"), None), kit.tmp / "dest", store, FAST_TRANSFER)
        finally:
            os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.WIFSIGNALED(status)


KILL_POINTS = [(SafeExtractor, "_extract_member"), (Journal, "save_state"), (Journal, "_write_unchecked")]


@pytest.mark.parametrize("owner, attr", KILL_POINTS, ids=[a for _o, a in KILL_POINTS])
@pytest.mark.parametrize("target", ["data", "name"])
def test_kill_9_at_every_step_of_a_pull_with_a_damaged_piece(kit, owner, attr, target):
    """A byte of piece 2 flipped in transit (in pad.bin's data, or in the GNU long name of
    a member); the pull is killed after the k-th step, for every k; the rerun (no fault)
    must give GNU tar's tree."""
    if kit.server.name != "moto":
        pytest.skip("the crash points are the client's; one server is enough")
    whole, files = _tar(kit, "gnu")
    at = 520 * KiB if target == "data" else whole.read_bytes().index(LONG.encode()) + 10
    ref = snapshot(_gnu(whole, kit.tmp / "ref"))
    k = 0
    while True:
        k += 1
        shutil.rmtree(kit.tmp / "dest", ignore_errors=True)
        kit.proxy.clear()
        _flip_in_transit(kit, files, at)
        killed = _killed_in_child(kit, owner, attr, k)
        kit.idle()
        kit.proxy.clear()
        result = _pull(kit)
        assert snapshot(result.dest) == ref, f"k={k}"
        if not killed:
            break
    assert k > 1, f"{attr} was never called"


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 2 MiB tmpfs (needs root; skipped otherwise), unmounted afterwards."""
    path = tmp_path / "tmpfs"
    path.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(path)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs (needs root): {proc.stderr.strip() or proc.returncode}")
    yield path
    subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def test_disk_full_mid_gzip_pull_then_rerun_after_growing(kit, small_tmpfs):
    """A gzip archive whose extracted size (6 MiB of text) is unknown before it is read, into a
    2 MiB tmpfs: a clear InsufficientSpaceError, nothing committed; grown to 32 MiB, the rerun
    gives GNU tar's tree."""
    if kit.server.name != "moto":
        pytest.skip("the disk is the client's; one server is enough")
    src = kit.tmp / "src"
    src.mkdir()
    for i in range(6):
        (src / f"t{i}.txt").write_bytes(b"".join(b"line %d of file %d\n" % (j, i) for j in range(60_000)))
    whole = kit.tmp / "a.tar"
    subprocess.run(["tar", "--format=gnu", "-cf", str(whole), "-C", str(src), "."], check=True)
    subprocess.run(["gzip", "-n", str(whole)], check=True)
    whole = kit.tmp / "a.tar.gz"
    _upload_pieces(kit, whole, 3)
    store = kit.store()
    archive = from_s3(store, Location(kit.bucket, "ds"), None)
    with pytest.raises(InsufficientSpaceError):
        pull_split(archive, small_tmpfs, store, FAST_TRANSFER)
    assert not (small_tmpfs / "ds").exists()
    subprocess.run(["mount", "-o", "remount,size=32m", str(small_tmpfs)], check=True)
    result = pull_split(archive, small_tmpfs, store, FAST_TRANSFER)
    kit.idle()
    assert snapshot(result.dest) == snapshot(_gnu(whole, kit.tmp / "ref"))


@pytest.mark.parametrize("where", ["middle", "last"])
def test_a_zero_byte_piece_with_its_sidecar(kit, where):
    """``split -b`` never writes an empty piece, but people cut archives by hand: an empty
    piece (with the MD5 of nothing as sidecar) between or after the others."""
    if kit.server.name != "moto":
        pytest.skip("rclone serve s3 takes 30 s to answer a PUT of 0 bytes from boto3 (the test's upload)")
    whole = _shape(kit, "hardlink-other-piece")
    data = whole.read_bytes()
    half = len(data) // 2
    parts = [data[:half], b"", data[half:]] if where == "middle" else [data[:half], data[half:], b""]
    for i, body in enumerate(parts):
        name = f"a.tar.{i:02d}"
        kit.client.put_object(Bucket=kit.bucket, Key=f"ds/{name}", Body=body)
        kit.client.put_object(Bucket=kit.bucket, Key=f"ds/{name}.md5",
                              Body=f"{hashlib.md5(body).hexdigest()}  {name}\n".encode())
    result = _pull(kit)
    assert snapshot(result.dest) == snapshot(_gnu(whole, kit.tmp / "ref"))


@pytest.mark.parametrize("prefix,given,extra", [
    ("my data/é 100%", "my data/é 100%", {}),
    ("ds", "ds/", {}),
    ("ds", "ds", {"ds/": b"", "ds/old/a.tar.00": b"x", "ds/old/": b""}),  # folder markers, a "subdirectory"
    ("ds", "ds", {"ds": b"an object named like the prefix"}),
])
def test_prefix_and_key_shapes(kit, prefix, given, extra):
    """Keys with spaces, non-ASCII and '%'; a prefix given with a trailing slash; folder
    marker objects and a nested "subdirectory" of other objects under the prefix; an object
    whose key is the prefix itself: the pieces directly under the prefix are the archive."""
    if kit.server.name != "moto" and extra:
        pytest.skip("rclone serve s3 keeps objects as files: no key that is also a directory, and a PUT "
                    "of 0 bytes takes it 30 s")
    whole = _shape(kit, "hardlink-other-piece")
    work = kit.tmp / "pieces"
    work.mkdir()
    subprocess.run(["split", "-d", "-n", "3", str(whole), str(work / "a b%.tar.")], check=True)
    for f in sorted(work.iterdir()):
        kit.client.put_object(Bucket=kit.bucket, Key=f"{prefix}/{f.name}", Body=f.read_bytes())
        kit.client.put_object(Bucket=kit.bucket, Key=f"{prefix}/{f.name}.md5",
                              Body=f"{hashlib.md5(f.read_bytes()).hexdigest()}  {f.name}\n".encode())
    for key, body in extra.items():
        kit.client.put_object(Bucket=kit.bucket, Key=key, Body=body)
    store = kit.store()
    archive = from_s3(store, Location(kit.bucket, given), "x")
    try:
        result = pull_split(archive, kit.tmp / "dest", store, FAST_TRANSFER)
    finally:
        kit.idle()
    assert len(archive.pieces) == 3 and {p.evidence.kind for p in archive.pieces} == {"sidecar"}
    assert snapshot(result.dest) == snapshot(_gnu(whole, kit.tmp / "ref"))


@pytest.mark.parametrize("sig,compress", [(signal.SIGINT, "gzip"), (signal.SIGTERM, ""), (signal.SIGKILL, "gzip")],
                         ids=["INT-gzip", "TERM-tar", "KILL-gzip"])
def test_signal_to_the_command_mid_split_pull_then_rerun(kit, sig, compress):
    """``s3sync pull s3://BUCKET/ds DEST`` of 4 pieces (plain tar or gzip) with .md5 sidecars,
    throttled, signalled once it has extracted something; a short error (not a traceback) for
    INT and TERM; the rerun exits 0 with GNU tar's tree and nothing left in staging."""
    if kit.server.name != "moto":
        pytest.skip("the signals are the client's; one server is enough")
    src = kit.tmp / "src"
    for i in range(12):
        (src / f"d{i % 3}").mkdir(parents=True, exist_ok=True)
        (src / f"d{i % 3}" / f"f{i:02d}.bin").write_bytes(os.urandom(100 * KiB))
    whole = kit.tmp / "a.tar"
    subprocess.run(["tar", "--format=gnu", "-cf", str(whole), "-C", str(src), "."], check=True)
    if compress:
        subprocess.run(["gzip", "-n", str(whole)], check=True)
        whole = kit.tmp / "a.tar.gz"
    _upload_pieces(kit, whole, 4)
    dest = kit.tmp / "dest"
    kit.proxy.throttle_bps = 256 * KiB  # the pull must still be running when the signal lands
    proc = kit.cli("pull", f"s3://{kit.bucket}/ds", dest, "--endpoint-url", kit.proxy.url)
    journal = dest / ".ds.s3sync-partial" / "journal.json"

    def offset() -> int:
        try:
            return json.loads(journal.read_text())["offset"]
        except (OSError, ValueError, KeyError):
            return 0

    deadline = time.monotonic() + 60
    while not offset() and proc.poll() is None:
        assert time.monotonic() < deadline, "nothing was extracted in 60 s"
        time.sleep(0.02)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(sig)
    _out, err = proc.communicate(timeout=60)
    kit.proxy.throttle_bps = None
    assert proc.returncode != 0
    if sig != signal.SIGKILL:
        assert "Traceback" not in err.decode() and len(err.decode().strip().splitlines()) <= 3, err.decode()
    kit.idle()
    again = kit.cli("pull", f"s3://{kit.bucket}/ds", dest, "--endpoint-url", kit.proxy.url)
    _out, err = again.communicate(timeout=120)
    kit.idle()
    assert again.returncode == 0, err.decode()
    assert snapshot(dest / "ds") == snapshot(_gnu(whole, kit.tmp / "ref"))
    assert sorted(os.listdir(dest)) == ["ds"]


@pytest.mark.parametrize("signature", ["SHA256SUMS.gpg", "SHA256SUMS.asc", "SHA256SUMS.sig"])
def test_a_signed_checksum_list_is_not_taken_for_a_piece(kit, signature):
    """Mirrors sign their checksum list (Debian and Ubuntu: SHA256SUMS and SHA256SUMS.gpg):
    the signature is neither a piece nor a checksum file; it used to make the prefix "2 name
    families" and be refused."""
    whole = _shape(kit, "hardlink-other-piece")
    work = kit.tmp / "pieces"
    work.mkdir()
    subprocess.run(["split", "-d", "-n", "3", str(whole), str(work / "a.tar.")], check=True)
    names = sorted(f.name for f in work.iterdir())
    (work / "SHA256SUMS").write_bytes(subprocess.run(["sha256sum", *names], cwd=work, check=True,
                                                     capture_output=True).stdout)
    (work / signature).write_bytes(b"-----BEGIN PGP SIGNATURE-----\n" + os.urandom(64).hex().encode() + b"\n")
    for f in sorted(work.iterdir()):
        kit.client.put_object(Bucket=kit.bucket, Key=f"ds/{f.name}", Body=f.read_bytes())
    store = kit.store()
    archive = from_s3(store, Location(kit.bucket, "ds"), None)
    assert [p.name for p in archive.pieces] == names
    assert {p.evidence.source for p in archive.pieces} == {"SHA256SUMS"}
    result = _pull(kit)
    assert snapshot(result.dest) == snapshot(_gnu(whole, kit.tmp / "ref"))


@pytest.mark.parametrize("field", [0, 124, 148])  # name, size, chksum of z.bin's header
def test_a_header_damaged_in_transit_is_reported_as_its_piece(kit, field):
    """A byte flipped in a (checksummed) tar header: tarfile stops or fails there; the report
    is the piece's digest mismatch, nothing is committed, and the rerun gives GNU tar's tree."""
    whole, files = _tar(kit, "gnu")
    with tarfile.open(whole) as tf:
        header = next(m.offset for m in tf.getmembers() if m.name == "z.bin")
    _flip_in_transit(kit, files, header + field)
    with pytest.raises(PieceDigestError, match="nothing was committed"):
        _pull(kit)
    assert not (kit.tmp / "dest" / "ds").exists()
    kit.proxy.clear()
    result = _pull(kit)
    assert snapshot(result.dest) == snapshot(_gnu(whole, kit.tmp / "ref"))
