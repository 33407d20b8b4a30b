"""Files replaced between the scan and the read of a publish (or a verify).

``scan_tree`` refuses special files and symlinks leaving the tree, but a file can be
replaced after the scan: by a FIFO (a plain ``open`` blocks for ever waiting for a
writer), or by a symlink (which a plain ``open`` follows out of the tree). Each case must
end at once with a ``SourceError`` naming the file, never hang and never read elsewhere.
"""

from __future__ import annotations

import io
import os
import threading
from pathlib import Path

import pytest

from s3sync import archive
from s3sync.errors import SourceError

SMALL = 1000
BIG = archive.SMALL_FILE + 1  # read with _copy_exact instead of the read-ahead batches


def _tree(root: Path) -> Path:
    src = root / "src"
    (src / "d").mkdir(parents=True)
    (src / "d" / "small.bin").write_bytes(b"s" * SMALL)
    (src / "d" / "big.bin").write_bytes(b"b" * BIG)
    (src / "z.txt").write_text("last\n")
    return src


def _replace_with_fifo(path: Path) -> None:
    path.unlink()
    os.mkfifo(path)


def _replace_with_symlink(path: Path, target: Path) -> None:
    path.unlink()
    path.symlink_to(target)


def _write_tar_in_thread(entries) -> BaseException | None:
    """Run write_tar with a deadline; a hang fails the test instead of the suite."""
    result: list[BaseException | None] = []

    def run() -> None:
        try:
            archive.write_tar(entries, io.BytesIO(), lambda span: None)
            result.append(None)
        except BaseException as err:  # noqa: BLE001 - handed to the test
            result.append(err)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(20)
    assert not t.is_alive(), "write_tar hung on a replaced file"
    return result[0]


@pytest.mark.parametrize("name", ["small.bin", "big.bin"])
@pytest.mark.parametrize("replacement", ["fifo", "symlink"])
def test_file_replaced_after_the_scan_is_refused_at_once(tmp_path: Path, name: str, replacement: str) -> None:
    src = _tree(tmp_path)
    secret = tmp_path / "outside.txt"
    secret.write_bytes(b"x" * (SMALL if name == "small.bin" else BIG))  # same size: only the type differs
    entries = archive.scan_tree(src)
    victim = src / "d" / name
    if replacement == "fifo":
        _replace_with_fifo(victim)
    else:
        _replace_with_symlink(victim, secret)
    err = _write_tar_in_thread(entries)
    assert isinstance(err, SourceError), err
    assert str(victim) in str(err)
    assert ("no longer a regular file" if replacement == "fifo" else "replaced by a symbolic link") in str(err)


@pytest.mark.parametrize("name", ["small.bin", "big.bin"])
@pytest.mark.parametrize("delta", [1, 5000, -1, -SMALL])
def test_file_that_changed_size_after_the_scan_is_refused(tmp_path: Path, name: str, delta: int) -> None:
    src = _tree(tmp_path)
    entries = archive.scan_tree(src)
    victim = src / "d" / name
    size = victim.stat().st_size
    with open(victim, "r+b") as f:  # in place: the same inode, only the size differs
        if delta > 0:
            f.seek(0, os.SEEK_END)
            f.write(b"+" * delta)
        else:
            f.truncate(size + delta)
    err = _write_tar_in_thread(entries)
    assert isinstance(err, SourceError), err
    assert str(victim) in str(err) and "size changed" in str(err)
    assert ("more than" in str(err)) == (delta > 0), err  # never a made-up new size


def test_unchanged_tree_still_publishes(tmp_path: Path) -> None:
    assert _write_tar_in_thread(archive.scan_tree(_tree(tmp_path))) is None


def test_file_digest_refuses_a_fifo_instead_of_blocking(tmp_path: Path) -> None:
    fifo = tmp_path / "f"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="no longer a regular file"):
        archive.file_digest(fifo)


def test_directory_replaced_by_a_symlink_after_the_scan_is_refused(tmp_path: Path) -> None:
    """O_NOFOLLOW guards only the last path component: a directory above the file swapped
    for a symlink must be caught by comparing the file with the scan's (device, inode)."""
    src = _tree(tmp_path)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "small.bin").write_bytes(b"S" * SMALL)  # same names and sizes as the originals
    (outside / "big.bin").write_bytes(b"B" * BIG)
    entries = archive.scan_tree(src)
    (src / "d").rename(tmp_path / "d.saved")
    (src / "d").symlink_to(outside)
    err = _write_tar_in_thread(entries)
    assert isinstance(err, SourceError), err
    assert "replaced by another file since the scan" in str(err)


LEASE_HOLDER = r"""
import fcntl, os, signal, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
def release(signum, frame):
    time.sleep(0.3)  # a lease holder (e.g. Samba) flushes, then lets go
    fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_UNLCK)
    print("released", flush=True)
signal.signal(signal.SIGIO, release)
fcntl.fcntl(fd, fcntl.F_SETLEASE, fcntl.F_WRLCK)
print("leased", flush=True)
time.sleep(30)
"""


def test_a_file_under_a_lease_is_read_once_the_holder_lets_go(tmp_path: Path) -> None:
    """open(O_NONBLOCK) fails at once with EAGAIN on a file with a lease (open(2)); a
    reader must wait for the lease break like any program opening the file."""
    import subprocess
    import sys

    path = tmp_path / "leased.bin"
    path.write_bytes(b"l" * SMALL)
    holder = subprocess.Popen([sys.executable, "-c", LEASE_HOLDER, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        if holder.stdout.readline().strip() != "leased":
            pytest.skip("cannot take a file lease here")
        with archive.open_regular(path, os.lstat(path)) as f:
            assert f.read() == b"l" * SMALL
        assert holder.stdout.readline().strip() == "released"  # the open waited for the break
    finally:
        holder.kill()
        holder.wait()


# --------------------------------------------------------------------------- changed while being read
# GNU tar's check ("file changed as we read it"): size, mtime and ctime from the scan,
# compared at open and after the last byte is read. Every case below is deterministic:
# the change is made after the scan (or from inside the read, through a wrapped
# open_regular), and only once the file system's clock has moved past the scanned times,
# since a write in the same timestamp tick as the scan is invisible to any stat check.


def _after_a_tick(src: Path, scanned: os.stat_result) -> None:
    """Return once a new timestamp on this file system differs from the scanned ones."""
    probe = src.parent / "clock-probe"
    while True:
        probe.unlink(missing_ok=True)
        probe.write_bytes(b"")  # a new inode: its times are the file system's clock now
        now = os.stat(probe).st_mtime_ns
        if now not in (scanned.st_mtime_ns, scanned.st_ctime_ns):
            probe.unlink()
            return


def _rewrite_same_size(path: Path) -> None:
    with open(path, "r+b") as f:
        f.write(b"X" * 10)  # same size, same inode: only the times tell


def _rewrite_keep_mtime(path: Path) -> None:
    st = os.stat(path)
    _rewrite_same_size(path)
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns))  # as touch -r or rsync would: only ctime tells


def _replace_by_rename(path: Path) -> None:
    new = path.with_name(path.name + ".new")
    new.write_bytes(b"N" * os.stat(path).st_size)
    os.replace(new, path)


def _grow(path: Path) -> None:
    with open(path, "ab") as f:
        f.write(b"+")


def _chmod(path: Path) -> None:
    path.chmod(0o600)


CHANGES = {
    "rewrite-same-size": _rewrite_same_size,
    "rewrite-mtime-restored": _rewrite_keep_mtime,
    "grow": _grow,
    "truncate": lambda p: os.truncate(p, 10),
    "replace-by-rename": _replace_by_rename,
    "delete": os.unlink,
    "chmod": _chmod,
}


def _tar_members(data: bytes) -> dict[str, bytes]:
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isreg()}


def _write_tar_bytes(entries) -> tuple[BaseException | None, bytes]:
    out = io.BytesIO()
    try:
        archive.write_tar(entries, out, lambda span: None)
    except SourceError as err:
        return err, out.getvalue()
    return None, out.getvalue()


@pytest.mark.parametrize("name", ["small.bin", "big.bin"])
@pytest.mark.parametrize("change", ["rewrite-same-size", "rewrite-mtime-restored", "replace-by-rename",
                                    "delete", "chmod"])
def test_file_changed_between_scan_and_read_is_refused(tmp_path: Path, name: str, change: str) -> None:
    src = _tree(tmp_path)
    entries = archive.scan_tree(src)
    victim = src / "d" / name
    _after_a_tick(src, next(e.st for e in entries if e.path == str(victim)))
    CHANGES[change](victim)
    err, _ = _write_tar_bytes(entries)
    assert isinstance(err, SourceError), err
    assert str(victim) in str(err), err
    if change in ("rewrite-same-size", "rewrite-mtime-restored", "chmod"):
        assert "changed while being read" in str(err), err
        assert err.hint == "publish again when nothing is writing to SRC_DIR"


@pytest.mark.parametrize("name", ["small.bin", "big.bin"])
@pytest.mark.parametrize("change", sorted(CHANGES))
def test_file_changed_while_being_read_is_refused_or_published_whole(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, change: str) -> None:
    """The change happens inside the read: after its first read(2), before the end.
    Each outcome must be a refusal naming the file, or the bytes as they were scanned."""
    src = _tree(tmp_path)
    victim = src / "d" / name
    original = victim.read_bytes()
    entries = archive.scan_tree(src)
    _after_a_tick(src, next(e.st for e in entries if e.path == str(victim)))
    real_open = archive.open_regular
    fired = []

    class ChangingReader:
        def __init__(self, f) -> None:
            self._f = f

        def read(self, n: int = -1) -> bytes:
            data = self._f.read(n)
            if not fired:
                fired.append(True)
                CHANGES[change](victim)
            return data

        def __getattr__(self, attr: str):
            return getattr(self._f, attr)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            self._f.close()

    def open_regular(path, expect=None):
        f = real_open(path, expect)
        return ChangingReader(f) if os.fspath(path) == str(victim) else f

    # Small files are read on the descriptor (archive._pread), not through open_regular's file.
    real_pread = archive._pread
    scanned = os.lstat(victim)

    def pread(fd: int, size: int, nowait: bool = False):
        data = real_pread(fd, size, nowait)
        st = os.fstat(fd)
        if data is not None and not fired and (st.st_dev, st.st_ino) == (scanned.st_dev, scanned.st_ino):
            fired.append(True)
            CHANGES[change](victim)
        return data

    monkeypatch.setattr(archive, "open_regular", open_regular)
    monkeypatch.setattr(archive, "_pread", pread)
    err, data = _write_tar_bytes(entries)
    assert fired
    if err is None:  # a consistent snapshot is the only other acceptable outcome
        assert _tar_members(data)[f"d/{name}"] == original, change
    else:
        assert str(victim) in str(err) and "changed while being read" in str(err), err
    # Every one of these moves ctime (write, truncate, unlink, rename, chmod): all refused.
    assert err is not None, change


def test_unchanged_tree_publishes_every_byte(tmp_path: Path) -> None:
    src = _tree(tmp_path)
    err, data = _write_tar_bytes(archive.scan_tree(src))
    assert err is None
    assert _tar_members(data) == {"d/big.bin": b"b" * BIG, "d/small.bin": b"s" * SMALL, "z.txt": b"last\n"}


def _uncached(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every small file look uncached (RWF_NOWAIT's EAGAIN), so that the reader pool
    reads them; returns the list of files the pool was handed."""
    real_pread, pooled = archive._pread, []

    def pread(fd: int, size: int, nowait: bool = False):
        return None if nowait else real_pread(fd, size, nowait)

    real_batch = archive._read_batch

    def read_batch(files):
        pooled.extend(path for path, _ in files)
        return real_batch(files)

    monkeypatch.setattr(archive, "_pread", pread)
    monkeypatch.setattr(archive, "_read_batch", read_batch)
    return pooled


def test_uncached_small_files_go_to_the_pool_and_give_the_same_stream(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = _tree(tmp_path)
    for i in range(3 * archive.BATCH_FILES):
        (src / "d" / f"n{i:03d}").write_bytes(bytes([i]) * i)
    entries = archive.scan_tree(src)
    cached = _write_tar_bytes(entries)
    pooled = _uncached(monkeypatch)
    assert _write_tar_bytes(entries) == cached == (None, cached[1])
    assert len(pooled) == 3 * archive.BATCH_FILES + 2  # every small file: small.bin and z.txt too


@pytest.mark.parametrize("change", ["rewrite-same-size", "grow", "delete"])
def test_uncached_small_file_changed_before_the_pool_reads_it_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, change: str) -> None:
    src = _tree(tmp_path)
    entries = archive.scan_tree(src)
    victim = src / "d" / "small.bin"
    _after_a_tick(src, next(e.st for e in entries if e.path == str(victim)))
    pooled = _uncached(monkeypatch)
    pool_read = archive._read_batch

    def read_batch(files):
        if any(path == str(victim) for path, _ in files):
            CHANGES[change](victim)  # after the calling thread found it uncached
        return pool_read(files)

    monkeypatch.setattr(archive, "_read_batch", read_batch)
    err, _ = _write_tar_bytes(entries)
    assert str(victim) in pooled
    assert isinstance(err, SourceError) and str(victim) in str(err), err
