#!/usr/bin/env python3
"""What hashing the reused files costs an update in place: the same update with and without it,
interleaved.

Starts ``rclone serve s3`` on loopback (``scripts/bench.py``'s server), makes a tree of
``--files`` files of ``--size`` bytes (1,000 per directory), publishes it (A), pulls it,
rewrites ``--changed`` of its files and publishes again (B). Then it updates the pull in place
from A to B, B to A (``--generation``), and so on, ``--runs`` times each way, alternating:
with the code as it is (every reused file hashed: XXH3-128 of the staged link) and with
``update._reuse`` replaced by the reuse before it (link or copy, no hash). Each update
fetches the changed files and reuses the rest. The files are in the page cache (just written
or read): on a cold cache the hashing also reads them from the disk. Wall seconds and this
process's CPU seconds, medians.

Usage::

    PYTHONPATH=. python scripts/bench_update_reuse.py [--files 20000] [--size 40960] [--runs 4]
"""

from __future__ import annotations

import argparse
import errno
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402 - scripts/bench.py: the rclone server

from s3sync import update  # noqa: E402
from s3sync.config import Location, S3Settings, TransferSettings  # noqa: E402
from s3sync.publish import publish  # noqa: E402
from s3sync.pull import pull  # noqa: E402
from s3sync.stores.s3 import S3Store, make_client  # noqa: E402


def unhashed_reuse(source, target, old, new) -> bool:
    """The reuse before content hashing: link if mode and mtime stay, else copy."""
    if (old.mode, old.mtime) == (new.mode, new.mtime):
        try:
            os.link(source, target, follow_symlinks=False)
            return True
        except OSError as err:
            if err.errno not in (errno.EMLINK, errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
    shutil.copyfile(source, target, follow_symlinks=False)
    os.chmod(target, new.mode)
    os.utime(target, ns=(new.mtime * 1_000_000_000,) * 2)
    return True


def make_tree(root: Path, files: int, size: int) -> None:
    for i in range(files):
        d = root / f"{i // 1000:04d}"
        if i % 1000 == 0:
            d.mkdir(parents=True)
        (d / f"{i:09d}.bin").write_bytes(os.urandom(size))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--size", type=int, default=40 * 1024)
    ap.add_argument("--changed", type=int, default=200)
    ap.add_argument("--runs", type=int, default=4)
    ap.add_argument("--base", type=Path, default=Path(tempfile.gettempdir()))
    args = ap.parse_args()
    real = update._reuse
    with tempfile.TemporaryDirectory(dir=args.base) as tmp:
        base = Path(tmp)
        env = bench.tool_env(base)
        os.environ.update({k: v for k, v in env.items() if k.startswith("AWS_")})
        src = base / "src" / "ds"
        make_tree(src, args.files, args.size)
        with bench.rclone_server(bench.Tools(), base, env) as url:
            client = make_client(S3Settings(endpoint_url=url))
            store = S3Store(client, bench.BUCKET, concurrency=4)
            settings = TransferSettings(concurrency=4)
            loc = Location(bench.BUCKET, "ds")
            a = publish(src, "ds", loc, store, settings).manifest
            pull(loc, None, base / "data", store, settings)
            for i in range(0, args.files, max(1, args.files // args.changed)):
                (src / f"{i // 1000:04d}" / f"{i:09d}.bin").write_bytes(os.urandom(args.size))
            b = publish(src, "ds", loc, store, settings).manifest
            times: dict[str, list[float]] = {"hashed": [], "unhashed": []}
            cpu: dict[str, list[float]] = {"hashed": [], "unhashed": []}
            to_b = True
            hashed_bytes = fetched = 0
            for run in range(args.runs):
                for label in (("hashed", "unhashed") if run % 2 == 0 else ("unhashed", "hashed")):
                    update._reuse = real if label == "hashed" else unhashed_reuse
                    t, c = time.perf_counter(), time.process_time()
                    r = pull(loc, None, base / "data", store, settings,
                             generation=None if to_b else a.generation).updated
                    times[label].append(time.perf_counter() - t)
                    cpu[label].append(time.process_time() - c)
                    assert r is not None and r.old_generation == (a.generation if to_b else b.generation)
                    if label == "hashed":
                        hashed_bytes, fetched = r.reused_size, r.fetched
                    to_b = not to_b
            update._reuse = real
            store.close()
    h, u = statistics.median(times["hashed"]), statistics.median(times["unhashed"])
    print(f"update in place of {args.files:,} files of {args.size:,} bytes, {fetched} changed, {args.runs} runs "
          "each, interleaved, rclone serve s3, files in the page cache")
    for label, values in times.items():
        print(f"  {label:9s}: wall median {statistics.median(values):.2f} s  ({', '.join(f'{v:.2f}' for v in values)});"
              f" CPU of this process median {statistics.median(cpu[label]):.2f} s")
    ch, cu = statistics.median(cpu["hashed"]), statistics.median(cpu["unhashed"])
    print(f"  hashing {hashed_bytes:,} reused bytes costs: wall {h - u:+.2f} s ({100 * (h - u) / u:+.1f}%), "
          f"CPU {ch - cu:+.2f} s ({1e6 * (ch - cu) / args.files:+.1f} us/file, "
          f"{hashed_bytes / max(ch - cu, 1e-9) / 1e9:.2f} GB hashed per added CPU second)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
