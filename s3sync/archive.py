"""Tar writing and safe tar extraction: the only module that imports ``tarfile``.

Writing: a deterministic POSIX.1-2001 (PAX) stream of a directory: members in
sorted order (directory, then its entries by name), owner 0/0 with empty owner
names, integer mtimes, permission bits kept. Special files and symlinks that
leave the tree are refused. Readers: GNU tar, bsdtar, Python's tarfile.

Extraction: headers are parsed by tarfile, every member goes through our own
checks and then tarfile's ``data`` filter (PEP 706), and member data is written
straight from the verified chunk buffers with ``os.write``. Guards against the
classic tar bugs: absolute names and ``..`` (CVE-2007-4559), writing through a
symlink planted by an earlier member (CVE-2023-24329-style link following),
links out of the tree, and device files. Besides s3sync's own streams it reads what
other tools write (issue 11; tests/integration/test_extract_corpus.py compares with
GNU tar's own extraction): GNU tar's gnu, oldgnu, pax, ustar and v7 formats, GNU sparse
members (old GNU type 'S', PAX 0.0, 0.1 and 1.0), ``./`` names and the root member
``./``, pax global headers (``git archive``), bsdtar's output, and ``--strip-components``.
"""

from __future__ import annotations

import array
import errno
import io
import math
import os
import re
import stat
import struct
import tarfile
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Protocol

from . import hashing, interrupts
from .errors import (
    DestinationError,
    InsufficientSpaceError,
    SourceError,
    UnsafeArchiveError,
)
from .index import MemberRecord, symlink_target_ok

# MemberRecord and symlink_target_ok are defined with the member index (core) and re-exported here.

COPY_BUFSIZE = 1024 * 1024
WRITE_STEP = 1024 * 1024
"""Largest single write()/pwrite() (bytes). One 16 MiB write cost 5x the system CPU of
sixteen 1 MiB writes here (perf: copy_folio_from_iter_atomic, Linux 6.18, ext4), which
made `pull --no-extract` 3x slower than s5cmd."""
SMALL_FILE = 1024 * 1024
"""Regular files up to this size (bytes) are written by the writer pool."""
MAX_PENDING = 256
MAX_PENDING_BYTES = 64 * 1024 * 1024
"""Bound on files (count, bytes) copied out and waiting for a writer thread."""
BATCH_FILES = 32
BATCH_BYTES = 256 * 1024
"""A writer task takes up to this many small files or bytes. (A half-filled batch is handed
over, and every batch written and recorded, before the stream waits for a chunk that is not
there yet: see ``extract``.)"""
METADATA_DIR = ".s3sync"
"""Top-level directory a pull adds to a dataset (manifest copy, completion marker);
never published."""


@dataclass(frozen=True, slots=True)
class TreeStats:
    """What a tar stream holds: regular ``files``, their total ``extracted_size`` in bytes,
    and all ``members`` (files, directories, symlinks)."""

    files: int
    extracted_size: int
    members: int


@dataclass(frozen=True, slots=True)
class _Entry:
    rel: str
    path: str
    st: os.stat_result
    link: str | None


def scan_tree(src: Path) -> list[_Entry]:
    """Every entry of ``walk_tree(src)``, as a list (small trees, tests).

    Raises:
        SourceError: as ``walk_tree``.
    """
    return list(walk_tree(src))


def walk_tree(src: Path, known: Callable[[int, str], os.stat_result | None] | None = None) -> Iterator[_Entry]:
    """Walk ``src`` in deterministic order and validate every entry, yielding entries as
    they are found: the directory, then its entries by the bytes of their names, depth
    first. Memory is bounded by the names of the directories on the current path (never
    the whole tree: a publish of a million files walks it twice, see ``TreeSurvey``).
    ``.s3sync`` directories (s3sync's own state: ``src``'s, and that of datasets pulled or
    built inside it) are left out, at any depth.

    Args:
        known: ``known(index, rel)``, the ``lstat`` of the regular file that an earlier walk
            met at the same place (the index-th entry, at ``rel``), or None: the entry is
            ``lstat``-ed (``TreeSurvey.known``: a publish's second walk). Whoever reads the
            file must check it against that stat (``open_regular`` does).

    Raises:
        SourceError: ``src`` is not a readable directory, or holds a special file,
            an absolute symlink or a symlink leaving the tree.
    """
    if not src.is_dir():
        raise SourceError(f"{src}: not a directory", hint="give the dataset's directory as SRC_DIR")

    def names_of(dir_path: str) -> Iterator[str]:
        try:
            with os.scandir(dir_path) as it:
                names = sorted((e.name for e in it), key=lambda n: n.encode("utf-8", "surrogateescape"))
        except OSError as err:
            raise SourceError(f"{dir_path}: cannot read directory ({err.strerror})") from err
        return iter(names)

    root = os.fspath(src)
    # (directory path, its relative path, the names not visited yet)
    stack: list[tuple[str, str, Iterator[str]]] = [(root, "", names_of(root))]
    count = 0
    while stack:
        dir_path, rel_dir, names = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            continue
        if not rel_dir and name == METADATA_DIR:
            continue
        path = os.path.join(dir_path, name)
        rel = f"{rel_dir}/{name}" if rel_dir else name
        st = known(count, rel) if known is not None else None
        if st is not None:
            count += 1
            yield _Entry(rel, path, st, None)
            continue
        try:
            st = os.lstat(path)
        except OSError as err:
            raise SourceError(f"{path}: cannot stat ({err.strerror})") from err
        if stat.S_ISDIR(st.st_mode):
            if name == METADATA_DIR:
                # s3sync's own state in a dataset inside SRC_DIR (a pulled or built one:
                # build journals, downloaded source lists): never part of a dataset.
                continue
            count += 1
            yield _Entry(rel, path, st, None)
            stack.append((path, rel, names_of(path)))
        elif stat.S_ISREG(st.st_mode):
            count += 1
            yield _Entry(rel, path, st, None)
        elif stat.S_ISLNK(st.st_mode):
            target = os.readlink(path)
            if not symlink_target_ok(rel, target):
                raise SourceError(f"{path}: symlink to {target!r} may leave the dataset",
                                  hint="make the link relative, inside SRC_DIR, with '..' only at its start")
            count += 1
            yield _Entry(rel, path, st, target)
        else:
            raise SourceError(f"{path}: special file (device, FIFO or socket) cannot be published",
                              hint="remove it from SRC_DIR")


class TreeSurvey:
    """What a publish needs to know of a tree before writing it, gathered from one walk in
    bounded memory: counts, bytes, the entries without owner read permission (the first
    few), and, when asked, the paths of its regular files and symlinks (for the captions
    check).

    Use ``watch(walk_tree(src))`` to pass the walk through it.

    It also keeps, for up to ``keep_stats`` members, what the second walk of a publish
    needs of each regular file's ``lstat`` (``known``), packed: 64 bytes a member (64 MB
    for a million files), not the ~1 KiB of a ``stat_result`` and its entry. The second
    walk then lists the directories again (an entry that appeared or vanished is seen) but
    makes no ``lstat`` for those files: the tar writer checks each file against this
    record when it opens it and after reading it (``open_regular``, ``check_unchanged``),
    as it would against a fresh ``lstat``.

    Args:
        keep_paths: also keep every regular file's path (``files``) and every symlink
            (``links``); otherwise only the symlinks.
        keep_stats: members whose stats are kept at most (0: none).
    """

    SHOW = 3
    _FIELDS = 7  # hash(rel), st_mode, st_size, st_mtime_ns, st_ctime_ns, st_dev, st_ino

    def __init__(self, keep_paths: bool = False, keep_stats: int = 0) -> None:
        self.members = 0
        self.files = 0
        self.file_bytes = 0
        self.closed: list[str] = []
        self.closed_count = 0
        self.keep_paths = keep_paths
        self.file_paths: set[str] = set()
        self.links: dict[str, str] = {}
        self._keep_stats = keep_stats
        self._stats: array.array[int] | None = array.array("q") if keep_stats else None
        self._mtimes: array.array[float] = array.array("d")

    def watch(self, entries: Iterable[_Entry]) -> Iterator[_Entry]:
        """Yield ``entries`` unchanged, counting them."""
        rx = stat.S_IRUSR | stat.S_IXUSR
        for e in entries:
            self.members += 1
            mode = e.st.st_mode
            if self._stats is not None:
                self._keep(e)
            if e.link is not None:
                self.links[e.rel] = e.link
            elif stat.S_ISREG(mode):
                self.files += 1
                self.file_bytes += e.st.st_size
                if self.keep_paths:
                    self.file_paths.add(e.rel)
                if not mode & stat.S_IRUSR:
                    self._closed(e.rel)
            elif mode & rx != rx:
                self._closed(e.rel)
            yield e

    def _keep(self, e: _Entry) -> None:
        assert self._stats is not None
        if self.members > self._keep_stats:
            self._stats, self._mtimes = None, array.array("d")  # too many: the second walk stats them
            return
        st = e.st
        self._stats.extend((hash(e.rel), st.st_mode, st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                            st.st_dev, st.st_ino))
        self._mtimes.append(st.st_mtime)

    def known(self, index: int, rel: str) -> os.stat_result | None:
        """The kept ``lstat`` of the ``index``-th member watched (from 0) if it is a regular
        file at ``rel`` (for ``walk_tree``'s ``known``); otherwise None. Only the fields
        publish reads are real: mode, inode, device, size, mtime (seconds and ns), ctime (ns)."""
        stats = self._stats
        at = index * self._FIELDS
        if stats is None or at + self._FIELDS > len(stats) or stats[at] != hash(rel) \
                or not stat.S_ISREG(stats[at + 1]):
            return None
        _, mode, size, mtime_ns, ctime_ns, dev, ino = stats[at:at + self._FIELDS]
        mtime = self._mtimes[index]
        return os.stat_result((mode, ino, dev, 0, 0, 0, size, 0, int(mtime), ctime_ns // NS,
                               0.0, mtime, ctime_ns / NS, 0, mtime_ns, ctime_ns))

    def _closed(self, rel: str) -> None:
        self.closed_count += 1
        if len(self.closed) < self.SHOW:
            self.closed.append(rel)

    def unreadable_warning(self) -> str | None:
        """``owner_unreadable_warning`` of the entries watched."""
        return _unreadable_text(self.closed, self.closed_count)


def owner_unreadable_warning(entries: Iterable[_Entry], show: int = 3) -> str | None:
    """A warning naming the regular files published with no read permission for their
    owner (mode 0000, 0200...) and the directories without owner read or search
    permission, or None if there are none.

    Publish (as root, which reads anything: CAP_DAC_OVERRIDE) can read them; a pull keeps
    the mode, so a non-root user cannot read them back, nor ``verify`` them.
    """
    rx = stat.S_IRUSR | stat.S_IXUSR
    closed = [e.rel for e in entries if e.link is None and (
        stat.S_ISREG(e.st.st_mode) and not e.st.st_mode & stat.S_IRUSR
        or stat.S_ISDIR(e.st.st_mode) and e.st.st_mode & rx != rx)]
    return _unreadable_text(closed[:show], len(closed))


def _unreadable_text(shown: list[str], count: int) -> str | None:
    if not count:
        return None
    more = f" and {count - len(shown)} more" if count > len(shown) else ""
    return (f"warning: {count} entr{'y' if count == 1 else 'ies'} published with no owner read "
            f"permission ({', '.join(map(repr, shown))}{more}); a non-root pull cannot read them back")


def _tarinfo(entry: _Entry) -> tarfile.TarInfo:
    info = tarfile.TarInfo(entry.rel)
    st = entry.st
    info.mode = stat.S_IMODE(st.st_mode)
    info.mtime = int(st.st_mtime)
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if entry.link is not None:
        info.type = tarfile.SYMTYPE
        info.linkname = entry.link
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    else:
        info.type = tarfile.REGTYPE
        info.size = st.st_size
    return info


def _ustar_constants() -> tuple[bytes, bytes]:
    """The header fields that are the same for every member s3sync writes, as tarfile
    writes them: uid and gid 0 (offsets 108-124), and magic, version, empty owner names,
    device numbers and prefix (offsets 257-512) -- taken from tarfile itself, so that
    ``_ustar_header`` follows whatever this Python's tarfile writes there."""
    info = tarfile.TarInfo("x")
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    buf = info.tobuf(tarfile.USTAR_FORMAT, "ascii", "strict")
    return buf[108:124], buf[257:]


_UID_GID, _USTAR_TAIL = _ustar_constants()


def member_header(info: tarfile.TarInfo) -> bytes:
    """The member's header block(s), exactly as ``TarInfo.tobuf`` writes them in PAX format.

    Most members need no PAX extended header (ASCII name and link name under 100 bytes,
    size under 8 GiB, integer mtime from 1970 to 2242, owner 0/0 with empty names); for
    them tarfile's PAX writer emits a plain ustar header, which ``_ustar_header`` builds
    in a few microseconds (``tobuf`` takes ~22 us: 2.2 s of a publish of 100,000 files).
    tests/property/test_tar_writer_props.py pins both paths to tarfile's bytes.
    """
    if info.name.isascii() and len(info.name) < 100 and info.linkname.isascii() and len(info.linkname) < 100 \
            and 0 <= info.size < 8**11 and 0 <= info.mtime < 8**11 and isinstance(info.mtime, int) \
            and info.type in (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE) \
            and info.uid == info.gid == 0 and info.uname == info.gname == "":
        return _ustar_header(info)
    return info.tobuf(tarfile.PAX_FORMAT, "utf-8", "surrogateescape")


def _ustar_header(info: tarfile.TarInfo) -> bytes:
    """A POSIX.1-1988 ustar header block (POSIX.1-2017, pax, "ustar Interchange Format"):
    NUL-padded name and link name, octal numbers with a NUL, and the checksum (the sum of
    the block's bytes with the checksum field as 8 spaces) as tarfile writes it: six
    octal digits, NUL, space. Only for the members ``member_header`` lets through."""
    name = info.name + "/" if info.type == tarfile.DIRTYPE and not info.name.endswith("/") else info.name
    block = b"".join((
        name.encode("ascii").ljust(100, b"\0"), b"%07o\0" % (info.mode & 0o7777), _UID_GID,
        b"%011o\0%011o\0        " % (info.size, info.mtime), info.type,
        info.linkname.encode("ascii").ljust(100, b"\0"), _USTAR_TAIL,
    ))
    return b"%s%06o\0 %s" % (block[:148], sum(block), block[156:])


def _padding(size: int) -> bytes:
    """NUL bytes that fill a member's data up to the next 512-byte block."""
    return bytes(-size % tarfile.BLOCKSIZE)


class SourceChanged(OSError):
    """A file differs from what the scan recorded (size, mtime or ctime), or changed while
    being read: publishing it would put bytes that match neither state in the stream."""


def open_regular(path: str | Path, expect: os.stat_result | None = None) -> BinaryIO:
    """Open ``path`` for reading (unbuffered) only if it is still a regular file and, given
    ``expect`` (the scan's ``lstat``), still the same file (device and inode) in the same
    state (size, and mtime and ctime to the nanosecond: see ``check_unchanged``).

    Between the scan and the read a file may be replaced: by a FIFO (a plain ``open``
    would block for ever waiting for a writer), a device, a symlink, or a directory above
    it by a symlink (either would be followed out of the tree). The file is opened with
    ``O_NONBLOCK | O_NOFOLLOW`` (no FIFO wait; a final symlink fails with ELOOP) and checked
    with ``fstat``. A file under a lease (Samba oplocks) makes that open fail with EAGAIN
    (open(2)); it is then opened with ``O_PATH``, checked, and opened for reading through
    ``/proc/self/fd`` without ``O_NONBLOCK``, which waits for the lease break as any
    program's open does (proc(5)).

    Raises:
        SourceChanged: the file's size, mtime or ctime differ from ``expect``.
        OSError: the file cannot be opened, or is no longer the regular file scanned.
    """
    fd = _open_fd(path, expect)
    try:
        return open(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def _open_fd(path: str | Path, expect: os.stat_result | None = None) -> int:
    """``open_regular``'s open and checks; returns the raw descriptor (the caller closes it).

    Raises:
        SourceChanged, OSError: as ``open_regular``.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise OSError(errno.ELOOP, "replaced by a symbolic link", str(path)) from err
        if err.errno not in (errno.EAGAIN, errno.EWOULDBLOCK):
            raise
        fd = _open_leased(path)
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise OSError(errno.EINVAL, "no longer a regular file", str(path))
        if expect is not None:
            if (st.st_dev, st.st_ino) != (expect.st_dev, expect.st_ino):
                raise OSError(errno.ESTALE, "replaced by another file since the scan", str(path))
            check_unchanged(expect, st)
        return fd
    except BaseException:
        os.close(fd)
        raise


def check_unchanged(expect: os.stat_result, st: os.stat_result) -> None:
    """Refuse a file whose ``fstat`` (``st``) differs from the scan's ``lstat`` (``expect``).

    As GNU tar does ("file changed as we read it", tar's ``dump_regular_file`` and
    ``file_changed``): size, mtime and ctime compared, here to the nanosecond. Any write
    sets mtime and ctime (POSIX write(2), truncate(2)); a tool that puts the mtime back
    (``touch -r``, rsync) still moves ctime, which no user can set; a chmod, a new link
    and an unlink move ctime too. Called when the file is opened (the header, written
    from the scan, must describe the bytes read) and after its last byte is read (no
    write happened in between). A write landing in the same timestamp tick as the scan
    cannot be seen by any stat-based check (the kernel's clock tick: up to a few
    milliseconds; Linux 6.13+ multigrain timestamps make ctime fine-grained once read).

    Raises:
        SourceChanged: naming what differs (never a size the file does not have).
    """
    if st.st_size != expect.st_size:
        if st.st_size > expect.st_size:
            raise SourceChanged(f"size changed: more than {expect.st_size} bytes")
        raise SourceChanged(f"size changed: ended {expect.st_size - st.st_size} bytes early")
    if st.st_mtime_ns != expect.st_mtime_ns:
        raise SourceChanged("modified since the scan (mtime changed)")
    if st.st_ctime_ns != expect.st_ctime_ns:
        raise SourceChanged("modified since the scan (ctime changed)")


class NotRegularFile(OSError):
    """A file pull keeps its state in is something else (a FIFO, a device, a directory)."""


def open_regular_for_write(name: str | Path, flags: int, mode: int, dir_fd: int | None = None) -> int:
    """``os.open`` for writing a file pull owns, refusing anything but a regular file.

    ``O_NONBLOCK`` for the open only: opening a FIFO planted at ``name`` for writing would
    otherwise wait for ever for a reader (fifo(7)). Pass ``O_NOFOLLOW`` in ``flags`` to
    refuse a symlink (ELOOP).

    Raises:
        NotRegularFile: ``name`` exists and is not a regular file.
        OSError: the open failed.
    """
    try:
        fd = os.open(name, flags | os.O_NONBLOCK, mode, dir_fd=dir_fd)
    except OSError as err:
        if err.errno == errno.ENXIO:  # a FIFO without a reader (open(2))
            raise NotRegularFile(errno.ENXIO, "a FIFO, not a regular file", os.fspath(name)) from err
        raise
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegularFile(errno.EINVAL, "not a regular file", os.fspath(name))
        os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def _open_leased(path: str | Path) -> int:
    """Open a file that has a lease for reading, waiting for the lease break (see
    ``open_regular``); return the descriptor."""
    pfd = os.open(path, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        if not stat.S_ISREG(os.fstat(pfd).st_mode):
            raise OSError(errno.EINVAL, "no longer a regular file", str(path))
        return os.open(f"/proc/self/fd/{pfd}", os.O_RDONLY | os.O_CLOEXEC)
    finally:
        os.close(pfd)


_NOWAIT = getattr(os, "RWF_NOWAIT", 0) if hasattr(os, "preadv") else 0
"""preadv2's RWF_NOWAIT (Linux 4.14+): read only what the page cache holds, else EAGAIN.
Set to 0 once a file system refuses the flag (EOPNOTSUPP): every read then blocks."""


def _pread(fd: int, size: int, nowait: bool = False) -> bytes | None:
    """The first ``size`` + 1 bytes of ``fd``, or all of it if it is shorter: one read for a
    file of ``size`` bytes (the one byte more tells a file that grew). A read that returns
    fewer than ``size`` bytes (a file that shrank, a file system that returns less, a file
    partly cached) is followed by more until ``size`` + 1 bytes or the end; one that returns
    exactly ``size`` is taken as the end: the caller's ``fstat`` after the read checks that
    the file still has ``size`` bytes.

    With ``nowait``, None if none of them is in the page cache (``RWF_NOWAIT``): reading
    would wait for the disk (always None where the flag is not supported).
    """
    n = size + 1
    if nowait:
        if not _NOWAIT:
            return None
        buf = bytearray(n)
        try:
            got = os.preadv(fd, [buf], 0, _NOWAIT)
        except OSError as err:
            if err.errno in (errno.EOPNOTSUPP, errno.EINVAL):
                _disable_nowait()
            elif err.errno != errno.EAGAIN:
                raise
            return None
        del buf[got:]
        data = bytes(buf)
    else:
        data = os.read(fd, n)
    if 0 < len(data) < size:
        parts, got = [data], len(data)
        while got < n and (more := os.pread(fd, n - got, got)):
            parts.append(more)
            got += len(more)
        data = b"".join(parts)
    return data


def _disable_nowait() -> None:
    global _NOWAIT
    _NOWAIT = 0


def _read_small(path: str, expect: os.stat_result, nowait: bool = False) -> bytes | None:
    """The bytes of a small file, exactly its scanned size (``expect.st_size``), read while
    the file stayed as scanned (``check_unchanged`` at open and after the read).

    One read of size + 1 bytes reads a file that kept its size, on the descriptor itself
    (no file object): open, fstat, read, fstat, close per file. A short read (a file that
    shrank, or a file system that returns less) reads on to the end. The ``fstat`` after the
    read is the one system call the change check adds.

    Args:
        nowait: return None, without waiting, if the file's bytes are not in the page cache
            (``_pread``): the caller hands it to a reader thread.

    Raises:
        SourceChanged: the file changed since the scan or while being read.
        OSError: as ``_copy_exact``, whose messages it shares.
    """
    size = expect.st_size
    fd = _open_fd(path, expect)
    try:
        data = _pread(fd, size, nowait)
        if data is None:
            return None
        after = os.fstat(fd)
    finally:
        os.close(fd)
    if len(data) > size:
        raise SourceChanged(f"size changed: more than {size} bytes")
    if len(data) < size:
        raise SourceChanged(f"size changed: ended {size - len(data)} bytes early")
    check_unchanged(expect, after)
    return data


def _read_batch(files: list[tuple[str, os.stat_result]]) -> list[bytes | OSError]:
    """Contents of small files (path, scanned ``lstat``), or the error reading each one
    (reported at its member)."""
    out: list[bytes | OSError] = []
    for path, expect in files:
        try:
            data = _read_small(path, expect)
            assert data is not None  # it waited for the disk
            out.append(data)
        except OSError as err:
            out.append(err)
    return out


def _small(entry: _Entry) -> bool:
    return entry.link is None and stat.S_ISREG(entry.st.st_mode) and entry.st.st_size <= SMALL_FILE


def _read_ahead(entries: Iterable[_Entry], readers: int) -> Iterator[tuple[_Entry, bytes | OSError | None]]:
    """Yield entries in order with small regular files' contents (or the OSError reading
    one), read ahead by a pool when they are not cached; ``None`` for other entries (large
    files are streamed).

    A small file whose bytes are all in the page cache is read by the calling thread
    (``RWF_NOWAIT``): handing it to a thread cost more than reading it (each of its five
    system calls gives up the GIL, and taking it back waited for the calling thread's
    switch interval; 100,000 cached files of 4 KiB took ~2x the CPU through the pool).
    Reading uncached files one by one leaves the disk idle between them (open and
    first-read latency): the file that missed the cache and the next ones, up to
    ``BATCH_FILES`` files or ``BATCH_BYTES``, go to the pool as one task (one task per file
    cost more than reading the file), while the calling thread goes on with the files after
    them. Look-ahead is bounded by ``MAX_PENDING`` files and ``MAX_PENDING_BYTES``.
    """
    # (entries, the task reading them or None, their contents if read here, bytes held)
    window: deque[tuple[list[_Entry], Future[list[bytes | OSError]] | None, list, int]] = deque()
    held = files = 0
    batch: list[_Entry] = []
    batch_bytes = 0

    def oldest() -> Iterator[tuple[_Entry, bytes | OSError | None]]:
        nonlocal held, files
        group, fut, ready, nbytes = window.popleft()
        held -= nbytes
        files -= len(group)
        return zip(group, ready if fut is None else fut.result(), strict=True)

    def hold(group: list[_Entry], fut: Future[list[bytes | OSError]] | None, ready: list, nbytes: int) -> None:
        nonlocal held, files
        window.append((group, fut, ready, nbytes))
        held += nbytes
        files += len(group)

    with ThreadPoolExecutor(max_workers=readers, thread_name_prefix="s3sync-read") as pool:
        def submit() -> None:
            nonlocal batch, batch_bytes
            hold(batch, pool.submit(_read_batch, [(e.path, e.st) for e in batch]), [], batch_bytes)
            batch, batch_bytes = [], 0

        try:
            for entry in entries:
                if _small(entry):
                    if not batch and _NOWAIT:
                        try:
                            data = _read_small(entry.path, entry.st, nowait=True)
                        except OSError as err:
                            data = err
                        if data is not None:
                            if not window:
                                yield entry, data
                            else:
                                hold([entry], None, [data], entry.st.st_size)
                            continue
                    batch.append(entry)
                    batch_bytes += entry.st.st_size
                    if len(batch) >= BATCH_FILES or batch_bytes >= BATCH_BYTES:
                        submit()
                else:
                    if batch:
                        submit()
                    if not window:
                        yield entry, None
                        continue
                    hold([entry], None, [None], 0)
                while window and (files > MAX_PENDING or held > MAX_PENDING_BYTES
                                  or window[0][1] is None or window[0][1].done()):
                    yield from oldest()
            if batch:
                submit()
            while window:
                yield from oldest()
        finally:
            for _, fut, _, _ in window:
                if fut is not None:
                    fut.cancel()


def write_tar(entries: Iterable[_Entry], out: BinaryIO, before_member: Callable[[int], None],
              readers: int = 4, on_member: Callable[[int, MemberRecord], None] | None = None) -> TreeStats:
    """Write ``entries`` (from ``walk_tree`` or ``scan_tree``) as one POSIX.1-2001 (PAX) tar stream to ``out``.

    Headers come from tarfile (``member_header``); a small file's header, data and
    padding go to ``out`` in one ``write``. The stream ends with two zero blocks, padded
    to a multiple of tarfile's 10240-byte record, as ``TarFile.close`` writes it.

    ``out`` needs ``write``. ``before_member(span)`` is called before each member with
    the bytes the member will take, so the caller can cut a part at the member
    boundary. ``readers`` threads read small files ahead. ``on_member(offset, record)``, if
    given, is called after each member with the stream offset of its first header block and
    its record (file data hashed as it is written, so nothing is read twice): the member index.

    Raises:
        SourceError: a file vanished, was replaced, became unreadable, or changed (size,
            mtime or ctime) between the scan and the end of its read.
    """
    files = size = written = members = 0
    for entry, data in _read_ahead(entries, readers):
        members += 1
        info = _tarinfo(entry)
        header = member_header(info)
        span = len(header) + info.size + -info.size % tarfile.BLOCKSIZE
        before_member(span)
        if info.isreg():
            try:
                if isinstance(data, OSError):
                    raise data
                if data is not None:
                    out.write(header + data + _padding(info.size))
                    digest = hashing.digest(data) if on_member is not None else ""
                else:
                    out.write(header)
                    hasher = hashing.Hasher() if on_member is not None else None
                    _copy_exact(entry.path, entry.st, out, hasher)
                    out.write(_padding(info.size))
                    digest = hasher.hexdigest() if hasher is not None else ""
            except SourceChanged as err:
                # Publish streams as it reads: the parts sent so far are abandoned, and
                # nothing is committed (GNU tar only warns and exits 1 after writing it).
                raise SourceError(f"{entry.path}: changed while being read ({err})",
                                  hint="publish again when nothing is writing to SRC_DIR") from err
            except OSError as err:
                raise SourceError(f"{entry.path}: cannot read ({err.strerror or err})",
                                  hint="make the file readable (or remove it), then publish again"
                                  if err.errno in (errno.EACCES, errno.EPERM) else
                                  "the file changed or vanished while publishing; publish again") from err
            files += 1
            size += info.size
            if on_member is not None:
                on_member(written, MemberRecord(entry.rel, "file", info.size, info.mode, info.mtime, digest))
        else:
            out.write(header)
            if on_member is not None:
                on_member(written, MemberRecord(entry.rel, "symlink" if info.issym() else "dir", 0, info.mode,
                                                info.mtime, link=info.linkname))
        written += span
    end = 2 * tarfile.BLOCKSIZE
    end += -(written + end) % tarfile.RECORDSIZE
    out.write(bytes(end))
    return TreeStats(files, size, members)


def _copy_exact(path: str, expect: os.stat_result, out: BinaryIO, hasher: hashing.Hasher | None = None) -> None:
    """Copy the file at ``path``, exactly its scanned size (``expect.st_size`` bytes), to
    ``out``, while the file stays as scanned (``check_unchanged`` at open and at the end),
    and to ``hasher`` if given.

    Raises:
        SourceChanged: the file changed since the scan or while being read.
        OSError: the file cannot be read, is no longer the file scanned (see
            ``open_regular``).
    """
    size = expect.st_size
    with open_regular(path, expect) as f:
        left = size
        while left:
            block = f.read(min(COPY_BUFSIZE, left))
            if not block:
                raise SourceChanged(f"size changed: ended {left} bytes early")
            out.write(block)
            if hasher is not None:
                hasher.update(block)
            left -= len(block)
        if f.read(1):
            raise SourceChanged(f"size changed: more than {size} bytes")
        check_unchanged(expect, os.fstat(f.fileno()))


class ForwardReader(Protocol):
    """A byte stream that only moves forward (see ``engine.OrderedReader``)."""

    def read(self, n: int = -1) -> bytes: ...
    def tell(self) -> int: ...
    def seek(self, pos: int, whence: int = 0) -> int: ...
    def views(self, n: int) -> Iterator[memoryview]: ...

    before_next_chunk: Callable[[], None] | None


GNU_VOLUME_LABEL = b"V"
"""Type of the member ``tar --format=gnu -V LABEL`` writes first (GNU tar manual, "GNU
tar and POSIX tar": GNUTYPE_VOLHDR); in PAX format the label is a global header record."""

_ZEROS = bytes(WRITE_STEP)
"""Hashed in place of a sparse file's holes."""

_PAX_TIME = re.compile(r"(-?)([0-9]+)(?:\.([0-9]*))?")
NS = 1_000_000_000


def mtime_ns(member: tarfile.TarInfo) -> int:
    """The member's modification time in nanoseconds since the epoch, exact.

    A PAX ``mtime`` record is a decimal with up to nanoseconds (GNU tar and bsdtar write
    one for every file whose mtime has a fraction); tarfile reads it as a float, which
    keeps only ~0.2 us at today's dates, so the record is read here instead. Other
    formats hold whole seconds. GNU tar sets the time exactly (utimensat), so do we.
    ``MemberRecord.mtime`` keeps whole seconds (this value floored), which ``verify``
    compares.
    """
    raw = member.pax_headers.get("mtime")
    match = _PAX_TIME.fullmatch(raw.strip()) if raw is not None else None
    if match is None:
        return int(member.mtime) * NS
    sign, whole, frac = match.groups()
    ns = int(whole) * NS + int((frac or "0")[:9].ljust(9, "0"))
    return -ns if sign else ns


def strip_components(name: str, count: int) -> str | None:
    """``name`` less its first ``count`` components, as GNU tar's ``--strip-components``;
    None if it has ``count`` components or fewer (GNU tar then skips the member).

    Components are what slashes separate; runs of slashes count as one, and ``.`` is a
    component like any other (``./a/b`` less 1 is ``a/b``), as in GNU tar's
    ``stripped_prefix_len`` (src/names.c, tar 1.34).
    """
    if not count:
        return name
    parts = [p for p in name.split("/") if p]
    if len(parts) <= count:
        return None
    return "/".join(parts[count:])


_HEADER = struct.Struct("100s8s8s8s12s12s8sc100s8x32s32s8s8s155s12x")
"""The ustar header block's fields (POSIX.1-2017, pax, "ustar Interchange Format"): name,
mode, uid, gid, size, mtime, chksum, typeflag, linkname, (magic, version), uname, gname,
devmajor, devminor, prefix."""
_CHKSUM_SPACES = 8 * 0x20
"""The checksum field counts as eight spaces in the checksum."""


def _octal(field: bytes) -> int:
    """A numeric header field as tarfile's ``nti`` reads it when it is octal text.

    Raises:
        ValueError: not plain octal text (base-256, non-ASCII, junk): the caller lets
            tarfile decide.
    """
    end = field.find(b"\0")
    if end != -1:
        field = field[:end]
    return int(field.strip() or b"0", 8)


class _FastTarInfo(tarfile.TarInfo):
    """``tarfile.TarInfo`` whose ``frombuf`` parses the usual header in one ``struct`` call.

    tarfile's ``frombuf`` cost ~20 us per member (two checksums over ``struct.unpack``
    tuples, a function call per field): 40 % of the main thread of a pull of 50,000 files
    of 100 bytes. This one computes the same result for headers whose numbers are octal
    text and whose unsigned checksum matches, and hands everything else (base-256
    numbers, signed checksums, bad headers, old GNU sparse members, end-of-archive
    blocks) to tarfile's own ``frombuf``, which then returns or raises exactly as it does
    without us. tests/property/test_fast_header_props.py pins both to the same result.
    """

    __slots__ = ()

    @classmethod
    def frombuf(cls, buf, encoding, errors):  # noqa: D102 - tarfile's signature and contract
        if len(buf) != tarfile.BLOCKSIZE or buf[156:157] == tarfile.GNUTYPE_SPARSE or not any(buf):
            return super().frombuf(buf, encoding, errors)
        (name, mode, uid, gid, size, mtime, chksum, kind, linkname, uname, gname, devmajor, devminor,
         prefix) = _HEADER.unpack(buf)
        try:
            if (mode[0] | uid[0] | gid[0] | size[0] | mtime[0] | chksum[0] | devmajor[0] | devminor[0]) & 0x80:
                raise ValueError("base-256 number")
            checked = _octal(chksum)
            if checked != sum(buf) - sum(buf[148:156]) + _CHKSUM_SPACES:
                raise ValueError("not the unsigned checksum")
            numbers = (_octal(mode), _octal(uid), _octal(gid), _octal(size), _octal(mtime), _octal(devmajor),
                       _octal(devminor))
        except ValueError:
            return super().frombuf(buf, encoding, errors)
        obj = cls()
        obj.name = name.split(b"\0", 1)[0].decode(encoding, errors)
        obj.mode, obj.uid, obj.gid, obj.size, obj.mtime, obj.devmajor, obj.devminor = numbers
        obj.chksum = checked
        obj.type = kind
        obj.linkname = linkname.split(b"\0", 1)[0].decode(encoding, errors)
        obj.uname = uname.split(b"\0", 1)[0].decode(encoding, errors)
        obj.gname = gname.split(b"\0", 1)[0].decode(encoding, errors)
        prefix = prefix.split(b"\0", 1)[0].decode(encoding, errors)
        # The rest as tarfile's frombuf: a V7 directory is a regular file named with a
        # trailing slash; directories lose trailing slashes; a ustar prefix is joined.
        if obj.type == tarfile.AREGTYPE and obj.name.endswith("/"):
            obj.type = tarfile.DIRTYPE
        if obj.isdir():
            obj.name = obj.name.rstrip("/")
        if prefix and obj.type not in tarfile.GNU_TYPES:
            obj.name = prefix + "/" + obj.name
        return obj


def read_header(data: bytes) -> tuple[str, int, int, int, bool, int]:
    """Parse the header blocks (pax extended header included) of the tar member ``data`` starts with.

    Returns:
        ``(name, size, mode, mtime, regular, data_offset)``: the name as extracted (no leading
        ``./``, no trailing ``/``), data bytes, permission bits, whole seconds (``mtime_ns``
        floored), whether it is a regular file, and where its data starts in ``data``.

    Raises:
        ValueError: not a readable tar header (``tarfile``'s error as text).
    """
    try:
        tar = tarfile.TarFile(fileobj=io.BytesIO(data), mode="r", encoding="utf-8", errors="surrogateescape")
        member = tar.firstmember
    except (tarfile.TarError, ValueError, EOFError) as err:
        raise ValueError(f"not a readable tar header ({err})") from err
    if member is None:
        raise ValueError("not a tar header (zeros)")
    name = member.name
    while name.startswith("./"):
        name = name[2:]
    return (name.rstrip("/"), member.size, member.mode & 0o7777, mtime_ns(member) // NS,
            member.isreg() and not member.issparse(), member.offset_data)


_BLOCK = tarfile.BLOCKSIZE
_FAST_FIELDS = re.compile(rb"([0-7]{7})\0[0-7]{7}\0[0-7]{7}\0([0-7]{11})\0([0-7]{11})\0([0-7]{6})\0 0")
"""Bytes 100-157 of the header ``extract`` parses without tarfile: mode, uid, gid, size,
mtime and checksum as zero-padded octal with a NUL (the checksum with NUL and space), and
type ``0`` (a regular file): as tarfile and GNU tar write them."""
_FAST_REST = bytes(100) + b"ustar\x0000" + bytes(247)
"""Bytes 157-512 of that header: no link name, POSIX ustar magic and version, and nothing
else (no owner names, device numbers or ustar prefix): what s3sync's publish writes."""
_FAST_CHECKSUM_REST = 8 * 0x20 + ord("0") + sum(b"ustar\x0000")
"""What the type, the checksum field (as spaces) and bytes 157-512 add to the checksum."""
_FAST_NAME = re.compile(rb"[\x20-\x2d\x30-\x7e][\x20-\x2e\x30-\x7e]*(?:/[\x20-\x2d\x30-\x7e][\x20-\x2e\x30-\x7e]*)*")
"""A name ``_check_name`` returns unchanged (with ``strip_components`` 0): printable ASCII,
relative, no empty component and none that starts with a dot (so no ``.``, ``..``, or
``.s3sync``, and nothing ``normpath`` would change)."""
_ZEROS_100 = bytes(100)
_CREATE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
"""How ``_write_small_at`` creates a file: as ``SafeExtractor._create``."""


class SafeExtractor:
    """Extract a tar stream into ``root``, refusing anything that would escape it.

    The tree is the one GNU tar's ``tar -xf ARCHIVE -C ROOT`` makes as root with
    ``--no-same-owner``, except where s3sync is stricter (each refusal raises
    ``UnsafeArchiveError`` naming the member, and stops the extraction):

    - names that are absolute or hold ``..`` are refused (GNU tar strips the leading ``/``
      or skips the member with a warning);
    - symlinks with an absolute target, or a target that may leave the tree (see
      ``symlink_target_ok``), are refused (GNU tar creates them);
    - special files (FIFOs, character and block devices, sockets, unknown types) are
      refused (GNU tar as root creates them);
    - hard links must point to a regular file extracted earlier;
    - setuid, setgid and sticky bits are dropped; files are owned by the user pulling.

    Not members: pax global headers (``git archive`` writes one), a GNU volume label
    (``tar -V``), and ``./`` or ``.``, the root itself (``tar -C DIR .`` writes it first):
    its mode and mtime are kept in ``root_record`` for ``finish_root``, which gives them to
    the root as GNU tar gives them to ``-C DIR``. Parent directories that have no member of
    their own are made with mode 0777 less the umask, as GNU tar makes them. GNU sparse
    members are written with their holes (see ``_write_sparse``). Mtimes are set to the
    nanosecond (``mtime_ns``).

    Args:
        root: the staging directory (created by the caller): every write goes through it.
        writers: threads writing small files.
        shown: the path named in messages, if ``root`` is another name for it (a pull passes
            ``/proc/self/fd/N`` of the tree it opened, so that a symlink swapped in above the
            tree while pulling is never followed; ``shown`` is the tree's ordinary path).
        strip_components: as GNU tar's ``--strip-components=N``: members with N components
            or fewer are skipped, the first N are removed from the others' names and from
            hard link targets (not from symlink targets, which are relative to the link).
            Names are checked for safety before they are stripped.

    Raises:
        ValueError: ``strip_components`` is negative.
    """

    fast_headers = True
    """Read plain ustar headers of small regular files without tarfile (see ``extract``);
    the tests turn it off to compare."""

    def __init__(self, root: Path | str, writers: int = 2, shown: Path | None = None,
                 strip_components: int = 0) -> None:
        if strip_components < 0:
            raise ValueError(f"strip_components must be 0 or more, not {strip_components}")
        self.root = os.fspath(root)
        self._shown = os.fspath(shown) if shown is not None else self.root
        self.writers = writers
        self.strip_components = strip_components
        self.root_record: MemberRecord | None = None
        self.end: int | None = None
        """Stream offset (bytes) where tarfile found no further member, once ``extract``
        returned: where the end-of-archive marker must be. It follows members that were
        not extracted too (stripped by ``strip_components``, the root, labels), which
        ``on_member`` never hears of."""
        """Mode and mtime of a ``./`` member seen by ``extract`` (path ``.``), else None."""
        self._safe_dirs: set[str] = {""}
        self._root_fd: int | None = None  # the root, open while ``extract`` runs (see ``_write_small``)
        self._dir_ns: dict[str, int] = {}  # directory -> its member's mtime (ns), for finish_dirs
        self._root_ns = 0
        # Mode bits open() may take away: the umask's, or all of them under a default
        # ACL (which replaces the umask for new files, here and in every directory made
        # below it). A file whose mode loses nothing needs no fchmod. Directories left by
        # an interrupted run may have been given an ACL since: on resume, always fchmod.
        fresh = self._fresh()
        self._masked_bits = _umask() if fresh and not _has_default_acl(self.root) else 0o7777

    def _fresh(self) -> bool:
        return not any(e.name != METADATA_DIR for e in os.scandir(self.root))

    def extract(self, stream: ForwardReader, on_member: Callable[[int, MemberRecord], None]) -> None:
        """Extract members from the stream's current position to the end-of-archive marker.

        ``on_member(next_header_offset, record)`` is called, in stream order, after each
        member is completely written; ``next_header_offset`` is a safe resume point.

        Small regular files (at most ``SMALL_FILE`` bytes) are copied out of the chunk
        buffers and written by a pool of ``writers`` threads: creating a file costs
        more kernel time than writing it, and the GIL is released meanwhile. Everything
        else is written in order by the calling thread after the pool has drained.

        Raises:
            UnsafeArchiveError: a member escapes the root or is a special file.
            InsufficientSpaceError: the disk filled up.
            DestinationError: another write failure.
        """
        try:
            tar = tarfile.TarFile(fileobj=stream, mode="r", tarinfo=_FastTarInfo, encoding="utf-8",
                                  errors="surrogateescape")
        except (tarfile.TarError, ValueError) as err:  # the first header is read here: as in the loop below
            raise UnsafeArchiveError(f"tar stream unreadable at byte {stream.tell()}: {err}") from err
        # A task writes a batch of small files: one future per 4 KiB file would cost more
        # than writing the file. Batches complete, and are reported, in stream order.
        pending: deque[tuple[Future[list[MemberRecord]], list[int], int]] = deque()
        pending_bytes = 0
        inflight: set[str] = set()  # paths in unfinished batches
        batch: list[tuple[str, bytes | bytearray, int, int]] = []
        offsets: list[int] = []
        batch_bytes = 0
        broken = False

        def submit() -> None:
            nonlocal batch, offsets, batch_bytes, pending_bytes
            if batch:
                pending.append((pool.submit(self._write_batch, batch), offsets, batch_bytes))
                pending_bytes += batch_bytes
                batch, offsets, batch_bytes = [], [], 0

        def complete(drain: bool = False) -> None:
            """Report finished batches in order; wait while over the bounds (or all, if drain)."""
            nonlocal pending_bytes
            if drain:
                submit()
            while pending and (drain or pending[0][0].done() or len(pending) > MAX_PENDING // BATCH_FILES
                               or pending_bytes > MAX_PENDING_BYTES):
                records, error = pending[0][0].result()  # waits outside the deferred block
                # Taking the batch off the queue and recording its members is one step for
                # Ctrl-C: split, the rest of the batch would never be recorded while later
                # batches move the resume point past it (issue 10, item 6).
                nonlocal broken
                with interrupts.deferred:
                    _fut, next_offsets, nbytes = pending.popleft()
                    pending_bytes -= nbytes
                    for record, next_offset in zip(records, next_offsets, strict=False):
                        inflight.discard(record.path)
                        try:
                            on_member(next_offset, record)
                        except BaseException:
                            # The caller refused this record (disk full writing the journal, a
                            # progress callback that raised): the rest of the batch is never
                            # recorded, so later batches must not be either, or the resume
                            # point would pass members that are not in the index.
                            broken = True
                            raise
                if error is not None:
                    broken = True  # later batches must not move the resume point past this file
                    raise error

        # The fast path (see ``_FAST_FIELDS``): headers of plain small regular files, read
        # straight from the current window of the stream, one after the other, without
        # tarfile; anything else (and a member that crosses the window's end) goes to
        # tarfile below. tests/property/test_fast_header_props.py pins both to the same result.
        peek = getattr(stream, "peek", None) if self.fast_headers and not self.strip_components else None
        safe_dirs = self._safe_dirs

        def fast_run() -> None:
            nonlocal batch_bytes
            if stream.tell() != tar.offset:  # after a member's data: skip its padding, as tarfile would
                stream.seek(tar.offset)
                if stream.tell() != tar.offset:
                    return  # the stream ended: tarfile says so
            window = peek()
            base, at, end = tar.offset, 0, len(window)
            try:
                while at + _BLOCK <= end:
                    block = window[at:at + _BLOCK].tobytes()
                    fields = _FAST_FIELDS.fullmatch(block, 100, 157)
                    if fields is None or block[157:] != _FAST_REST:
                        return
                    nul = block.find(0, 0, 100)
                    if nul == -1:
                        nul = 100
                    elif block[nul:100] != _ZEROS_100[nul:]:
                        return
                    size = int(fields[2], 8)
                    data = at + _BLOCK
                    following = data + -(-size // _BLOCK) * _BLOCK
                    if (size > SMALL_FILE or following > end or not _FAST_NAME.fullmatch(block, 0, nul)
                            or int(fields[4], 8) != sum(block[:nul]) + sum(block[100:148]) + _FAST_CHECKSUM_REST):
                        return
                    name = block[:nul].decode("ascii")
                    parent = name.rpartition("/")[0]
                    if parent not in safe_dirs:
                        self._ensure_dir(parent, name)
                    if name in inflight:
                        complete(drain=True)  # the same path again: let the earlier write finish
                    batch.append((name, window[data:data + size].tobytes(), int(fields[1], 8) & 0o777,
                                  int(fields[3], 8) * NS))
                    at = following
                    offsets.append(base + at)
                    inflight.add(name)
                    batch_bytes += size
                    if len(batch) >= BATCH_FILES or batch_bytes >= BATCH_BYTES:
                        submit()
                    complete()
            finally:
                if at:
                    stream.seek(base + at)
                    tar.offset = base + at

        self._root_fd = self._open_root()
        pool = ThreadPoolExecutor(max_workers=self.writers, thread_name_prefix="s3sync-write")
        # Before the stream waits for its next chunk (a stalled network, a kill -9 to come),
        # write and record every file already copied out: the resume point then trails the
        # verified data by at most the member being read, not by a half-filled batch.
        stream.before_next_chunk = lambda: complete(drain=True)
        try:
            while True:
                if peek is not None and tar.firstmember is None and not tar.pax_headers:
                    fast_run()
                try:
                    member = tar.next()
                except (tarfile.TarError, ValueError) as err:  # ValueError: a header sent it backwards
                    raise UnsafeArchiveError(f"tar stream unreadable at byte {stream.tell()}: {err}") from err
                if member is None:
                    self.end = tar.offset
                    break
                tar.members.clear()  # tarfile keeps every TarInfo; memory must stay bounded
                if member.type == GNU_VOLUME_LABEL:
                    continue  # `tar -V LABEL`: names the archive, not a file (GNU tar skips it too)
                name = self._check_name(member)
                if name is None:
                    continue  # stripped away (``strip_components``)
                if name == ".":
                    # The root itself (`tar -C DIR .` writes it first): nothing to make;
                    # GNU tar gives DIR the member's mode and mtime at the end.
                    self._root_ns = mtime_ns(member)
                    self.root_record = MemberRecord(".", "dir", 0, member.mode & 0o777, self._root_ns // NS)
                    continue
                self._ensure_dir(os.path.dirname(name), member.name)
                if name in inflight:
                    complete(drain=True)  # the same path again: let the earlier write finish
                if member.issparse():
                    self._check_sparse(member, tar.offset)
                if member.isreg() and member.size <= SMALL_FILE and not member.issparse():
                    stream.seek(member.offset_data)
                    data = bytearray()
                    for view in stream.views(member.size):
                        data += view  # copy now: the chunk buffer is reused once we move on
                    batch.append((name, data, member.mode & 0o777, mtime_ns(member)))
                    offsets.append(tar.offset)
                    inflight.add(name)
                    batch_bytes += member.size
                    if len(batch) >= BATCH_FILES or batch_bytes >= BATCH_BYTES:
                        submit()
                    complete()
                else:
                    complete(drain=True)  # links and directories see every earlier member written
                    record = self._extract_member(name, member, stream)
                    with interrupts.deferred:  # the journal's add and checkpoint, as one step
                        on_member(tar.offset, record)
            complete(drain=True)
        except BaseException:
            # Interrupted or failed: finish and record the small files already copied out,
            # so that the resume point covers them and a rerun does not fetch them again.
            if not broken:
                try:
                    complete(drain=True)
                except Exception:  # noqa: BLE001 - the original error is the one to report
                    pass
            raise
        finally:
            stream.before_next_chunk = None
            pool.shutdown(wait=True, cancel_futures=True)
            if self._root_fd is not None:
                os.close(self._root_fd)
                self._root_fd = None

    def _write_batch(self, batch: list[tuple[str, bytes | bytearray, int, int]]
                     ) -> tuple[list[MemberRecord], Exception | None]:
        """Write the files in order; stop at the first failure and return it with the
        records of the files written before it (they still count for the resume point)."""
        records: list[MemberRecord] = []
        for item in batch:
            try:
                records.append(self._write_small(*item))
            except Exception as err:  # noqa: BLE001 - re-raised in order by the caller
                return records, err
        return records, None

    def _write_small(self, name: str, data: bytes | bytearray, mode: int, ns: int) -> MemberRecord:
        path = os.path.join(self.root, name)
        try:
            if self._root_fd is None:
                digest = self._write_regular(path, name, mode, ns, (memoryview(data),))
            else:
                digest = self._write_small_at(name, path, data, mode, ns)
        except OSError as err:
            raise translate_os_error(err, self._show(path)) from err
        return MemberRecord(name, "file", len(data), mode, ns // NS, digest)

    def _open_root(self) -> int | None:
        """The root, opened for ``_write_small`` (closed when ``extract`` returns)."""
        try:
            return os.open(self.root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise translate_os_error(err, self._show(self.root)) from err

    def _write_small_at(self, name: str, path: str, data: bytes | bytearray, mode: int, ns: int) -> str:
        """``_write_regular`` for a small file held in memory, created relative to the root's
        descriptor: the kernel resolves the root (``/proc/self/fd/N`` in a pull) once, not for
        every file (~3 us of system time per file, 10 % of creating a 100-byte file). The name's
        parents were checked by ``_ensure_dir``; the flags are ``_create``'s, which replaces an
        existing name."""
        try:
            fd = os.open(name, _CREATE_FLAGS, mode, dir_fd=self._root_fd)
        except FileExistsError:
            fd = self._create(path, name, mode)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            self._close_file(fd, mode, ns)
        finally:
            os.close(fd)
        return hashing.digest(data)

    def _write_regular(self, path: str, member_name: str, mode: int, ns: int,
                       pieces: Iterable[memoryview]) -> str:
        """Create the regular file ``path`` (replacing a non-directory, as tar does), write
        ``pieces``, set ``mode`` and the mtime (``ns``, nanoseconds); return the digest of the data.

        O_EXCL and O_NOFOLLOW: an existing name, a planted symlink included, is never
        written through; it is removed by ``_clear`` and the file created again. The mode
        is set again with fchmod when the umask, or a default ACL on the tree (which
        replaces the umask), may have taken bits from the mode given to open.
        """
        fd = self._create(path, member_name, mode)
        hasher = hashing.Hasher()
        try:
            for view in pieces:
                hasher.update(view)
                while view:
                    n = os.write(fd, view[:WRITE_STEP])
                    view = view[n:]
            self._close_file(fd, mode, ns)
        finally:
            os.close(fd)
        return hasher.hexdigest()

    def _create(self, path: str, member_name: str, mode: int) -> int:
        """Create the regular file ``path`` for writing (see ``_write_regular``); return its fd."""
        flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
        try:
            return os.open(path, flags, mode)
        except FileExistsError:
            self._clear(path, member_name)
            return os.open(path, flags, mode)

    def _close_file(self, fd: int, mode: int, ns: int) -> None:
        """Set the mode (if open may have masked bits of it) and the mtime (``ns``,
        nanoseconds) of a written file."""
        if mode & self._masked_bits:
            os.fchmod(fd, mode)
        os.utime(fd, ns=(ns, ns))

    @staticmethod
    def _check_sparse(member: tarfile.TarInfo, next_header: int) -> None:
        """Refuse a sparse map that ``_write_sparse`` cannot follow inside the member.

        The map (tarfile's ``member.sparse``: (offset, bytes) data regions in the
        logical file, from the old GNU header and its extension blocks, or the PAX
        ``GNU.sparse.*`` records, or for format 1.0 the start of the member's data) comes
        from the archive: regions must be in order, not overlap, end within the file's
        real size (``member.size``), and their bytes, stored one after the other from
        ``member.offset_data``, must end before the next header (``next_header``).
        Otherwise the regions would be written from the next member's headers, or far
        beyond the size the archive declares (GNU tar format: "Sparse Formats" in the GNU
        tar manual, appendix D).

        Raises:
            UnsafeArchiveError: naming the member and what is wrong with its map.
        """
        end = stored = 0
        for offset, size in member.sparse:
            if size == 0:
                continue  # unused slots of an old GNU header read as (0, 0); GNU ends a map with (size, 0)
            if offset < end or size < 0 or offset + size > member.size:
                raise UnsafeArchiveError(f"tar member {member.name!r}: sparse map region ({offset}, {size}) "
                                         f"is out of order or beyond the file's size {member.size}")
            end = offset + size
            stored += size
        if member.offset_data + stored > next_header:
            raise UnsafeArchiveError(f"tar member {member.name!r}: sparse map holds {stored} bytes of data, "
                                     f"more than the member stores ({max(0, next_header - member.offset_data)})")

    def _write_sparse(self, path: str, member: tarfile.TarInfo, mode: int, ns: int,
                      stream: ForwardReader) -> str:
        """Write a GNU sparse member (map checked by ``_check_sparse``) as a file with holes;
        return the digest of its whole logical content (holes read as zeros, as ``verify``
        and any reader see them).

        Each data region is written at its offset (``pwrite``) straight from the chunk
        buffers; ``ftruncate`` to the real size first makes the holes, between the regions
        and after the last one, as GNU tar leaves them (a file system without holes stores
        zeros). The holes are hashed from a buffer of zeros, costing CPU time (XXH3 over a
        1 MiB buffer: ~24 GB/s here, ~45 s per TiB of holes), never disk space.
        """
        fd = self._create(path, member.name, mode)
        hasher = hashing.Hasher()
        stream.seek(member.offset_data)
        at = 0  # logical offset hashed so far

        def zeros(upto: int) -> None:
            nonlocal at
            while at < upto:
                step = min(WRITE_STEP, upto - at)
                hasher.update(_ZEROS[:step])
                at += step

        try:
            # The size first: a file system that cannot hold it (EFBIG) fails before any
            # hashing of holes.
            os.ftruncate(fd, member.size)
            for offset, size in member.sparse:
                if not size:
                    continue
                zeros(offset)
                for view in stream.views(size):
                    hasher.update(view)
                    while view:
                        n = os.pwrite(fd, view[:WRITE_STEP], at)
                        view = view[n:]
                        at += n
            zeros(member.size)
            self._close_file(fd, mode, ns)
        finally:
            os.close(fd)
        return hasher.hexdigest()

    def _extract_member(self, name: str, member: tarfile.TarInfo, stream: ForwardReader) -> MemberRecord:
        """Extract ``member`` at ``name`` (checked and stripped by ``_check_name``)."""
        # Permission bits are kept as published (the data filter would drop group/other
        # write and directory modes); setuid, setgid and sticky bits never are.
        mode = member.mode & 0o777
        label = member.name  # messages name the member as the archive does
        target = self._check_name(member, member.linkname) if member.islnk() else None
        if member.islnk() and target is None:
            # GNU tar fails on this member too ("Cannot hard link to ''") and goes on.
            raise UnsafeArchiveError(f"tar member {label!r}: hard link target {member.linkname!r} has "
                                     f"{self.strip_components} components or fewer: strip_components removes it",
                                     hint="pull with a smaller --strip-components")
        if not (member.isreg() or member.isdir()):
            # Links get tarfile's data filter (PEP 706) on top of our own checks, at the
            # place they land (after ``strip_components``) and, for a hard link, with its
            # stripped target. For regular files and directories our checks are stricter
            # than the filter's (absolute and '..' names refused, every parent lstat-ed and
            # refused if it is a symlink, O_NOFOLLOW on the file), and skipping its two
            # realpath() calls per member took a quarter off extraction time
            # (scripts/bench_breakdown.py).
            lands = member.replace(name=name, linkname=target if member.islnk() else member.linkname, deep=False)
            try:
                member = tarfile.data_filter(lands, self.root)
            except tarfile.FilterError as err:
                raise UnsafeArchiveError(f"tar member {label!r} refused: {err}") from err
        path = os.path.join(self.root, name)
        try:
            ns = mtime_ns(member)
            mtime = ns // NS
            if member.isdir():
                self._make_dir(name, label)
                self._dir_ns[name] = ns
                return MemberRecord(name, "dir", 0, mode, mtime)  # applied by finish_dirs
            if member.issparse():
                digest = self._write_sparse(path, member, mode, ns, stream)
                return MemberRecord(name, "file", member.size, mode, mtime, digest)
            if member.isreg():
                stream.seek(member.offset_data)  # written straight from the chunk buffers
                digest = self._write_regular(path, label, mode, ns, stream.views(member.size))
                return MemberRecord(name, "file", member.size, mode, mtime, digest)
            if member.issym():
                self._clear(path, label)
                self._symlink(member.linkname, path, ns)
                return MemberRecord(name, "symlink", 0, 0o777, mtime, link=member.linkname)
            if member.islnk():
                if target == name:
                    raise UnsafeArchiveError(f"tar member {label!r}: hard link to itself")
                target_path = os.path.join(self.root, target)
                self._ensure_dir(os.path.dirname(target), label)
                if not self._is_regular(target_path):
                    raise UnsafeArchiveError(f"tar member {label!r}: hard link target "
                                             f"{member.linkname!r} is not an extracted regular file")
                self._clear(path, label)
                self._link(target_path, path)
                return MemberRecord(name, "hardlink", 0, mode, mtime, link=target)
            raise UnsafeArchiveError(f"tar member {label!r}: unsupported type {member.type!r}")
        except OSError as err:
            raise translate_os_error(err, self._show(path)) from err

    def _symlink(self, target: str, path: str, ns: int) -> None:
        os.symlink(target, path)
        os.utime(path, ns=(ns, ns), follow_symlinks=False)

    def _is_regular(self, path: str) -> bool:
        return os.path.isfile(path) and not os.path.islink(path)

    def _link(self, target_path: str, path: str) -> None:
        os.link(target_path, path, follow_symlinks=False)

    def _show(self, path: str) -> str:
        """``path`` (under ``root``) as named in messages (under ``shown``)."""
        if self._shown != self.root and (path == self.root or path.startswith(self.root + "/")):
            return self._shown + path[len(self.root):]
        return path

    def _check_name(self, member: tarfile.TarInfo, name: str | None = None) -> str | None:
        """Check ``member`` (or, given ``name``, its hard link target) and return the path
        it lands at, relative to the root and normalized (``./a//b`` is ``a/b``; the root
        itself is ``.``), after ``strip_components``; None if stripping leaves nothing
        (skip the member; for a hard link, its target).

        Raises:
            UnsafeArchiveError: naming the member and what is wrong with it.
        """
        raw = member.name if name is None else name
        norm = os.path.normpath(raw.rstrip("/")) if raw else ""
        if (not raw or "\x00" in raw or os.path.isabs(raw) or norm == ".."
                or norm.startswith("../") or "/../" in f"/{raw}/"):
            raise UnsafeArchiveError(f"tar member {member.name!r}: unsafe path {raw!r}")
        stripped = strip_components(raw, self.strip_components)
        if stripped is None:
            return None
        norm = os.path.normpath(stripped.rstrip("/"))
        if norm == "." and (name is not None or not member.isdir()):
            raise UnsafeArchiveError(f"tar member {member.name!r}: unsafe path {raw!r} (the root itself)")
        if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
            raise UnsafeArchiveError(f"tar member {member.name!r}: special file (type {member.type!r}) refused")
        if member.size < 0:  # a GNU base-256 size field can be negative
            raise UnsafeArchiveError(f"tar member {member.name!r}: negative size {member.size}")
        mtime = member.mtime  # a PAX header may say anything float() reads: 1e20, inf, nan
        if not (isinstance(mtime, int) or math.isfinite(mtime)) or not -2**63 <= int(mtime) < 2**63:
            raise UnsafeArchiveError(f"tar member {member.name!r}: modification time {mtime!r} out of range")
        if member.issparse() and not member.isreg():
            raise UnsafeArchiveError(f"tar member {member.name!r}: sparse map on a {member.type!r} member")
        if norm.split("/", 1)[0] == METADATA_DIR:
            raise UnsafeArchiveError(f"tar member {member.name!r}: {METADATA_DIR}/ is reserved")
        if name is None and member.issym() and not symlink_target_ok(norm, member.linkname):
            raise UnsafeArchiveError(f"tar member {member.name!r}: symlink target {member.linkname!r} "
                                     "may point outside the dataset")
        return norm

    def _ensure_dir(self, rel: str, member_name: str) -> None:
        """Make ``rel`` a real directory under root; refuse if any component is a symlink."""
        missing = []  # iterative: a member path may have thousands of components
        while rel not in self._safe_dirs:
            missing.append(rel)
            rel = os.path.dirname(rel)
        for d in reversed(missing):
            # A parent with no member of its own keeps the mode mkdir gives it: 0777 less
            # the umask (or as a default ACL says), as GNU tar leaves it.
            self._make_dir(d, member_name, 0o777)

    def _make_dir(self, rel: str, member_name: str, mode: int = 0o700) -> None:
        """Make ``rel`` a real directory (``mode`` if made now: a directory member's own
        mode is applied by ``finish_dirs`` once everything under it is written)."""
        path = os.path.join(self.root, rel)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            try:
                os.mkdir(path, mode)
            except OSError as err:
                raise translate_os_error(err, self._show(path)) from err
        else:
            if stat.S_ISLNK(st.st_mode):
                raise UnsafeArchiveError(f"tar member {member_name!r} would be written through the symlink {rel!r}")
            if not stat.S_ISDIR(st.st_mode):
                os.unlink(path)
                os.mkdir(path, mode)
        self._safe_dirs.add(rel)

    def _clear(self, path: str, member_name: str) -> None:
        """Remove a non-directory at ``path`` (a later member replaces an earlier one, as in tar)."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            raise UnsafeArchiveError(f"tar member {member_name!r} would replace a directory")
        os.unlink(path)

    def finish_dirs(self, dirs: list[MemberRecord]) -> None:
        """Apply directory modes and mtimes, deepest first (as tar does at the end).

        A directory this extractor extracted gets its mtime to the nanosecond; one only
        recorded by an earlier, interrupted run, the record's whole seconds.
        """
        for d in sorted(dirs, key=lambda d: d.path, reverse=True):
            path = os.path.join(self.root, d.path)
            if os.path.isdir(path) and not os.path.islink(path):
                ns = self._dir_ns.get(d.path)
                if ns is None or ns // NS != d.mtime:
                    ns = d.mtime * NS
                os.utime(path, ns=(ns, ns))
                os.chmod(path, d.mode & 0o7777)

    def finish_root(self, record: MemberRecord | None = None) -> None:
        """Give the root the mode and mtime of the archive's ``./`` member (``record``, by
        default ``root_record``), as GNU tar gives them to the directory of ``-C DIR``; do
        nothing if there is none.

        Call it last: anything written into the root afterwards moves its mtime, and a
        mode without owner write (0555) would stop a non-root caller from writing there.
        So ``finish_dirs`` does not do it: a pull writes its metadata (``.s3sync/``) into
        the tree after ``finish_dirs``. A resumed extraction that started past the ``./``
        member never sees it: pass the ``record`` an earlier run kept.
        """
        if record is None:
            record, ns = self.root_record, self._root_ns
        else:
            ns = record.mtime * NS
        if record is None:
            return
        try:
            os.utime(self.root, ns=(ns, ns))
            os.chmod(self.root, record.mode & 0o777)
        except OSError as err:
            raise translate_os_error(err, self._show(self.root)) from err


class ArchiveScanner(SafeExtractor):
    """A dry run of ``SafeExtractor``: every member goes through exactly the same checks
    (names, link targets, special files, sparse maps, parents that would be symlinks, hard
    links to files not extracted, a member replacing a directory) in the same code, but
    nothing is written: the tree is kept in memory as a path -> kind map. ``adopt`` uses it
    to count members, files and bytes of an archive and to refuse one that a pull would
    refuse, naming the member.

    Differences from a real extraction: file data is hashed but not written; holes of sparse
    members are not hashed (their records carry no digest); tarfile's data filter resolves
    link targets against a root that does not exist (our own checks already refuse a
    symlink that may leave the tree, so no extracted symlink could change its answer).
    Memory: one map entry per member path (~200 bytes each).

    Args:
        strip_components: as for ``SafeExtractor``.
    """

    _ROOT = "/nonexistent/s3sync-scan"

    def __init__(self, strip_components: int = 0) -> None:
        self._tree: dict[str, str] = {}
        super().__init__(self._ROOT, shown=Path("(archive)"), strip_components=strip_components)

    def scan(self, stream: ForwardReader, on_member: Callable[[int, MemberRecord], None]) -> None:
        """Read members from the stream's position to the end-of-archive marker, checking
        each as ``SafeExtractor.extract`` would; ``on_member`` as there.

        Raises:
            UnsafeArchiveError: a member a pull would refuse (named).
        """
        self.extract(stream, on_member)

    def _fresh(self) -> bool:
        return True

    def _make_dir(self, rel: str, member_name: str, mode: int = 0o700) -> None:
        path = os.path.join(self.root, rel)
        if self._tree.get(path) == "symlink":
            raise UnsafeArchiveError(f"tar member {member_name!r} would be written through the symlink {rel!r}")
        self._tree[path] = "dir"
        self._safe_dirs.add(rel)

    def _clear(self, path: str, member_name: str) -> None:
        kind = self._tree.get(path)
        if kind == "dir":
            raise UnsafeArchiveError(f"tar member {member_name!r} would replace a directory")
        self._tree.pop(path, None)

    def _create(self, path: str, member_name: str, mode: int) -> int:
        if path in self._tree:
            self._clear(path, member_name)
        self._tree[path] = "file"
        return -1

    def _open_root(self) -> int | None:
        return None  # nothing is written: _write_small goes through _write_regular below

    def _write_regular(self, path: str, member_name: str, mode: int, ns: int,
                       pieces: Iterable[memoryview]) -> str:
        self._create(path, member_name, mode)
        hasher = hashing.Hasher()
        for view in pieces:
            hasher.update(view)
        return hasher.hexdigest()

    def _write_sparse(self, path: str, member: tarfile.TarInfo, mode: int, ns: int,
                      stream: ForwardReader) -> str:
        self._create(path, member.name, mode)
        stream.seek(member.offset_data)
        for _offset, size in member.sparse:
            for _view in stream.views(size) if size else ():
                pass
        return ""

    def _symlink(self, target: str, path: str, ns: int) -> None:
        self._tree[path] = "symlink"

    def _is_regular(self, path: str) -> bool:
        return self._tree.get(path) == "file"

    def _link(self, target_path: str, path: str) -> None:
        self._tree[path] = "file"

    def finish_dirs(self, dirs: list[MemberRecord]) -> None:
        """Nothing to do: no directory was made."""

    def finish_root(self, record: MemberRecord | None = None) -> None:
        """Nothing to do: no root was made."""


def _umask() -> int:
    """This process's umask, read without changing it (``/proc/self/status``, Linux 4.7+);
    0o7777 (assume every bit may be masked) where that cannot be read."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o7777


def _has_default_acl(path: str) -> bool:
    """True if ``path`` carries a default POSIX ACL, or if that cannot be told."""
    try:
        os.getxattr(path, "system.posix_acl_default")
        return True
    except OSError as err:
        return err.errno != errno.ENODATA  # ENOTSUP: maybe another ACL model (NFSv4)
    except AttributeError:  # no xattr support in this Python build
        return True


def file_digest(path: str | Path) -> str:
    """Digest of a file's bytes, read in 1 MiB blocks.

    Raises:
        OSError: the file cannot be read or is not a regular file (see ``open_regular``).
    """
    hasher = hashing.Hasher()
    with open_regular(path) as f:
        while block := f.read(COPY_BUFSIZE):
            hasher.update(block)
    return hasher.hexdigest()


def translate_os_error(err: OSError, path: str) -> Exception:
    """Map a write failure at ``path`` to InsufficientSpaceError (ENOSPC, EDQUOT) or DestinationError."""
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        return InsufficientSpaceError(f"{path}: no space left on device", path=path, needed=0, available=0)
    return DestinationError(f"{path}: {err.strerror or err}")


def extract_named(archive: Path, names: Iterable[str], dest_dir: Path) -> dict[str, Path]:
    """Copy the regular members of a (possibly compressed) tar whose base name is one of
    ``names``, at any depth, to ``dest_dir/NAME`` (temporary file, then rename): how a
    builder takes the two lists out of a distribution archive without extracting the rest.

    Args:
        archive: a tar file, plain or compressed with gzip, bzip2 or xz (tarfile's ``r:*``).
        names: the base names wanted (the first member with each name wins).
        dest_dir: an existing directory.

    Returns:
        name -> the written file, for each name found (a name not found is left out).

    Raises:
        OSError: the archive cannot be read or the file cannot be written.
        tarfile.TarError: the archive is damaged (callers translate it with ``DamagedArchiveError``
            or their own error; catch ``ValueError`` too, which some damaged headers raise).
    """
    wanted = set(names)
    found: dict[str, Path] = {}
    with tarfile.open(archive, "r:*") as tar:
        for member in tar:
            base = member.name.rstrip("/").rsplit("/", 1)[-1]
            if not member.isreg() or base not in wanted or base in found:
                continue
            src = tar.extractfile(member)
            assert src is not None  # a regular member
            target = dest_dir / base
            tmp = dest_dir / f".{base}.tmp-{os.getpid()}"
            try:
                with src, open(tmp, "wb") as out:
                    while block := src.read(COPY_BUFSIZE):
                        out.write(block)
                os.replace(tmp, target)
            except BaseException:
                tmp.unlink(missing_ok=True)
                raise
            found[base] = target
            if len(found) == len(wanted):
                break
    return found


def is_tar_error(err: BaseException) -> bool:
    """Whether ``err`` is tarfile's way of saying an archive is damaged (for callers that
    must not import tarfile)."""
    return isinstance(err, (tarfile.TarError, EOFError))
