"""How fast does ``zipstream`` extract a COCO-like zip while it downloads, against the old way?

Corpus (made once in ``--dir``, kept for reruns): ``zips/train2014.zip``, a stored zip of
``--mb`` MB of random (JPEG-like, incompressible) members of about 160 KB each, as COCO's
images are. It is served on loopback by ``rclone serve http`` (ranged GETs, Last-Modified, no
ETag: the whole zip is read and its MD5 computed, the build's first-run path).

Contenders, each run ``--runs`` times interleaved into a fresh directory, median wall seconds:
  zipstream   ``read_directory`` + ``stream_extract(full=True)``: parallel ranged GETs, members
              written as they stream, CRC-32 per member, MD5 of the whole zip on the same pass;
  curl+unzip  ``curl -s URL > f.zip && unzip -q f.zip`` (the zip on disk next to its contents;
              unzip checks CRC-32, nobody checks the MD5);
  curl+md5+unzip  the same plus ``md5sum f.zip`` (what the old scripts did).

    python scripts/bench_zipstream.py --dir /tmp/zbench [--mb 300] [--runs 5] [--concurrency 4]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
import urllib.request
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s3sync import zipstream
from s3sync.config import TransferSettings
from s3sync.stores.http import HttpStore

MEMBER = 160 * 1000


def corpus(root: Path, mb: int) -> Path:
    path = root / "www" / "zips" / "train2014.zip"
    if path.exists():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    count = mb * 1000 * 1000 // MEMBER
    with zipfile.ZipFile(path.with_suffix(".tmp"), "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("train2014/", b"")
        for i in range(count):
            zf.writestr(f"train2014/COCO_train2014_{i:012d}.jpg", os.urandom(MEMBER - 20_000 + (i * 7919) % 40_000))
    path.with_suffix(".tmp").rename(path)
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def serve(root: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(["rclone", "serve", "http", str(root), "--addr", f"127.0.0.1:{port}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/", timeout=1).read()
            return proc, url
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("rclone serve http did not start")


def run_zipstream(url: str, out: Path, concurrency: int, chunk_mib: int) -> tuple[float, str]:
    settings = TransferSettings(concurrency=concurrency, chunk_size=chunk_mib << 20, window=2 * concurrency)
    store = HttpStore(settings)
    started = time.perf_counter()
    info = store.head(url)
    directory = zipstream.read_directory(
        lambda off, n: zipstream.read_bytes(store, url, off, n, info.etag or None, settings), info.size, url)
    result = zipstream.stream_extract(store, directory, info.etag, out, settings, full=True)
    elapsed = time.perf_counter() - started
    store.close()
    return elapsed, result.digest


def run_shell(command: str, cwd: Path) -> float:
    started = time.perf_counter()
    subprocess.run(["bash", "-c", command], cwd=cwd, check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--mb", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--chunk-mib", type=int, default=16)
    args = parser.parse_args()
    zpath = corpus(args.dir, args.mb)
    size = zpath.stat().st_size
    want = hashlib.md5(zpath.read_bytes()).hexdigest()
    server, base = serve(args.dir / "www")
    url = f"{base}/zips/train2014.zip"
    times: dict[str, list[float]] = {"zipstream": [], "curl+unzip": [], "curl+md5+unzip": []}
    work = args.dir / "work"
    try:
        for _ in range(args.runs):
            for name in times:
                shutil.rmtree(work, ignore_errors=True)
                work.mkdir(parents=True)
                if name == "zipstream":
                    elapsed, digest = run_zipstream(url, work / "out", args.concurrency, args.chunk_mib)
                    assert digest == want, (digest, want)
                elif name == "curl+unzip":
                    elapsed = run_shell(f"curl -s {url} > f.zip && unzip -q f.zip", work)
                else:
                    elapsed = run_shell(f"curl -s {url} > f.zip && md5sum f.zip > /dev/null && unzip -q f.zip", work)
                times[name].append(elapsed)
    finally:
        server.terminate()
        server.wait()
        shutil.rmtree(work, ignore_errors=True)
    base_s = statistics.median(times["curl+unzip"])
    print(f"zip: {size / 1e6:.0f} MB, {size // MEMBER} members; {args.runs} runs; concurrency {args.concurrency}, "
          f"chunks {args.chunk_mib} MiB")
    for name, values in times.items():
        med = statistics.median(values)
        print(f"{name:>15}: median {med:.2f} s ({size / 1e6 / med:.0f} MB/s), runs "
              f"{' '.join(f'{v:.2f}' for v in values)}; {base_s / med:.2f}x curl+unzip's speed")


if __name__ == "__main__":
    main()
