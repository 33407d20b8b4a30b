#!/usr/bin/env python3
"""What the member index costs a publish: the same publish with and without it, interleaved.

Starts ``rclone serve s3`` on loopback (``scripts/bench.py``'s server), makes a tree of
``--files`` files of ``--size`` bytes (1,000 per directory), and publishes it ``--runs`` times
each way, alternating, in this process (wall time, and this process's CPU time, which other
work on the machine disturbs less; the rclone server's CPU is not counted): with the index (the code as it is), and with
``publish.IndexWriter`` replaced by a writer that drops every record (the publish before the
index, to within a no-op call per member). Wall seconds, medians; the difference is the cost
of hashing every file's data and encoding and compressing a line per member (the index PUT
is made both ways: ``NoIndex`` PUTs one byte there).

Usage::

    PYTHONPATH=. python scripts/bench_index_publish.py [--files 50000] [--size 4096] [--runs 5]
"""

from __future__ import annotations

import argparse
import importlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench  # noqa: E402 - scripts/bench.py: the rclone server

from s3sync import hashing  # noqa: E402
from s3sync.config import Location, S3Settings, TransferSettings  # noqa: E402
from s3sync.manifest import IndexRef  # noqa: E402
from s3sync.stores.s3 import S3Store, make_client  # noqa: E402

publish_mod = importlib.import_module("s3sync.publish")  # s3sync.publish is the API's function


class NoIndex:
    """Stands in for ``IndexWriter``: records nothing, and PUTs a 1-byte object where the index
    goes (the manifest must name an object that exists), so both ways make the same requests."""

    def __init__(self, generation: str, members: int) -> None:
        self.key = f"{generation}/index.jsonl.zst"

    def add(self, offset: int, record: object) -> None:
        pass

    def upload(self, store: S3Store, location: Location) -> IndexRef:
        store.put(location.key(self.key), b"-")
        return IndexRef(self.key, 1, hashing.digest(b"-"))

    def close(self) -> None:
        pass


def make_tree(root: Path, files: int, size: int) -> None:
    for i in range(files):
        d = root / f"{i // 1000:04d}"
        if i % 1000 == 0:
            d.mkdir(parents=True)
        (d / f"{i:09d}.bin").write_bytes(os.urandom(size))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=50_000)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--base", type=Path, default=Path(tempfile.gettempdir()))
    args = ap.parse_args()
    real = publish_mod.IndexWriter
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
            times: dict[str, list[float]] = {"with index": [], "without": []}
            cpu: dict[str, list[float]] = {"with index": [], "without": []}
            for run in range(args.runs):
                for label in (("with index", "without") if run % 2 == 0 else ("without", "with index")):
                    publish_mod.IndexWriter = real if label == "with index" else NoIndex
                    t, c = time.perf_counter(), time.process_time()
                    m = publish_mod.publish(src, "ds", Location(bench.BUCKET, f"{label[:4]}{run}"), store,
                                            settings).manifest
                    times[label].append(time.perf_counter() - t)
                    cpu[label].append(time.process_time() - c)
                    if label == "with index":
                        index: IndexRef = m.index
            store.close()
    a, b = statistics.median(times["with index"]), statistics.median(times["without"])
    print(f"{args.files:,} files of {args.size:,} bytes, {args.runs} runs each, interleaved, rclone serve s3")
    for label, values in times.items():
        print(f"  {label:10s}: wall median {statistics.median(values):.2f} s  ({', '.join(f'{v:.2f}' for v in values)});"
              f" CPU of this process median {statistics.median(cpu[label]):.2f} s")
    ca, cb = statistics.median(cpu["with index"]), statistics.median(cpu["without"])
    print(f"  overhead: wall {a - b:+.2f} s ({100 * (a - b) / b:+.1f}%), CPU {ca - cb:+.2f} s "
          f"({100 * (ca - cb) / cb:+.1f}%, {1e6 * (ca - cb) / args.files:+.1f} us/file); index {index.size:,} bytes "
          f"({index.size / args.files:.1f} bytes/file)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
