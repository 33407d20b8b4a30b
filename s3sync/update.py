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
removed by ``recover``. An interrupted update is resumed by the same pull (``IDENTITY``): the
members it had fetched and written completely (``DONE``) are kept, the unchanged ones are
linked again (cheap), and only the rest is fetched.

The same machinery makes a partial pull (``--include``/``--exclude``, ``selection``): only the
selected members are staged, into a fresh ``NAME`` or in place of an earlier pull.
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
from .errors import (
    DamagedDatasetError,
    DestinationBusyError,
    DestinationError,
    IntegrityError,
    UsageError,
)
from .journal import INDEX_NAME, iter_index, lock_holder, rmtree_at
from .manifest import END_OF_ARCHIVE, MANIFEST_NAME, Manifest
from .planning import ChunkJob, plan_pull
from .progress import Progress
from .selection import Selection
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
        old_generation: the generation the destination held before ("" if none: a fresh
            partial pull).
        fetched: members fetched (new or changed files).
        fetched_size: bytes of file data in them.
        reused: files taken from the old tree (hard-linked or copied).
        removed: members of the old generation that the new one no longer has.
        bytes_received: bytes received from the store.
        retries: chunk attempts that were retried.
        resumed: files an interrupted run of the same pull had fetched already.
        partial: only the members an ``--include``/``--exclude`` selection picks were pulled.
    """

    old_generation: str
    fetched: int
    fetched_size: int
    reused: int
    removed: int
    bytes_received: int
    retries: int
    resumed: int = 0
    partial: bool = False


def _real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def recover(dest_parent: Path, name: str, progress: Progress, ident: bytes | None = None) -> None:
    """Finish or undo a swap that an interrupted update left half done (see the module
    docstring); do nothing if there is none.

    Raises:
        DestinationBusyError: another pull is updating it now (it holds the staging lock).
        DestinationError: the old tree cannot be renamed back or removed.
    """
    dest, old = dest_parent / name, old_dir(dest_parent, name)
    staging = update_dir(dest_parent, name)
    if _real_dir(staging):
        # An update running now (its lock held) may be between its renames, or removing the
        # old tree: nothing here is left over. DestinationBusyError: --wait waits for it.
        try:
            os.close(_lock(staging, dest))
        except DestinationBusyError:
            raise
        except (OSError, DestinationError):
            pass  # gone since, or not lockable: handled below as before
    if _real_dir(old):
        _put_back(dest, old, name, progress)
    if _real_dir(staging):
        try:
            mine = ident is not None and (staging / IDENTITY).read_bytes() == ident
        except OSError:
            mine = False
        if not mine:  # another pull's (or a finished one's): this pull would not resume it
            _remove_unlocked(staging)


def _put_back(dest: Path, old: Path, name: str, progress: Progress) -> None:
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

    def __init__(self, pieces: Iterator[memoryview], ready) -> None:
        self._pieces = pieces
        self._ready = ready
        self._pos = 0
        self._cur: memoryview = memoryview(b"")
        self._cur_start = 0
        self.before_next_chunk = None
        """As ``OrderedReader``'s: before waiting for the next chunk, the extractor writes and
        records the small files it holds, so that a kill while waiting loses none of them."""

    def _window(self) -> memoryview:
        while True:
            rel = self._pos - self._cur_start
            if rel < len(self._cur):
                return self._cur[rel:]
            if self.before_next_chunk is not None and not self._ready():
                self.before_next_chunk()
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


def _real_parents(dest: Path, rel: str, real_dirs: set[str]) -> bool:
    """True if every directory between ``dest`` and the member ``rel`` is a real directory,
    not a symlink (one planted in the old tree could point outside it: its files must not be
    hard-linked into the new generation). ``real_dirs`` caches the directories found real:
    one ``lstat`` per directory of the tree."""
    parts = rel.split("/")[:-1]
    for k in range(1, len(parts) + 1):
        sub = "/".join(parts[:k])
        if sub in real_dirs:
            continue
        try:
            st = os.lstat(dest / sub)
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            return False
        real_dirs.add(sub)
    return True


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


IDENTITY = "identity.json"
"""In the staging directory: what it is being built for (manifest digest, selection, the
tree it started from), so that a rerun of the same pull resumes it and any other removes it."""
DONE = "done.jsonl"
"""In the staging directory: the fetched members completely written into ``tree/`` so far,
one ``journal.iter_index`` record a line, appended after each (a rerun takes them as they are
after checking type and size, as ``pull.read_back`` does)."""


def identity(manifest_bytes: bytes, selection: Selection | None, dest: Path) -> bytes:
    """What a staging directory is built for (see ``IDENTITY``)."""
    marker = dest / archive.METADATA_DIR / MARKER
    try:
        before = hashing.digest(marker.read_bytes()) if not dest.is_symlink() else ""
    except OSError:
        before = ""
    return json.dumps({"manifest_digest": hashing.digest(manifest_bytes), "from": before,
                       "selection": selection.to_json() if selection else None}, sort_keys=True).encode()


def update(location: Location, dest: Path, store: Store, settings: TransferSettings, manifest: Manifest,
           manifest_bytes: bytes, old_generation: str | None, progress: Progress,
           selection: Selection | None = None) -> UpdateResult:
    """Bring ``dest`` to ``manifest``'s generation (only the members ``selection`` picks, if given),
    fetching only what ``dest`` does not hold already. ``old_generation``: the generation of the
    pull at ``dest`` (complete or partial), or None if there is none (a fresh partial pull).

    The manifest must name a member index (``manifest.index``), be version 1 and uncompressed.
    An interrupted run is resumed by the same pull (same manifest, selection and ``dest``):
    members already fetched into the staged tree are kept.

    Raises:
        DestinationBusyError: another pull is updating ``dest`` (it holds the staging directory's lock).
        DestinationError: the staging directory cannot be written; a rename failed.
        MemberIndexError: the index is missing, damaged or disagrees with the manifest.
        DamagedDatasetError: a fetched member is not what the index says.
        IntegrityError, StoreError: a chunk failed for good (a rerun resumes).
        UnsafeArchiveError: a fetched member tried to escape.
    """
    from .pull import fetch_settings  # pull imports this module lazily: no import cycle

    staging = update_dir(dest.parent, dest.name)
    ident = identity(manifest_bytes, selection, dest)
    if os.path.lexists(staging) and not _real_dir(staging):
        os.unlink(staging)  # not ours: a symlink or a file is never followed
    try:
        os.mkdir(staging, 0o700)
    except FileExistsError:
        pass
    except OSError as err:
        raise DestinationError(f"{staging}: cannot create ({err.strerror})") from err
    lock = _lock(staging, dest)
    try:
        try:
            resumed = (staging / IDENTITY).read_bytes() == ident and _real_dir(staging / TREE)
        except OSError:
            resumed = False
        if not resumed:
            for entry in os.listdir(staging):
                _remove(staging / entry) if _real_dir(staging / entry) else os.unlink(staging / entry)
            os.mkdir(staging / TREE, 0o700)
            (staging / IDENTITY).write_bytes(ident)
        result = _stage(location, dest, staging, store, fetch_settings(settings, manifest.chunk_size), manifest,
                        manifest_bytes, old_generation, progress, selection)
        tree = staging / TREE
        if old_generation is not None:
            swap(dest, lambda: os.rename(tree, dest))
        else:
            try:
                os.rename(tree, dest)  # replaces an empty directory made beforehand, nothing else
            except OSError as err:
                raise DestinationError(f"{dest} appeared while pulling and is in the way; the pulled dataset "
                                       f"stays in {tree}", hint="remove it, then run the command again") from err
        _remove(staging)
        return result
    finally:
        os.close(lock)


def _lock(staging: Path, dest: Path) -> int:
    """Open and lock the staging directory of an update of ``dest``; the descriptor holds the lock.

    Raises:
        DestinationBusyError: another pull holds it (``holder_pid``): it is updating ``dest``.
        DestinationError: it cannot be locked.
        OSError: it cannot be opened.
    """
    lock = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = lock_holder(lock)
        os.close(lock)
        who = f" (pid {holder})" if holder is not None else ""
        raise DestinationBusyError(f"another s3sync pull{who} is already updating {dest} (it holds {staging})",
                                   staging=staging, holder_pid=holder) from None
    except OSError as err:
        os.close(lock)
        raise DestinationError(f"{staging}: cannot lock ({err.strerror})") from err
    return lock


def _done_records(staging: Path) -> dict[str, archive.MemberRecord]:
    """Members an interrupted run of this pull fetched and wrote completely (``DONE``) that
    are still in the staged tree as recorded (a regular file of that size)."""
    out = {}
    try:
        for rec in iter_index(staging / DONE):
            try:
                st = os.lstat(staging / TREE / rec.path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size == rec.size:
                out[rec.path] = rec
    except (ValueError, TypeError):
        pass  # a line cut by the kill: what came before it stands
    return out


def _stage(location: Location, dest: Path, staging: Path, store: Store, settings: TransferSettings,
           manifest: Manifest, manifest_bytes: bytes, old_generation: str | None, progress: Progress,
           selection: Selection | None) -> UpdateResult:
    """Build the new tree in ``staging/tree``, its metadata included; return the counts."""
    tree = staging / TREE
    meta = dest / archive.METADATA_DIR
    old = {r.path: r for r in iter_index(meta / INDEX_NAME)} if old_generation is not None else {}
    done = _done_records(staging)
    index_file = indexfile.fetch(store, location, manifest, staging / "index.zst")
    records: list[archive.MemberRecord | None] = []
    wanted: list[tuple[int, archive.MemberRecord]] = []  # (position in records, index record)
    spans: list[tuple[int, int]] = []
    dirs: list[tuple[int, archive.MemberRecord]] = []
    needed_dirs: set[str] = set()
    links: list[archive.MemberRecord] = []
    real_dirs: set[str] = set()  # directories of the old tree found to be real (not symlinks)
    reused = kept = 0
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

    def need_parents(path: str) -> None:
        while "/" in path:
            path = path.rsplit("/", 1)[0]
            if path in needed_dirs:
                return
            needed_dirs.add(path)

    for entry in indexfile.read(index_file, manifest, location.url(manifest.index.key)):
        close_span(entry.offset)
        rec = entry.record
        mode = rec.mode & 0o777
        if rec.kind == "dir":
            dirs.append((len(records), archive.MemberRecord(rec.path, "dir", 0, mode, rec.mtime)))
            records.append(None)  # kept if selected or holding a selected member (below)
            if selection is None or selection.selects(rec.path, True):
                needed_dirs.add(rec.path)
                need_parents(rec.path)
            continue
        if selection is not None and not selection.selects(rec.path):
            continue
        need_parents(rec.path)
        seen.add(rec.path)
        if rec.kind == "symlink":
            links.append(archive.MemberRecord(rec.path, "symlink", 0, 0o777, rec.mtime, link=rec.link))
            records.append(links[-1])
            continue
        new = archive.MemberRecord(rec.path, "file", rec.size, mode, rec.mtime, rec.digest)
        target = tree / rec.path
        if done.get(rec.path) == new:
            records.append(new)  # fetched by an interrupted run of this pull
            kept += 1
            continue
        source = dest / rec.path
        if _real_parents(dest, rec.path, real_dirs) and _same_file(old.get(rec.path), new, os.fspath(source)):
            os.makedirs(target.parent, exist_ok=True)
            if os.path.lexists(target):
                os.unlink(target)
            _reuse(source, target, old[rec.path], new)
            records.append(new)
            reused += 1
        else:
            wanted.append((len(records), new))
            records.append(None)
            prev_fetch = entry.offset
    close_span(manifest.tar_stream_size)
    if selection is not None and not seen and not needed_dirs:
        # A typo (captions.jsn) would otherwise be recorded as a complete, empty partial pull.
        raise UsageError(f"{_describe(selection)} matches no member of {manifest.name} (generation "
                         f"{manifest.generation})", hint="check the pattern against the member paths "
                                                          "('s3sync ls SOURCE' shows the dataset; paths are relative "
                                                          "to its root)")
    for pos, d in dirs:
        if d.path in needed_dirs:
            records[pos] = d
            os.makedirs(tree / d.path, exist_ok=True)
    removed = sum(1 for path, r in old.items() if r.kind != "dir" and path not in seen)
    fetched_size = sum(r.size for _, r in wanted)
    what = f"updating {dest.name} from generation {old_generation} to {manifest.generation}" \
        if old_generation is not None else f"pulling {dest.name} (generation {manifest.generation})"
    if selection is not None:
        what += f", the members selected by {_describe(selection)}"
    progress.message(f"{what}: {len(wanted)} files to fetch, {reused} unchanged, {removed} removed"
                     + (f", {kept} fetched by the interrupted run" if kept else ""))
    fetcher = ChunkFetcher(store, location.key, settings, progress)
    jobs = _jobs_for(plan_pull(manifest, 0), spans)
    progress.start("download", sum(j.length for j in jobs))
    extractor = archive.SafeExtractor(tree)
    got = iter(wanted)
    with open(staging / DONE, "a", encoding="utf-8", errors="surrogateescape") as log:

        def on_member(_next: int, record: archive.MemberRecord) -> None:
            pos, want = next(got, (None, None))
            if want is None or record != want:
                raise DamagedDatasetError(
                    f"dataset {manifest.name} (generation {manifest.generation}) is damaged: the member extracted "
                    f"from the byte span of {want.path if want else 'nothing'!r} is {record.path!r} "
                    f"({record.kind}, {record.size} bytes, digest {record.digest}), not what the member index says")
            records[pos] = record
            r = record
            log.write(json.dumps((r.path, r.kind, r.size, r.mode, r.mtime, r.digest, r.link), ensure_ascii=False,
                                 separators=(",", ":")) + "\n")
            log.flush()  # to the kernel: a kill -9 loses nothing written

        if jobs:
            chunks = fetcher.fetch(jobs)
            try:
                extractor.extract(_SpanReader(_pieces(chunks, spans), fetcher.next_ready), on_member)
            finally:
                chunks.close()
    if next(got, None) is not None:
        raise DamagedDatasetError(f"dataset {manifest.name} (generation {manifest.generation}) is damaged: "
                                  "fewer members in the fetched spans than the member index lists")
    progress.finish("download")
    for rec in links:
        if os.path.lexists(tree / rec.path):
            os.unlink(tree / rec.path)  # made by an interrupted run
        os.symlink(rec.link, tree / rec.path)
        os.utime(tree / rec.path, ns=(rec.mtime * 1_000_000_000,) * 2, follow_symlinks=False)
    extractor.finish_dirs([d for _, d in dirs if d.path in needed_dirs])
    _write_metadata(tree, manifest, manifest_bytes, records, old_generation, selection, location)
    return UpdateResult(old_generation or "", len(wanted), fetched_size, reused, removed,
                        fetcher.stats.bytes_received, fetcher.stats.retries, kept, selection is not None)


def _describe(selection: Selection) -> str:
    return " ".join([f"--include {p}" for p in selection.include] + [f"--exclude {p}" for p in selection.exclude])


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
                    records: list[archive.MemberRecord | None], old_generation: str | None,
                    selection: Selection | None, location: Location) -> None:
    """Write ``.s3sync/`` as a pull does (manifest, index, completion marker with the source
    ``url`` that ``repair`` reads), fsynced."""
    meta = tree / archive.METADATA_DIR
    meta.mkdir(exist_ok=True)
    with open(meta / INDEX_NAME, "wb") as f:
        for r in records:
            if r is not None:  # every one is by now: _stage checked that each fetched member arrived
                f.write((json.dumps((r.path, r.kind, r.size, r.mode, r.mtime, r.digest, r.link), ensure_ascii=False,
                                    separators=(",", ":")) + "\n").encode("utf-8", "surrogateescape"))
        os.fsync(f.fileno())
    kept = [r for r in records if r is not None]
    marker: dict[str, object] = {"generation": manifest.generation, "manifest_digest": hashing.digest(manifest_bytes),
                                 "mode": "extract", "name": manifest.name, "url": location.url()}
    if old_generation is not None:
        marker["updated_from"] = old_generation
    if selection is not None:
        # verify checks the recorded members against these counts, not the manifest's
        marker["selection"] = {**selection.to_json(), "members": len(kept),
                               "files": sum(1 for r in kept if r.kind == "file"),
                               "size": sum(r.size for r in kept if r.kind == "file")}
    marker.update({
                   "index_digest": archive.file_digest(meta / INDEX_NAME),
                   "completed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    for name, data in ((MANIFEST_NAME, manifest_bytes), (MARKER, (json.dumps(marker) + "\n").encode())):
        with open(meta / name, "wb") as f:
            f.write(data)
            os.fsync(f.fileno())
