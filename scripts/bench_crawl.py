#!/usr/bin/env python3
"""Images per second of ``s3sync build sbu`` against a loopback web server, alone or against img2dataset.

    python scripts/bench_crawl.py [--images 2000] [--threads 10] [--size 320x240] [--out DIR] [--profile]
    python scripts/bench_crawl.py --compare img2dataset [--img2dataset PATH] [--i2d-mode bytes|decode]
                                  [--images 3000] [--threads 10] [--repeats 3] [--dead 0.1]
    python scripts/bench_crawl.py --interrupt [--img2dataset PATH] [--images 3000]

The site (``OUT/www``, kept between runs): ``--images`` noise JPEGs (Pillow) of ``--size``, or
with ``--size mixed`` of 240x180 to 440x330 pixels (20 to 100 KiB, as Flickr's 500-pixel
photos); with ``--dead`` a share of extra list lines that answer 404, plus about a fifth as
many "deleted photo" lines (a 302 to a URL containing ``photo_unavailable`` that serves a
PNG, as Flickr does) and a tenth as many HTML pages answered 200. It is served by
tests/httpserver.py's server (HTTP/1.1 keep-alive, TCP_NODELAY, one thread per connection)
in a *separate process*, so the server's Python does not share the crawlers' GIL; the
server logs every GET path to ``OUT/requests.log``.

Default mode: runs ``python -m s3sync build sbu OUT/dest-N --threads T --json`` ``--repeats``
times into fresh directories and prints images/s. ``--profile`` runs the same build in this
process under cProfile and prints where the per-image cost goes.

``--compare img2dataset``: the same list, the same server, the same thread count, runs
interleaved (s3sync, img2dataset, s3sync, ...; ``--repeats`` each). img2dataset (PyPI;
``pip install img2dataset``, or this project's ``bench`` extra: ``pip install '.[bench]'``,
best in its own venv; ``--img2dataset`` gives the command's path, default ``img2dataset``
on PATH) runs with ``--processes_count 1 --thread_count T --resize_mode no --output_format
files --retries 0 --timeout 10`` and, in ``--i2d-mode bytes`` (default), ``--disable_all_reencoding
True``: it stores the bytes as served without decoding them, as s3sync does (which decodes
each body to check it); ``--i2d-mode decode`` uses ``--skip_reencode True`` instead (it
decodes with OpenCV and keeps the bytes of a JPEG). images/s = the list's real images /
the command's wall time, start-up included (both tools process the same list); the
in-process rate (s3sync's ``elapsed_s``, img2dataset's shard ``duration``) is printed too.
Then the median of the per-pair ratios s3sync/img2dataset, and what each tool kept.

``--interrupt``: kill -9 each tool mid-crawl, then run it again: how many URLs fetched
before the kill are fetched again, and (img2dataset with ``--output_format webdataset``)
whether the tar left behind is whole.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MIXED = ((240, 180), (280, 210), (320, 240), (360, 270), (400, 300), (440, 330))
PLACEHOLDER_PATH = "/photo_unavailable.png"


def make_site(www: Path, n: int, size: str, dead: float) -> tuple[list[str], int]:
    """Write the site once; return the list's paths (relative to the server root) and the
    number of real images in it."""
    sys.path.insert(0, str(ROOT))
    from s3sync.images import make_jpeg, make_png

    www.mkdir(parents=True, exist_ok=True)
    marker = www / f".made-{n}-{size}"
    sizes = MIXED if size == "mixed" else (tuple(int(x) for x in size.split("x")),)
    if not marker.exists():
        for old in www.glob("*.jpg"):
            old.unlink()
        for i in range(n):
            w, h = sizes[i % len(sizes)]
            (www / f"{i}.jpg").write_bytes(make_jpeg(w, h, seed=i))
        (www / PLACEHOLDER_PATH.lstrip("/")).write_bytes(make_png(240, 180))
        marker.touch()
    paths: list[str] = []
    every = round(1 / dead) if dead > 0 else 0
    for i in range(n):
        paths.append(f"/{i}.jpg")
        if every and i % every == every - 1:
            paths.append(f"/gone-{i}.jpg")
            if i % (5 * every) == every - 1:
                paths.append(f"/deleted-{i}.jpg")  # the server redirects these to the placeholder
            if i % (10 * every) == every - 1:
                paths.append(f"/page-{i}.html")
                (www / f"page-{i}.html").write_bytes(b"<!DOCTYPE html><html><body>This page is gone.</body></html>\n")
    return paths, n


def serve_main(www: str, log: str) -> None:
    """The server process (``--_serve``): serve ``www``, redirect ``/deleted-*`` to the
    placeholder, log GET paths to ``log``."""
    sys.path.insert(0, str(ROOT / "tests"))
    import httpserver

    server = httpserver.FileServer(Path(www))
    out = open(log, "a", buffering=1)  # noqa: SIM115 - lives as long as the process
    lock = threading.Lock()
    original_log = server.log

    def logged(request) -> None:
        original_log(request)
        if request.method == "GET":
            with lock:
                out.write(request.path + "\n")

    server.log = logged  # type: ignore[method-assign]
    next_fault = server.next_fault

    def faults(path: str):
        if path.startswith("/deleted-"):
            return httpserver.Fault(redirect=PLACEHOLDER_PATH)
        return next_fault(path)

    server.next_fault = faults  # type: ignore[method-assign]
    server.start()
    print(server.url, flush=True)
    threading.Event().wait()  # until terminated


def serve(www: Path, log: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, __file__, "--_serve", str(www), str(log)], stdout=subprocess.PIPE,
                            text=True)
    url = proc.stdout.readline().strip()
    if not url:
        raise SystemExit("the bench server did not start")
    return proc, url


def write_lists(out: Path, url: str, paths: list[str]) -> tuple[Path, Path]:
    urls, caps = out / "urls.txt", out / "caps.txt"
    urls.write_text("".join(f"{url}{p}\n" for p in paths))
    caps.write_text("".join(f"photo {i}\n" for i in range(len(paths))))
    return urls, caps


def cpu_s() -> float:
    """CPU seconds (user + system) used by this process's waited-for children so far."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_s3sync(urls: Path, caps: Path, dest: Path, threads: int) -> dict:
    shutil.rmtree(dest, ignore_errors=True)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cpu0, t0 = cpu_s(), time.monotonic()
    out = subprocess.run([sys.executable, "-m", "s3sync", "build", "sbu", str(dest), "--urls", str(urls),
                          "--captions", str(caps), "--threads", str(threads), "--json"],
                         check=True, capture_output=True, text=True, env=env).stdout
    wall, cpu = time.monotonic() - t0, cpu_s() - cpu0
    doc = json.loads(out)
    shutil.rmtree(dest, ignore_errors=True)
    return {"wall_s": wall, "cpu_s": cpu, "inner_s": doc["elapsed_s"], "kept": doc["images"],
            "by_reason": doc["failed_by_reason"]}


def i2d_command(exe: str, urls: Path, dest: Path, threads: int, mode: str, output_format: str = "files") -> list[str]:
    cmd = [exe, "--url_list", str(urls), "--input_format", "txt", "--output_folder", str(dest),
           "--processes_count", "1", "--thread_count", str(threads), "--resize_mode", "no",
           "--output_format", output_format, "--retries", "0", "--timeout", "10",
           "--number_sample_per_shard", "100000"]
    return cmd + (["--disable_all_reencoding", "True"] if mode == "bytes" else ["--skip_reencode", "True"])


def i2d_env() -> dict[str, str]:
    # albumentations (imported by img2dataset) checks PyPI for updates at import: not on a bench.
    return dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1")


def run_i2d(exe: str, urls: Path, dest: Path, threads: int, mode: str) -> dict:
    shutil.rmtree(dest, ignore_errors=True)
    cpu0, t0 = cpu_s(), time.monotonic()
    subprocess.run(i2d_command(exe, urls, dest, threads, mode), check=True, capture_output=True, text=True,
                   env=i2d_env())
    wall, cpu = time.monotonic() - t0, cpu_s() - cpu0
    stats = [json.loads(p.read_text()) for p in dest.glob("*_stats.json")]
    shutil.rmtree(dest, ignore_errors=True)
    return {"wall_s": wall, "cpu_s": cpu, "inner_s": sum(s["duration"] for s in stats),
            "kept": sum(s["successes"] for s in stats),
            "by_reason": {k: v for s in stats for k, v in s["status_dict"].items() if k != "success"}}


def compare(args: argparse.Namespace, urls: Path, caps: Path, real: int, lines: int) -> None:
    exe = shutil.which(args.img2dataset) or args.img2dataset
    if not Path(exe).is_file():
        raise SystemExit(f"{args.img2dataset}: not found; install it with 'pip install img2dataset' (best in its "
                         f"own venv) and give its path with --img2dataset")
    flags = i2d_command(Path(exe).name, Path("URLS"), Path("OUT"), args.threads, args.i2d_mode)
    print(f"img2dataset: {' '.join(flags)}")
    print(f"s3sync: python -m s3sync build sbu OUT --urls URLS --captions CAPS --threads {args.threads} --json")
    print(f"{'run':>4} {'tool':<12} {'wall s':>7} {'img/s':>7} {'inner s':>8} {'inner img/s':>11} {'CPU s':>6} "
          f"{'kept':>6}")
    rows: dict[str, list[dict]] = {"s3sync": [], "img2dataset": []}
    for n in range(args.repeats):
        for tool in ("s3sync", "img2dataset"):
            if tool == "s3sync":
                r = run_s3sync(urls, caps, args.out / "dest-s3sync", args.threads)
            else:
                r = run_i2d(exe, urls, args.out / "dest-i2d", args.threads, args.i2d_mode)
            r["rate"], r["inner_rate"] = real / r["wall_s"], real / r["inner_s"]
            rows[tool].append(r)
            print(f"{n:>4} {tool:<12} {r['wall_s']:>7.2f} {r['rate']:>7.0f} {r['inner_s']:>8.2f} "
                  f"{r['inner_rate']:>11.0f} {r['cpu_s']:>6.2f} {r['kept']:>6}", flush=True)
    ratios = [a["rate"] / b["rate"] for a, b in zip(rows["s3sync"], rows["img2dataset"])]
    inner = [a["inner_rate"] / b["inner_rate"] for a, b in zip(rows["s3sync"], rows["img2dataset"])]
    for tool, rs in rows.items():
        print(f"median {tool}: {statistics.median(r['rate'] for r in rs):.0f} images/s "
              f"(in-process {statistics.median(r['inner_rate'] for r in rs):.0f}; "
              f"{statistics.median(r['cpu_s'] for r in rs) / lines * 1e3:.2f} ms CPU per line); "
              f"kept {rs[-1]['kept']} of {lines} "
              f"lines ({real} real images); not kept: {rs[-1]['by_reason']}")
    print(f"median ratio s3sync/img2dataset: {statistics.median(ratios):.2f} wall "
          f"({', '.join(f'{x:.2f}' for x in ratios)}), {statistics.median(inner):.2f} in-process "
          f"({', '.join(f'{x:.2f}' for x in inner)})")


def gets(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def wait_until(predicate, proc: subprocess.Popen, timeout_s: float = 120) -> None:
    end = time.monotonic() + timeout_s
    while not predicate():
        if proc.poll() is not None or time.monotonic() > end:
            raise SystemExit(f"the run ended (or took too long) before the kill point (exit {proc.returncode})")
        time.sleep(0.02)


def tar_state(path: Path) -> str:
    """Whether a tar file is whole: every member readable and the two zero end blocks there."""
    if not path.exists():
        return "no tar"
    size = path.stat().st_size
    try:
        with tarfile.open(path) as tf:
            members = 0
            for m in tf:
                if m.isfile():
                    tf.extractfile(m).read()
                members += 1
    except (tarfile.TarError, OSError, EOFError) as err:
        return f"{size:,} bytes, unreadable: {type(err).__name__}: {err}"
    with open(path, "rb") as f:
        f.seek(max(0, size - 1024))
        tail = f.read()
    whole = size % 512 == 0 and size >= 1024 and tail == bytes(1024)
    return f"{size:,} bytes, {members} members readable, " + (
        "ends with its end-of-archive blocks" if whole else "no end-of-archive blocks (truncated: cut mid-stream)")


def interrupt(args: argparse.Namespace, urls: Path, caps: Path, url: str, log: Path) -> None:
    """kill -9 each tool once a third of the list is done, then rerun it; count repeats."""
    lines = urls.read_text().splitlines()
    third = len(lines) // 3
    env = dict(os.environ, PYTHONPATH=str(ROOT))

    # s3sync
    dest = args.out / "interrupt-s3sync"
    shutil.rmtree(dest, ignore_errors=True)
    cmd = [sys.executable, "-m", "s3sync", "build", "sbu", str(dest), "--urls", str(urls), "--captions", str(caps),
           "--threads", str(args.threads), "--json"]
    journal = dest / ".s3sync" / "build-journal.jsonl"
    start = len(gets(log))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    wait_until(lambda: journal.exists() and journal.read_bytes().count(b"\n") >= third, proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(0.5)
    sys.path.insert(0, str(ROOT))
    from s3sync.images import ImageInfo, check_image

    left = [p for p in (dest / "images").rglob("*") if p.is_file()]
    whole = sum(isinstance(check_image(p.read_bytes()), ImageInfo) for p in left)
    print(f"s3sync: after the kill: {len(left)} image files in DIR/images/, {whole} of them whole; captions.json "
          f"{'present' if (dest / 'captions.json').exists() else 'absent (written only by a finished run)'}")
    before = set(gets(log)[start:])
    records = [json.loads(x) for x in journal.read_bytes().splitlines() if x.endswith(b"}")]
    done = {r["url"][len(url):] for r in records if "file" in r or r.get("permanent")}
    mark = len(gets(log))
    doc = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True, env=env).stdout)
    again = set(gets(log)[mark:])
    print(f"s3sync: killed with {len(before)} URLs asked, {len(done)} of them recorded done; the rerun asked "
          f"{len(again)} URLs, {len(again & done)} of them already done; captions.json after the rerun: "
          f"{doc['images']} images")

    # img2dataset (webdataset: one tar per shard, written in place)
    exe = shutil.which(args.img2dataset) or args.img2dataset
    dest = args.out / "interrupt-i2d"
    shutil.rmtree(dest, ignore_errors=True)
    cmd = i2d_command(exe, urls, dest, args.threads, args.i2d_mode, output_format="webdataset")
    start = len(gets(log))
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=i2d_env(),
                            start_new_session=True)
    wait_until(lambda: len(gets(log)) - start >= third, proc)
    os.killpg(proc.pid, signal.SIGKILL)  # its own session: the command and its pool worker
    proc.wait()
    time.sleep(0.5)
    before = set(gets(log)[start:])
    tar = dest / "00000.tar"
    print(f"img2dataset: killed with {len(before)} URLs asked; {tar.name} left behind: {tar_state(tar)}")
    mark = len(gets(log))
    subprocess.run(cmd, check=True, capture_output=True, text=True, env=i2d_env())
    again = set(gets(log)[mark:])
    stats = [json.loads(p.read_text()) for p in dest.glob("*_stats.json")]
    print(f"img2dataset: the rerun asked {len(again)} URLs, {len(again & before)} of them already asked before the "
          f"kill; {tar.name} now: {tar_state(tar)}; successes {sum(s['successes'] for s in stats)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--threads", type=int, default=10)
    ap.add_argument("--size", default="320x240", help="WxH, or 'mixed' (20 to 100 KiB JPEGs)")
    ap.add_argument("--dead", type=float, default=0.0, help="share of extra dead lines (404, placeholders, HTML)")
    ap.add_argument("--out", type=Path, default=Path("/tmp/s3sync-bench-crawl"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--profile", action="store_true")
    ap.add_argument("--compare", choices=("img2dataset",))
    ap.add_argument("--interrupt", action="store_true")
    ap.add_argument("--img2dataset", default="img2dataset", help="the img2dataset command (default: on PATH)")
    ap.add_argument("--i2d-mode", choices=("bytes", "decode"), default="bytes")
    ap.add_argument("--_serve", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args._serve:
        return serve_main(*args._serve)
    paths, real = make_site(args.out / "www", args.images, args.size, args.dead)
    log = args.out / "requests.log"
    log.unlink(missing_ok=True)
    server, url = serve(args.out / "www", log)
    try:
        urls, caps = write_lists(args.out, url, paths)
        body = sum(p.stat().st_size for p in (args.out / "www").glob("*.jpg")) / args.images
        print(f"{len(paths)} lines: {real} JPEGs of {args.size} (mean {body / 1024:.1f} KiB), "
              f"{len(paths) - real} dead (404, placeholder redirects, HTML); {args.threads} threads; server {url}")
        if args.profile:
            return profile(args, urls, caps)
        if args.compare:
            return compare(args, urls, caps, real, len(paths))
        if args.interrupt:
            return interrupt(args, urls, caps, url, log)
        for n in range(args.repeats):
            r = run_s3sync(urls, caps, args.out / f"dest-{n}", args.threads)
            assert r["kept"] == real, r
            print(f"run {n}: {real} images in {r['inner_s']:.2f} s = {real / r['inner_s']:.0f} images/s "
                  f"(command wall time {r['wall_s']:.2f} s = {real / r['wall_s']:.0f} images/s)")
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
