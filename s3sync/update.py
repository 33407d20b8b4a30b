"""Update in place: bring a complete pull of an older generation to the current one,
fetching only the members that are new or changed.

Design (issue 13, section 2): a directory-level swap. The new generation's member index
(``indexfile``) is compared with the pull's own ``.s3sync/index.jsonl``. A new tree is staged
in ``DEST_PARENT/.NAME.s3sync-update/tree``: directories are made, unchanged files (same
digest, size, mode and mtime) are hard-linked from the old tree (copied where a link is
refused, or where only mode or mtime changed), symlinks are made from the index, and the new
or changed files are fetched by ranged GETs of the chunks covering their byte spans (each
chunk verified against its digest, as a pull does) and extracted by ``SafeExtractor`` from a
stream made of just those spans; each member's digest must then be the index's. Then the
metadata (manifest, index, completion marker) is written into the staged tree, and the swap:
rename(2) ``NAME`` -> ``.NAME.s3sync-old``, ``tree`` -> ``NAME``, then the old tree is removed.

Crash safety: until the first rename, ``NAME`` is the old generation, untouched (hard links
share its inodes, but nothing writes through them: a file whose mode or mtime changes is
copied). Between the two renames, ``NAME`` is missing and ``.NAME.s3sync-old`` holds the old
generation: ``recover`` (run first by every pull) renames it back. After the second rename,
``NAME`` is the new generation, complete with its marker; a leftover ``.NAME.s3sync-old`` is
removed by ``recover``. An interrupted update is not resumed member by member: a rerun
stages again (hard links cost little) and fetches only the changed members again.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import shutil
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import archive, hashing, indexfile
from .config import Location, TransferSettings
from .engine import ChunkFetcher, WindowedReader
from .errors import DamagedDatasetError, DestinationError, IntegrityError
from .journal import INDEX_NAME, iter_index, rmtree_at
from .manifest import END_OF_ARCHIVE, MANIFEST_NAME, Manifest
from .planning import ChunkJob, plan_pull
from .progress import Progress
from .stores.base import Store

MARKER = "complete.json"
TREE = "tree"


def update_dir(dest_parent: Path, name: str) -> Path:
    """Where an update of ``name`` stages the new tree."""
    return dest_parent / f".{name}.s3sync-update"


def old_dir(dest_parent: Path, name: str) -> Path:
    """Where the old generation sits for a moment during the swap."""
    return dest_parent / f".{name}.s3sync-old"


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """What an update did.

    Attributes:
        old_generation: the generation the destination held before.
        fetched: members fetched (new or changed files).
        fetched_size: bytes of file data in them.
        reused: files taken from the old tree (hard-linked or copied).
        removed: members of the old generation that the new one no longer has.
        bytes_received: bytes received from the store.
        retries: chunk attempts that were retried.
    """

    old_generation: str
    fetched: int
    fetched_size: int
    reused: int
    removed: int
    bytes_received: int
    retries: int


def _real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def recover(dest_parent: Path, name: str, progress: Progress) -> None:
    """Finish or undo a swap that an interrupted update left half done (see the module
    docstring); do nothing if there is none.

    Raises:
        DestinationError: the old tree cannot be renamed back or removed.
    """
    dest, old = dest_parent / name, old_dir(dest_parent, name)
    staging = update_dir(dest_parent, name)
    if _real_dir(staging):
        _remove_unlocked(staging)
    if not _real_dir(old):
        return
    try:
        if not os.path.lexists(dest):
            os.rename(old, dest)
            progress.message(f"an interrupted update left {name} aside as {old.name}: put back in place")
        else:
            _remove(old)
    except OSError as err:
        raise DestinationError(f"{old}: left by an interrupted update; cannot clean up ({err.strerror})",
                               hint=f"if {dest} is complete ('s3sync verify'), remove {old}") from err


def _remove_unlocked(staging: Path) -> None:
    """Remove a staging directory an interrupted update left, unless an update running now
    holds its lock. Never raises: ``update`` removes it anyway before it stages again."""
    try:
        fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _remove(staging)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        rmtree_at(fd, path.name)
    finally:
        os.close(fd)


def swap(dest: Path, move_new) -> None:
    """Replace the directory ``dest`` by the tree ``move_new()`` renames to ``dest`` (see the
    module docstring for what a crash at each step leaves).

    Raises:
        DestinationError: a rename failed (the old tree is put back).
    """
    old = old_dir(dest.parent, dest.name)
    if _real_dir(old):
        _remove(old)
    try:
        os.rename(dest, old)
    except OSError as err:
        raise DestinationError(f"{dest}: cannot move the old generation aside ({err.strerror})") from err
    try:
        move_new()
    except BaseException:
        if not os.path.lexists(dest):
            os.rename(old, dest)
        raise
    try:
        _remove(old)
    except OSError:
        pass  # the next pull removes it (recover)


class _SpanReader(WindowedReader):
    """The tar stream a ``SafeExtractor`` reads: the fetched members' spans, back to back,
    then an end-of-archive marker. Offsets are in this made-up stream."""

    def __init__(self, pieces: Iterator[memoryview]) -> None:
        self._pieces = pieces
        self._pos = 0
        self._cur: memoryview = memoryview(b"")
        self._cur_start = 0
        self.before_next_chunk = None  # nothing to resume: the extractor may batch freely

    def _window(self) -> memoryview:
        while True:
            rel = self._pos - self._cur_start
            if rel < len(self._cur):
                return self._cur[rel:]
            piece = next(self._pieces, None)
            if piece is None:
                return memoryview(b"")
            self._cur_start += len(self._cur)
            self._cur = piece


def _jobs_for(jobs: list[ChunkJob], spans: list[tuple[int, int]]) -> list[ChunkJob]:
    """The chunks that hold a byte of any span (``spans`` sorted, not overlapping)."""
    out, i = [], 0
    for job in jobs:
        end = job.stream_offset + job.length
        while i < len(spans) and spans[i][1] <= job.stream_offset:
            i += 1
        if i < len(spans) and spans[i][0] < end:
            out.append(job)
    return out


def _pieces(chunks: Iterator[tuple[ChunkJob, memoryview]], spans: list[tuple[int, int]]) -> Iterator[memoryview]:
    """The spans' bytes out of the verified chunks (in stream order), then two zero blocks.

    Raises:
        IntegrityError: the chunks ended before the last span.
    """
    it = iter(spans)
    cur = next(it, None)
    for job, data in chunks:
        c0, c1 = job.stream_offset, job.stream_offset + len(data)
        while cur is not None and cur[0] < c1:
            s, e = max(cur[0], c0), min(cur[1], c1)
            if s < e:
                yield data[s - c0:e - c0]
            if cur[1] <= c1:
                cur = next(it, None)
            else:
                break
    if cur is not None:
        raise IntegrityError(f"the fetched chunks end before byte {cur[1]} of the stream")
    yield memoryview(bytes(END_OF_ARCHIVE))


def _same_file(old: archive.MemberRecord | None, new: archive.MemberRecord, path: str) -> bool:
    """True if the old tree's file at ``path`` can serve: recorded with the new digest and
    size, and still a regular file of that size and recorded mtime (not re-hashed: ``verify``
    does that)."""
    if old is None or old.kind != "file" or old.digest != new.digest or old.size != new.size:
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == new.size and st.st_mtime_ns // 1_000_000_000 == old.mtime


def update(location: Location, dest: Path, store: Store, settings: TransferSettings, manifest: Manifest,
           manifest_bytes: bytes, old_generation: str, progress: Progress) -> UpdateResult:
    """Update the complete pull at ``dest`` (of ``old_generation``) to ``manifest``'s generation.

    The manifest must name a member index (``manifest.index``), be version 1 and uncompressed.

    Raises:
        DestinationError: the staging directory is in use or cannot be written; a rename failed.
        MemberIndexError: the index is missing, damaged or disagrees with the manifest.
        DamagedDatasetError: a fetched member is not what the index says.
        IntegrityError, StoreError: a chunk failed for good (a rerun starts the update again).
        UnsafeArchiveError: a fetched member tried to escape.
    """
    from .pull import fetch_settings  # pull imports this module lazily: no import cycle

    staging = update_dir(dest.parent, dest.name)
    if _real_dir(staging):
        _remove_unlocked(staging)  # left by an interrupted update; one running now keeps it
    elif os.path.lexists(staging):
        os.unlink(staging)  # not ours: a symlink or a file is never followed
    try:
        os.mkdir(staging, 0o700)
    except FileExistsError as err:
        raise DestinationError(f"{dest}: another s3sync is updating it ({staging} is in use)",
                               hint="wait for it to finish") from err
    except OSError as err:
        raise DestinationError(f"{staging}: cannot create ({err.strerror})") from err
    lock = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        os.close(lock)
        raise DestinationError(f"{dest}: another s3sync is updating it", hint="wait for it to finish") from err
    try:
        result = _stage(location, dest, staging, store, fetch_settings(settings, manifest.chunk_size), manifest,
                        manifest_bytes, old_generation, progress)
        tree = staging / TREE
        swap(dest, lambda: os.rename(tree, dest))
        _remove(staging)
        return result
    finally:
        os.close(lock)


def _stage(location: Location, dest: Path, staging: Path, store: Store, settings: TransferSettings,
           manifest: Manifest, manifest_bytes: bytes, old_generation: str, progress: Progress) -> UpdateResult:
    """Build the new tree in ``staging/tree``, its metadata included; return the counts."""
    tree = staging / TREE
    os.mkdir(tree, 0o700)
    meta = dest / archive.METADATA_DIR
    old = {r.path: r for r in iter_index(meta / INDEX_NAME)}
    index_file = indexfile.fetch(store, location, manifest, staging / "index.zst")
    records: list[archive.MemberRecord | None] = []
    wanted: list[tuple[int, archive.MemberRecord]] = []  # (position in records, index record)
    spans: list[tuple[int, int]] = []
    dirs: list[archive.MemberRecord] = []
    links: list[archive.MemberRecord] = []
    reused = 0
    seen: set[str] = set()
    prev_fetch = None  # offset of a fetched member whose span ends at the next entry

    def close_span(end: int) -> None:
        nonlocal prev_fetch
        if prev_fetch is not None:
            if spans and spans[-1][1] == prev_fetch:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((prev_fetch, end))
            prev_fetch = None

    for entry in indexfile.read(index_file, manifest, location.url(manifest.index.key)):
        close_span(entry.offset)
        rec = entry.record
        seen.add(rec.path)
        mode = rec.mode & 0o777
        target = tree / rec.path
        if rec.kind == "dir":
            os.mkdir(target, 0o700)
            dirs.append(archive.MemberRecord(rec.path, "dir", 0, mode, rec.mtime))
            records.append(dirs[-1])
        elif rec.kind == "symlink":
            links.append(archive.MemberRecord(rec.path, "symlink", 0, 0o777, rec.mtime, link=rec.link))
            records.append(links[-1])
        else:
            new = archive.MemberRecord(rec.path, "file", rec.size, mode, rec.mtime, rec.digest)
            source = dest / rec.path
            if _same_file(old.get(rec.path), new, os.fspath(source)):
                _reuse(source, target, old[rec.path], new)
                records.append(new)
                reused += 1
            else:
                wanted.append((len(records), new))
                records.append(None)
                prev_fetch = entry.offset
    close_span(manifest.tar_stream_size)
    removed = sum(1 for path in old if path not in seen)
    fetched_size = sum(r.size for _, r in wanted)
    progress.message(f"updating {dest.name} from generation {old_generation} to {manifest.generation}: "
                     f"{len(wanted)} new or changed, {reused} unchanged, {removed} removed")
    fetcher = ChunkFetcher(store, location.key, settings, progress)
    jobs = _jobs_for(plan_pull(manifest, 0), spans)
    progress.start("download", sum(j.length for j in jobs))
    extractor = archive.SafeExtractor(tree)
    got = iter(wanted)

    def on_member(_next: int, record: archive.MemberRecord) -> None:
        pos, want = next(got, (None, None))
        if want is None or record != want:
            raise DamagedDatasetError(
                f"dataset {manifest.name} (generation {manifest.generation}) is damaged: the member extracted "
                f"from byte span of {want.path if want else 'nothing'!r} is {record.path!r} "
                f"({record.kind}, {record.size} bytes, digest {record.digest}), not what the member index says")
        records[pos] = record

    if jobs:
        chunks = fetcher.fetch(jobs)
        try:
            extractor.extract(_SpanReader(_pieces(chunks, spans)), on_member)
        finally:
            chunks.close()
    if next(got, None) is not None:
        raise DamagedDatasetError(f"dataset {manifest.name} (generation {manifest.generation}) is damaged: "
                                  "fewer members in the fetched spans than the member index lists")
    progress.finish("download")
    for rec in links:
        os.symlink(rec.link, tree / rec.path)
        os.utime(tree / rec.path, ns=(rec.mtime * 1_000_000_000,) * 2, follow_symlinks=False)
    extractor.finish_dirs(dirs)
    _write_metadata(tree, manifest, manifest_bytes, records, old_generation)
    return UpdateResult(old_generation, len(wanted), fetched_size, reused, removed,
                        fetcher.stats.bytes_received, fetcher.stats.retries)


def _reuse(source: Path, target: Path, old: archive.MemberRecord, new: archive.MemberRecord) -> None:
    """Hard-link ``source`` at ``target`` if its mode and mtime stay; else copy it and give
    the copy the new ones (a link would change the old tree's file, still in place)."""
    if (old.mode, old.mtime) == (new.mode, new.mtime):
        try:
            os.link(source, target, follow_symlinks=False)
            return
        except OSError as err:
            if err.errno not in (errno.EMLINK, errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
    shutil.copyfile(source, target, follow_symlinks=False)
    os.chmod(target, new.mode)
    os.utime(target, ns=(new.mtime * 1_000_000_000,) * 2)


def _write_metadata(tree: Path, manifest: Manifest, manifest_bytes: bytes,
                    records: list[archive.MemberRecord | None], old_generation: str) -> None:
    """Write ``.s3sync/`` as a pull does (manifest, index, completion marker), fsynced."""
    meta = tree / archive.METADATA_DIR
    meta.mkdir()
    with open(meta / INDEX_NAME, "wb") as f:
        for r in records:
            if r is not None:  # every one is by now: _stage checked that each fetched member arrived
                f.write((json.dumps((r.path, r.kind, r.size, r.mode, r.mtime, r.digest, r.link), ensure_ascii=False,
                                    separators=(",", ":")) + "\n").encode("utf-8", "surrogateescape"))
        os.fsync(f.fileno())
    marker = {"generation": manifest.generation, "manifest_digest": hashing.digest(manifest_bytes),
              "mode": "extract", "name": manifest.name, "updated_from": old_generation,
              "index_digest": archive.file_digest(meta / INDEX_NAME),
              "completed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    for name, data in ((MANIFEST_NAME, manifest_bytes), (MARKER, (json.dumps(marker) + "\n").encode())):
        with open(meta / name, "wb") as f:
            f.write(data)
            os.fsync(f.fileno())
