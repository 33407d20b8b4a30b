"""Publish: pack a directory into a tar stream, cut it into parts, hash, upload, commit.

The tar stream is never written to local disk. The calling thread writes the tar
(``archive.write_tar``) into a ``partwriter.PartWriter``, which hashes every chunk, cuts parts
at member boundaries once ``part_size`` would be exceeded (and hard at
``part_size`` inside a member larger than a part), and feeds each part through a
bounded pipe to an uploader thread doing an s3transfer multipart upload.
The manifest is written last: until then the previous generation stays the
published one.

Commit protocol (docs/manifest.md, "Publishing"): read the current manifest (the base);
remove what dead publishes left; write ``<generation>/lease.json``, refreshed while the
publish runs; upload the parts, then the member index (``<generation>/index.jsonl.zst``);
write the base's history copy; re-read the manifest and give up if it is no longer the
base; swap it with a conditional PUT (``If-Match`` the base's ETag, ``If-None-Match: *`` if
there was none); read back what the server holds.
Nothing of this publish is deleted once the manifest PUT may have been applied and its
outcome is unknown: a later publish removes it if it never became current.
"""

from __future__ import annotations

import os
import queue
import secrets
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import archive, buildstate, catalog
from . import lease as leases
from .captionfiles import check_tree
from .config import Location, TransferSettings
from .errors import (
    Interrupted,
    ManifestError,
    NotFoundError,
    PartChangedError,
    PublishConflictError,
    S3SyncError,
    SourceError,
    StoreError,
    TransientStoreError,
)
from .indexfile import IndexWriter
from .lease import LEASE_NAME, Lease, LeaseSettings
from .lease import LeaseKeeper as _LeaseKeeper
from .leftovers import Cleanup, safe_clean, survey
from .manifest import MANIFEST_NAME, Manifest, PartEntry, claims_format
from .partwriter import PartWriter, Pipe
from .planning import upload_part_size
from .progress import NullProgress, Progress
from .stores.base import ObjectInfo, Store
from .threads import Worker, wait_all

_UPLOADERS = 2
KEPT_STATS = 2_000_000
"""Members whose first-walk ``lstat`` a publish keeps for its second walk (64 bytes each:
at most 128 MB; see ``archive.TreeSurvey``). A larger tree is ``lstat``-ed again."""


@dataclass(frozen=True, slots=True)
class PublishResult:
    """What a publish committed: the manifest, where, how long it took (seconds), what it
    cleaned up of dead publishes, and one-line notes for the user: what it removed, keys the
    server refused to delete, noncurrent versions left on a versioned bucket, and what it
    could not finish after the commit."""

    manifest: Manifest
    location: Location
    elapsed_s: float
    cleanup: Cleanup | None = None
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Held:
    """What the server holds at ``PREFIX/manifest.json``: its bytes and ETag (None: no
    manifest), the generation it names and the one it replaced (None if unreadable)."""

    data: bytes | None
    etag: str | None
    generation: str | None
    previous: str | None


def read_current(store: Store, location: Location) -> Held:
    """The current manifest at ``location``, as the commit protocol sees it.

    A damaged manifest is not an error here: it can still be replaced (conditionally on
    its ETag), it just names no generation.

    Raises:
        StoreError: the request failed (not for a missing manifest).
    """
    try:
        data, info = store.read(location.key(MANIFEST_NAME))
    except NotFoundError as err:
        if err.bucket_missing:
            raise
        return Held(None, None, None, None)
    try:
        m = Manifest.from_json(data, location.url(MANIFEST_NAME))
    except ManifestError:
        return Held(data, info.etag, None, None)
    return Held(data, info.etag, m.generation, m.previous)


def outcome(held: Held, ours: str, our_history: bool) -> bool:
    """Whether generation ``ours`` was committed, given what the server holds now.

    Committed if the manifest names it, or names a generation that replaced it (``previous``),
    or its history copy exists: only a publish that saw ours as current writes that copy
    (this one writes it only after its read-back confirmed the commit).
    """
    return held.generation == ours or held.previous == ours or our_history


def new_generation() -> str:
    """A fresh generation id: UTC time plus randomness, sortable by time."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ") + "-" + secrets.token_hex(4)


def _remove_own(store: Store, location: Location, generation: str) -> list[str]:
    """Delete every object of ``generation`` (lease last) and abort its multipart uploads.

    Only called when no manifest naming ``generation`` can exist or appear. Returns messages
    about what could not be removed (a later publish removes it once this one's lease is dead).
    """
    prefix = location.key(f"{generation}/")
    try:
        for up in store.list_uploads(prefix):
            store.abort_upload(up.key, up.upload_id)
        keys = [o.key for o in store.list(prefix)]
        # The lease in a second request, once everything else is gone: DeleteObjects is not
        # atomic, and a generation that lost its lease first is no longer cleaned up later.
        others = [k for k in keys if not k.endswith("/" + LEASE_NAME)]
        failures = store.delete(others) if others else []
        if not failures and len(others) < len(keys):
            failures = store.delete([k for k in keys if k.endswith("/" + LEASE_NAME)])
    except S3SyncError as err:
        return [f"could not remove the uncommitted generation {generation} ({err}); "
                "a later publish of this prefix removes it"]
    return [f"could not delete s3://{location.bucket}/{f.key}: {f.code} {f.message}".rstrip() for f in failures]


def _read_back(store: Store, location: Location, generation: str, attempts: int = 4) -> tuple[Held, bool]:
    """What the server holds after a manifest PUT, and whether ``generation`` has a history copy.

    Retried (with short pauses, seconds) on transient errors: deciding wrongly costs a
    dataset, waiting costs a second.

    Raises:
        StoreError: the server could not be asked.
    """
    for attempt in range(attempts):
        try:
            held = read_current(store, location)
            history = False
            if held.generation != generation and held.previous != generation:
                try:
                    store.head(location.key(f"{generation}/{MANIFEST_NAME}"))
                    history = True
                except NotFoundError:
                    history = False
            return held, history
        except TransientStoreError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.25 * 2**attempt)
    raise AssertionError("unreachable")


def _conflict(location: Location, winner: str | None, generation: str, removed: bool) -> PublishConflictError:
    left = ("its objects were removed" if removed
            else "its objects are left for the next publish of this prefix to remove")
    return PublishConflictError(
        f"another publish of {location.url()} won: the manifest now names generation {winner or '(unreadable)'}; "
        f"this publish (generation {generation}) committed nothing and {left}",
        winner=winner or "", generation=generation)


def _committed_after(err: BaseException, location: Location, generation: str) -> BaseException:
    """The error to raise when the publish committed but was interrupted or failed after the PUT."""
    if isinstance(err, (KeyboardInterrupt, Interrupted)):
        return Interrupted(f"interrupted, but the publish had committed: {location.url()} is generation {generation}",
                           hint="nothing to redo: the dataset is published")
    return err


def publish(src: Path, name: str, location: Location, store: Store, settings: TransferSettings,
            progress: Progress | None = None, *, lease_settings: LeaseSettings = LeaseSettings()) -> PublishResult:
    """Publish directory ``src`` as dataset ``name`` at ``location``.

    Args:
        lease_settings: lease ttl and refresh period (seconds).

    Returns:
        The committed manifest. If the manifest PUT failed or was interrupted but the server
        shows it was applied, the publish committed and returns normally (an interruption is
        raised as ``Interrupted`` saying that it committed).

    Raises:
        SourceError: ``src`` is unreadable or holds something that cannot be published, or
            its build state record (``.s3sync/build.json``) says its build did not finish.
        CaptionsError: ``src/captions.json`` does not parse or hold together (checked before
            anything is written to the bucket; its counts go into the manifest).
        UsageError: a new dataset's prefix lies inside a dataset or above datasets
            (``catalog.check_destination``; checked before anything is written).
        PublishConflictError: another publish of the same prefix swapped the manifest first.
        StoreError: the bucket is missing or an upload failed for good; if the manifest PUT's
            outcome could not be learnt, the message says so and nothing was deleted.
        Interrupted: on Ctrl-C; nothing is committed, the previous generation stays (unless
            the message says the publish had committed).
    """
    progress = progress or NullProgress()
    started = time.monotonic()
    buildstate.check_publishable(src)  # a build that failed or is still running: not a dataset yet
    store.check_bucket()
    # The tree is walked twice, never held whole (a million files' stat results took ~1 GiB):
    # once here to count it and check the captions, once to write it (``_rewalk``), which
    # takes the regular files' stats from this one (packed: 64 bytes a file).
    tree = archive.TreeSurvey(keep_stats=KEPT_STATS)
    checked: list[archive._Entry] = []
    # Before anything is written to the bucket: a broken captions.json is refused here
    # (the ImageNet captions once lost 540k of 919k captions on S3 and nobody noticed).
    captions = check_tree(src, tree.watch(archive.walk_tree(src)), checked)
    estimate = tree.file_bytes + 1024 * tree.members
    generation = new_generation()
    up_size = upload_part_size(settings.part_size, max(settings.chunk_size, 8 * 1024 * 1024))

    base = read_current(store, location)
    if base.data is not None and base.generation is None and not claims_format(base.data):
        raise StoreError(f"{location.url(MANIFEST_NAME)} exists and is not an s3sync manifest: not overwritten",
                         hint="publish to another prefix (--to s3://BUCKET/PREFIX), or remove that object "
                              "if it is yours to remove")
    if base.data is None:  # a new dataset: not inside another, not above others
        catalog.check_destination(store, location)
    me = leases.local_identity()
    found = None
    for _ in range(3):
        # Leases expire by the server's clock (LastModified): a local clock running ahead
        # would take another host's live publish for an expired one.
        found = survey(store, location, base.generation, me=me, settings=lease_settings, now=store.server_time())
        # Read the manifest again once every lease has been judged: a publish that committed
        # after the first read and died before writing its history copy (kill -9) left a
        # current generation that the survey takes for a dead leftover. Its generation is
        # safe only if the survey knew it was current.
        latest = read_current(store, location)
        if latest.etag == base.etag:
            break
        base, found = latest, None
    if found is not None:
        cleanup, notes = safe_clean(store, location, found)
    else:
        cleanup, notes = None, [f"did not remove what dead publishes left under {location.url()}: "
                                "its manifest kept changing (other publishes are committing)"]
    pid = os.getpid()
    lease = Lease(generation, me.host, me.boot_id, pid, leases.process_start(pid) or 0,
                  datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"), lease_settings.ttl_s,
                  me.pid_ns)
    lease_key = location.key(f"{generation}/{LEASE_NAME}")
    # Written before the first part: a publish that finds parts finds who writes them.
    try:
        store.put(lease_key, lease.to_json())
    except BaseException:
        _remove_own(store, location, generation)
        raise
    keeper = _LeaseKeeper(store, lease_key, lease.to_json(), lease_settings.refresh_s)
    keeper.start()

    failed = threading.Event()
    parts: dict[int, tuple[int, str, list[str]]] = {}
    # HEAD of each uploaded part (for the ETag a GET will show), run while the next part
    # uploads: on rclone serve s3 a HEAD computes the object's MD5 (0.44 s per 256 MiB).
    heads = ThreadPoolExecutor(max_workers=1, thread_name_prefix="s3sync-head")
    uploaded: dict[int, Future[ObjectInfo]] = {}
    work: queue.Queue[tuple[int, Pipe] | None] = queue.Queue()
    errors: list[BaseException] = []

    def key(index: int) -> str:
        return f"{generation}/part-{index:05d}.tar"

    def uploader() -> None:
        while (item := work.get()) is not None:
            index, pipe = item
            try:
                store.upload(location.key(key(index)), pipe, up_size)
                uploaded[index] = heads.submit(store.head, location.key(key(index)))
            except BaseException as err:  # reported by the main thread
                errors.append(err)
                failed.set()
                return

    # Two uploaders: the next part starts uploading while the server completes the
    # previous one (CompleteMultipartUpload assembles the part; rclone copies it whole).
    uploaders = [Worker(uploader, f"s3sync-upload-{i}") for i in range(_UPLOADERS)]
    for worker in uploaders:
        worker.start()
    progress.start("upload", estimate)
    # The member index is built as the tar is written (file data hashed as it streams by,
    # never read twice) and uploaded before the manifest names it: it is one of the
    # generation's own objects (docs/manifest.md section 10).
    member_index = IndexWriter(generation, tree.members)
    writer = PartWriter(settings.part_size, settings.chunk_size,
                        start_part=lambda i, pipe: work.put((i, pipe)),
                        end_part=lambda i, size, dig, chunks: parts.__setitem__(i, (size, dig, chunks)),
                        failed=failed, progress=progress)
    try:
        try:
            stats = archive.write_tar(_rewalk(src, tree, checked), writer, writer.before_member,
                                      on_member=member_index.add)
            writer.close()
        except BaseException as err:
            failed.set()
            if not errors or not isinstance(err, Interrupted):
                raise
        finally:
            for _ in uploaders:
                work.put(None)
            # The main thread spends most of a publish here, waiting for the last parts, so
            # this is where a signal usually lands. It stops the uploads (``failed``) but the
            # wait goes on: removing this generation's objects while an upload is in flight
            # would let it complete its part afterwards, after the lease is gone, and a part
            # without a lease is never removed by a later publish. An upload whose part was
            # fully handed over completes; the others stop at their next read and abort.
            wait_all(uploaders, on_interrupt=failed.set)
        if errors:
            err = errors[0]
            if isinstance(err, (S3SyncError, KeyboardInterrupt)):
                raise err
            raise StoreError(f"upload to {location.url()} failed: {err}") from err
        progress.start("upload", writer.tell())  # the estimate counted ~1 KiB of tar per member
        progress.finish("upload")

        entries_out = []
        for number in sorted(parts):
            size, dig, chunks = parts[number]
            info = uploaded[number].result()
            if info.size != size:
                raise StoreError(f"{location.url(key(number))}: server reports {info.size} bytes, {size} were sent")
            entries_out.append(PartEntry(key(number), size, info.etag, dig, tuple(chunks)))
        index_ref = member_index.upload(store, location)
        manifest = Manifest(
            name=name, generation=generation,
            created=datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            chunk_size=settings.chunk_size, stream_size=writer.tell(),
            stream_digest=writer.stream_hasher.hexdigest(), files=stats.files,
            extracted_size=stats.extracted_size, members=stats.members, parts=tuple(entries_out),
            previous=base.generation, captions=captions, index=index_ref,
        )
        if base.generation is not None and base.data is not None:
            # The base's history copy, before it stops being current (if its own publish
            # died before writing it): a pull that started on it can still find it.
            try:
                store.put(location.key(f"{base.generation}/{MANIFEST_NAME}"), base.data, if_none_match=True)
            except PartChangedError:
                pass  # already there
        _check_own(store, location, generation, [p.key for p in entries_out] + [index_ref.key])
        latest = read_current(store, location)
        if latest.etag != base.etag:
            raise _Lost(latest.generation)
    except BaseException as err:
        # A signal landing before the wait above (in work.put) skipped it: no removal while
        # an upload may still complete its part (it would outlive its lease; see wait_all).
        failed.set()
        try:
            wait_all(uploaders)
            keeper.stop()
        except KeyboardInterrupt:
            pass  # a second signal: ``err`` is already on its way out; the waits went on
        heads.shutdown(wait=True, cancel_futures=True)
        member_index.close()
        for line in _remove_own(store, location, generation):
            progress.message(line)
        if isinstance(err, _Lost):
            raise _conflict(location, err.winner, generation, removed=True) from None
        raise
    heads.shutdown()
    member_index.close()
    result = _swap(store, location, manifest, base, keeper, progress, started, cleanup, notes)
    if (warning := tree.unreadable_warning()) is not None:  # said once it is true
        progress.message(warning)
    return result


def _rewalk(src: Path, tree: archive.TreeSurvey, checked: list[archive._Entry]) -> Iterator[archive._Entry]:
    """The second walk of ``src``, which the tar is written from: it must meet the first
    (``tree``: the member count the member index's header and the progress were given; the
    captions file whose bytes were checked, ``checked``), or the publish stops before
    anything is committed. Regular files come with the first walk's stat (``tree.known``),
    which the tar writer checks each file against when it reads it.

    Raises:
        SourceError: the tree changed between the walks.
    """
    hint = "publish again when nothing is writing to SRC_DIR"
    want = {e.rel: e.st for e in checked}
    members = 0

    def known(index: int, rel: str) -> os.stat_result | None:
        # The first walk's lstat of a regular file (the tar writer checks the file against
        # it); the captions file is stat-ed again, to be compared with its checked state.
        return None if rel in want else tree.known(index, rel)

    for entry in archive.walk_tree(src, known):
        members += 1
        if members > tree.members:
            raise SourceError(f"{entry.path}: appeared while publishing (the tree has more than the "
                              f"{tree.members} entries counted)", hint=hint)
        if entry.rel in want:
            try:
                if (entry.st.st_dev, entry.st.st_ino) != (want[entry.rel].st_dev, want[entry.rel].st_ino):
                    raise archive.SourceChanged("replaced by another file")
                archive.check_unchanged(want[entry.rel], entry.st)
            except archive.SourceChanged as err:
                raise SourceError(f"{entry.path}: changed after its captions were checked ({err})", hint=hint) from err
        yield entry
    if members != tree.members:
        raise SourceError(f"{src}: {tree.members - members} entries vanished while publishing", hint=hint)


class _Lost(Exception):
    """Internal: the manifest changed since the publish started (another publish won)."""

    def __init__(self, winner: str | None) -> None:
        super().__init__(winner)
        self.winner = winner


def _check_own(store: Store, location: Location, generation: str, part_keys: list[str]) -> None:
    """Make sure this generation's lease and parts are still there before naming them in
    the manifest: a publish stalled for longer than its lease's ttl may have been cleaned up
    by another one, and a manifest must never name a missing part.

    Raises:
        StoreError: some are missing.
    """
    present = {o.key for o in store.list(location.key(f"{generation}/"))}
    missing = [k for k in [*part_keys, f"{generation}/{LEASE_NAME}"] if location.key(k) not in present]
    if missing:
        raise StoreError(f"{location.url(missing[0])} disappeared while this publish ran (its lease expired and "
                         "another publish removed it?); nothing was committed",
                         hint="publish again; keep the publish's network path up so that its lease is refreshed")


def _swap(store: Store, location: Location, manifest: Manifest, base: Held, keeper: _LeaseKeeper,
          progress: Progress, started: float, cleanup: Cleanup | None, cleanup_notes: list[str]) -> PublishResult:
    """The conditional manifest PUT, the read-back, and what follows from it."""
    generation = manifest.generation
    key = location.key(MANIFEST_NAME)
    answered = False  # the server answered the PUT: it cannot still be applied later
    put_err: BaseException | None = None
    try:
        try:
            store.put(key, manifest.to_json(), if_match=base.etag, if_none_match=base.etag is None)
        except PartChangedError:
            pass  # 412: the manifest is no longer the base; the read-back names the winner
        answered = True
    except BaseException as err:  # lost answer, timeout, Ctrl-C or SIGTERM while in flight
        put_err = err
    try:
        held, history = _read_back(store, location, generation)
    except BaseException as err:
        keeper.stop()
        cause = put_err or err
        if isinstance(cause, (KeyboardInterrupt, Interrupted)):
            raise Interrupted(f"interrupted while committing {location.url()}: could not read back whether "
                              f"generation {generation} was committed; nothing was deleted",
                              hint="run 's3sync ls' on the URL to see which generation is current") from err
        raise StoreError(f"could not read back {location.url(MANIFEST_NAME)} after writing it ({err}): "
                         f"generation {generation} may or may not be committed; nothing was deleted",
                         hint="run 's3sync ls' on the URL to see which generation is current; a later "
                              "publish removes this one if it was not") from err
    try:
        keeper.stop()
    except KeyboardInterrupt as err:  # the read-back is done: say what it found, not "interrupted"
        put_err = put_err or err
        keeper.stop()  # a lease refresh in flight must not re-create the lease once it is deleted
    if outcome(held, generation, history):
        notes = list(cleanup_notes)
        try:
            store.put(location.key(f"{generation}/{MANIFEST_NAME}"), manifest.to_json())
            failures = store.delete([location.key(f"{generation}/{LEASE_NAME}")])
            notes += [f"could not delete the lease s3://{location.bucket}/{f.key}: {f.code}" for f in failures]
        except S3SyncError as err:
            notes.append(f"committed, but could not write the history copy or remove the lease ({err}); "
                         "the next publish of this prefix does it")
        except BaseException as err:  # Ctrl-C after the commit: say that it committed
            raise _committed_after(err, location, generation) from None
        if put_err is not None and isinstance(put_err, (KeyboardInterrupt, Interrupted)):
            raise _committed_after(put_err, location, generation) from None
        return PublishResult(manifest, location, time.monotonic() - started, cleanup, tuple(notes))
    if answered:
        for line in _remove_own(store, location, generation):
            progress.message(line)
        raise _conflict(location, held.generation, generation, removed=True)
    # The PUT may still be applied later (a request the server has not finished): delete
    # nothing; once this process is gone its lease is dead and a later publish cleans up.
    assert put_err is not None
    if held.etag != base.etag:
        raise _conflict(location, held.generation, generation, removed=False) from put_err
    if isinstance(put_err, (KeyboardInterrupt, Interrupted)):
        raise Interrupted(f"interrupted while writing {location.url(MANIFEST_NAME)}: the server still names "
                          f"generation {base.generation or '(none)'}, nothing was committed; generation "
                          f"{generation} is left for the next publish to remove") from None
    if isinstance(put_err, S3SyncError):
        raise type(put_err)(f"{put_err}; the server still names generation {base.generation or '(none)'}: "
                            f"nothing was committed, generation {generation} is left for the next publish to "
                            "remove") from put_err
    raise put_err
