"""Pull: fetch a manifest, then stream verified chunks into tar extraction (or part files).

Pipeline: manifest -> validate -> journal (resume point) -> preflight (disk, inodes)
-> plan chunks -> ``ChunkFetcher`` (parallel ranged GETs, verified, in order)
-> ``OrderedReader`` -> ``SafeExtractor`` into ``.NAME.s3sync-partial/tree``
-> completion marker -> atomic rename to ``DEST_PARENT/NAME``.

A version 2 manifest (``adopt``: pieces in place, docs/manifest.md section 7) pulls the same
way; when its stream is compressed, the verified chunks go through ``codecs.DecodedReader``
before extraction, journal offsets are in the decompressed tar stream, and a resumed pull
reads the stored stream again from byte 0 (a decoder cannot start mid-stream), writing
nothing again before the resume point.
"""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import stat
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from . import archive, hashing
from .codecs import DecodedReader
from .config import Location, TransferSettings, format_size
from .engine import ChunkFetcher, OrderedReader
from .errors import (
    DamagedArchiveError,
    DamagedDatasetError,
    DestinationError,
    InsufficientSpaceError,
    IntegrityError,
    ManifestError,
    NotFoundError,
    PartChangedError,
    UsageError,
)
from .journal import Journal, iter_index, staging_dir
from .manifest import END_OF_ARCHIVE, MANIFEST_NAME, TAR_BLOCK, Manifest
from .partfiles import PartFiles
from .planning import ChunkJob, plan_pull
from .progress import NullProgress, Progress
from .readers import ReaderLease
from .selection import Selection
from .stores.base import Store

if TYPE_CHECKING:
    from .update import UpdateResult

MARKER = "complete.json"
SPACE_MARGIN = 64 * 1024 * 1024
"""Bytes kept free beyond the data itself (file-system metadata, journal)."""


@dataclass(frozen=True, slots=True)
class PullResult:
    """What a pull did.

    Attributes:
        manifest: the manifest pulled.
        dest: the dataset directory.
        resumed_from: stream offset (bytes) an earlier interrupted run had reached.
        bytes_received: bytes received from the store, failed attempts included.
        retries: chunk attempts that were retried.
        up_to_date: the destination already held this generation; nothing was fetched.
        elapsed_s: wall time in seconds.
        updated: what an update in place of an older generation did (``update``), else None.
        notes: one-line messages for the user (a reader lease that could not be written).
    """

    manifest: Manifest
    dest: Path
    resumed_from: int
    bytes_received: int
    retries: int
    up_to_date: bool
    elapsed_s: float
    updated: UpdateResult | None = None
    notes: tuple[str, ...] = ()


MEMORY_BUDGET = 256 * 1024 * 1024
"""Bytes of chunk buffers a pull aims to stay within (beyond one per connection)."""


def fetch_settings(settings: TransferSettings, chunk_size: int) -> TransferSettings:
    """Transfer settings for a manifest's ``chunk_size``: buffers sized to its chunks, and a
    window of 2 chunks per connection, trimmed to ``MEMORY_BUDGET`` but never below one
    chunk per connection."""
    window = max(settings.concurrency, min(settings.window, MEMORY_BUDGET // chunk_size))
    return dataclasses.replace(settings, chunk_size=chunk_size, window=window)


def fetch_manifest(store: Store, location: Location) -> tuple[Manifest, bytes]:
    """Fetch and validate the manifest at ``location``.

    Raises:
        NotFoundError: no manifest there (nothing published, or a wrong name/prefix).
        ManifestError: the manifest is damaged or of an unknown version.
    """
    url = location.url(MANIFEST_NAME)
    try:
        data = store.get(location.key(MANIFEST_NAME))
    except NotFoundError as err:
        if err.bucket_missing:
            raise
        raise NotFoundError(f"no dataset at {location.url()}: {url} not found",
                            hint="check the name with 's3sync ls', the bucket and --endpoint-url",
                            manifest_missing=True) from err
    manifest = Manifest.from_json(data, url)
    parent, _, last = location.prefix.rpartition("/")
    if last == manifest.generation:
        # PREFIX/<generation>/manifest.json is a history copy (docs/manifest.md): its parts
        # live beside it, not under PREFIX/<generation>/<generation>/.
        raise UsageError(f"{location.url()} holds the history copy of generation {manifest.generation} of "
                         f"{Location(location.bucket, parent).url()}, not a dataset",
                         hint=f"use {Location(location.bucket, parent).url()} (its current generation), or "
                              f"--generation {manifest.generation} with it")
    return manifest, data


def fetch_generation(store: Store, location: Location, generation: str) -> tuple[Manifest, bytes]:
    """The manifest of ``generation`` of the dataset at ``location``: the current manifest if
    it is that generation, else the history copy ``PREFIX/<generation>/manifest.json`` that
    publish keeps (docs/manifest.md).

    Raises:
        UsageError: ``generation`` is not a generation id (empty, or holds ``/``).
        NotFoundError: no such generation stored; the message lists those that are.
        ManifestError: the copy is damaged, or names another generation.
    """
    manifest, data, _ = _fetch_generation(store, location, generation)
    return manifest, data


def _fetch_generation(store: Store, location: Location, generation: str) -> tuple[Manifest, bytes, bool]:
    """``fetch_generation``, and whether ``generation`` is the current one."""
    if not generation or "/" in generation or generation in (".", ".."):
        raise UsageError(f"--generation {generation!r} is not a generation id",
                         hint=f"list them with 's3sync ls {location.url()} --generations'")
    try:
        manifest, data = fetch_manifest(store, location)
        if manifest.generation == generation:
            return manifest, data, True
    except NotFoundError as err:
        if err.bucket_missing:
            raise
    key = f"{generation}/{MANIFEST_NAME}"
    try:
        data = store.get(location.key(key))
    except NotFoundError as err:
        if err.bucket_missing:
            raise
        from .gc import stored  # only for this message

        names = [g.name for g in stored(store, location).generations if g.kind in ("current", "history")]
        raise NotFoundError(f"{location.url()}: generation {generation} is not stored; stored: "
                            f"{', '.join(names) if names else 'none'}",
                            hint=f"see them with 's3sync ls {location.url()} --generations'") from err
    manifest = Manifest.from_json(data, location.url(key))
    if manifest.generation != generation:
        raise ManifestError(f"{location.url(key)}: names generation {manifest.generation}, not {generation}",
                            hint="the history copy is damaged: pull another generation")
    return manifest, data, False


def older_pull(dest: Path, manifest: Manifest, manifest_bytes: bytes,
               selection: dict[str, list[str]] | None = None) -> str | None:
    """The generation of the complete, extracted pull of the same dataset at ``dest`` that a
    pull updates in place: of another generation, or with another ``--include``/``--exclude``
    selection (``selection``: ``Selection.to_json()``, None for all members); else None."""
    marker = _extracted_pull(dest)
    if (marker is None or marker.get("name") != manifest.name
            or (marker.get("manifest_digest") == hashing.digest(manifest_bytes)
                and _selection_of(marker) == selection)
            or not (dest / archive.METADATA_DIR / "index.jsonl").is_file()):
        return None
    return str(marker.get("generation", "?"))


def _extracted_pull(dest: Path) -> dict | None:
    """The completion marker of a complete, extracted pull of a published dataset at ``dest``
    (not ``--no-extract``, not a split archive), else None."""
    if dest.is_symlink() or not dest.is_dir():
        return None
    marker = read_marker(dest)
    if marker is None or marker.get("mode", "extract") != "extract" or "source" in marker:
        return None
    return marker


def _complete_with_extras(dest: Path, manifest_bytes: bytes, selection: dict[str, list[str]] | None) -> str | None:
    """The generation of the complete, extracted pull of exactly this manifest (and selection)
    at ``dest`` if the tree holds entries that are not part of it (``update.find_extras``), else None."""
    marker = _extracted_pull(dest)
    if (marker is None or marker.get("manifest_digest") != hashing.digest(manifest_bytes)
            or _selection_of(marker) != selection):
        return None
    from . import update  # imported here: update imports this module

    old = {r.path: r for r in iter_index(dest / archive.METADATA_DIR / "index.jsonl")}
    return str(marker.get("generation", "?")) if update.find_extras(dest, old) else None


def _selection_of(marker: dict) -> dict[str, list[str]] | None:
    """The ``--include``/``--exclude`` patterns a completion marker records (None: all members)."""
    sel = marker.get("selection")
    return {"include": sel.get("include"), "exclude": sel.get("exclude")} if isinstance(sel, dict) else None


def _refuse_extras(dest: Path, manifest: Manifest, delete_extra: bool) -> None:
    """A generation without a member index replaces the old tree whole: refuse (before
    fetching) if the old tree holds entries that are not part of its dataset, unless
    ``delete_extra`` (an update with an index keeps them: ``update.find_extras``).

    Raises:
        DestinationError: naming the first extra, or a mount point inside ``dest`` (with
            ``delete_extra`` too: the old tree's removal would empty it).
    """
    from .update import find_extras  # update imports this module

    extras = find_extras(dest, {r.path: r for r in iter_index(dest / archive.METADATA_DIR / "index.jsonl")})
    if extras and not delete_extra:
        raise DestinationError(f"{dest / extras[0][0]}: not part of the dataset pulled there "
                               f"({len(extras)} such entries); generation {manifest.generation} has no member index "
                               "and replaces the tree whole: not updating (nothing was changed)",
                               hint="move them out of the directory, or pull with --delete-extra to drop them")


def read_marker(dest: Path) -> dict[str, str] | None:
    """The completion marker of a pulled dataset, or None if ``dest`` is not a complete pull."""
    try:
        doc = json.loads((dest / archive.METADATA_DIR / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def pull(location: Location, name: str | None, dest_parent: Path, store: Store, settings: TransferSettings,
         *, extract: bool = True, progress: Progress | None = None, generation: str | None = None,
         selection: Selection | None = None, delete_extra: bool = False) -> PullResult:
    """Pull the dataset at ``location`` into ``dest_parent / name`` (``name`` None: the manifest's).

    ``generation``: pull that generation (still stored: current or history) instead of the
    current one (see ``fetch_generation``). ``selection``: a partial pull of the members it
    picks (``--include``/``--exclude``), through ``update`` (it needs the member index).
    ``delete_extra``: an update in place drops the entries of the old tree that are not part of
    its dataset instead of keeping them (``update.update``).

    Raises:
        NotFoundError, ManifestError: see ``fetch_manifest``.
        DestinationError: the destination exists and is not this generation, or is unwritable.
        InsufficientSpaceError: not enough free bytes or inodes (before starting, or ENOSPC).
        IntegrityError, StoreError: a chunk failed for good; a rerun resumes.
        UnsafeArchiveError: a tar member tried to escape; nothing was written outside staging.
        NotFoundError: ``gc`` deleted the generation before or while this pull read it
            (``readers.generation_deleted``).
    """
    progress = progress or NullProgress()
    started = time.monotonic()
    if generation is None:
        manifest, manifest_bytes = fetch_manifest(store, location)
        current = True
    else:
        manifest, manifest_bytes, current = _fetch_generation(store, location, generation)
    # A generation that is no longer current is read under a reader lease, which gc respects.
    reading = ReaderLease(store, location, manifest, current=current, command="pull")
    with reading:
        result = _pull(location, name, dest_parent, store, settings, extract, progress, selection, manifest,
                       manifest_bytes, started, delete_extra)
    return dataclasses.replace(result, notes=tuple(reading.notes)) if reading.notes else result


def _pull(location: Location, name: str | None, dest_parent: Path, store: Store, settings: TransferSettings,
          extract: bool, progress: Progress, selection: Selection | None, manifest: Manifest,
          manifest_bytes: bytes, started: float, delete_extra: bool) -> PullResult:
    name = name or manifest.name
    dest = dest_parent / name
    mode = "extract" if extract else "parts"
    replace = None  # the older generation a full pull replaces at its commit
    if selection is not None and not extract:
        raise UsageError("--include/--exclude select members to extract: not with --no-extract")
    if extract:
        from . import update  # imported here: update imports this module

        update.recover(dest_parent, name, progress, update.identity(manifest_bytes, selection, dest))
        older = older_pull(dest, manifest, manifest_bytes, selection.to_json() if selection else None)
        indexed = manifest.index is not None and manifest.version == 1 and not manifest.compressed
        if older is None and delete_extra and indexed:
            # --delete-extra over a complete pull of this very generation: an update in place
            # to the same generation drops what DIR holds beyond it (as repair --delete-extra).
            older = _complete_with_extras(dest, manifest_bytes, selection.to_json() if selection else None)
        if selection is not None and not indexed:
            raise UsageError(f"generation {manifest.generation} of {location.url()} has no member index: "
                             "--include/--exclude need one", hint="pull it whole, or republish it with this s3sync")
        if indexed and (older is not None or selection is not None):
            if older is None and prepare_destination(dest_parent, name, manifest_bytes, manifest.generation, mode,
                                                     dataset=manifest.name):
                return PullResult(manifest, dest, 0, 0, 0, True, time.monotonic() - started)
            done = update.update(location, dest, store, settings, manifest, manifest_bytes, older, progress,
                                 selection, delete_extra)
            return PullResult(manifest, dest, 0, done.bytes_received, done.retries, False,
                              time.monotonic() - started, done)
        if older is not None:
            _refuse_extras(dest, manifest, delete_extra)
            progress.message(f"generation {manifest.generation} has no member index: pulling it whole, then "
                             f"replacing generation {older} in {dest}")
            replace = older
    if replace is None and prepare_destination(dest_parent, name, manifest_bytes, manifest.generation, mode,
                                               dataset=manifest.name):
        return PullResult(manifest, dest, 0, 0, 0, True, time.monotonic() - started)

    journal = Journal(staging_dir(dest_parent, name), manifest_bytes, manifest.generation,
                      mode, min_advance=manifest.chunk_size)
    offset = journal.open()
    recorded = None
    if offset and extract:
        try:
            recorded = read_back(journal)
        except BaseException:
            journal.close_quietly()
            raise
        if recorded.gone is not None:
            # What an earlier run recorded as extracted must still be there: the rest of this
            # run never looks at it again, and the marker would call the dataset complete.
            progress.message(f"{recorded.gone}: recorded as extracted by the interrupted run, but missing or "
                             f"changed in {journal.tree}; starting {name} over")
            journal.forget()
            journal.close_quietly()
            journal = Journal(staging_dir(dest_parent, name), manifest_bytes, manifest.generation,
                              mode, min_advance=manifest.chunk_size)
            offset, recorded = journal.open(), None
    if offset and extract and manifest.compressed:
        progress.message(f"resuming {name}: compressed ({manifest.compression}): read again from the start; "
                         f"nothing before byte {offset:,} is written again")
    elif offset:
        progress.message(f"resuming {name} at {format_size(offset)} of {format_size(manifest.stream_size)} "
                         f"(byte {offset:,})")
    fetcher = ChunkFetcher(store, location.key, fetch_settings(settings, manifest.chunk_size), progress)
    try:
        _preflight(journal.tree, manifest, offset, extract)
        # A compressed stream is decoded from its first byte: its chunks are all fetched again.
        jobs = plan_pull(manifest, 0 if extract and manifest.compressed else offset)
        progress.start("download", manifest.stream_size - (jobs[0].stream_offset if jobs else offset))
        root = None
        if extract:
            chunks = fetcher.fetch(jobs)
            try:
                root = _extract(manifest, chunks, offset, journal, progress, fetcher.next_ready, recorded,
                                fetcher.cancel)
            finally:
                chunks.close()
        else:
            _write_parts(manifest, fetcher, jobs, journal)
        progress.finish("download")
        if replace is not None:
            from .update import swap

            swap(dest, lambda: _commit(journal, dest, manifest, manifest_bytes, location))
        else:
            _commit(journal, dest, manifest, manifest_bytes, location)
        if root is not None:
            # As GNU tar gives the archive's './' member's mode and mtime to the directory of
            # -C DIR (an adopted archive made by `tar -C SRC .`): after the rename, through the
            # tree's open descriptor (the metadata written into the tree moved its mtime).
            root()
        journal.remove()
    except InsufficientSpaceError as err:
        if err.needed and not offset:
            journal.remove()  # refused before anything was written: leave no hidden staging behind
            raise
        journal.close_quietly()
        if err.needed:
            raise
        raise _space_error(journal, _bytes_left(manifest, journal.offset, extract)) from err
    except (PartChangedError, DamagedDatasetError) as err:
        journal.close_quietly()  # flush the last checkpoint: a rerun resumes from it
        if manifest.adopted is not None:
            # Nobody published these pieces: the advice to republish does not fit.
            err.hint = (f"a piece changed or went missing since 's3sync adopt' of {manifest.adopted.source}: "
                        "restore it, or adopt what is there now with 's3sync adopt --replace'")
        raise
    except BaseException:
        journal.close_quietly()  # flush the last checkpoint: a rerun resumes from it
        raise
    return PullResult(manifest, dest, offset, fetcher.stats.bytes_received, fetcher.stats.retries,
                      False, time.monotonic() - started)


def prepare_destination(dest_parent: Path, name: str, identity: bytes, generation: str, mode: str,
                        dataset: str | None = None) -> bool:
    """Check that ``dest_parent / name`` can receive this pull, and create ``dest_parent``.

    ``identity`` is what identifies the pull (the manifest's bytes; for a split archive its
    ``SplitArchive.identity()``), ``generation`` what to call it in messages; ``dataset`` the
    manifest's name (a directory holding another dataset is named as such). Returns True
    if the destination already holds it (complete: nothing to do), after removing a
    staging directory an interrupted run left behind after its rename.

    Raises:
        DestinationError: DEST_PARENT is a file or itself a pulled dataset; the destination
            exists and holds something else; DEST_PARENT cannot be created.
    """
    dest = dest_parent / name
    digest = hashing.digest(identity)
    if dest_parent.exists() and not dest_parent.is_dir():
        raise DestinationError(f"{dest_parent}: not a directory", hint="give a directory as DEST_PARENT")
    if read_marker(dest_parent) is not None:
        # `pull sbu /data/sbu` would nest a copy at /data/sbu/sbu, which the outer dataset's
        # verify then reports as extra files.
        raise DestinationError(f"{dest_parent} is itself a pulled dataset: the pull would put {name} inside it",
                               hint=f"give the directory that holds datasets as DEST_PARENT, e.g. {dest_parent.parent}")
    _take_empty_dest(dest)
    if dest.exists() or dest.is_symlink():
        marker = read_marker(dest)
        if marker and marker.get("manifest_digest") == digest and marker.get("mode", "extract") == mode:
            # A run interrupted between its rename and the clean-up left its staging behind.
            Journal(staging_dir(dest_parent, name), identity, generation, mode).remove_leftover()
            return True
        if marker and marker.get("manifest_digest") == digest:
            held = "the parts (--no-extract)" if marker.get("mode") == "parts" else "the extracted files"
            raise DestinationError(f"{dest} already holds {held} of generation {generation}",
                                   hint="pull into another DEST_PARENT, or remove the directory named above")
        other = marker.get("name") if marker else None
        if dataset is not None and isinstance(other, str) and other != dataset:
            raise DestinationError(f"{dest} already exists and holds another dataset, {other}"
                                   + (f" (from {marker['url']})" if isinstance(marker.get("url"), str) else "")
                                   + f", not {dataset}",
                                   hint=f"pull into another DEST_PARENT, or give this one another directory name "
                                        f"(--name {dataset}-2)")
        what = "directory" if dest.is_dir() and not dest.is_symlink() else \
            "symbolic link" if dest.is_symlink() else "file"
        raise DestinationError(f"{dest} already exists" + (
            f" and holds generation {marker.get('generation')}, not {generation}" if marker
            else f" (a {what})" if what != "directory" else ""),
            hint="pull into another DEST_PARENT, or remove (or rename) the directory named above to get the new "
                 "generation" if marker else f"pull into another DEST_PARENT or remove the {what} named above")
    if not dest_parent.is_dir():
        try:
            dest_parent.mkdir(parents=True)
        except OSError as err:
            raise DestinationError(f"{dest_parent}: cannot create ({err.strerror})",
                                   hint="create it, or give a DEST_PARENT you can write to") from err

    return False


@dataclass(slots=True)
class Tally:
    """What an extracted (or scanned) tar stream held: members, regular files and their
    bytes. Shared by ``pull``, ``splitpull`` and ``adopt``."""

    members: int = 0
    files: int = 0
    extracted_size: int = 0

    def add(self, record: archive.MemberRecord) -> None:
        self.members += 1
        if record.kind == "file":
            self.files += 1
            self.extracted_size += record.size


@dataclass(slots=True)
class _Recorded:
    """What earlier runs of a resumed pull recorded: a tally of their members, their
    directories (modes and mtimes are applied at the end), and the first member no longer
    in the staging tree as recorded (None if all are)."""

    seen: Tally
    dirs: list[archive.MemberRecord]
    gone: str | None = None


def read_back(journal: Journal) -> _Recorded:
    """Read the index of a resumed pull once: tally it, and check that every member is
    still in the staging tree as recorded (type, and size for files; one ``lstat`` each,
    about 2 s per million members; contents are not re-read).

    Raises:
        DestinationError: the index is damaged (an OS crash can leave zeros where unsynced
            records were); it is discarded, so the next run starts over.
    """
    kinds = {"file": stat.S_ISREG, "hardlink": stat.S_ISREG, "dir": stat.S_ISDIR, "symlink": stat.S_ISLNK}
    root = os.fspath(journal.tree_path)  # the tree this journal opened, wherever it is now
    recorded = _Recorded(Tally(), [])
    try:
        for rec in journal.records():
            recorded.seen.add(rec)
            if rec.kind == "dir":
                recorded.dirs.append(rec)
            if recorded.gone is None:
                try:
                    st = os.lstat(os.path.join(root, rec.path))
                except OSError:
                    recorded.gone = rec.path
                    continue
                if not kinds.get(rec.kind, lambda _m: False)(st.st_mode) or (
                        rec.kind == "file" and st.st_size != rec.size):
                    recorded.gone = rec.path
    except (ValueError, TypeError) as err:
        journal.forget()
        raise DestinationError(
            f"{journal.index_path}: the resume state of this pull is damaged ({err}); it was discarded",
            hint="run the same command again: it starts the pull over") from err
    return recorded


def _preflight(tree: Path, manifest: Manifest, offset: int, extract: bool) -> None:
    """Refuse at once when free space or inodes are clearly too small."""
    need = _bytes_left(manifest, offset, extract) + SPACE_MARGIN
    usage = shutil.disk_usage(tree)
    if usage.free < need:
        raise InsufficientSpaceError(
            f"{tree.parent.parent}: {format_size(usage.free)} free, the pull needs about {format_size(need)}",
            path=str(tree.parent.parent), needed=need, available=usage.free)
    st = os.statvfs(tree)
    if extract and st.f_files and st.f_favail < manifest.members:
        raise InsufficientSpaceError(
            f"{tree.parent.parent}: {st.f_favail} inodes free, the dataset has {manifest.members} members",
            path=str(tree.parent.parent), needed=manifest.members, available=st.f_favail)


class _TarStream(OrderedReader):
    """The stream as tarfile reads it, remembering tarfile's last read: the block at which
    tarfile decided the archive ended (it reads headers only through ``read``)."""

    last_read: tuple[int, bytes] = (0, b"")
    """(stream offset, bytes) of the last ``read``."""

    def read(self, n: int = -1) -> bytes:
        at = self.tell()
        data = super().read(n)
        self.last_read = (at, data)
        return data


class RecordingReader:
    """A forward reader passed through, remembering the last ``read``: the block where
    tarfile decided the archive ended (it reads headers only through ``read``). Used over a
    ``codecs.DecodedReader`` (here and in ``splitpull``)."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self.last_read: tuple[int, bytes] = (0, b"")

    def read(self, n: int = -1) -> bytes:
        at = self._inner.tell()
        data = self._inner.read(n)
        self.last_read = (at, data)
        return data

    def tell(self) -> int:
        return self._inner.tell()

    def seek(self, pos: int, whence: int = 0) -> int:
        return self._inner.seek(pos, whence)

    def views(self, n: int):
        return self._inner.views(n)

    def drain(self) -> int:
        return self._inner.drain()

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    @property
    def before_next_chunk(self):
        return self._inner.before_next_chunk

    @before_next_chunk.setter
    def before_next_chunk(self, hook) -> None:
        self._inner.before_next_chunk = hook


def _hashed(chunks: Iterator[tuple[ChunkJob, memoryview]], hasher: hashing.Hasher
            ) -> Iterator[tuple[ChunkJob, memoryview]]:
    """Pass ``chunks`` through, feeding each one to ``hasher`` as it is handed over (in
    stream order). XXH3 runs at ~10 GB/s and releases the GIL: ~0.1 s per GiB."""
    for job, data in chunks:
        hasher.update(data)
        yield job, data


def _damaged(manifest: Manifest, what: str) -> DamagedDatasetError:
    return DamagedDatasetError(f"dataset {manifest.name} (generation {manifest.generation}) is damaged: {what}")


def _extract(manifest: Manifest, chunks, offset: int, journal: Journal, progress: Progress,
             ready: Callable[[], bool], recorded: _Recorded | None = None,
             cancel: Callable[[], None] | None = None) -> Callable[[], None] | None:
    """Extract the stream from ``offset``, then check everything the manifest promises.

    ``cancel`` stops the fetch: called on an interruption of a compressed stream, whose
    decoding thread may be waiting for a chunk (as in ``splitpull``).

    At the end: the tar end-of-archive marker right after the last member and only zeros
    after it up to ``stream.size``; the number of members, regular files and file bytes
    (this run's plus, on resume, an earlier run's from the index); and ``stream.digest``,
    when this run read the stream from byte 0 (a resumed run cannot hash the prefix it
    skipped; every chunk was still checked against its own digest). Before the first
    check passes, the journal never records the end of the stream.

    Returns:
        What gives the dataset directory the mode and mtime of the archive's ``./`` member
        (see ``SafeExtractor.finish_root``), to call after the rename; None if it has none.

    Raises:
        DamagedDatasetError: the stream is not what the manifest promises (for a compressed
            stream: also when it does not decode, or decodes to another size than
            ``tar_size``: every chunk matched its digest, so the manifest is wrong).
    """
    tar_size = manifest.tar_stream_size
    # The end-of-archive marker: s3sync's own writer always writes both zero blocks; GNU tar
    # accepts an archive with one (with a warning), and so does adopt (version 2).
    marker = END_OF_ARCHIVE if manifest.version == 1 else TAR_BLOCK
    hasher = hashing.Hasher() if offset == 0 or manifest.compressed else None
    stored = decoded = None
    if manifest.compressed:
        # Read from byte 0 whatever the resume point; seek() decodes and discards up to it.
        stored = OrderedReader(_hashed(chunks, hasher), 0, manifest.stream_size, ready=ready)
        decoded = DecodedReader(stored.rest(), manifest.compression, manifest.parts[0].key)
        reader = RecordingReader(decoded)
    else:
        reader = _TarStream(_hashed(chunks, hasher) if hasher else chunks, offset, manifest.stream_size,
                            ready=ready)
    try:
        return _extract_stream(manifest, reader, stored, decoded, hasher, offset, marker, tar_size, journal,
                               progress, recorded)
    except (DamagedDatasetError, IntegrityError):
        raise
    except DamagedArchiveError as err:
        # Only the decoder raises it, over chunks that each matched their digest: the stored
        # stream is what adopt read, so the manifest (its compression, tar_size) is wrong.
        if cancel is not None:
            cancel()
        raise _damaged(manifest, f"its {manifest.compression} stream does not decode as the manifest promises "
                                 f"(tar_size {tar_size}): {err}") from err
    except BaseException:
        if decoded is not None and cancel is not None:
            cancel()  # Ctrl-C, disk full...: the decoding thread may be waiting for a chunk
        raise
    finally:
        if decoded is not None:
            decoded.close()


def _extract_stream(manifest: Manifest, reader, stored: OrderedReader | None, decoded: DecodedReader | None,
                    hasher: hashing.Hasher | None, offset: int, marker: int, tar_size: int, journal: Journal,
                    progress: Progress, recorded: _Recorded | None) -> Callable[[], None] | None:
    """The body of ``_extract``: ``reader`` is the tar stream (decoded, if ``decoded``)."""
    if decoded is not None and offset:
        reader.seek(offset)
        if reader.tell() != offset:
            raise _damaged(manifest, f"the decompressed stream ends at byte {reader.tell()}, before the resume "
                                     f"point {offset}")
    extractor = archive.SafeExtractor(journal.tree_path, shown=journal.tree)
    # A resumed run starts past the './' member: an earlier run kept its mode and mtime.
    kept_root = _load_root(journal) if offset else None
    progress.start("extract", manifest.extracted_size)
    # On resume, earlier runs' members, read back once by pull() (``_read_back``: reading the
    # whole index costs ~5 % of a pull of 100,000 tiny files, so only then).
    if offset and recorded is None:
        recorded = read_back(journal)
    seen = recorded.seen if recorded else Tally()
    dirs: list[archive.MemberRecord] = recorded.dirs if recorded else []  # this run's and earlier runs'
    if offset:
        progress.advance("extract", seen.extracted_size)
        if decoded is None:
            progress.message(f"resumed at byte {offset:,}: the digest of the whole stream cannot be checked (this "
                             "run did not read its start); each chunk is checked against its own digest, and the "
                             "member counts and the end of the archive are checked")
    end = offset  # where the member after the last one extracted starts: the end-of-archive marker

    def on_member(next_offset: int, record: archive.MemberRecord) -> None:
        nonlocal end, kept_root
        if next_offset + marker > tar_size:
            # Checked before the journal records it: the end of the stream is recorded
            # only once every check has passed, so a rerun never skips them.
            raise _damaged(manifest, f"the stream ends at byte {tar_size}, too soon after tar member "
                                     f"{record.path!r} (byte {next_offset}) for the end-of-archive marker; "
                                     "a part may be missing")
        if extractor.root_record is not None and kept_root is None:
            # Saved before the journal's checkpoint can move past the './' member.
            kept_root = extractor.root_record
            journal.save_state(ROOT_STATE, json.dumps([kept_root.mode, kept_root.mtime]).encode())
        journal.add(record)
        journal.checkpoint(next_offset)
        end = next_offset
        seen.add(record)
        if record.kind == "dir":
            dirs.append(record)
        progress.advance("extract", record.size if record.kind == "file" else 0)

    if offset < tar_size:
        try:
            extractor.extract(reader, on_member)  # ENOSPC: pull() adds the bytes still needed
        except IntegrityError as err:
            if reader.tell() < tar_size:
                raise
            # Every chunk was verified: what the manifest describes is cut off inside a member.
            raise _damaged(manifest, f"the stream ends at byte {tar_size} inside a tar member; "
                                     "a part may be missing") from err
        _check_end(manifest, reader, end, marker, tar_size)  # reads (fetches and verifies) the stream to its end
        if decoded is not None and stored is not None:
            if decoded.drain():  # to the end of the compressed stream: its last checksum
                raise _damaged(manifest, f"the decompressed stream is longer than the tar_size {tar_size} the "
                                         "manifest promises")
            stored.drain()  # every stored byte hashed
        if hasher is not None and hasher.hexdigest() != manifest.stream_digest:
            # A rerun would resume and could not hash the prefix: make it start over, so
            # that it fails the same way.
            journal.forget()
            raise _damaged(manifest, f"the stream's digest is {hasher.hexdigest()}, the manifest promises "
                                     f"{manifest.stream_digest}")
    promised = (("members", manifest.members, seen.members), ("files", manifest.files, seen.files),
                ("bytes of file data", manifest.extracted_size, seen.extracted_size))
    wrong = [(what, want, got) for what, want, got in promised if want != got]
    if wrong:
        raise _damaged(manifest, "the manifest promises " + ", ".join(f"{want} {what}" for what, want, _ in wrong)
                       + "; the stream held " + ", ".join(str(got) for _, _, got in wrong))
    journal.checkpoint(manifest.stream_size, force=True)
    extractor.finish_dirs(dirs)
    progress.finish("extract")
    if extractor.root_record is not None:
        return extractor.finish_root
    if kept_root is not None:
        return lambda: extractor.finish_root(kept_root)
    return None


ROOT_STATE = "root.json"
"""Resume state of a pull: ``[mode, mtime]`` of the archive's ``./`` member (seconds)."""


def _load_root(journal: Journal) -> archive.MemberRecord | None:
    """The ``./`` member an earlier run of this pull saw (``ROOT_STATE``), or None."""
    raw = journal.load_state(ROOT_STATE)
    try:
        mode, mtime = json.loads(raw) if raw else (None, None)
        return None if mode is None else archive.MemberRecord(".", "dir", 0, int(mode) & 0o777, int(mtime))
    except (ValueError, TypeError):
        return None


def _check_end(manifest: Manifest, reader, end: int, marker: int = END_OF_ARCHIVE, size: int | None = None) -> None:
    """Require tarfile to have stopped at the end-of-archive marker (``marker`` bytes of
    zero blocks: two for s3sync's own streams, at least one for an adopted one) at tar
    stream offset ``end``, and only zeros from there to the end of the tar stream (``size``
    bytes, decompressed; default ``stream.size``).

    tarfile takes the end of the data, or a block that is not a valid header, for the end
    of the archive: a manifest that lost its last parts would otherwise pull "successfully"
    with members missing.

    Raises:
        DamagedDatasetError: naming where the stream ends or what is there instead.
    """
    size = manifest.stream_size if size is None else size
    at, block = reader.last_read
    if end + marker > size or len(block) < TAR_BLOCK:
        raise _damaged(manifest, f"the stream ends at byte {size} without the tar end-of-archive "
                                 f"marker after its last member (byte {end}); a part may be missing")
    if at != end or block.count(0) != TAR_BLOCK:
        raise _damaged(manifest, f"byte {end} of the stream is neither a tar header nor the end-of-archive marker")
    left = size - reader.tell()
    for view in reader.views(left):  # the second zero block and tar's record padding
        if bytes(view).count(0) != len(view):
            raise _damaged(manifest, "the stream holds data after its end-of-archive marker")
    if reader.tell() != size:
        raise _damaged(manifest, f"the tar stream ends at byte {reader.tell()}, the manifest promises {size}")


def _bytes_left(manifest: Manifest, offset: int, extract: bool) -> int:
    """Bytes still to be written from stream ``offset``: a share of the extracted size, or
    the rest of the stream for ``--no-extract``."""
    total = manifest.tar_stream_size if extract else manifest.stream_size
    left = max(0, total - offset)
    if extract and total:
        return manifest.extracted_size * left // total
    return left


def _space_error(journal: Journal, left: int) -> InsufficientSpaceError:
    """The disk filled up: name the destination and about how many bytes are still needed."""
    dest = journal.staging.parent
    free = shutil.disk_usage(journal.staging).free
    return InsufficientSpaceError(
        f"{dest}: disk full while extracting; about {format_size(left + SPACE_MARGIN)} more are needed, "
        f"{format_size(free)} free",
        path=str(dest), needed=left + SPACE_MARGIN, available=free)


def _write_parts(manifest: Manifest, fetcher: ChunkFetcher, jobs: list, journal: Journal) -> None:
    """Fetch chunks into the part files piece by piece (in the fetch workers); checkpoint
    the in-order prefix of verified chunks."""
    files = PartFiles(Path(journal.tree_path), [(part.key.rsplit("/", 1)[-1], part.size) for part in manifest.parts],
                      shown=journal.tree).open()
    done = fetcher.fetch_to(jobs, files.write)
    try:
        for job in done:
            journal.checkpoint(job.stream_offset + job.length)
    finally:
        done.close()  # cancels the fetch
        files.close()  # no write after this: none lands once pull() has returned
    _check_part_files(manifest, Path(journal.tree_path), journal.tree)
    journal.checkpoint(manifest.stream_size, force=True)


def _check_part_files(manifest: Manifest, directory: Path, shown: Path) -> None:
    """Hash the finished part files in order: each part's digest and the stream's must be
    the manifest's (``directory`` is named ``shown`` in messages). Chunks arrive out of order (and earlier runs wrote some), so this is a
    final pass over the files, mostly from the page cache: ~0.3 s per GiB.

    Raises:
        DamagedDatasetError: a digest differs (every chunk matched its own digest, so the
            manifest contradicts itself).
        DestinationError: a part file cannot be read.
    """
    stream = hashing.Hasher()
    buf = memoryview(bytearray(archive.COPY_BUFSIZE))
    for i, part in enumerate(manifest.parts):
        path = directory / part.key.rsplit("/", 1)[-1]
        hasher = hashing.Hasher()
        try:
            with open(path, "rb", buffering=0) as f:
                while n := f.readinto(buf):
                    hasher.update(buf[:n])
                    stream.update(buf[:n])
        except OSError as err:
            raise DestinationError(f"{shown / path.name}: cannot read back ({err.strerror})") from err
        if hasher.hexdigest() != part.digest:
            raise _damaged(manifest, f"part {i} ({part.key}) has digest {hasher.hexdigest()}, the manifest promises "
                                     f"{part.digest}, although each of its chunks matched")
    if stream.hexdigest() != manifest.stream_digest:
        raise _damaged(manifest, f"the stream's digest is {stream.hexdigest()}, the manifest promises "
                                 f"{manifest.stream_digest}")


def _commit(journal: Journal, dest: Path, manifest: Manifest, manifest_bytes: bytes, location: Location) -> None:
    """Write the manifest and the completion marker, then rename the tree into place. The
    marker's ``url`` records where the dataset was pulled from (``s3://BUCKET/PREFIX``), so
    that ``repair`` can fetch from the same place later."""
    commit(journal, dest, {MANIFEST_NAME: manifest_bytes}, {
        "generation": manifest.generation, "manifest_digest": hashing.digest(manifest_bytes),
        "mode": journal.mode, "name": manifest.name, "url": location.url()})


def commit(journal: Journal, dest: Path, metadata: dict[str, bytes], marker: dict[str, object]) -> None:
    """Write ``metadata`` files into ``.s3sync/``, then the completion marker (``marker``
    plus the index's digest and the time), then rename the tree into place (atomic on one
    file system). None of these steps goes through a symlink (see ``Journal.write_metadata``
    and ``Journal.move_tree``); interrupted anywhere, a rerun does them all again.

    Raises:
        DestinationError: a file cannot be written, or the rename is refused.
    """
    index = Path(journal.tree_path, archive.METADATA_DIR, journal.index_path.name)
    try:
        for name, data in metadata.items():
            journal.write_metadata(name, data)
        journal.write_metadata(MARKER, (json.dumps({
            **marker, "index_digest": archive.file_digest(index) if index.exists() else "",
            "completed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }) + "\n").encode())
    except OSError as err:
        raise DestinationError(f"{dest}: cannot write the completion marker ({err.strerror})") from err
    journal.move_tree(dest.name)


def _take_empty_dest(dest: Path) -> None:
    """Remove ``dest`` if it is an empty directory made beforehand: the finished dataset is
    renamed to its name. A directory that is empty but cannot be removed (a mount point:
    EBUSY; a read-only or sticky parent: EROFS, EACCES, EPERM) is refused with a hint.

    Raises:
        DestinationError: ``dest`` is an empty directory that cannot be removed, or unreadable.
    """
    try:
        if dest.is_symlink() or not dest.is_dir() or any(dest.iterdir()):
            return
        dest.rmdir()
    except OSError as err:
        why = "a mount point" if err.errno == errno.EBUSY else err.strerror
        raise DestinationError(
            f"{dest}: an empty directory that pull cannot replace ({why}); a pull renames the finished "
            "dataset to this name", hint=(
                f"pull into it instead: give {dest} as DEST_PARENT (the dataset lands in {dest}/NAME)"
                if err.errno == errno.EBUSY else
                f"make {dest.parent} writable, remove {dest}, or pull into another DEST_PARENT")) from err
