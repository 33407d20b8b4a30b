"""``pull --include/--exclude``: a partial pull fetches only the chunks holding the selected
members, verifies each against the member index, is recorded as partial (the patterns in
complete.json) and verifies as such; a rerun resumes; pulling again without a selection fetches
the rest in place (issue 13 section 2, item 3), on moto and rclone."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from s3sync.config import Location, TransferSettings
from s3sync.publish import publish
from s3sync.pull import pull
from s3sync.selection import Selection
from s3sync.stores.s3 import S3Store
from s3sync.update import update_dir
from s3sync.verify import verify
from tests.faults.proxy import FaultProxy, Rule

SMALL = TransferSettings(concurrency=4, chunk_size=64 * 1024, part_size=256 * 1024, window=8)


def make_tree(root: Path) -> Path:
    for d in range(3):
        (root / "images" / f"{d:04d}").mkdir(parents=True)
        for i in range(20):
            (root / "images" / f"{d:04d}" / f"{i:09d}.jpg").write_bytes(os.urandom(20_000 + 997 * i))
    (root / "captions.json").write_text('{"images": [], "annotations": []}')
    os.symlink("images/0000/000000001.jpg", root / "link.jpg")
    return root


def files_of(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and not p.is_symlink() and ".s3sync" not in p.parts}


def test_include_captions_with_default_chunks_fetches_only_its_bytes(store: S3Store, tmp_path: Path) -> None:
    """The issue's example: only captions.json, from a dataset whose one 16 MiB chunk holds it all."""
    src = make_tree(tmp_path / "src" / "ds")
    (src / "captions.json").write_text(json.dumps({"images": [], "annotations": [], "info": "x" * 50_000}))
    loc = Location(store.bucket, "ds")
    settings = TransferSettings(concurrency=4)
    m = publish(src, "ds", loc, store, settings).manifest
    assert len(m.parts[0].chunks) == 1
    size = (src / "captions.json").stat().st_size
    part = pull(loc, None, tmp_path / "data", store, settings, selection=Selection.make(["captions.json"]))
    assert files_of(part.dest) == {"captions.json": (src / "captions.json").read_bytes()}
    assert size < part.bytes_received <= size + 2048 < m.stream_size // 10
    assert verify(part.dest).problems == ()


def test_include_one_file_then_the_rest(store: S3Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src" / "ds")
    loc = Location(store.bucket, "ds")
    m = publish(src, "ds", loc, store, SMALL).manifest
    sel = Selection.make(["captions.json"])

    part = pull(loc, None, tmp_path / "data", store, SMALL, selection=sel)

    dest = part.dest
    assert part.updated is not None and part.updated.partial and part.updated.fetched == 1
    assert files_of(dest) == {"captions.json": (src / "captions.json").read_bytes()}
    assert sorted(os.listdir(dest)) == [".s3sync", "captions.json"]
    assert part.bytes_received <= 2 * SMALL.chunk_size < m.stream_size // 10
    marker = json.loads((dest / ".s3sync" / "complete.json").read_text())
    assert marker["selection"] == {"include": ["captions.json"], "exclude": [], "members": 1, "files": 1,
                                   "size": len((src / "captions.json").read_bytes())}
    result = verify(dest)
    assert result.problems == () and result.checked == 1
    (dest / "captions.json").unlink()
    assert [p.kind for p in verify(dest).problems] == ["missing"]
    (dest / "captions.json").write_bytes((src / "captions.json").read_bytes())
    os.utime(dest / "captions.json", (marker_mtime := int((src / "captions.json").stat().st_mtime),) * 2)
    assert marker_mtime and verify(dest).problems == ()

    assert pull(loc, None, tmp_path / "data", store, SMALL, selection=sel).up_to_date

    whole = pull(loc, None, tmp_path / "data", store, SMALL)
    assert whole.updated is not None and not whole.updated.partial
    assert (whole.updated.fetched, whole.updated.reused) == (m.files - 1, 1)
    assert files_of(dest) == files_of(src) and os.readlink(dest / "link.jpg") == "images/0000/000000001.jpg"
    assert verify(dest).problems == ()
    assert "selection" not in json.loads((dest / ".s3sync" / "complete.json").read_text())


def test_include_and_exclude(store: S3Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src" / "ds")
    loc = Location(store.bucket, "ds")
    publish(src, "ds", loc, store, SMALL)
    sel = Selection.make(["images/0001/", "*.json"], ["*7.jpg"])

    dest = pull(loc, None, tmp_path / "data", store, SMALL, selection=sel).dest

    want = {p: b for p, b in files_of(src).items() if sel.selects(p)}
    assert files_of(dest) == want and len(want) == 1 + 18
    assert not (dest / "images" / "0000").exists() and not (dest / "link.jpg").exists()
    assert verify(dest).problems == ()


def test_kill_9_then_resume(store: S3Store, tmp_path: Path, s3_server) -> None:
    """A real kill -9 of a partial pull after some of its chunks arrived (a proxy holds back
    the rest); the same command resumes: members written before the kill are kept."""
    src = make_tree(tmp_path / "src" / "ds")
    loc = Location(store.bucket, "ds")
    m = publish(src, "ds", loc, store, SMALL).manifest
    parts = f"{m.generation}/part-"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.add(Rule("hang", key=parts, first=6, stall_s=60))
        cmd = [sys.executable, "-m", "s3sync", "pull", f"s3://{store.bucket}/ds", str(tmp_path / "data"),
               "--endpoint-url", proxy.url, "--concurrency", "1", "--include", "images/", "--json"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        done_log = update_dir(tmp_path / "data", "ds") / "done.jsonl"
        deadline = time.monotonic() + 60
        while proxy.stats(parts).requests < 6 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)  # the 5 chunks that passed are extracted meanwhile
        assert proc.poll() is None
        proc.kill()
        proc.wait()
        assert not (tmp_path / "data" / "ds").exists()
        assert done_log.read_text().count("\n") >= 5

        proxy.clear()
        proxy.reset_stats()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        report = json.loads(done.stdout)
        received = proxy.bytes_sent(parts)
    dest = tmp_path / "data" / "ds"
    assert report["updated"]["resumed"] >= 5 and report["updated"]["partial"]
    assert received <= m.stream_size - 3 * SMALL.chunk_size  # the 5 chunks fetched before the kill, less those shared
    assert files_of(dest) == {p: b for p, b in files_of(src).items() if p.startswith("images/")}
    assert verify(dest).problems == ()
