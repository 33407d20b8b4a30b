#!/usr/bin/env python3
"""Where the time of one ``s3sync pull`` goes, in every thread (helper of scripts/bench.py).

pyinstrument samples only the main thread; the fetch workers (ranged GET, socket reads,
chunk hashing) run in other threads. This helper runs ``s3sync pull`` in-process with
wrappers around the pipeline's stages that add up, per thread role, *exclusive* wall time
(time.perf_counter, nested timed stages subtracted) and thread CPU time (time.thread_time).
It patches the installed package at run time only; nothing in ``s3sync/`` is edited.
A stage that no longer exists in the package is skipped (the code is moving).

Usage::

    python scripts/bench_breakdown.py pull SOURCE DEST_PARENT --endpoint-url URL [--no-extract]
    python scripts/bench_breakdown.py publish SRC_DIR --to s3://BUCKET/PREFIX --endpoint-url URL [...]

Prints a markdown table on stdout. Overhead: one wrapper call per stage call (~1 us),
i.e. well under 1 % for 1 GB of 40-160 KiB files.
"""

from __future__ import annotations

import functools
import importlib
import os
import resource
import sys
import threading
import time
from collections import defaultdict

_local = threading.local()
_lock = threading.Lock()
_stats: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0, 0])
_threads: dict[str, set[int]] = defaultdict(set)


def _role() -> str:
    t = threading.current_thread()
    if t is threading.main_thread():
        return "main"
    if t.name.startswith("s3sync-fetch"):
        return "fetch worker"
    if t.name.startswith("s3sync-feed"):
        return "feeder"
    if t.name.startswith("s3sync-upload"):
        return "uploader"
    if t.name.startswith("s3sync-write"):
        return "file writer"
    if t.name.startswith("s3sync-read"):
        return "file reader"
    return "s3transfer/other"


def timed(label: str, fn):
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        stack = getattr(_local, "stack", None)
        if stack is None:
            stack = _local.stack = []
        frame = [0.0, 0.0]
        stack.append(frame)
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return fn(*args, **kwargs)
        finally:
            wall, cpu = time.perf_counter() - t0, time.thread_time() - c0
            stack.pop()
            if stack:
                stack[-1][0] += wall
                stack[-1][1] += cpu
            role = _role()
            with _lock:
                s = _stats[(role, label)]
                s[0] += wall - frame[0]
                s[1] += cpu - frame[1]
                s[2] += 1
                _threads[role].add(threading.get_ident())

    return wrapper


def patch(modname: str, attr: str, label: str, static: bool = False) -> None:
    """Wrap ``modname.attr`` (``Class.method`` allowed) if it exists."""
    try:
        obj = importlib.import_module(modname)
    except ImportError:
        return
    *owners, name = attr.split(".")
    for o in owners:
        obj = getattr(obj, o, None)
        if obj is None:
            return
    raw = obj.__dict__.get(name) if isinstance(obj, type) else getattr(obj, name, None)
    if raw is None:
        return
    if isinstance(raw, staticmethod):
        setattr(obj, name, staticmethod(timed(label, raw.__func__)))
    else:
        setattr(obj, name, timed(label, raw))


def _patch_future_result() -> None:
    """Time ``Future.result`` calls by caller: the writer pool's drain vs the fetch pipeline."""
    from concurrent.futures import Future

    raw = Future.result
    by_writer = timed("wait for the writer pool (Future.result)", raw)
    by_fetch = timed("wait for a fetched chunk (Future.result)", raw)
    by_reader = timed("wait for the reader pool (Future.result)", raw)
    by_hash = timed("wait for the piece hashing thread (splitpull)", raw)
    by_other = timed("wait on another future", raw)
    callers = {"complete": by_writer, "fetch": by_fetch, "write_tar": by_reader, "_settle": by_hash}

    def result(self, timeout=None):
        return callers.get(sys._getframe(1).f_code.co_name, by_other)(self, timeout)

    Future.result = result


def install_publish() -> None:
    patch("s3sync.archive", "scan_tree", "scan tree (scandir + lstat)")
    _patch_future_result()
    patch("s3sync.archive", "_read_small", "read a small file (reader pool)")
    patch("s3sync.archive", "_copy_exact", "copy a large file into the tar")
    patch("s3sync.archive", "member_header", "tar header building (member_header)")
    patch("s3sync.partwriter", "PartWriter.write", "PartWriter.write: cut parts, copy, feed hashes + pipe")
    patch("s3sync.hashing", "Hasher.update", "hash: chunk + part + stream (3x Hasher.update)")
    patch("s3sync.partwriter", "Pipe.put", "pipe put (blocks while the uploader is behind)")
    patch("s3sync.partwriter", "Pipe.read", "pipe read (waits for the tar writer, joins + copies)")
    patch("s3sync.stores.s3", "S3Store.upload", "S3Store.upload (waits for the part's upload)")
    patch("s3transfer.upload", "UploadPartTask._main", "UploadPart request (network, server)")
    patch("s3transfer.upload", "PutObjectTask._main", "PutObject request")
    patch("s3transfer.upload", "UploadNonSeekableInputManager._read", "s3transfer: buffer part body")
    patch("s3sync.stores.s3", "S3Store.head", "HeadObject after upload")
    patch("s3sync.stores.s3", "S3Store.put", "PutObject manifest")


def install() -> None:
    # fetch workers
    patch("s3sync.stores.s3", "S3Store.read_range_into", "GET of a chunk: request, checks, body (extract)")
    patch("s3sync.stores.s3", "_body_readinto", "GET: pick the body reader")
    patch("s3sync.hashing", "digest", "xxh3-128 digest, one call (a chunk, or a small file)")
    _patch_future_result()
    # main thread: stream and tar
    patch("s3sync.engine", "OrderedReader._advance", "wait for next verified chunk")
    patch("tarfile", "TarFile.next", "tar header parsing (tarfile.next)")
    patch("tarfile", "data_filter", "tarfile.data_filter")
    patch("s3sync.archive", "SafeExtractor._check_name", "name checks")
    patch("s3sync.archive", "SafeExtractor._ensure_dir", "parent dir checks / mkdir")
    patch("s3sync.archive", "SafeExtractor._clear", "replace an existing name (_clear)")
    patch("s3sync.archive", "SafeExtractor._write_small", "small-file write: Python around the syscalls")
    patch("s3sync.archive", "SafeExtractor._write_regular", "file create + write + mode + mtime")
    patch("s3sync.hashing", "Hasher.update", "per-file digest (Hasher.update)")
    patch("s3sync.hashing", "Hasher.hexdigest", "per-file digest (Hasher.hexdigest)")
    patch("s3sync.journal", "Journal.add", "journal: index record (json)")
    patch("s3sync.journal", "Journal.checkpoint", "journal: checkpoint (fsync, 1/s)")
    patch("s3sync.archive", "SafeExtractor.finish_dirs", "finish dirs")
    patch("s3sync.pull", "_commit", "commit (marker + rename)")
    # system calls on the data path
    for call, label in (("open", "os.open (create file)"), ("write", "os.write (file data)"),
                        ("pwrite", "os.pwrite (part data)"), ("fchmod", "os.fchmod"), ("utime", "os.utime"),
                        ("close", "os.close"), ("ftruncate", "os.ftruncate")):
        patch("os", call, label)


def report(wall_s: float, concurrency: int) -> str:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    lines = [f"Wall {wall_s:.2f} s; process CPU user {ru.ru_utime:.2f} s + sys {ru.ru_stime:.2f} s = "
             f"{(ru.ru_utime + ru.ru_stime) / wall_s:.2f} cores busy on average (of {os.cpu_count()}); "
             f"peak RSS {ru.ru_maxrss / 1024:.0f} MiB.",
             "",
             "| thread | stage | calls | wall s (excl.) | CPU s (excl.) | % of wall |",
             "|---|---|---:|---:|---:|---:|"]
    order = {"main": 0, "file writer": 1, "file reader": 2, "fetch worker": 3, "feeder": 4, "uploader": 5,
             "s3transfer/other": 6}
    by_role: dict[str, float] = defaultdict(float)
    for (role, label), (w, c, n) in sorted(_stats.items(), key=lambda kv: (order.get(kv[0][0], 9), -kv[1][0])):
        by_role[role] += w
        lines.append(f"| {role} | {label} | {int(n):,} | {w:.2f} | {c:.2f} | {100 * w / wall_s:.0f} |")
    main_rest = wall_s - by_role.get("main", 0.0)
    lines.append(f"| main | (untimed: other Python in this thread, e.g. tarfile/OrderedReader glue, client set-up) "
                 f"| | {main_rest:.2f} | | {100 * main_rest / wall_s:.0f} |")
    lines.append("")
    for role in ("fetch worker", "file writer", "file reader", "s3transfer/other"):
        n = len(_threads.get(role, ()))
        if n:
            busy = by_role[role]
            lines.append(f"{role}: {n} threads, timed stages sum to {busy:.2f} thread-seconds = "
                         f"{busy / wall_s:.1f} threads busy on average.  ")
    return "\n".join(lines)


def main() -> int:
    t_import = time.perf_counter()
    command = sys.argv[1] if len(sys.argv) > 1 else ""
    if command not in ("pull", "publish"):
        print(__doc__, file=sys.stderr)
        return 2
    install_publish() if command == "publish" else install()
    from s3sync import cli

    argv = [command, *sys.argv[2:], "-q"]
    t0 = time.perf_counter()
    code = cli.main(argv)
    wall = time.perf_counter() - t0
    if code:
        print(f"s3sync {command} failed with exit code {code}", file=sys.stderr)
        return code
    concurrency = 8
    for i, a in enumerate(argv):
        if a == "--concurrency":
            concurrency = int(argv[i + 1])
    print(report(wall, concurrency))
    print(f"\n(import + patching took {t0 - t_import:.2f} s before the pull started)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
