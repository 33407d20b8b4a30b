"""``pull --generation G``: an older generation still stored (its history copy
``PREFIX/G/manifest.json``), and a one-line error listing the stored ones for a missing G
(issue 13 section 2, item 2), on moto and rclone."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from s3sync.config import Location, TransferSettings
from s3sync.errors import NotFoundError, UsageError
from s3sync.publish import publish
from s3sync.pull import pull
from s3sync.stores.s3 import S3Store
from s3sync.verify import verify

SMALL = TransferSettings(concurrency=4, chunk_size=64 * 1024, part_size=256 * 1024, window=8)


def contents(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and ".s3sync" not in p.parts}


def test_pull_an_older_generation_then_update_to_the_current(store: S3Store, tmp_path: Path, s3_server) -> None:
    src = tmp_path / "src" / "ds"
    (src / "d").mkdir(parents=True)
    for i in range(10):
        (src / "d" / f"{i}.bin").write_bytes(os.urandom(5000 + i))
    loc = Location(store.bucket, "ds")
    a = publish(src, "ds", loc, store, SMALL).manifest
    tree_a = contents(src)
    (src / "d" / "3.bin").write_bytes(b"changed")
    b = publish(src, "ds", loc, store, SMALL).manifest

    old = pull(loc, None, tmp_path / "data", store, SMALL, generation=a.generation)
    assert old.manifest.generation == a.generation and contents(old.dest) == tree_a
    assert verify(old.dest).generation == a.generation and verify(old.dest).problems == ()
    same = pull(loc, None, tmp_path / "data", store, SMALL, generation=a.generation)
    assert same.up_to_date
    current = pull(loc, None, tmp_path / "data", store, SMALL, generation=b.generation)
    assert current.updated is not None and current.updated.fetched == 1 and contents(current.dest) == contents(src)

    with pytest.raises(NotFoundError) as info:
        pull(loc, None, tmp_path / "other", store, SMALL, generation="20200101T000000Z-nope")
    assert a.generation in str(info.value) and b.generation in str(info.value)
    with pytest.raises(UsageError):
        pull(loc, None, tmp_path / "other", store, SMALL, generation="../x")

    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    done = subprocess.run([sys.executable, "-m", "s3sync", "pull", f"s3://{store.bucket}/ds", str(tmp_path / "cli"),
                           "--endpoint-url", s3_server.endpoint_url, "--generation", "nope"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    first = done.stderr.splitlines()[0]
    assert first.startswith("error: ") and "generation nope is not stored; stored: " in first
    assert a.generation in first and b.generation in first and "Traceback" not in done.stderr
