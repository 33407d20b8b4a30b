"""A corpus of tar archives that real tools write, made at test time, and GNU tar as reference.

Issue 11: split archives that s3sync did not publish must extract to the same tree as GNU
tar's own ``tar -xf ARCHIVE -C DIR``. This module builds one small tree (``make_tree``) and
archives it with the tools people use (``make_archive(kind, src, out)`` for each of
``KINDS``), extracts with GNU tar (``gnu_extract``) and compares trees (``compare_trees``).

Import it as ``corpus`` (``tests/`` is on ``sys.path`` under pytest's default import mode):

    from corpus import KINDS, compare_trees, gnu_extract, make_archive, make_tree, safe_extract

Its fixtures, ``corpus_tree`` and ``corpus_archive(kind)``, are registered for every test by
``tests/conftest.py`` (``pytest_plugins``). It imports s3sync only inside its helpers: the
root conftest must work without the package.

Kinds:

- ``gnu``, ``oldgnu``, ``pax``, ``ustar``, ``v7``: ``tar --format=F`` of the tree's top-level
  entries (members ``a.txt``, ``sub/...``). ustar and v7 cannot hold every name (v7: none over
  99 bytes; ustar: a long name that cannot be split at a slash): GNU tar skips those members
  ("not dumped", exit status 2), and so does the corpus. A symlink target over 100 bytes is
  cut to 100 bytes without a word by GNU tar 1.34 in both formats (bsdtar's ustar leaves the
  symlink out); the extractions agree all the same.
- ``sparse-0.0``, ``sparse-0.1``, ``sparse-1.0``: ``tar --format=pax --sparse
  --sparse-version=V``; ``sparse-oldgnu``: ``tar --format=oldgnu --sparse`` (type 'S').
- ``bsdtar``, ``bsdtar-pax``, ``bsdtar-ustar``, ``bsdtar-gnutar``: ``bsdtar -c`` with its
  default format (restricted pax) or ``--format F`` (apt package ``libarchive-tools``).
- ``git``: ``git archive`` of a commit of the tree (a pax global header holding the commit
  id; git keeps no empty directory, no hard link, and only modes 644, 755 and symlinks).
- ``dot``: ``tar -C src -cf out .``: members ``./``, ``./a.txt``...
- ``topdir``: ``tar -C parent -cf out NAME``: everything under one top-level directory.
- ``gnu-label``: ``tar --format=gnu -V LABEL``: a volume label member (type 'V') first.

A tool that is missing fails the test under CI (``CI=true`` in the environment: ``.ci/run``
installs them all, see ``scripts/ci-deps.sh``) and skips it elsewhere, naming the package.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import tarfile
from collections.abc import Collection, Iterator
from pathlib import Path

import pytest

KINDS = (
    "gnu", "oldgnu", "pax", "ustar", "v7",
    "sparse-0.0", "sparse-0.1", "sparse-1.0", "sparse-oldgnu",
    "bsdtar", "bsdtar-pax", "bsdtar-ustar", "bsdtar-gnutar",
    "git", "dot", "topdir", "gnu-label",
)
"""Every archive kind ``make_archive`` builds."""

SPARSE_KINDS = ("sparse-0.0", "sparse-0.1", "sparse-1.0", "sparse-oldgnu")

TOOL_PACKAGES = {"tar": "tar", "bsdtar": "libarchive-tools", "git": "git", "split": "coreutils",
                 "gzip": "gzip", "zstd": "zstd", "bzip2": "bzip2", "xz": "xz-utils"}
"""Debian package of each tool the corpus (and the split-archive tests) run."""

BASE_MTIME = 1_600_000_000
"""Seconds since the epoch; every format holds whole seconds (only PAX holds fractions)."""
FRACTION_NS = 123_456_789

LONG_NAME = "long-" + "n" * 110 + ".txt"  # > 100 bytes: GNU 'L', pax path, no slash to split at
LONG_LINK_TARGET = "../" + "t" * 102  # a symlink target > 100 bytes: GNU 'K', pax linkpath
SPARSE_SIZE = 1_100_000
SPARSE_REGIONS = ((10_000, 5_000), (300_000, 7_000), (700_000, 100))
"""The sparse file: three data regions (offset, bytes) and a trailing hole up to SPARSE_SIZE."""

_TOOL_ENV = {"LC_ALL": "C.UTF-8", "TZ": "UTC"}


def require_tool(name: str) -> str:
    """The path of the command ``name``; fail (under CI) or skip the test if it is missing."""
    path = shutil.which(name)
    if path is None:
        what = f"{name} is not installed (Debian package {TOOL_PACKAGES.get(name, name)}; see scripts/ci-deps.sh)"
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(what)
        pytest.skip(what)
    return path


def _run(args: list[str], *, cwd: Path | None = None, env: dict[str, str] | None = None,
         ok: tuple[int, ...] = (0,)) -> subprocess.CompletedProcess[bytes]:
    full_env = {**os.environ, **_TOOL_ENV, **(env or {})}
    proc = subprocess.run(args, cwd=cwd, env=full_env, capture_output=True, check=False)
    if proc.returncode not in ok:
        raise AssertionError(f"{' '.join(map(str, args))} exited {proc.returncode}: "
                             f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return proc


def make_tree(root: Path) -> Path:
    """Make the corpus tree in ``root`` (created; must not exist) and return it.

    It holds regular files of 0, 5, 70,000 and 1 MiB + 1,000 bytes (the last above
    ``archive.SMALL_FILE``, written by the extractor's own thread), a sparse file
    (``SPARSE_REGIONS`` data, holes between and after), nested directories, an empty
    directory, a name over 100 bytes, a relative symlink inside the tree, one whose
    target is over 100 bytes (it still resolves inside the tree), two hard links to one
    file, a non-ASCII name, modes 600, 444, 755, 640 and 750/700 directories, and
    distinct mtimes on everything (symlinks included), half of them with a fraction of a
    second (``FRACTION_NS``).
    No setuid, setgid or sticky bit: s3sync never extracts them.
    """
    root.mkdir(parents=True)
    entries: list[Path] = []

    def file(rel: str, data: bytes, mode: int = 0o644) -> None:
        p = root / rel
        p.write_bytes(data)
        p.chmod(mode)
        entries.append(p)

    def directory(rel: str, mode: int = 0o755) -> None:
        (root / rel).mkdir()
        entries.append(root / rel)

    directory("sub")
    directory("sub/deep")
    directory("empty", 0o700)
    directory("t" * 102, 0o750)
    file("a.txt", b"hello\n")
    file("zero", b"", 0o600)
    file("medium.bin", bytes(range(256)) * 273 + b"tail", 0o640)
    file("sub/deep/big.bin", hashlib.sha256(b"big").digest() * (1024 * 1024 // 32) + b"x" * 1000, 0o755)
    file("sub/deep/ro.txt", b"read only\n", 0o444)
    file("sub/h\u00e9llo-\u00fcnic\u00f8de.txt", "caf\u00e9\n".encode())
    file(LONG_NAME, b"long name\n")
    file("t" * 102 + "/target.txt", b"target of the long link\n")
    with open(root / "sparse.bin", "wb") as f:
        for offset, size in SPARSE_REGIONS:
            f.seek(offset)
            f.write(bytes((offset // 1000 + i) % 251 + 1 for i in range(size)))
        f.truncate(SPARSE_SIZE)
    entries.append(root / "sparse.bin")
    os.link(root / "a.txt", root / "sub" / "hard-a")
    os.link(root / "a.txt", root / "sub" / "deep" / "hard-a2")
    (root / "sub" / "sym").symlink_to("../a.txt")
    entries.append(root / "sub" / "sym")
    (root / "sub" / "longsym").symlink_to(LONG_LINK_TARGET + "/target.txt")
    entries.append(root / "sub" / "longsym")
    # mtimes: files and symlinks first, then directories deepest first (creating an entry
    # moves its directory's mtime). Every other one has a fraction of a second (FRACTION_NS):
    # PAX keeps it (GNU tar and bsdtar write an mtime record), the other formats drop it.
    for i, p in enumerate(sorted(entries, key=lambda p: (p.is_dir() and not p.is_symlink(), -len(p.parts)))):
        t = (BASE_MTIME + 1000 * (i + 1)) * 1_000_000_000 + (FRACTION_NS if i % 2 else 0)
        os.utime(p, ns=(t, t), follow_symlinks=False)
    (root / "sub").chmod(0o755)
    os.utime(root / "sub", (BASE_MTIME + 77, BASE_MTIME + 77))
    os.utime(root, (BASE_MTIME + 99, BASE_MTIME + 99))
    return root


def _top_level(src: Path) -> list[str]:
    return sorted(os.listdir(src))


def make_archive(kind: str, src: Path, out: Path) -> Path:
    """Archive the tree ``src`` as ``kind`` (one of ``KINDS``) into the file ``out``; return ``out``.

    Raises:
        AssertionError: the tool failed (for ``ustar``/``v7``: other than skipping the names
            the format cannot hold).
        pytest.skip.Exception / pytest.fail.Exception: the tool is missing (see ``require_tool``).
    """
    src = Path(src).resolve()
    out = Path(out).resolve()
    if kind in ("gnu", "oldgnu", "pax", "ustar", "v7"):
        tar = require_tool("tar")
        proc = _run([tar, f"--format={kind}", "-cf", str(out), "-C", str(src), *_top_level(src)],
                    ok=(0, 2) if kind in ("ustar", "v7") else (0,))
        if proc.returncode:
            lines = [line for line in proc.stderr.decode(errors="replace").splitlines()
                     if "not dumped" not in line and "Exiting with failure status" not in line]
            assert not lines, f"tar --format={kind}: {lines}"
    elif kind in SPARSE_KINDS:
        tar = require_tool("tar")
        version = kind.removeprefix("sparse-")
        fmt = ["--format=oldgnu"] if version == "oldgnu" else ["--format=pax", f"--sparse-version={version}"]
        _run([tar, *fmt, "--sparse", "-cf", str(out), "-C", str(src), *_top_level(src)])
    elif kind.startswith("bsdtar"):
        bsdtar = require_tool("bsdtar")
        fmt = ["--format", kind.removeprefix("bsdtar-")] if kind != "bsdtar" else []
        _run([bsdtar, *fmt, "-cf", str(out), "-C", str(src), *_top_level(src)])
    elif kind == "git":
        _git_archive(src, out)
    elif kind == "dot":
        _run([require_tool("tar"), "-cf", str(out), "-C", str(src), "."])
    elif kind == "topdir":
        _run([require_tool("tar"), "-cf", str(out), "-C", str(src.parent), src.name])
    elif kind == "gnu-label":
        _run([require_tool("tar"), "--format=gnu", "-V", "corpus volume", "-cf", str(out), "-C", str(src),
              *_top_level(src)])
    else:
        raise ValueError(f"unknown archive kind {kind!r}; one of {', '.join(KINDS)}")
    return out


def _git_archive(src: Path, out: Path) -> None:
    """``git archive`` of one commit of ``src``, with a repository kept outside the tree."""
    git = require_tool("git")
    gitdir = out.with_name(out.name + ".git")
    env = {"GIT_DIR": str(gitdir), "GIT_WORK_TREE": str(src), "HOME": str(out.parent),
           "GIT_CONFIG_NOSYSTEM": "1", "GIT_AUTHOR_NAME": "corpus", "GIT_AUTHOR_EMAIL": "corpus@example.invalid",
           "GIT_COMMITTER_NAME": "corpus", "GIT_COMMITTER_EMAIL": "corpus@example.invalid",
           "GIT_AUTHOR_DATE": f"@{BASE_MTIME + 5} +0000", "GIT_COMMITTER_DATE": f"@{BASE_MTIME + 5} +0000"}
    _run([git, "init", "-q"], env=env)
    _run([git, "add", "-A"], env=env, cwd=src)
    _run([git, "commit", "-q", "-m", "corpus"], env=env, cwd=src)
    _run([git, "archive", "--format=tar", "-o", str(out), "HEAD"], env=env, cwd=src)
    shutil.rmtree(gitdir)


CODECS = {"gzip": ("gzip", ".gz"), "zstd": ("zstd", ".zst"), "bzip2": ("bzip2", ".bz2"), "xz": ("xz", ".xz")}
"""Compression name -> (command, suffix) for ``compress``."""


def compress(archive: Path, codec: str) -> Path:
    """Compress ``archive`` with the real tool (``gzip -n``, ``zstd -q``, ``bzip2``, ``xz``),
    keeping the original; return the new file (``archive`` plus the codec's suffix)."""
    tool, suffix = CODECS[codec]
    out = archive.with_name(archive.name + suffix)
    with open(archive, "rb") as src, open(out, "wb") as dst:
        args = [require_tool(tool), "-c"] + (["-n"] if codec == "gzip" else ["-q"] if codec == "zstd" else [])
        proc = subprocess.run(args, stdin=src, stdout=dst, stderr=subprocess.PIPE, check=False)
    if proc.returncode:
        raise AssertionError(f"{tool} exited {proc.returncode}: {proc.stderr.decode(errors='replace')}")
    return out


def split_pieces(archive: Path, out_dir: Path, pieces: int, style: str = "numeric", prefix: str | None = None
                 ) -> list[Path]:
    """Cut ``archive`` into ``pieces`` files of (nearly) equal size with GNU ``split -n``,
    into ``out_dir`` (created), in order. ``style``: ``numeric`` (``-d``: NAME.00, NAME.01...),
    ``alpha`` (``xaa``-style: NAME.aa, NAME.ab...), ``hex`` (``-x``). ``prefix`` defaults to
    the archive's name and a dot. Return the pieces in order (their concatenation is
    ``archive``)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    prefix = f"{archive.name}." if prefix is None else prefix
    flags = {"numeric": ["-d"], "alpha": [], "hex": ["-x"]}[style]
    _run([require_tool("split"), *flags, "-n", str(pieces), str(archive), prefix], cwd=out_dir)
    made = sorted(p for p in out_dir.iterdir() if p.name.startswith(prefix))
    assert len(made) == pieces, made
    return made


def gnu_extract(archive: Path, dest: Path, strip: int = 0) -> Path:
    """Extract ``archive`` into ``dest`` (created if missing) with GNU tar, the reference:
    ``tar -xf ARCHIVE -C DEST --no-same-owner [--strip-components=N]``. Return ``dest``."""
    tar = require_tool("tar")
    dest.mkdir(parents=True, exist_ok=True)
    args = [tar, "-xf", str(archive), "-C", str(dest), "--no-same-owner"]
    if strip:
        args.append(f"--strip-components={strip}")
    _run(args)
    return dest


def _walk(root: Path) -> dict[str, os.stat_result]:
    found: dict[str, os.stat_result] = {}
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(os.path.join(root, rel) if rel else root) as it:
            for entry in it:
                sub = f"{rel}/{entry.name}" if rel else entry.name
                st = entry.stat(follow_symlinks=False)
                found[sub] = st
                if stat.S_ISDIR(st.st_mode):
                    stack.append(sub)
    return found


def _kind(mode: int) -> str:
    return {stat.S_IFREG: "file", stat.S_IFDIR: "dir", stat.S_IFLNK: "symlink"}.get(stat.S_IFMT(mode), "special")


def _same_bytes(a: str, b: str) -> bool:
    with open(a, "rb") as fa, open(b, "rb") as fb:
        while True:
            x, y = fa.read(1 << 20), fb.read(1 << 20)
            if x != y:
                return False
            if not x:
                return True


def compare_trees(a: Path, b: Path, *, root: bool = False, ignore: tuple[str, ...] = (),
                  mtime_ignored: Collection[str] = ()) -> list[str]:
    """What differs between the trees under ``a`` and ``b``, one line each; [] if they agree.

    Compared: the set of paths, each path's type, file bytes, symlink targets, which paths
    are hard links to one another, permission bits (all 12), and mtimes to the nanosecond
    (files, directories, and symlinks themselves: lstat). With ``root``, the mode and mtime
    of ``a`` and ``b`` themselves too (path ``.``). ``ignore`` lists top-level names left
    out (e.g. ``.s3sync``); ``mtime_ignored`` paths whose mtimes are not compared (a
    directory that has no member of its own: see ``implicit_dirs``).
    """
    wa, wb = _walk(a), _walk(b)
    for name in ignore:
        for w in (wa, wb):
            for rel in [r for r in w if r == name or r.startswith(name + "/")]:
                del w[rel]
    diffs = [f"{rel}: only in {a}" for rel in sorted(wa.keys() - wb.keys())]
    diffs += [f"{rel}: only in {b}" for rel in sorted(wb.keys() - wa.keys())]
    pairs = [(rel, wa[rel], wb[rel]) for rel in sorted(wa.keys() & wb.keys())]
    if root:
        pairs.insert(0, (".", os.lstat(a), os.lstat(b)))
    for rel, sa, sb in pairs:
        ka, kb = _kind(sa.st_mode), _kind(sb.st_mode)
        if ka != kb:
            diffs.append(f"{rel}: {ka} in {a}, {kb} in {b}")
            continue
        if stat.S_IMODE(sa.st_mode) != stat.S_IMODE(sb.st_mode) and ka != "symlink":
            diffs.append(f"{rel}: mode {stat.S_IMODE(sa.st_mode):04o} != {stat.S_IMODE(sb.st_mode):04o}")
        if sa.st_mtime_ns != sb.st_mtime_ns and rel not in mtime_ignored:
            diffs.append(f"{rel}: mtime {sa.st_mtime_ns} ns != {sb.st_mtime_ns} ns")
        pa, pb = os.path.join(a, rel), os.path.join(b, rel)
        if ka == "file":
            if sa.st_size != sb.st_size:
                diffs.append(f"{rel}: size {sa.st_size} != {sb.st_size}")
            elif not _same_bytes(pa, pb):
                diffs.append(f"{rel}: contents differ")
        elif ka == "symlink" and os.readlink(pa) != os.readlink(pb):
            diffs.append(f"{rel}: symlink to {os.readlink(pa)!r} != {os.readlink(pb)!r}")
    diffs += _hard_link_diffs(wa, wb, a, b)
    return diffs


def implicit_dirs(archive: Path, strip: int = 0) -> set[str]:
    """Directories that members of ``archive`` (after stripping ``strip`` components) lie in
    but that have no member of their own: tar makes them when it needs them, so their
    mtime is the time of the extraction (and their mode 0777 less the umask)."""
    named: set[str] = set()
    needed: set[str] = set()
    with tarfile.open(archive) as tar:
        for member in tar:
            parts = [p for p in member.name.split("/") if p][strip:]
            parts = [p for p in parts if p != "."]
            if not parts:
                continue
            if member.isdir():
                named.add("/".join(parts))
            needed.update("/".join(parts[:i]) for i in range(1, len(parts)))
    return needed - named


def _hard_link_diffs(wa: dict[str, os.stat_result], wb: dict[str, os.stat_result], a: Path, b: Path) -> list[str]:
    """Paths that share an inode in one tree but not in the other."""

    def groups(w: dict[str, os.stat_result]) -> set[frozenset[str]]:
        by_inode: dict[tuple[int, int], set[str]] = {}
        for rel, st in w.items():
            if stat.S_ISREG(st.st_mode):
                by_inode.setdefault((st.st_dev, st.st_ino), set()).add(rel)
        return {frozenset(g) for g in by_inode.values() if len(g) > 1}

    ga, gb = groups(wa), groups(wb)
    return ([f"hard links {sorted(g)} only in {a}" for g in sorted(ga - gb, key=sorted)]
            + [f"hard links {sorted(g)} only in {b}" for g in sorted(gb - ga, key=sorted)])


def allocated_bytes(path: Path) -> int:
    """Bytes the file system allocated to ``path`` (``st_blocks`` counts 512-byte units)."""
    return os.lstat(path).st_blocks * 512


def stream_file(path: Path, block: int = 64 * 1024):
    """An ``engine.OrderedReader`` over the file ``path`` read in ``block``-byte chunks, as a
    pull feeds ``SafeExtractor``: one buffer, overwritten (with 0xA5) as soon as the reader
    asks for the next chunk, so a reader that kept a stale view would see garbage."""
    from s3sync.engine import OrderedReader
    from s3sync.planning import ChunkJob

    size = os.path.getsize(path)

    def chunks() -> Iterator[tuple[ChunkJob, memoryview]]:
        buf = bytearray(block)
        with open(path, "rb") as f:
            offset = 0
            while n := f.readinto(buf):
                yield ChunkJob(0, str(path), "", offset // block, offset, n, "", offset), memoryview(buf)[:n]
                buf[:] = b"\xa5" * block
                offset += n

    return OrderedReader(chunks(), 0, size)


def safe_extract(archive: Path, dest: Path, strip: int = 0, block: int = 64 * 1024) -> list:
    """Extract ``archive`` into ``dest`` (created if missing) as a pull does: streamed through
    ``SafeExtractor.extract`` (``stream_file``), then ``finish_dirs`` and ``finish_root``.
    Return the ``MemberRecord``s reported, in stream order."""
    from s3sync.archive import SafeExtractor

    dest.mkdir(parents=True, exist_ok=True)
    records = []
    extractor = SafeExtractor(dest, strip_components=strip)
    extractor.extract(stream_file(archive, block), lambda _offset, record: records.append(record))
    extractor.finish_dirs([r for r in records if r.kind == "dir"])
    extractor.finish_root()
    return records


@pytest.fixture(scope="session")
def corpus_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The corpus tree (``make_tree``), made once per session: treat it as read-only."""
    return make_tree(tmp_path_factory.mktemp("corpus") / "tree")


@pytest.fixture(scope="session")
def corpus_archive(corpus_tree: Path, tmp_path_factory: pytest.TempPathFactory):
    """``corpus_archive(kind) -> Path``: the archive of ``corpus_tree`` of that kind, made
    once per session (read-only)."""
    made: dict[str, Path] = {}
    where = tmp_path_factory.mktemp("corpus-archives")

    def get(kind: str) -> Path:
        if kind not in made:
            made[kind] = make_archive(kind, corpus_tree, where / f"{kind}.tar")
        return made[kind]

    return get
