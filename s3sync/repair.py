"""Repair: re-fetch only what ``verify`` flags in a pulled dataset, from the generation it holds.

Pipeline: completion marker (``url``: where the pull fetched from) -> local manifest (the
generation pulled, with its chunk digests) -> ``verify`` -> sort the problems:

- a file that is missing, changed (size or content), of another type, or no longer a hard
  link: its member is fetched again. The generation's published member index
  (``indexfile``; docs/manifest.md section 10) gives the member's offset in the tar stream;
  its span is fetched by a ranged GET and its data checked against the index's digest
  (``spans``; whole chunks checked against the manifest's chunk digests for a member larger
  than a chunk), the member is extracted by ``archive.SafeExtractor``
  into ``DIR/.s3sync/repair/`` (the same file system), its digest is compared with the index
  and the pull's own record, and it is renamed into place (rename(2): atomic);
- a directory or symlink that is missing or wrong: made again from the pull's record (no fetch);
- only the mode or mtime differ: set again, without fetching anything;
- ``extra`` entries are reported, and deleted only when asked.

Nothing is opened through a symlink planted in DIR: every path is walked one component at a
time with ``O_NOFOLLOW`` from a descriptor of DIR, and the final entry is replaced by a rename,
which replaces a symlink itself rather than its target. A ``kill -9`` at any instant leaves
each entry either as it was or repaired (plus the scratch directory, removed by the next run,
and perhaps a directory mtime that the next run sets again): a rerun verifies again and fixes
what is left. Must not import tarfile (``archive`` owns it) or boto3 (the stores do).
"""

from __future__ import annotations

import errno
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from . import archive, indexfile
from .captionfiles import recheck
from .config import Location, TransferSettings, format_size, parse_s3_url
from .engine import ChunkFetcher
from .errors import (
    DamagedDatasetError,
    DestinationError,
    ManifestError,
    NotFoundError,
    S3SyncError,
    UsageError,
)
from .index import IndexEntry, MemberRecord
from .journal import INDEX_NAME, load_index, rmtree_at, try_lock
from .manifest import MANIFEST_NAME, Manifest
from .progress import NullProgress, Progress
from .pull import fetch_manifest, fetch_settings, read_marker
from .readers import ReaderLease
from .spans import MemberSpan, SpanReader, check_range, plan_ranges, span_bytes
from .stores.base import Store
from .update import REPAIR_LOCK
from .verify import SPLIT_ARCHIVE, Problem, verify

SCRATCH = "repair"
"""Directory under ``DIR/.s3sync/`` where members are extracted before their rename into place."""
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_REFETCH = ("missing", "changed", "type", "link")
"""Problem kinds that make a file member be fetched again."""


@dataclass(frozen=True, slots=True)
class RepairResult:
    """What a repair did.

    Attributes:
        dest: the dataset directory.
        url: where the members were fetched from (``s3://BUCKET/PREFIX``).
        generation: the generation repaired to (the one the pull fetched).
        problems: what ``verify`` found before the repair.
        fetched: paths of the file members fetched again and renamed into place.
        remade: paths of directories and symlinks made again without fetching.
        metadata: paths whose mode or mtime only were set again.
        extra: paths that are not part of the dataset (as ``verify`` names them).
        deleted: the extra paths deleted (``delete_extra``).
        unrepaired: problems left as they are, each with why.
        bytes_received: bytes received from the store (member index and chunks, retries included).
        stream_size: bytes of the whole published stream, for comparison.
        elapsed_s: wall time in seconds.
        notes: one-line messages for the user (a reader lease that could not be written).
    """

    dest: Path
    url: str
    generation: str
    problems: tuple[Problem, ...]
    fetched: tuple[str, ...]
    remade: tuple[str, ...]
    metadata: tuple[str, ...]
    extra: tuple[str, ...]
    deleted: tuple[str, ...]
    unrepaired: tuple[Problem, ...]
    bytes_received: int
    stream_size: int
    elapsed_s: float
    notes: tuple[str, ...] = ()


def source_of(dest: Path) -> Location:
    """Where the pull of ``dest`` fetched from (the completion marker's ``url``).

    Raises:
        DestinationError: ``dest`` is not a completed pull.
        UsageError: the pull cannot be repaired (parts only, a split archive, or a pull made
            before s3sync recorded its source).
    """
    marker = read_marker(dest)
    if marker is None:
        raise DestinationError(f"{dest}: not a completed s3sync pull (no {archive.METADATA_DIR}/complete.json)",
                               hint="give the directory a pull created, e.g. /data/sbu")
    if marker.get("source") == SPLIT_ARCHIVE:
        raise UsageError(f"{dest}: a split archive pulled without a manifest cannot be repaired (it has no chunk "
                         "digests or member index)", hint="pull it again into another directory")
    if marker.get("mode") == "parts":
        raise UsageError(f"{dest}: holds part files (--no-extract), not extracted members; repair works on "
                         "extracted datasets", hint="pull it again with --no-extract into another directory")
    url = marker.get("url")
    if not isinstance(url, str):
        raise UsageError(f"{dest}: the pull did not record where it came from (pulled by an older s3sync)",
                         hint="pull the dataset again with this s3sync")
    return parse_s3_url(url)


def repair(dest: Path, location: Location, store: Store, settings: TransferSettings, *,
           delete_extra: bool = False, progress: Progress | None = None) -> RepairResult:
    """Make ``dest`` match the generation it was pulled at again, fetching only what differs.

    Args:
        dest: a directory made by ``pull`` (see ``source_of`` for ``location``).
        location: where the dataset was pulled from; its bucket is ``store``'s.
        store: the bucket's store.
        settings: transfer settings (concurrency, retries).
        delete_extra: also delete what is not part of the dataset.
        progress: receives ``verify`` and ``download`` bytes, and messages.

    Raises:
        DestinationError: ``dest`` is not a completed pull, (DestinationBusyError) another repair of it is running,
            or a write fails.
        ManifestError: the recorded manifest or index is damaged.
        NotFoundError: the generation is no longer in the bucket (removed by ``gc``).
        MemberIndexError: the published member index is missing, damaged or absent.
        DamagedDatasetError: a fetched member differs from the member index.
        StoreError, IntegrityError: a chunk failed for good; a rerun does the rest.
    """
    progress = progress or NullProgress()
    started = time.monotonic()
    meta = dest / archive.METADATA_DIR
    try:
        manifest = Manifest.from_json((meta / MANIFEST_NAME).read_bytes(), str(meta / MANIFEST_NAME))
    except OSError as err:
        raise ManifestError(f"{meta / MANIFEST_NAME}: cannot read ({err.strerror})") from err
    if manifest.compressed:
        raise UsageError(f"{dest}: its stream is {manifest.compression}-compressed: members cannot be fetched "
                         "alone", hint="pull it again into another directory")
    with _Tree(dest) as tree:
        found = verify(dest, settings.concurrency, progress)
        records = load_index(meta / INDEX_NAME)
        work = _Work(tree, records, delete_extra)
        plan = work.sort(found.problems)
        work.apply_local()  # directories first: fetched members go into them
        received = 0
        notes: list[str] = []
        if plan:
            # A generation that is no longer current is read under a reader lease (gc spares it).
            reading = ReaderLease(store, location, manifest, current=_is_current(store, location, manifest),
                                  command="repair", require_copy=False)
            with reading:
                received = _refetch(work, plan, manifest, location, store, settings, progress)
            notes = reading.notes
        work.finish_dirs()
        if manifest.captions is not None and any(p.kind == "captions" for p in work.unrepaired):
            # Its file was damaged too, and fetched again above: check the counts again.
            _found, lines = recheck(dest, manifest.captions)
            work.unrepaired = [p for p in work.unrepaired if p.kind != "captions"] + [
                Problem(manifest.captions.path, "captions", line) for line in lines]
    return RepairResult(dest, location.url(), manifest.generation, found.problems, tuple(work.fetched),
                        tuple(work.remade), tuple(work.metadata), tuple(work.extra), tuple(work.deleted),
                        tuple(work.unrepaired), received, manifest.stream_size, time.monotonic() - started,
                        tuple(notes))


def _is_current(store: Store, location: Location, manifest: Manifest) -> bool:
    """Whether the current manifest at ``location`` names ``manifest``'s generation (False if
    it cannot be read: the generation is then read under a lease)."""
    try:
        now, _ = fetch_manifest(store, location)
    except S3SyncError:
        return False
    return now.generation == manifest.generation


class _Tree:
    """Descriptors of DIR and of its scratch directory, under an exclusive lock."""

    def __init__(self, dest: Path) -> None:
        self.dest = dest
        self.fd = self.meta_fd = self.lock_fd = self.scratch_fd = -1

    def __enter__(self) -> _Tree:
        try:
            self.fd = os.open(self.dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
            self.meta_fd = os.open(archive.METADATA_DIR, _DIR_FLAGS, dir_fd=self.fd)
            self.lock_fd = os.open(REPAIR_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600,
                                   dir_fd=self.meta_fd)
        except OSError as err:
            self.close()
            raise DestinationError(f"{self.dest}: cannot open for repair ({err.strerror})") from err
        busy = try_lock(self.lock_fd, f"is repairing or updating {self.dest}",
                        self.dest / archive.METADATA_DIR / REPAIR_LOCK)
        if busy is not None:
            self.close()
            raise busy
        try:
            # What a killed run left: whole members not yet renamed into place.
            rmtree_at(self.meta_fd, SCRATCH)
        except FileNotFoundError:
            pass
        except OSError as err:
            self.close()
            raise DestinationError(f"{self.dest / archive.METADATA_DIR / SCRATCH}: cannot remove ({err.strerror})") \
                from err
        return self

    def scratch(self) -> int:
        """The (empty, new) scratch directory's descriptor."""
        if self.scratch_fd < 0:
            os.mkdir(SCRATCH, 0o700, dir_fd=self.meta_fd)
            self.scratch_fd = os.open(SCRATCH, _DIR_FLAGS, dir_fd=self.meta_fd)
        return self.scratch_fd

    def __exit__(self, kind, value, tb) -> None:  # noqa: ANN001
        if self.scratch_fd >= 0:
            try:
                rmtree_at(self.meta_fd, SCRATCH)
            except OSError:
                pass  # the next run removes it
        self.close()

    def close(self) -> None:
        for fd in (self.scratch_fd, self.lock_fd, self.meta_fd, self.fd):
            if fd >= 0:
                os.close(fd)
        self.fd = self.meta_fd = self.lock_fd = self.scratch_fd = -1

    def parent(self, rel: str, make: bool = False) -> tuple[int, str]:
        """A new descriptor of ``rel``'s parent directory (walked without following a symlink)
        and ``rel``'s last component. ``make``: create missing directories (mode 0700; the
        caller sets their recorded mode and mtime at the end)."""
        *dirs, name = rel.split("/")
        fd = os.dup(self.fd)
        try:
            for part in dirs:
                try:
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if not make:
                        raise
                    os.mkdir(part, 0o700, dir_fd=fd)
                    nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
                os.close(fd)
                fd = nfd
        except BaseException:
            os.close(fd)
            raise
        return fd, name


class _Work:
    """The problems sorted into what to fetch, make, set and delete; and what was done."""

    def __init__(self, tree: _Tree, records: dict[str, MemberRecord], delete_extra: bool) -> None:
        self.tree = tree
        self.records = records
        self.delete_extra = delete_extra
        self.fetched: list[str] = []
        self.remade: list[str] = []
        self.metadata: list[str] = []
        self.extra: list[str] = []
        self.deleted: list[str] = []
        self.unrepaired: list[Problem] = []
        self._local: list[MemberRecord] = []  # directories and symlinks to make, in order
        self._meta: list[MemberRecord] = []
        self._dirs: set[str] = set()  # directories whose mode and mtime are set at the end

    def sort(self, problems: tuple[Problem, ...]) -> dict[str, MemberRecord]:
        """Sort ``problems``; return the file members to fetch, by path."""
        fetch: dict[str, MemberRecord] = {}
        local: dict[str, MemberRecord] = {}
        meta: dict[str, MemberRecord] = {}
        for p in problems:
            rec = self.records.get(p.path)
            if p.kind == "extra":
                self.extra.append(p.path)
            elif rec is None or p.kind in ("unreadable", "unverifiable", "incomplete", "captions"):
                self.unrepaired.append(p)
            elif p.kind in _REFETCH and rec.kind == "file":
                fetch[p.path] = rec
            elif p.kind in _REFETCH and rec.kind in ("dir", "symlink"):
                local[p.path] = rec
            elif p.kind in ("mode", "mtime"):
                meta[p.path] = rec
            else:  # a hard link (only in archives s3sync did not publish)
                self.unrepaired.append(p)
        replaced = [p.path + "/" for p in problems if p.kind == "type" and p.path in local
                    and local[p.path].kind == "dir"]
        if replaced:
            # Something else stood where these directories belong (a symlink, a file): they
            # are made again empty, so everything recorded below them is made or fetched again.
            for path, rec in self.records.items():
                if path.startswith(tuple(replaced)) and rec.kind in ("file", "dir", "symlink"):
                    (fetch if rec.kind == "file" else local)[path] = rec
        self._local = sorted(local.values(), key=lambda r: _depth_first(r.path))
        self._meta = [r for path, r in meta.items() if path not in fetch and path not in local]
        return fetch

    # -- placing entries -------------------------------------------------------------------------

    def place(self, scratch_parent: int, rec: MemberRecord) -> None:
        """Rename the entry ``rec.path`` made under the scratch directory into place."""
        name = rec.path.rsplit("/", 1)[-1]
        fd, _ = self.tree.parent(rec.path, make=True)
        try:
            self._writable(fd, rec.path)
            try:
                os.rename(name, name, src_dir_fd=scratch_parent, dst_dir_fd=fd)
            except OSError as err:
                if err.errno not in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST):
                    raise
                # A directory stands where the member belongs.
                if not self.delete_extra:
                    self.unrepaired.append(Problem(rec.path, "type", "a directory stands where this "
                                                   f"{rec.kind} belongs; rerun with --delete-extra to replace it"))
                    return
                rmtree_at(fd, name)
                os.rename(name, name, src_dir_fd=scratch_parent, dst_dir_fd=fd)
        finally:
            os.close(fd)
        self._touch_parent(rec.path)

    def _writable(self, fd: int, rel: str) -> None:
        """Give the directory ``fd`` (the parent of ``rel``) owner write and search permission
        if it was published without them; ``finish_dirs`` sets its recorded mode again."""
        mode = stat.S_IMODE(os.fstat(fd).st_mode)
        if mode & 0o300 != 0o300:
            os.fchmod(fd, mode | 0o300)
            self._touch_parent(rel)

    def _touch_parent(self, rel: str) -> None:
        """A rename or unlink in ``rel``'s parent moved its mtime: set it again at the end."""
        parent = rel.rpartition("/")[0]
        if parent:
            self._dirs.add(parent)

    def apply_local(self) -> None:
        """Make directories and symlinks again, set modes and mtimes, delete extras."""
        for rec in self._local:
            try:
                if rec.kind == "dir":
                    self._make_dir(rec)
                else:
                    self._make_symlink(rec)
                self.remade.append(rec.path)
            except OSError as err:
                self.unrepaired.append(Problem(rec.path, rec.kind, f"cannot make again ({err.strerror})"))
        for rec in self._meta:
            if rec.kind == "dir":
                self._dirs.add(rec.path)  # set with the others, after every change inside
                self.metadata.append(rec.path)
                continue
            try:
                self._set_meta(rec)
                self.metadata.append(rec.path)
            except OSError as err:
                self.unrepaired.append(Problem(rec.path, "mode", f"cannot set mode or mtime ({err.strerror})"))
        if self.delete_extra:
            gone: list[str] = []
            for path in sorted(self.extra, key=_depth_first):
                if any(path.startswith(g + "/") for g in gone[-1:]):
                    continue  # inside an extra directory already deleted
                try:
                    fd, name = self.tree.parent(path)
                    try:
                        self._writable(fd, path)
                        try:
                            os.unlink(name, dir_fd=fd)
                        except IsADirectoryError:
                            rmtree_at(fd, name)
                    finally:
                        os.close(fd)
                except FileNotFoundError:
                    pass
                except OSError as err:
                    self.unrepaired.append(Problem(path, "extra", f"cannot delete ({err.strerror})"))
                    continue
                gone.append(path)
                self._touch_parent(path)
            self.deleted = gone

    def _make_dir(self, rec: MemberRecord) -> None:
        fd, name = self.tree.parent(rec.path, make=True)
        try:
            self._writable(fd, rec.path)
            try:
                st = os.lstat(name, dir_fd=fd)
            except FileNotFoundError:
                st = None
            if st is not None and not stat.S_ISDIR(st.st_mode):
                os.unlink(name, dir_fd=fd)  # a file or symlink where the directory belongs
            if st is None or not stat.S_ISDIR(st.st_mode):
                os.mkdir(name, 0o700, dir_fd=fd)
        finally:
            os.close(fd)
        self._dirs.add(rec.path)
        self._touch_parent(rec.path)

    def _make_symlink(self, rec: MemberRecord) -> None:
        scratch = self.tree.scratch()
        name = rec.path.rsplit("/", 1)[-1]
        os.symlink(rec.link, name, dir_fd=scratch)
        ns = rec.mtime * 1_000_000_000
        os.utime(name, ns=(ns, ns), dir_fd=scratch, follow_symlinks=False)
        self.place(scratch, rec)

    def _set_meta(self, rec: MemberRecord) -> None:
        """Set ``rec``'s mode (not a symlink's) and mtime on the entry, never following a symlink."""
        fd, name = self.tree.parent(rec.path)
        try:
            ns = rec.mtime * 1_000_000_000
            if rec.kind == "symlink":
                os.utime(name, ns=(ns, ns), dir_fd=fd, follow_symlinks=False)
                return
            _set_mode_mtime(fd, name, rec, ns)
        finally:
            os.close(fd)

    def finish_dirs(self) -> None:
        """Give every directory touched its recorded mode and mtime, deepest first (a change
        inside a directory moves its mtime; a read-only mode would refuse later changes)."""
        for path in sorted(self._dirs, key=lambda p: p.count("/"), reverse=True):
            rec = self.records.get(path)
            if rec is None or rec.kind != "dir":
                continue
            try:
                fd, name = self.tree.parent(path)
                try:
                    _set_mode_mtime(fd, name, rec, rec.mtime * 1_000_000_000)
                finally:
                    os.close(fd)
            except OSError as err:
                self.unrepaired.append(Problem(path, "mode", f"cannot set mode or mtime ({err.strerror})"))


def _set_mode_mtime(parent_fd: int, name: str, rec: MemberRecord, ns: int) -> None:
    """chmod and utime ``name`` through an ``O_PATH | O_NOFOLLOW`` descriptor (works for an
    entry its owner cannot read), after checking it is of ``rec``'s kind."""
    fd = os.open(name, os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent_fd)
    try:
        st = os.fstat(fd)
        want = stat.S_ISDIR if rec.kind == "dir" else stat.S_ISREG
        if not want(st.st_mode):
            raise OSError(errno.EINVAL, f"not a {'directory' if rec.kind == 'dir' else 'regular file'}")
        # /proc/self/fd/N names the inode the descriptor holds: chmod and utime cannot be
        # redirected by a symlink swapped in meanwhile.
        os.chmod(f"/proc/self/fd/{fd}", rec.mode)
        os.utime(f"/proc/self/fd/{fd}", ns=(ns, ns))
    finally:
        os.close(fd)


def _depth_first(path: str) -> bytes:
    """Publish's member order (``index._sort_key``): a directory before what it holds."""
    return path.encode("utf-8", "surrogateescape").replace(b"/", b"\0")


# -- fetching members ------------------------------------------------------------------------------


def _refetch(work: _Work, wanted: dict[str, MemberRecord], manifest: Manifest, location: Location,
             store: Store, settings: TransferSettings, progress: Progress) -> int:
    """Fetch the ``wanted`` file members and rename each into place; return bytes received."""
    tree = work.tree
    _check_generation(store, location, manifest, [manifest.index.key] if manifest.index else [])
    scratch = tree.scratch()
    index_path = Path(f"/proc/self/fd/{scratch}") / "index.jsonl.zst"
    indexfile.fetch(store, location, manifest, index_path)
    received = manifest.index.size if manifest.index else 0
    spans = _spans(indexfile.read(index_path, manifest, location.url(manifest.index.key if manifest.index else "")),
                   wanted, manifest.tar_stream_size)
    os.unlink("index.jsonl.zst", dir_fd=scratch)
    missing = sorted(set(wanted) - {e.record.path for e, _ in spans})
    for path in missing:
        work.unrepaired.append(Problem(path, "missing", f"not in the member index of generation "
                                                        f"{manifest.generation}"))
    if not spans:
        return received
    member_spans = [MemberSpan(entry.offset, end, entry.record) for entry, end in spans]
    jobs = plan_ranges(manifest, member_spans)
    _check_generation(store, location, manifest, sorted({j.key for j in jobs}))
    progress.start("download", sum(j.length for j in jobs))
    progress.message(f"fetching {len(spans)} member(s): {len(jobs)} range(s), "
                     f"{format_size(sum(j.length for j in jobs))} of a {format_size(manifest.tar_stream_size)} stream")
    fetcher = ChunkFetcher(store, location.key, fetch_settings(settings, manifest.chunk_size), progress,
                           check_members=check_range)
    chunks = fetcher.fetch(jobs)
    shown = tree.dest / archive.METADATA_DIR / SCRATCH
    extractor = archive.SafeExtractor(f"/proc/self/fd/{scratch}", shown=shown)
    expected = iter(spans)

    def on_member(_next: int, got: MemberRecord) -> None:
        entry, _end = next(expected)
        rec = wanted[entry.record.path]
        if got.path != rec.path or got.kind != "file":
            raise DamagedDatasetError(f"{location.url()}: the member at stream offset {entry.offset} is not "
                                      f"the file {rec.path!r} the member index names there")
        if got.digest != entry.record.digest or got.digest != rec.digest:
            raise DamagedDatasetError(
                f"{location.url()}: member {rec.path!r} has digest {got.digest}; the member index says "
                f"{entry.record.digest}, the pull recorded {rec.digest}")
        sfd, _name = _scratch_parent(scratch, rec.path)
        try:
            work.place(sfd, rec)
        finally:
            os.close(sfd)
        work.fetched.append(rec.path)

    try:
        extractor.extract(SpanReader(span_bytes(chunks, member_spans), fetcher.next_ready), on_member)
    except OSError as err:
        raise archive.translate_os_error(err, str(tree.dest)) from err
    finally:
        chunks.close()
    if next(expected, None) is not None:
        raise DamagedDatasetError(f"{location.url()}: fewer members in the fetched ranges than the member "
                                  "index lists there")
    progress.finish("download")
    return received + fetcher.stats.bytes_received


def _check_generation(store: Store, location: Location, manifest: Manifest, keys: list[str]) -> None:
    """Fail in one line if one of the generation's objects ``keys`` (relative to the prefix:
    its index, the parts a repair needs) is gone (``gc`` removed it): one HEAD each.

    Raises:
        NotFoundError: naming the generation and, if it can be read, the current one.
    """
    for key in keys:
        try:
            store.head(location.key(key))
        except NotFoundError as err:
            if err.bucket_missing:
                raise
            current = ""
            try:
                now, _ = fetch_manifest(store, location)
                current = f"; the current generation is {now.generation}"
            except S3SyncError:
                pass
            raise NotFoundError(f"{location.url()}: generation {manifest.generation} is no longer in the bucket "
                                f"({location.url(key)} is gone, removed by 's3sync gc'?){current}",
                                hint=f"pull the current generation: s3sync pull {location.url()} DEST_PARENT") \
                from err


def _spans(entries: Iterator[IndexEntry], wanted: dict[str, MemberRecord], tar_size: int
           ) -> list[tuple[IndexEntry, int]]:
    """The index entries of the ``wanted`` paths, each with the stream offset its member ends
    at (where the next member starts; the last ends at the end of the tar stream)."""
    out: list[tuple[IndexEntry, int]] = []
    pending: IndexEntry | None = None
    for entry in entries:  # consumed to the end: ``index.parse`` checks the totals there
        if pending is not None:
            out.append((pending, entry.offset))
            pending = None
        if entry.record.path in wanted:
            pending = entry
    if pending is not None:
        out.append((pending, tar_size))
    return out


def _scratch_parent(scratch: int, rel: str) -> tuple[int, str]:
    """A descriptor of the directory under the scratch directory that holds ``rel``."""
    *dirs, name = rel.split("/")
    fd = os.dup(scratch)
    for part in dirs:
        nfd = os.open(part, _DIR_FLAGS, dir_fd=fd)
        os.close(fd)
        fd = nfd
    return fd, name
