#!/usr/bin/env python3
"""Size and build time of the member index for an SBU-shaped dataset, without the data.

The member list is synthetic, shaped as ``scripts/make_dataset.py`` lays out SBU
(``images/NNNN/NNNNNNNNN.jpg``, ``--per-dir`` files per directory, one ``captions.json``),
with file sizes uniform in [--min-kb, --max-kb] (make_dataset's default 40-160 KiB: about
100 KiB a file; SBU is about 120 GB / 890,000 files = 135 KB), mtimes spread over a week (a
crawl takes days), and random digests (they are incompressible in a real index too). Offsets
follow the tar stream publish writes (one 512-byte ustar header per member, data padded to
512 bytes). The index is built by ``indexfile.IndexWriter`` as publish builds it, then read
back with ``indexfile.read`` (decompress, parse, validate).

Usage::

    PYTHONPATH=. python scripts/bench_index.py [--files 1000000] [--per-dir 1000] [--levels 3,9,19]
"""

from __future__ import annotations

import argparse
import io
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from s3sync import hashing, indexfile
from s3sync.codecs import ZstdWriter
from s3sync.index import MemberRecord, encode, header_line, member_span
from s3sync.manifest import Manifest, PartEntry


def members(files: int, per_dir: int, min_kb: int, max_kb: int, seed: int = 0):
    """(offset, MemberRecord) in publish's order, and the stream's tar size and data bytes."""
    rng = random.Random(seed)
    t0 = 1_700_000_000
    out = []
    offset = data = 0

    def add(rec: MemberRecord) -> None:
        nonlocal offset, data
        out.append((offset, rec))
        offset += member_span(rec.size)
        data += rec.size

    add(MemberRecord("captions.json", "file", files * 150, 0o644, t0 + 7 * 86400, f"{rng.getrandbits(128):032x}"))
    add(MemberRecord("images", "dir", 0, 0o755, t0 + 7 * 86400))
    for d in range((files + per_dir - 1) // per_dir):
        add(MemberRecord(f"images/{d:04d}", "dir", 0, 0o755, t0 + rng.randrange(7 * 86400)))
        for i in range(d * per_dir + 1, min(files, (d + 1) * per_dir) + 1):
            add(MemberRecord(f"images/{d:04d}/{i:09d}.jpg", "file", rng.randrange(min_kb * 1024, max_kb * 1024),
                             0o644, t0 + rng.randrange(7 * 86400), f"{rng.getrandbits(128):032x}"))
    end = offset + 1024
    return out, end + -end % 10240, data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--per-dir", type=int, default=1000)
    ap.add_argument("--min-kb", type=int, default=40)
    ap.add_argument("--max-kb", type=int, default=160)
    ap.add_argument("--levels", default="", help="also compress at these zstd levels (comma-separated)")
    args = ap.parse_args()

    entries, tar_size, data = members(args.files, args.per_dir, args.min_kb, args.max_kb)
    n = len(entries)
    t = time.perf_counter()
    w = indexfile.IndexWriter("g1", n)
    for off, rec in entries:
        w.add(off, rec)
    ref = w.finish()
    build_s = time.perf_counter() - t
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "index.jsonl.zst"
        w._file.seek(0)
        path.write_bytes(w._file.read())
        w.close()
        files = sum(1 for _, r in entries if r.kind == "file")
        d = hashing.digest(b"")
        m = Manifest(name="ds", generation="g1", created="c", chunk_size=1 << 26, stream_size=tar_size,
                     stream_digest=d, files=files, extracted_size=data, members=n,
                     parts=(PartEntry("g1/part-00000.tar", tar_size, '"e"', d, (d,) * -(-tar_size // (1 << 26))),))
        t = time.perf_counter()
        count = sum(1 for _ in indexfile.read(path, m))
        read_s = time.perf_counter() - t
    assert count == n
    raw = sum(len(encode(off, rec)) for off, rec in entries) + len(header_line("g1", n))
    print(f"members {n:,} ({files:,} files, {data / 1e9:.1f} GB of data, tar stream {tar_size:,} bytes)")
    print(f"index: {ref.size:,} bytes compressed ({ref.size / n:.1f} bytes/member, "
          f"{100 * ref.size / data:.4f}% of the data); {raw:,} bytes of JSON lines ({raw / n:.1f} bytes/member)")
    print(f"build (encode + zstd level default): {build_s:.2f} s ({1e6 * build_s / n:.2f} us/member); "
          f"read (decompress + parse + validate): {read_s:.2f} s ({1e6 * read_s / n:.2f} us/member)")
    print(f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB (the synthetic list included)")
    if args.levels:
        blob = b"".join([header_line("g1", n)] + [encode(off, rec) for off, rec in entries])
        for level in (int(x) for x in args.levels.split(",")):
            out = io.BytesIO()
            t = time.perf_counter()
            z = ZstdWriter(out, level=level)
            for i in range(0, len(blob), 256 * 1024):
                z.write(blob[i:i + 256 * 1024])
            z.close()
            print(f"  zstd level {level:2d}: {len(out.getvalue()):,} bytes ({len(out.getvalue()) / n:.1f} B/member), "
                  f"{time.perf_counter() - t:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
