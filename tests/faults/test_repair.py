"""``s3sync repair`` (issue 13, section 2) on moto and rclone, through the fault proxy.

A pulled dataset is damaged (a file truncated, one altered, one deleted, one chmod-ed, an extra
file added); repair fetches only the damaged members (the proxy counts the part bytes it sent),
sets the mode without fetching, reports the extra file and deletes it only when asked; verify
passes afterwards and the tree is the published one again. An intact dataset costs no request.
A generation removed by gc is a one-line error. A symlink planted in the dataset is replaced,
never followed. ``kill -9`` of the command mid-repair, then the same command, completes.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import subprocess
import time

import pytest

from s3sync.errors import DestinationError, NotFoundError, UsageError
from s3sync.gc import collect
from s3sync.publish import publish
from s3sync.pull import read_marker
from s3sync.repair import repair, source_of
from s3sync.verify import verify

from .conftest import FAST_TRANSFER, REPORT, KiB, Kit, MiB, standard_files

SMALL_CHUNK = 64 * KiB


def pulled(kit: Kit, count: int = 64, total: int = 4 * MiB):
    pub = kit.publish(kit.tree(standard_files(total, count)), chunk_size=SMALL_CHUNK)
    kit.pull(pub)
    dest = kit.tmp / "dest" / pub.name
    kit.idle()
    kit.proxy.reset_stats()
    return pub, dest


def damage(dest) -> dict[str, str]:
    """Truncate, alter, delete and chmod one file each; add an extra file."""
    (dest / "d0/f000.bin").write_bytes((dest / "d0/f000.bin").read_bytes()[:100])
    altered = bytearray((dest / "d1/f001.bin").read_bytes())
    altered[len(altered) // 2] ^= 0xFF
    st = os.stat(dest / "d1/f001.bin")
    (dest / "d1/f001.bin").write_bytes(altered)
    os.utime(dest / "d1/f001.bin", ns=(st.st_atime_ns, st.st_mtime_ns))  # same size and mtime: content only
    (dest / "d2/f002.bin").unlink()
    os.chmod(dest / "d0/f003.bin", 0o600)
    (dest / "d0/extra.txt").write_text("not part of it")
    return {"d0/f000.bin": "changed", "d1/f001.bin": "changed", "d2/f002.bin": "missing",
            "d0/f003.bin": "mode", "d0/extra.txt": "extra"}


def test_pull_records_its_source_url(kit):
    pub, dest = pulled(kit, count=4, total=64 * KiB)
    assert read_marker(dest)["url"] == pub.url
    assert source_of(dest) == pub.location


def test_repair_fetches_only_what_verify_flags(kit):
    pub, dest = pulled(kit)
    flagged = damage(dest)
    found = {(p.path, p.kind) for p in verify(dest).problems}
    # Writing a file moves its mtime, adding or removing one its directory's (unless within
    # the same second as the pull: verify compares whole seconds).
    assert {item for item in found if item[1] != "mtime"} == set(flagged.items())
    assert {path for path, kind in found if kind == "mtime"} <= {"d0/f000.bin", "d0", "d2"}

    result = repair(dest, source_of(dest), kit.store(), FAST_TRANSFER)
    kit.idle()
    sent = kit.sent("part-")
    stream = pub.manifest.stream_size
    assert sorted(result.fetched) == ["d0/f000.bin", "d1/f001.bin", "d2/f002.bin"]
    assert "d0/f003.bin" in result.metadata and set(result.metadata) <= {"d0", "d0/f003.bin", "d2"}
    assert result.extra == ("d0/extra.txt",) and result.deleted == () and result.unrepaired == ()
    wanted = sum((pub.src / p).stat().st_size for p in result.fetched)
    # Each member costs at most its bytes plus a chunk at either end; the index is small.
    assert wanted <= sent <= wanted + 2 * 3 * SMALL_CHUNK, (wanted, sent)
    assert sent < stream / 4, (sent, stream)
    REPORT[f"repair/{kit.server.name}"] = (f"3 damaged files of {wanted} B: {sent} B of parts fetched of a {stream} B "
                                           f"stream; {result.bytes_received} B received with the index")
    assert result.bytes_received == sent + kit.sent("index.jsonl.zst")
    assert [(p.path, p.kind) for p in verify(dest).problems] == [("d0/extra.txt", "extra")]

    kit.proxy.reset_stats()
    again = repair(dest, source_of(dest), kit.store(), FAST_TRANSFER, delete_extra=True)
    kit.idle()
    assert again.deleted == ("d0/extra.txt",) and again.fetched == () and kit.sent("") == 0
    assert verify(dest).problems == ()
    kit.assert_same_tree(pub.src, dest)


def test_repair_with_default_chunks_fetches_about_the_damaged_bytes(kit):
    """With 16 MiB chunks the whole 2 MiB stream is one chunk: repair must fetch the damaged
    members' byte ranges only (checked against the member index's digests), not that chunk."""
    pub = kit.publish(kit.tree(standard_files(2 * MiB, 40)), chunk_size=16 * MiB)
    kit.pull(pub)
    dest = kit.tmp / "dest" / pub.name
    kit.idle()
    kit.proxy.reset_stats()
    victims = ["d0/f000.bin", "d2/f020.bin"]
    for v in victims:
        data = bytearray((dest / v).read_bytes())
        data[len(data) // 2] ^= 0xFF
        (dest / v).write_bytes(bytes(data))
    result = repair(dest, source_of(dest), kit.store(), FAST_TRANSFER)
    kit.idle()
    assert sorted(result.fetched) == victims
    wanted = sum((pub.src / v).stat().st_size for v in victims)
    # headers and padding only (two ranges: the two members are far apart)
    assert wanted < kit.sent("part-") <= wanted + 2 * 2048 < pub.manifest.stream_size // 10
    assert verify(dest).problems == ()
    kit.assert_same_tree(pub.src, dest)


def test_repair_of_an_intact_dataset_fetches_nothing(kit):
    pub, dest = pulled(kit, count=8, total=256 * KiB)
    result = repair(dest, source_of(dest), kit.store(), FAST_TRANSFER)
    kit.idle()
    assert result.problems == () and result.fetched == () and result.bytes_received == 0
    assert kit.stats("").requests == 0


def test_repair_remakes_directories_and_symlinks_and_replaces_planted_symlinks(kit):
    src = kit.tree(standard_files(512 * KiB, 12))
    os.symlink("f000.bin", src / "d0" / "link")
    (src / "top.bin").write_bytes(os.urandom(3000))
    os.chmod(src / "d2", 0o555)
    pub = kit.publish(src, chunk_size=SMALL_CHUNK)
    kit.pull(pub)
    dest = kit.tmp / "dest" / pub.name
    outside = kit.tmp / "outside"
    outside.mkdir()
    (outside / "victim").write_bytes(b"keep me")
    (outside / "f001.bin").write_bytes(b"keep me too")
    # d0/f000.bin becomes a symlink to a file outside; d1 a symlink to a directory outside.
    (dest / "d0/f000.bin").unlink()
    os.symlink(outside / "victim", dest / "d0/f000.bin")
    (dest / "d0/link").unlink()
    for f in (dest / "d1").iterdir():
        f.unlink()
    (dest / "d1").rmdir()
    os.symlink(outside, dest / "d1")
    (dest / "d2/f002.bin").unlink()  # in a read-only directory
    (dest / "top.bin").unlink()  # at the top
    result = repair(dest, source_of(dest), kit.store(), FAST_TRANSFER)
    assert (outside / "victim").read_bytes() == b"keep me"
    assert (outside / "f001.bin").read_bytes() == b"keep me too"
    assert result.unrepaired == ()
    assert "d0/link" in result.remade and "d1" in result.remade
    assert verify(dest).problems == ()
    kit.assert_same_tree(pub.src, dest)


def test_repair_of_a_generation_removed_by_gc_says_so(kit):
    pub, dest = pulled(kit, count=4, total=64 * KiB)
    (pub.src / "d0" / "new.bin").write_bytes(b"second generation")
    store = kit.store(kit.server.endpoint_url, max_attempts=3)
    second = publish(pub.src, pub.name, pub.location, store, FAST_TRANSFER).manifest
    collect(store, pub.location, keep=1, grace_s=0)
    (dest / "d0/f000.bin").unlink()
    with pytest.raises(NotFoundError) as info:
        repair(dest, source_of(dest), kit.store(), FAST_TRANSFER)
    message = str(info.value)
    assert f"generation {pub.manifest.generation} is no longer in the bucket" in message
    assert f"the current generation is {second.generation}" in message
    assert "\n" not in message and "pull the current generation" in info.value.hint
    proc = kit.cli("repair", dest, "--endpoint-url", kit.proxy.url, "-q")
    _, err = proc.communicate(timeout=60)
    lines = err.decode().splitlines()
    assert proc.returncode == 1 and len(lines) == 2, lines
    assert lines[0].startswith("error: ") and "is no longer in the bucket" in lines[0]
    assert lines[1].startswith("hint: pull the current generation")


def test_repair_cli_kill_9_then_rerun_completes(kit):
    pub, dest = pulled(kit, count=32, total=4 * MiB)
    for d in ("d0", "d1"):
        for f in (dest / d).iterdir():
            f.unlink()
    kit.proxy.throttle_bps = 512 * KiB
    args = ("repair", dest, "--endpoint-url", kit.proxy.url, "--concurrency", "4", "--json")
    proc = kit.cli(*args)
    try:
        deadline = time.monotonic() + 30
        while kit.sent("part-") < 600 * KiB:
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "the repair did not fetch 600 KiB in 30 s"
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
    kit.proxy.throttle_bps = 0
    kit.idle()
    left = {p.path for p in verify(dest).problems}
    assert left, "the kill came after the repair had finished"
    out = subprocess.run([*proc.args[:1], *map(str, args)], capture_output=True, text=True, timeout=60,
                         env=dict(os.environ), stdin=subprocess.DEVNULL)
    assert out.returncode == 0, out.stderr
    doc = json.loads(out.stdout)
    assert set(doc["fetched"]) <= left and doc["ok"]
    assert not (dest / ".s3sync" / "repair").exists()
    assert verify(dest).problems == ()
    kit.assert_same_tree(pub.src, dest)


def test_repair_cli_reports_and_exits(kit, tmp_path):
    pub, dest = pulled(kit, count=4, total=64 * KiB)
    (dest / "d0/f000.bin").unlink()
    (dest / "stray").write_text("x")
    proc = kit.cli("repair", dest, "--endpoint-url", kit.proxy.url)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    lines = out.decode().splitlines()
    # d0's mtime differs too if the unlink came in another second than the pull.
    assert [line for line in lines if not line.startswith("metadata\t")] == ["fetched\td0/f000.bin", "extra\tstray"]
    assert "1 file fetched again" in err.decode() and "--delete-extra" in err.decode()
    # Not a pull: a one-line error.
    proc = kit.cli("repair", tmp_path)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and err.decode().startswith("error: ") and "Traceback" not in err.decode()


def test_a_directory_where_a_file_belongs_is_replaced_only_with_delete_extra(kit):
    pub, dest = pulled(kit, count=4, total=64 * KiB)
    (dest / "d0/f000.bin").unlink()
    (dest / "d0/f000.bin").mkdir()
    (dest / "d0/f000.bin/inner").write_text("someone's")
    result = repair(dest, source_of(dest), kit.store(), FAST_TRANSFER)
    assert [(p.path, p.kind) for p in result.unrepaired] == [("d0/f000.bin", "type")]
    assert "--delete-extra" in result.unrepaired[0].detail
    assert (dest / "d0/f000.bin/inner").read_text() == "someone's"
    result = repair(dest, source_of(dest), kit.store(), FAST_TRANSFER, delete_extra=True)
    assert result.unrepaired == () and result.fetched == ("d0/f000.bin",)
    assert verify(dest).problems == ()
    kit.assert_same_tree(pub.src, dest)


def test_a_second_repair_at_once_is_refused_and_an_old_pull_is_named(kit):
    pub, dest = pulled(kit, count=4, total=64 * KiB)
    fd = os.open(dest / ".s3sync" / "repair.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(DestinationError, match="is repairing or updating"):
            repair(dest, source_of(dest), kit.store(), FAST_TRANSFER)
    finally:
        os.close(fd)
    marker = dest / ".s3sync" / "complete.json"
    doc = json.loads(marker.read_text())
    del doc["url"]
    marker.write_text(json.dumps(doc))
    with pytest.raises(UsageError, match="did not record where it came from"):
        source_of(dest)


def test_a_deleted_directory_is_made_again_with_its_files(kit):
    pub, dest = pulled(kit, count=12, total=512 * KiB)
    inside = sorted(p.name for p in (dest / "d2").iterdir())
    shutil.rmtree(dest / "d2")
    result = repair(dest, source_of(dest), kit.store(), FAST_TRANSFER)
    assert result.remade == ("d2",) and sorted(result.fetched) == [f"d2/{name}" for name in inside]
    assert verify(dest).problems == ()
    kit.assert_same_tree(pub.src, dest)
