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
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

from . import hashing
from .archive import METADATA_DIR, MemberRecord, translate_os_error
from .errors import DestinationError

JOURNAL_VERSION = 1
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
        self.tree = staging / "tree"
        self.index_path = self.tree / METADATA_DIR / INDEX_NAME
        self.mode = mode
        self.generation = generation
        self.manifest_digest = hashing.digest(manifest_bytes)
        self._manifest_bytes = manifest_bytes
        self._interval_s = interval_s
        self._min_advance = min_advance
        self._last_write = 0.0
        self._written_offset = 0
        self.offset = 0
        self._index_file = None

    def open(self) -> int:
        """Load or start the journal; return the stream offset to resume from (0 if new).

        A staging directory left by a different generation or mode is emptied. An
        exclusive lock (flock on the staging directory itself) keeps two pulls from
        writing into it at once.

        Raises:
            DestinationError: another pull holds the lock, or the staging directory
                cannot be created or written.
        """
        try:
            self.staging.mkdir(exist_ok=True)
            self._lock_fd = os.open(self.staging, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as err:
            raise DestinationError(f"{self.staging}: cannot create ({err.strerror})") from err
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            self._lock_fd = None
            raise DestinationError(f"another s3sync pull is already writing {self.staging}",
                                   hint="wait for it to finish (or stop it), then run the command again") from None
        try:
            state = json.loads((self.staging / "journal.json").read_text())
            same = (state.get("version") == JOURNAL_VERSION
                    and state.get("manifest_digest") == self.manifest_digest
                    and state.get("mode") == self.mode
                    and isinstance(state.get("offset"), int) and state["offset"] >= 0)
        except (OSError, ValueError):
            same = False
        try:
            if not same:
                for child in self.staging.iterdir():  # keep the directory: it carries the lock
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child)
                    else:
                        child.unlink()
                self.tree.mkdir()
                (self.staging / "manifest.json").write_bytes(self._manifest_bytes)
                self.offset = 0
                self._write()
            else:
                self.offset = state["offset"]
                self.tree.mkdir(parents=True, exist_ok=True)
                # Drop index records written after the checkpoint (possibly torn by a
                # kill): the members they describe are extracted again.
                index = self.index_path
                if index.exists():
                    os.truncate(index, min(int(state.get("index_size", 0)), index.stat().st_size))
            self.index_path.parent.mkdir(exist_ok=True)
            # A little space set aside, freed when the disk fills up, so that the last
            # checkpoint can still be written and a rerun resumes from it.
            reserve = self.staging / RESERVE_NAME
            if not reserve.exists():
                with open(reserve, "wb") as f:
                    os.posix_fallocate(f.fileno(), 0, RESERVE_SIZE)
            self._index_file = open(self.index_path, "ab")
        except OSError as err:
            raise DestinationError(f"{self.staging}: cannot write resume state ({err.strerror})") from err
        return self.offset

    def add(self, record: MemberRecord) -> None:
        """Append an extracted member to the index (flushed with the next checkpoint)."""
        assert self._index_file is not None
        r = record
        line = json.dumps((r.path, r.kind, r.size, r.mode, r.mtime, r.digest, r.link),
                          ensure_ascii=False, separators=(",", ":")) + "\n"
        self._index_file.write(line.encode("utf-8", "surrogateescape"))

    def records(self) -> Iterator[MemberRecord]:
        """Every member recorded so far, earlier runs included, in stream order.

        The index is truncated to the last checkpoint on resume and extraction resumes
        at exactly that member, so each member appears once.
        """
        if self._index_file is not None:
            self._index_file.flush()
        return iter_index(self.index_path)

    def checkpoint(self, offset: int, force: bool = False) -> None:
        """Record that every byte before ``offset`` is safely written (rate-limited)."""
        self.offset = offset
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
            (self.staging / RESERVE_NAME).unlink()
            return True
        except FileNotFoundError:
            return False

    def _write_unchecked(self, sync: bool) -> None:
        if self._index_file is not None:
            self._index_file.flush()
            if sync:
                os.fsync(self._index_file.fileno())
        self._written_offset = self.offset
        tmp = self.staging / "journal.json.tmp"
        index_size = self._index_file.tell() if self._index_file is not None else 0
        doc = {"version": JOURNAL_VERSION, "generation": self.generation,
               "manifest_digest": self.manifest_digest, "mode": self.mode, "offset": self.offset,
               "index_size": index_size}
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(doc, f)
            f.flush()
            if sync:
                os.fsync(f.fileno())
        os.replace(tmp, self.staging / "journal.json")

    def close(self) -> None:
        """Flush the last checkpoint, close files and release the lock."""
        try:
            self._write()
        finally:
            if self._index_file is not None:
                self._index_file.close()
                self._index_file = None
            self._unlock()

    def _unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def close_quietly(self) -> None:
        """``close``, ignoring write errors (the disk may be full; the last checkpoint stays valid)."""
        try:
            self.close()
        except Exception:  # noqa: BLE001 - the caller is already handling a failure
            pass

    def remove(self) -> None:
        """Delete the staging directory (after ``tree/`` was moved into place)."""
        if self._index_file is not None:
            self._index_file.close()
            self._index_file = None
        shutil.rmtree(self.staging, ignore_errors=True)  # still locked: nobody else is inside
        self._unlock()


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
