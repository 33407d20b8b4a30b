#!/usr/bin/env python3
"""Images per second of ``s3sync build sbu`` against a loopback web server.

    python scripts/bench_crawl.py [--images 2000] [--threads 10] [--size 320x240] [--out DIR]
                                  [--profile]

1. Makes ``--images`` small JPEGs (noise, Pillow, ~25 KiB at 320x240) in ``OUT/www`` (kept
   between runs) and the two SBU lists pointing at them.
2. Serves ``OUT/www`` with tests/httpserver.py's server (HTTP/1.1 keep-alive, TCP_NODELAY,
   one thread per connection) in a *separate process*, so the server's Python does not share
   the crawler's GIL.
3. Runs ``python -m s3sync build sbu OUT/dest-N --threads T --json`` into a fresh directory
   and prints images/s (from the command's own ``elapsed_s``, and the wall time of the whole
   command, start-up included).

``--profile`` runs the same build in this process under cProfile and prints the top
functions by cumulative time (where the per-image cost goes: the Pillow check, file writes,
the journal, HTTP).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def make_site(www: Path, n: int, size: tuple[int, int]) -> None:
    sys.path.insert(0, str(ROOT))
    from s3sync.images import make_jpeg

    www.mkdir(parents=True, exist_ok=True)
    marker = www / f".made-{n}-{size[0]}x{size[1]}"
    if marker.exists():
        return
    for i in range(n):
        (www / f"{i}.jpg").write_bytes(make_jpeg(size[0], size[1], seed=i))
    marker.touch()


def serve(www: Path) -> tuple[subprocess.Popen, str]:
    code = ("import sys, time; sys.path.insert(0, sys.argv[2]); import httpserver; "
            "s = httpserver.serve_directory(sys.argv[1]); print(s.url, flush=True); time.sleep(1e9)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(www), str(ROOT / "tests")], stdout=subprocess.PIPE,
                            text=True)
    url = proc.stdout.readline().strip()
    return proc, url


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=10)
    ap.add_argument("--size", default="320x240")
    ap.add_argument("--out", type=Path, default=Path("/tmp/s3sync-bench-crawl"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    args = ap.parse_args()
    w, h = (int(x) for x in args.size.split("x"))
    www = args.out / "www"
    make_site(www, args.images, (w, h))
    server, url = serve(www)
    try:
        urls, caps = args.out / "urls.txt", args.out / "caps.txt"
        urls.write_text("".join(f"{url}/{i}.jpg\n" for i in range(args.images)))
        caps.write_text("".join(f"photo {i}\n" for i in range(args.images)))
        body = sum(p.stat().st_size for p in www.glob("*.jpg")) / args.images
        print(f"{args.images} JPEGs of {w}x{h} (mean {body / 1024:.1f} KiB), {args.threads} threads, server {url}")
        if args.profile:
            return profile(args, urls, caps)
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        for n in range(args.repeats):
            dest = args.out / f"dest-{n}"
            shutil.rmtree(dest, ignore_errors=True)
            t0 = time.monotonic()
            out = subprocess.run([sys.executable, "-m", "s3sync", "build", "sbu", str(dest), "--urls", str(urls),
                                  "--captions", str(caps), "--threads", str(args.threads), "--json"],
                                 check=True, capture_output=True, text=True, env=env).stdout
            wall = time.monotonic() - t0
            doc = json.loads(out)
            assert doc["images"] == args.images, doc
            print(f"run {n}: {doc['stored']} images in {doc['elapsed_s']:.2f} s = "
                  f"{doc['stored'] / doc['elapsed_s']:.0f} images/s (command wall time {wall:.2f} s = "
                  f"{doc['stored'] / wall:.0f} images/s)")
        # Removed only now: on ext4, files deleted in the last minute slow down creating new
        # ones (recently_deleted(), see scripts/bench.py), which would slow the next run.
        for n in range(args.repeats):
            shutil.rmtree(args.out / f"dest-{n}", ignore_errors=True)
    finally:
        server.terminate()
        server.wait()


def profile(args: argparse.Namespace, urls: Path, caps: Path) -> None:
    import cProfile
    import pstats

    sys.path.insert(0, str(ROOT))
    from s3sync.builders.sbu import build_sbu
    from s3sync.crawl import CrawlSettings

    dest = args.out / "dest-profile"
    shutil.rmtree(dest, ignore_errors=True)
    prof = cProfile.Profile()
    t0 = time.monotonic()
    prof.enable()
    built = build_sbu(dest, urls=str(urls), captions=str(caps), settings=CrawlSettings(threads=args.threads))
    prof.disable()
    print(f"{built.crawl.stored} images in {time.monotonic() - t0:.2f} s (main thread profile below; "
          "workers are profiled with threading.setprofile off, see the per-call costs printed after)")
    pstats.Stats(prof).sort_stats("cumulative").print_stats(15)
    shutil.rmtree(dest, ignore_errors=True)
    per_image(www=args.out / "www", n=min(args.images, 500))


def per_image(www: Path, n: int) -> None:
    """Single-thread cost per image of each step, in microseconds."""
    import tempfile

    from s3sync.images import check_image

    files = sorted(www.glob("*.jpg"))[:n]
    bodies = [p.read_bytes() for p in files]
    t = time.perf_counter()
    for b in bodies:
        check_image(b)
    check_us = (time.perf_counter() - t) / n * 1e6
    with tempfile.TemporaryDirectory(dir=www.parent) as d:
        t = time.perf_counter()
        for i, b in enumerate(bodies):
            tmp = Path(d) / f"{i}.part"
            with open(tmp, "wb") as f:
                f.write(b)
            os.replace(tmp, Path(d) / f"{i}.jpg")
        write_us = (time.perf_counter() - t) / n * 1e6
        t = time.perf_counter()
        with open(Path(d) / "journal", "ab") as f:
            for i in range(n):
                f.write(json.dumps({"index": i, "url": "http://x/y.jpg", "file": "images/0000/0000001.jpg",
                                    "width": 1, "height": 1, "captions": ["a caption"]}).encode() + b"\n")
        journal_us = (time.perf_counter() - t) / n * 1e6
    print(f"per image, one thread: check_image {check_us:.0f} us, write+rename {write_us:.0f} us, "
          f"journal line {journal_us:.1f} us")


if __name__ == "__main__":
    main()
