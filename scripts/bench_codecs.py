"""Which gzip decoder should codecs.py use, and does its decoding thread pay off?

Decodes gzipped tars through ``s3sync.codecs.DecodedReader`` (the code path a pull uses:
bounded ``max_length`` steps, 1 MiB output pieces), with each zlib-compatible library swapped
in: stdlib ``zlib``, python-isal's ``isal_zlib``, ``zlib_ng``. rapidgzip cannot take our
input (a forward-only stream of chunk buffers; its parallel decoding needs a seekable file):
it is measured on the file itself, its best case, with 2 threads. ``gzip -dc`` is the baseline.
The input is read from disk into one reused 8 MiB buffer, as chunk buffers are.

Corpora (made once in ``--dir`` by Python and GNU tar/gzip, kept for reruns):
  img: ~600 MB tar of random (JPEG-like, incompressible) files, ``gzip -6``;
  txt: ~200 MB tar of text files, ``gzip -6``.

Then ``--thread``: the winner, decoding only vs decoding into ``archive.SafeExtractor`` (the real
consumer), with and without the decoding thread.

Prints MB/s (10^6 bytes per second) of compressed input and of decoded output, median of 5.

    python scripts/bench_codecs.py --dir /tmp/cbench [--runs 5] [--thread]
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from s3sync import codecs
from s3sync.archive import SafeExtractor

BLOCK = 8 << 20


def make_corpora(d: Path) -> None:
    rng = random.Random(1)
    if not (d / "img.tar.gz").exists():
        (d / "img").mkdir(parents=True, exist_ok=True)
        total = i = 0
        while total < 600 * 2**20:
            n = rng.randint(40_000, 250_000)
            (d / "img" / f"{i:06d}.jpg").write_bytes(os.urandom(n))
            total, i = total + n, i + 1
        subprocess.run(["tar", "cf", "img.tar", "img"], cwd=d, check=True)
        subprocess.run(["gzip", "-6", "-k", "img.tar"], cwd=d, check=True)
    if not (d / "txt.tar.gz").exists():
        (d / "txt").mkdir(parents=True, exist_ok=True)
        words = [f"w{k}" for k in range(5000)]
        total = i = 0
        while total < 200 * 2**20:
            s = "\n".join(" ".join(rng.choices(words, k=12)) for _ in range(2000)).encode()
            (d / "txt" / f"{i:05d}.txt").write_bytes(s)
            total, i = total + len(s), i + 1
        subprocess.run(["tar", "cf", "txt.tar", "txt"], cwd=d, check=True)
        subprocess.run(["gzip", "-6", "-k", "txt.tar"], cwd=d, check=True)


def blocks_of(path: Path) -> Iterator[memoryview]:
    buf = bytearray(BLOCK)
    view = memoryview(buf)
    with open(path, "rb", buffering=0) as f:
        while n := f.readinto(buf):
            yield view[:n]


def decode_all(path: Path, threaded: bool) -> int:
    reader = codecs.DecodedReader(blocks_of(path), "gzip", path.name, threaded=threaded)
    try:
        return reader.drain()
    finally:
        reader.close()


def extract_all(path: Path, threaded: bool, dest: Path) -> int:
    reader = codecs.DecodedReader(blocks_of(path), "gzip", path.name, threaded=threaded)
    try:
        SafeExtractor(dest).extract(reader, lambda _off, _rec: None)
        return reader.tell()
    finally:
        reader.close()


class _IgzipMember:
    """python-isal's own decompressor (bz2-like interface: max_length, needs_input)."""

    def __init__(self, igzip_lib) -> None:
        self._d = igzip_lib.IgzipDecompressor(flag=igzip_lib.DECOMP_GZIP)

    def decompress(self, data, limit: int) -> bytes:
        return self._d.decompress(data, limit)

    needs_input = property(lambda self: self._d.needs_input)
    eof = property(lambda self: self._d.eof)
    unused_data = property(lambda self: self._d.unused_data)


def decoders() -> dict[str, tuple]:
    """label -> the (factory, errors) pair codecs._gzip_member returns, per library."""
    import zlib
    zlib_style = codecs._ZlibMember
    found: dict[str, tuple] = {"zlib (stdlib)": (lambda: zlib_style(zlib), (zlib.error,))}
    try:
        from isal import igzip_lib, isal_zlib
        found["isal (isal_zlib)"] = (lambda: zlib_style(isal_zlib), (isal_zlib.error,))
        found["isal (igzip_lib)"] = (lambda: _IgzipMember(igzip_lib), (igzip_lib.IsalError,))
    except ImportError:
        pass
    try:
        from zlib_ng import zlib_ng
        found["zlib-ng"] = (lambda: zlib_style(zlib_ng), (zlib_ng.error,))
    except ImportError:
        pass
    return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dir", type=Path, default=Path(tempfile.gettempdir()) / "s3sync-bench-codecs")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--thread", action="store_true", help="also measure the decoding thread")
    ap.add_argument("--corpora", default="img,txt")
    ap.add_argument("--decoder", help="skip the decoder comparison; measure the thread with this one")
    args = ap.parse_args()
    make_corpora(args.dir)
    print(f"{'corpus':6} {'decoder':24} {'in MB/s':>8} {'out MB/s':>9} {'median s':>9}   (runs interleaved)")
    best: dict[str, float] = {}
    for corpus in args.corpora.split(",") if not args.decoder else ():
        path = args.dir / f"{corpus}.tar.gz"
        size_in = path.stat().st_size
        out = 0
        cases = {}
        for label, pair in decoders().items():
            cases[label] = (lambda pair=pair, path=path: (setattr(codecs, "_gzip_member", lambda: pair),
                                                          decode_all(path, threaded=False))[1])
        try:
            import rapidgzip

            def rapid(path: Path = path) -> int:
                n = 0
                with rapidgzip.RapidgzipFile(str(path), parallelization=2) as f:
                    while block := f.read(1 << 20):
                        n += len(block)
                return n
            cases["rapidgzip (file, 2 thr)"] = rapid
        except ImportError:
            pass

        def gzip_dc(path: Path = path) -> int:
            with open(path, "rb") as f:
                subprocess.run(["gzip", "-dc"], stdin=f, stdout=subprocess.DEVNULL, check=True)
            return 0
        cases["gzip -dc (baseline)"] = gzip_dc
        times: dict[str, list[float]] = {label: [] for label in cases}
        for _ in range(args.runs):
            for label, fn in cases.items():
                t = time.perf_counter()
                n = fn()
                times[label].append(time.perf_counter() - t)
                out = max(out, n)
        for label, ts in times.items():
            secs = statistics.median(ts)
            if label in decoders():
                best[label] = best.get(label, 0.0) + secs
            print(f"{corpus:6} {label:24} {size_in / secs / 1e6:8.0f} {out / secs / 1e6:9.0f} {secs:9.2f}",
                  flush=True)
    if args.thread:
        winner = args.decoder or min(best, key=best.get)
        pair = decoders()[winner]
        codecs._gzip_member = lambda: pair
        print(f"thread or not, with {winner}:")
        for corpus in args.corpora.split(","):
            path = args.dir / f"{corpus}.tar.gz"
            size_in = path.stat().st_size
            times: dict[tuple[str, bool], list[float]] = {}
            out = 0
            for _ in range(args.runs):  # interleaved: the cores are shared, load drifts
                for threaded in (False, True):
                    t = time.perf_counter()
                    out = decode_all(path, threaded)
                    times.setdefault(("decode", threaded), []).append(time.perf_counter() - t)
                    dest = Path(tempfile.mkdtemp(dir=args.dir, prefix="x-"))
                    t = time.perf_counter()
                    extract_all(path, threaded, dest)
                    times.setdefault(("extract", threaded), []).append(time.perf_counter() - t)
                    shutil.rmtree(dest)
            for (what, threaded), ts in times.items():
                secs = statistics.median(ts)
                label = f"{what}, {'thread' if threaded else 'no thread'}"
                print(f"{corpus:6} {label:24} {size_in / secs / 1e6:8.0f} {out / secs / 1e6:9.0f} {secs:9.2f}",
                      flush=True)


if __name__ == "__main__":
    main()
