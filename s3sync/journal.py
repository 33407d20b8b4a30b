"""Resume state of a pull, kept in its staging directory next to the destination.

Layout of ``DEST_PARENT/.NAME.s3sync-partial/``::

    manifest.json   the manifest being pulled (bytes as fetched)
    journal.json    {"version", "generation", "manifest_digest", "mode", "offset", "index_size"}
    reserve         256 KiB set aside, deleted on ENOSPC so the last checkpoint can be written
    tree/           the dataset as extracted so far (renamed into place at the end)
    tree/.s3sync/index.jsonl
                    one line per extracted member (archive.MemberRecord), in stream
                    order; it stays with the dataset, for ``s3sync verify``

Chunks are consumed in stream order, so the whole resume state is one number:
``offset``, the stream offset up to which every byte is written to ``tree/`` (for
extraction, a tar header boundary after a completely written member). A rerun
fetches from the chunk holding ``offset``; at most the in-flight window is fetched
twice. The journal is replaced atomically (write, fsync, rename), so a kill at any
moment leaves either the old or the new checkpoint. It protects against the
process dying, not against the OS losing unsynced file data.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from . import hashing
from .archive import (
    METADATA_DIR,
    MemberRecord,
    NotRegularFile,
    open_regular_for_write,
    translate_os_error,
)
from .errors import DestinationBusyError, DestinationError

JOURNAL_VERSION = 1
JOURNAL_NAME = "journal.json"
JOURNAL_TMP = "journal.json.tmp"
MANIFEST_NAME = "manifest.json"
TREE_NAME = "tree"
RESERVE_NAME = "reserve"
RESERVE_SIZE = 256 * 1024
INDEX_NAME = "index.jsonl"


def staging_dir(dest_parent: Path, name: str) -> Path:
    """Where a pull of ``name`` into ``dest_parent`` keeps its partial state."""
    return dest_parent / f".{name}.s3sync-partial"


class Journal:
    """Checkpoint writer for one pull.

    Args:
        staging: the staging directory (see module docstring).
        manifest_bytes: the manifest as fetched; its digest identifies the pull.
        mode: ``extract`` or ``parts``.
        interval_s: a checkpoint is written at least this often (seconds) ...
        min_advance: ... or as soon as the offset moved this many bytes (typically one
            chunk), so a kill loses at most about the in-flight window of work.

    Checkpoints are written with rename but without fsync (cheap enough to write one
    per chunk): a killed process loses nothing, and after an OS crash a journal that
    did not reach the disk reads as absent, so the pull starts over, never from a
    wrong offset. ``close`` fsyncs.
    """

    def __init__(self, staging: Path, manifest_bytes: bytes, generation: str, mode: str,
                 interval_s: float = 1.0, min_advance: int = 0) -> None:
        self.staging = staging
        self.tree = staging / TREE_NAME
        self.index_path = self.tree / METADATA_DIR / INDEX_NAME
        self.mode = mode
        self.generation = generation
        self.manifest_digest = hashing.digest(manifest_bytes)
        self._manifest_bytes = manifest_bytes
        self._interval_s = interval_s
        self._min_advance = min_advance
        self._last_write = 0.0
        self._written_offset = 0
        # (offset, index_size): every member before ``offset`` has its record in the first
        # ``index_size`` bytes of the index, and no other. Replaced as one tuple (a single
        # store, which a signal handler cannot split), read once per write: the journal
        # only ever persists a consistent pair, wherever a KeyboardInterrupt lands.
        self._mark = (0, 0)
        self._index_file = None
        self._index_size = 0
        self._parent_fd: int | None = None
        self._lock_fd: int | None = None
        self._tree_fd: int | None = None

    @property
    def offset(self) -> int:
        """Stream offset (bytes) of the last checkpoint, written to the journal or not yet."""
        return self._mark[0]

    def open(self) -> int:
        """Load or start the journal; return the stream offset to resume from (0 if new).

        The staging directory is created here, or reused only if it is provably ours: a real
        directory (never a symlink, opened with ``O_NOFOLLOW``) that is empty or holds a
        ``journal.json``. Every later operation in it is relative to that open directory
        (``dir_fd``), and nothing in it is followed if it is a symlink. A staging directory
        left by a different generation or mode is emptied. An exclusive lock (flock on
        the staging directory itself) keeps two pulls from writing into it at once.

        Raises:
            DestinationError: another pull holds the lock; the staging directory is not
                ours (a symlink, a file, a directory without a journal), holds a symlink
                where pull keeps its state, or cannot be created or written.
        """
        parent = self.staging.parent
        try:
            self._parent_fd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            try:
                os.mkdir(self.staging.name, 0o700, dir_fd=self._parent_fd)
            except FileExistsError:
                pass
            self._lock_fd = os.open(self.staging.name, _DIR_FLAGS, dir_fd=self._parent_fd)
        except OSError as err:
            self._unlock()
            if err.errno in (errno.ELOOP, errno.ENOTDIR) and self._parent_fd is not None:
                raise DestinationError(
                    f"{self.staging}: not a directory s3sync made (a symlink or a file); not touched",
                    hint="remove it (or pull into another DEST_PARENT), then run the command again") from err
            raise DestinationError(f"{self.staging}: cannot create ({err.strerror})",
                                   hint=_write_hint(parent)) from err
        busy = try_lock(self._lock_fd, f"is already writing {self.staging}", self.staging, "pull")
        if busy is not None:
            self._unlock()
            raise busy
        try:
            return self._load()
        except OSError as err:
            self._unlock()
            raise DestinationError(f"{self.staging}: cannot read resume state ({err.strerror})",
                                   hint=_write_hint(parent)) from err
        except BaseException:
            self._unlock()
            raise

    def _load(self) -> int:
        fd = self._lock_fd
        names = os.listdir(fd)
        state = None
        if JOURNAL_NAME in names:
            try:
                state = json.loads(_read_nofollow(JOURNAL_NAME, fd))
            except OSError as err:
                if err.errno != errno.ELOOP:
                    raise DestinationError(f"{self.staging / JOURNAL_NAME}: cannot read ({err.strerror})") from err
                # a symlink planted at journal.json: never read through it; ours is replaced
            except ValueError:
                pass
        elif names:
            # Only a directory this code made is ever emptied: it always holds a journal
            # (written first, replaced atomically, removed last).
            raise DestinationError(
                f"{self.staging}: exists and is not the resume state of an s3sync pull (no {JOURNAL_NAME}); "
                "not touched", hint="remove or rename it, then run the command again")
        same = (isinstance(state, dict) and state.get("version") == JOURNAL_VERSION
                and state.get("manifest_digest") == self.manifest_digest
                and state.get("mode") == self.mode
                and isinstance(state.get("offset"), int) and state["offset"] >= 0
                and isinstance(state.get("index_size", 0), int))
        if same and (TREE_NAME not in names or _index_lost_records(fd, state.get("index_size", 0))):
            # The journal describes a tree (or an index) that is gone or cut short (removed,
            # or moved away): resuming would extract only the rest and find the counts short
            # ("damaged"). Start over.
            same = False
        try:
            if not same:
                # Keep the directory (it carries the lock) and the journal until the new
                # one replaces it: interrupted here, the directory is still provably ours.
                for entry in os.scandir(fd):
                    if entry.name == JOURNAL_NAME:
                        continue
                    if entry.is_dir(follow_symlinks=False):
                        rmtree_at(fd, entry.name)  # never follows a symlink
                    else:
                        os.unlink(entry.name, dir_fd=fd)
                self._write()  # offset 0, no index
                os.mkdir(TREE_NAME, dir_fd=fd)
                _write_new(fd, MANIFEST_NAME, self._manifest_bytes)
            else:
                try:
                    os.mkdir(TREE_NAME, dir_fd=fd)
                except FileExistsError:
                    pass
            # Kept open until the end: pull writes the tree only through it (``tree_path``).
            self._tree_fd = tree_fd = self._open_subdir(fd, TREE_NAME, self.tree)
            try:
                os.mkdir(METADATA_DIR, dir_fd=tree_fd)
            except FileExistsError:
                pass
            meta_fd = self._open_subdir(tree_fd, METADATA_DIR, self.index_path.parent)
            try:
                index_fd = open_regular_for_write(INDEX_NAME, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW
                                                  | os.O_CLOEXEC, 0o666, dir_fd=meta_fd)
            except OSError as err:
                if err.errno == errno.ELOOP or isinstance(err, NotRegularFile):  # a FIFO: never waited on
                    raise _planted(self.index_path, self.staging) from err
                raise
            finally:
                os.close(meta_fd)
            self._index_file = open(index_fd, "ab")  # noqa: SIM115 - closed by close()/remove()
            self._index_size = os.fstat(index_fd).st_size
            if same:
                # Drop index records written after the checkpoint (possibly torn by a
                # kill): the members they describe are extracted again.
                size = os.fstat(index_fd).st_size
                os.ftruncate(index_fd, min(state.get("index_size", 0), size))
                self._index_file.seek(0, os.SEEK_END)
                self._index_size = self._index_file.tell()
                self._mark = (state["offset"], self._index_size)
                self._written_offset = state["offset"]
            # A little space set aside, freed when the disk fills up, so that the last
            # checkpoint can still be written and a rerun resumes from it.
            try:
                rfd = os.open(RESERVE_NAME, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                              0o600, dir_fd=fd)
            except FileExistsError:
                if not stat.S_ISREG(os.stat(RESERVE_NAME, dir_fd=fd, follow_symlinks=False).st_mode):
                    os.unlink(RESERVE_NAME, dir_fd=fd)  # a planted symlink: removed, not followed
            else:
                try:
                    os.posix_fallocate(rfd, 0, RESERVE_SIZE)
                finally:
                    os.close(rfd)
        except OSError as err:
            raise DestinationError(f"{self.staging}: cannot write resume state ({err.strerror})",
                                   hint=_write_hint(self.staging.parent)) from err
        return self.offset

    @property
    def tree_path(self) -> str:
        """A name of ``tree/`` that always reaches the directory ``open`` made (or reused),
        wherever it is now: ``/proc/self/fd/N`` of its open descriptor. Someone who can write
        DEST_PARENT may rename the staging directory away while pulling and put a symlink in
        its place; every path built on ``self.tree`` would then be followed. (``str(self.tree)``
        where /proc is not mounted.)"""
        if self._tree_fd is not None:
            proc = f"/proc/self/fd/{self._tree_fd}"
            if os.path.isdir(proc):
                return proc
        return str(self.tree)

    def _open_subdir(self, dir_fd: int, name: str, path: Path) -> int:
        """Open the directory ``name`` under ``dir_fd`` without following a symlink."""
        try:
            return os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
        except OSError as err:
            if err.errno in (errno.ELOOP, errno.ENOTDIR):
                raise _planted(path, self.staging) from err
            raise

    def add(self, record: MemberRecord) -> None:
        """Append an extracted member to the index (flushed with the next checkpoint)."""
        assert self._index_file is not None
        data = record_line(record)
        self._index_file.write(data)
        # Counted here rather than asked of the file at each checkpoint: BufferedWriter.tell()
        # cost ~3.5 us per member (20,000 members: 90 -> 170 ms of bookkeeping).
        self._index_size += len(data)

    def records(self) -> Iterator[MemberRecord]:
        """Every member recorded so far, earlier runs included, in stream order.

        The index is truncated to the last checkpoint on resume and extraction resumes
        at exactly that member, so each member appears once.
        """
        if self._index_file is not None:
            self._index_file.flush()
        return iter_index(Path(self.tree_path, METADATA_DIR, INDEX_NAME))

    @property
    def mark(self) -> tuple[int, int]:
        """The last checkpoint as an ``(offset, index size)`` pair, for ``rewind``."""
        return self._mark

    def rewind(self, mark: tuple[int, int]) -> None:
        """Move the resume point back to an earlier ``mark`` and write it now (synced): a
        rerun resumes there, and the index records after it are dropped when it opens.
        For a split archive whose piece failed its digest: what came from that piece is
        extracted again by the rerun."""
        self._mark = mark
        self._write(sync=True)

    def save_state(self, name: str, data: bytes) -> None:
        """Replace the staging file ``name`` (extra resume state of a pipeline) atomically,
        never through a symlink; synced, so it is never older than a later checkpoint.

        Raises:
            DestinationError: the file cannot be written (InsufficientSpaceError on ENOSPC).
        """
        try:
            _write_new(self._lock_fd, name + ".tmp", data, sync=True)
            os.replace(name + ".tmp", name, src_dir_fd=self._lock_fd, dst_dir_fd=self._lock_fd)
        except OSError as err:
            raise translate_os_error(err, str(self.staging / name)) from err

    def load_state(self, name: str) -> bytes | None:
        """The staging file ``name`` as saved by ``save_state`` in an earlier run of this
        same pull (a new or restarted pull has none), or None."""
        try:
            return _read_nofollow(name, self._lock_fd)
        except (OSError, ValueError):  # ValueError: not a regular file (planted): ignored
            return None

    def forget(self) -> None:
        """Make the next run start over from byte 0: the journal is written with an offset
        that ``open`` refuses (negative), so the staging directory is emptied then. For a
        run whose checks fail in a way a resumed run could no longer see (the stream digest
        covers bytes a resumed run skips)."""
        self.checkpoint(-1, force=True)

    def checkpoint(self, offset: int, force: bool = False) -> None:
        """Record that every byte before ``offset`` is safely written, and every member
        before it ``add``-ed (rate-limited)."""
        self._mark = (offset, self._index_size if self._index_file is not None else 0)
        now = time.monotonic()
        if (force or now - self._last_write >= self._interval_s
                or (self._min_advance and offset - self._written_offset >= self._min_advance)):
            self._write(sync=force)
            self._last_write = now

    def _write(self, sync: bool = True) -> None:
        try:
            self._write_unchecked(sync)
        except OSError as err:
            if err.errno in (errno.ENOSPC, errno.EDQUOT) and self._release_reserve():
                try:
                    self._write_unchecked(sync)  # the reserve made room for the resume point
                    return
                except OSError as again:
                    err = again
            raise translate_os_error(err, str(self.staging.parent)) from err

    def _release_reserve(self) -> bool:
        """Free the reserve file (see ``open``); True if there was one."""
        try:
            os.unlink(RESERVE_NAME, dir_fd=self._lock_fd)
            return True
        except FileNotFoundError:
            return False

    def _write_unchecked(self, sync: bool) -> None:
        offset, index_size = self._mark  # one read: a consistent pair
        if self._index_file is not None:
            self._index_file.flush()
            if sync:
                os.fsync(self._index_file.fileno())
        doc = {"version": JOURNAL_VERSION, "generation": self.generation,
               "manifest_digest": self.manifest_digest, "mode": self.mode, "offset": offset,
               "index_size": index_size}
        _write_new(self._lock_fd, JOURNAL_TMP, json.dumps(doc).encode(), sync=sync)
        os.replace(JOURNAL_TMP, JOURNAL_NAME, src_dir_fd=self._lock_fd, dst_dir_fd=self._lock_fd)
        self._written_offset = offset

    def close(self) -> None:
        """Flush the last checkpoint, close files and release the lock."""
        try:
            if self._lock_fd is not None:
                self._write()
        finally:
            if self._index_file is not None:
                self._index_file.close()
                self._index_file = None
            self._unlock()

    def _unlock(self) -> None:
        for attr in ("_tree_fd", "_lock_fd", "_parent_fd"):
            fd = getattr(self, attr)
            if fd is not None:
                setattr(self, attr, None)
                os.close(fd)

    def close_quietly(self) -> None:
        """``close``, ignoring write errors (the disk may be full; the last checkpoint stays valid)."""
        try:
            self.close()
        except Exception:  # noqa: BLE001 - the caller is already handling a failure
            pass

    def write_metadata(self, name: str, data: bytes) -> None:
        """Write ``tree/.s3sync/name`` (replacing it), never through a symlink.

        Raises:
            OSError: the write failed; DestinationError: a symlink was planted on the way.
        """
        # Into the tree opened at ``open`` (the one extraction wrote), not whatever is named
        # tree/ now.
        tree_fd = self._tree_fd if self._tree_fd is not None else self._open_subdir(self._lock_fd, TREE_NAME,
                                                                                     self.tree)
        try:
            try:
                os.mkdir(METADATA_DIR, dir_fd=tree_fd)
            except FileExistsError:
                pass
            meta_fd = self._open_subdir(tree_fd, METADATA_DIR, self.tree / METADATA_DIR)
        finally:
            if tree_fd != self._tree_fd:
                os.close(tree_fd)
        try:
            _write_new(meta_fd, name, data)
        finally:
            os.close(meta_fd)

    def move_tree(self, name: str) -> Path:
        """Rename ``tree/`` to ``DEST_PARENT/name``: the commit of a pull (atomic on one
        file system). Both ends are named relative to directories opened at ``open``, so
        a symlink swapped in above them is not followed. rename(2) never replaces a
        symlink, a file or a non-empty directory with a directory (ENOTDIR, ENOTEMPTY,
        EEXIST): whatever appeared at the destination meanwhile is left alone, and so is
        the staging directory, for a rerun.

        Raises:
            DestinationError: something is in the way, or the rename failed.
        """
        dest = self.staging.parent / name
        # Only the directory opened at ``open`` (and written through ``tree_path``) is the
        # dataset: a symlink or another directory swapped in at tree/ meanwhile is not
        # renamed into place (checked before, and after in case it was swapped in between).
        if not self._is_our_tree(TREE_NAME, self._lock_fd):
            raise _planted(self.tree, self.staging)
        try:
            os.rename(TREE_NAME, name, src_dir_fd=self._lock_fd, dst_dir_fd=self._parent_fd)
            if not self._is_our_tree(name, self._parent_fd):
                os.rename(name, TREE_NAME, src_dir_fd=self._parent_fd, dst_dir_fd=self._lock_fd)
                raise _planted(self.tree, self.staging)
        except OSError as err:
            if err.errno in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                raise DestinationError(
                    f"{dest} appeared while pulling and is in the way; the pulled dataset stays in {self.tree}",
                    hint="remove or rename the path named first, then run the command again "
                         "(it only moves the dataset into place)") from err
            raise DestinationError(f"{dest}: cannot move the finished dataset into place ({err.strerror})",
                                   hint=_write_hint(self.staging.parent)) from err
        return dest

    def _is_our_tree(self, name: str, dir_fd: int | None) -> bool:
        """True if ``name`` under ``dir_fd`` is the tree directory opened at ``open`` itself."""
        if self._tree_fd is None:
            return True  # not opened (cannot happen in a pull): nothing to compare with
        try:
            st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        except OSError:
            return False
        ours = os.fstat(self._tree_fd)
        return stat.S_ISDIR(st.st_mode) and (st.st_dev, st.st_ino) == (ours.st_dev, ours.st_ino)

    def remove(self) -> None:
        """Delete the staging directory (after ``tree/`` was moved into place); its journal
        goes last, so that an interrupted removal leaves a directory that is still ours."""
        try:
            if self._index_file is not None:
                self._index_file.close()
                self._index_file = None
            if self._lock_fd is not None:
                try:
                    _empty(self._lock_fd)
                    os.rmdir(self.staging.name, dir_fd=self._parent_fd)  # still locked: nobody else is inside
                except OSError:
                    pass
        finally:
            self._unlock()

    def remove_leftover(self) -> None:
        """Remove a staging directory left by an interrupted run of this same pull after its
        commit (the rename done, the clean-up not): it holds our journal for this manifest
        and mode and no ``tree/``. Anything else is left alone. Never raises."""
        try:
            self.open_existing()
        except (OSError, DestinationError):
            self._unlock()
            return
        try:
            names = os.listdir(self._lock_fd)
            if not names:  # interrupted between removing the journal and the directory
                self.remove()
                return
            state = json.loads(_read_nofollow(JOURNAL_NAME, self._lock_fd))
            if (state.get("manifest_digest") == self.manifest_digest and state.get("mode") == self.mode
                    and TREE_NAME not in names):
                self.remove()
        except (OSError, ValueError, AttributeError):
            pass
        finally:
            self._unlock()

    def open_existing(self) -> None:
        """Open and lock an existing staging directory without creating or changing anything.

        Raises:
            OSError: it does not exist, is not a directory, or is locked (BlockingIOError).
        """
        self._parent_fd = os.open(self.staging.parent, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        self._lock_fd = os.open(self.staging.name, _DIR_FLAGS, dir_fd=self._parent_fd)
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def _index_lost_records(staging_fd: int, index_size: int) -> bool:
    """True if ``tree/.s3sync/index.jsonl`` is missing or shorter than ``index_size`` bytes
    (the records the journal counts on). A symlink or a special file anywhere on the way is
    not looked through: ``open`` refuses it afterwards."""
    fd = staging_fd
    opened: list[int] = []
    try:
        for name in (TREE_NAME, METADATA_DIR):
            fd = os.open(name, _DIR_FLAGS, dir_fd=fd)
            opened.append(fd)
        st = os.stat(INDEX_NAME, dir_fd=fd, follow_symlinks=False)
    except FileNotFoundError:
        return index_size > 0
    except OSError:
        return False
    finally:
        for o in opened:
            os.close(o)
    return stat.S_ISREG(st.st_mode) and st.st_size < index_size


def _planted(path: Path, staging: Path) -> DestinationError:
    return DestinationError(f"{path}: a symlink (or another file) where pull keeps its own state; not followed",
                            hint=f"remove {staging} (a partial pull; it only costs a fresh start), "
                                 "then run the command again")


def _write_hint(parent: Path) -> str:
    return f"make {parent} writable, or pull into another DEST_PARENT"


def _read_nofollow(name: str, dir_fd: int) -> bytes:
    fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=dir_fd)
    with open(fd, "rb") as f:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ValueError("not a regular file")
        return f.read()


def _write_new(dir_fd: int, name: str, data: bytes, sync: bool = False) -> None:
    """Create ``name`` afresh under ``dir_fd`` (whatever was there, a symlink included, is
    unlinked, never written through) and write ``data``."""
    try:
        os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o666, dir_fd=dir_fd)
    with open(fd, "wb") as f:
        f.write(data)
        f.flush()
        if sync:
            os.fsync(fd)


def _empty(dir_fd: int) -> None:
    """Remove everything under ``dir_fd``, its journal last; symlinks are removed, not followed."""
    entries = sorted(os.scandir(dir_fd), key=lambda e: e.name == JOURNAL_NAME)
    for entry in entries:
        if entry.is_dir(follow_symlinks=False):
            rmtree_at(dir_fd, entry.name)
        else:
            os.unlink(entry.name, dir_fd=dir_fd)


def rmtree_at(parent_fd: int, name: str) -> None:
    """Remove the directory ``name`` under ``parent_fd`` and everything in it, never through
    a symlink, with two descriptors and no recursion whatever the depth.

    ``shutil.rmtree(dir_fd=...)`` recurses and holds a descriptor per level: a dataset nested
    ~1,000 levels deep (a path of up to 4095 bytes holds ~2,000) raised RecursionError, or
    would run out of descriptors. Here each subdirectory of a child of ``name`` is renamed up
    into ``name`` (rename(2) moves the entry itself, a symlink included, and never follows
    it), the emptied child is removed, and so on until ``name`` is empty.
    """
    try:
        top = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):
            os.unlink(name, dir_fd=parent_fd)  # a symlink or a file: removed, not followed
            return
        raise
    hoisted = 0
    try:
        while True:
            with os.scandir(top) as it:
                entries = list(it)
            if not entries:
                break
            for entry in entries:
                if not entry.is_dir(follow_symlinks=False):
                    os.unlink(entry.name, dir_fd=top)
                    continue
                try:
                    sub = os.open(entry.name, _DIR_FLAGS, dir_fd=top)
                except OSError as err:
                    if err.errno in (errno.ELOOP, errno.ENOTDIR):  # replaced meanwhile
                        os.unlink(entry.name, dir_fd=top)
                        continue
                    raise
                try:
                    with os.scandir(sub) as it:
                        inner = list(it)
                    for child in inner:
                        if not child.is_dir(follow_symlinks=False):
                            os.unlink(child.name, dir_fd=sub)
                            continue
                        while True:
                            hoisted += 1
                            try:
                                os.rename(child.name, f".rm-{hoisted}", src_dir_fd=sub, dst_dir_fd=top)
                                break
                            except OSError as err:
                                if err.errno not in (errno.EEXIST, errno.ENOTEMPTY, errno.ENOTDIR, errno.EISDIR):
                                    raise
                finally:
                    os.close(sub)
                try:
                    os.rmdir(entry.name, dir_fd=top)
                except OSError as err:
                    if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                        raise  # something appeared in it meanwhile: the next round takes it
    finally:
        os.close(top)
    os.rmdir(name, dir_fd=parent_fd)


_PLAIN = re.compile(r'[ !#-\[\]-~]*')
"""Printable ASCII but ``"`` and ``\\``: what JSON writes as it is between quotes."""


_KINDS = frozenset({"file", "dir", "symlink", "hardlink"})


def record_line(r: MemberRecord) -> bytes:
    """A member's line in a pull's index (with its newline): the JSON array of its fields.

    The usual member (printable ASCII path and link) is formatted directly, ~4x faster than
    ``json.dumps`` (~2 us per member, 0.1 s of a pull of 50,000 small files); the bytes are
    the same (tests/property/test_fast_header_props.py compares the two)."""
    if (r.kind in _KINDS and type(r.size) is int and type(r.mode) is int and type(r.mtime) is int and _PLAIN.fullmatch(r.path)
            and _PLAIN.fullmatch(r.digest) and (not r.link or _PLAIN.fullmatch(r.link))):
        return f'["{r.path}","{r.kind}",{r.size},{r.mode},{r.mtime},"{r.digest}","{r.link}"]\n'.encode("ascii")
    return (json.dumps((r.path, r.kind, r.size, r.mode, r.mtime, r.digest, r.link),
                       ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8", "surrogateescape")


def iter_index(path: Path) -> Iterator[MemberRecord]:
    """Stream the records of an index file: one JSON array per line, the fields of
    ``archive.MemberRecord`` in order (path, kind, size, mode, mtime, digest, link).

    Raises:
        ValueError: a line is not a valid record.
    """
    try:
        f = open(path, encoding="utf-8", errors="surrogateescape")
    except FileNotFoundError:
        return
    with f:
        for line in f:
            yield MemberRecord(*json.loads(line))


def load_index(path: Path) -> dict[str, MemberRecord]:
    """All records of an index file by path (a later record of the same path wins).

    Raises:
        ValueError: a line is not a valid record.
    """
    return {rec.path: rec for rec in iter_index(path)}


def lock_holder(fd: int) -> int | None:
    """The pid holding a flock on the file open at ``fd``, from Linux's ``/proc/locks`` (lines
    ``N: FLOCK ADVISORY WRITE PID MAJ:MIN:INODE 0 EOF``, proc(5)); None elsewhere or if not
    found. The pid is as the kernel's namespace of /proc sees it."""
    st = os.fstat(fd)
    device = f"{os.major(st.st_dev):02x}:{os.minor(st.st_dev):02x}:{st.st_ino}"
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as f:
            for line in f:
                fields = line.split()
                if len(fields) >= 6 and fields[1] == "FLOCK" and fields[5] == device and fields[4].isdigit():
                    return int(fields[4])
    except OSError:
        pass
    return None


def try_lock(fd: int, holder_is: str, staging: Path, command: str = "") -> DestinationBusyError | None:
    """Take an exclusive flock on ``fd`` without waiting: None once held, else the error to raise
    (the caller releases its descriptors first): "another s3sync ``command`` (pid N) ``holder_is``"
    (the pid from ``lock_holder``, when found); ``staging`` is what ``wait_for_lock`` waits on.

    Raises:
        OSError: the lock cannot be taken for another reason than another holder.
    """
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock_holder(fd)
        who = f" (pid {holder})" if holder is not None else ""
        what = f" {command}" if command else ""
        return DestinationBusyError(f"another s3sync{what}{who} {holder_is}", staging=staging, holder_pid=holder)
    return None


def wait_for_lock(staging: Path) -> None:
    """Block until no pull holds the lock of ``staging`` (returns at once if it is gone:
    the pull that held it committed or removed it). ``staging`` is a directory or a regular
    lock file (a repair's); anything else (a symlink, a FIFO) is never waited on.

    Raises:
        KeyboardInterrupt: Ctrl-C while waiting (the wait is a blocking flock, which a signal
            interrupts, PEP 475).
    """
    try:
        fd = os.open(staging, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return  # renamed into place, or removed: nothing to wait for
    try:
        if not stat.S_ISDIR(mode := os.fstat(fd).st_mode) and not stat.S_ISREG(mode):
            return
        fcntl.flock(fd, fcntl.LOCK_EX)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
