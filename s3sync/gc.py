"""The generations stored under a dataset prefix, and ``gc``: deleting the old ones and what dead
publishes left.

``stored`` lists every generation directory (current, history, leftover; ``leftovers.survey``)
with its published time, file count and bytes, as ``s3sync ls SOURCE --generations`` shows it.

``collect`` (``s3sync gc SOURCE --keep N``) deletes:

- history generations beyond the newest ``keep`` (the current one counts first and is never
  deleted), unless they stopped being current less than ``grace_s`` seconds ago (a pull that
  started on one keeps working for that long), judged by the server's clock;
- leftovers of dead publishes (``leftovers.clean``: the lease rules for running, live, dead and
  expired publishes, incomplete multipart uploads, refused keys, versioned buckets);
- unleased leftovers older than ``grace_s``: what a gc that died half-way left (below), or a
  generation that an s3sync without history copies superseded. ``publish`` never removes
  these (``lease.judge``): it is gc's decision.

Never a generation with a live reader lease (``readers``: a pull, update or repair reading a
generation that is no longer current), whatever its age: it is kept and listed as in use.
Dead reader leases (a reader killed with kill -9) are deleted, also in generations that stay.

When a generation stopped being current is not stored as such; it is bounded from above,
so that the grace period is never cut short: the LastModified of its successor's manifest (the
object whose ``previous`` names it: the current ``manifest.json``, or the successor's history
copy, written right after that successor committed), else the current manifest's LastModified
(whatever superseded it did so before the current manifest was written), and never earlier than
the LastModified of its own history copy.

Deletion order of one history generation, chosen so that gc dying at any point leaves nothing
that looks whole and is not, and a reader starting meanwhile is either seen or stopped:
(0) list its reader leases (a live one: keep it whole); (1) its history copy
``<generation>/manifest.json``, alone, so that no new pull of it can start and nothing lists
it as a generation one can pull; (1a) list its reader leases again (a live one: a reader wrote
its lease before (1) and read the copy: stop, leaving the parts to a later gc, which finds an
unleased leftover); (2) its incomplete multipart uploads; (3) its parts, member index and dead
reader leases; (4) a lease, if one is left, last. A reader writes its lease before it reads
the history copy again, so it is either listed at (1a) or finds the copy gone.
Cut after (1), what remains is an unleased leftover, which the next gc removes; a concurrent gc
deletes the same keys (deleting a missing key is not an error). The generation gc judged
current, and any generation current when it re-reads the manifest just before deleting, is
never touched; nor is a generation whose publish may still be running (a live lease).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from . import lease as leases
from .config import Location
from .errors import ManifestError, NotFoundError, S3SyncError, StoreError, UsageError
from .lease import LEASE_NAME, LeaseSettings
from .leftovers import Cleanup, Generation, Survey, clean, survey
from .manifest import MANIFEST_NAME, Manifest
from .progress import NullProgress, Progress
from .readers import is_reader_name, live_readers
from .stores.base import DeleteFailure, ObjectInfo, Store

DEFAULT_GRACE_S = 3600.0
"""``--grace`` default: a generation that stopped being current less than an hour ago is kept."""


@dataclass(frozen=True, slots=True)
class StoredGeneration:
    """One generation directory under a dataset prefix.

    Attributes:
        name: the generation id.
        kind: ``current``, ``history`` or ``leftover``.
        created: the manifest's ``created`` (ISO 8601 UTC, when it was published); "" for a
            leftover or an unreadable manifest.
        files: the manifest's file count; None if unknown.
        extracted_size: the manifest's extracted size (bytes); None if unknown.
        objects: objects stored under the generation.
        size: bytes of those objects.
        state: a leftover's lease verdict (``running``, ``live``, ``dead``, ``expired``,
            ``unleased``); "" otherwise.
        superseded: seconds since the epoch (server clock) at which it stopped being current, an
            upper bound (module docstring); None for the current one and leftovers.
        generation: the survey's record (objects, uploads, lease, reader leases).
        readers: live reader leases (pulls reading it now: ``readers``).
    """

    name: str
    kind: str
    created: str
    files: int | None
    extracted_size: int | None
    objects: int
    size: int
    state: str
    superseded: float | None
    generation: Generation
    readers: int = 0


@dataclass(frozen=True, slots=True)
class Stored:
    """``stored``'s answer: the generations, newest first (current, history by publish time,
    then leftovers), the server's time of the survey (seconds since the epoch), and the current
    manifest (None if there is none) with its LastModified (seconds since the epoch)."""

    generations: tuple[StoredGeneration, ...]
    now: float
    current: Manifest | None
    current_modified: float | None = None


@dataclass(frozen=True, slots=True)
class Doomed:
    """A generation ``collect`` deletes (or would, with ``dry_run``): why (``history`` beyond
    ``keep``, ``leftover`` of a dead publish, ``unleased`` leftover), its object and byte counts."""

    name: str
    reason: str
    objects: int
    size: int
    uploads: int


@dataclass(frozen=True, slots=True)
class GcResult:
    """What ``collect`` did (or, ``dry_run``, would do).

    Attributes:
        doomed: generations deleted (or to delete), oldest first.
        kept: generations kept, newest first (current first).
        young: history generations beyond ``keep`` kept by the grace period, with the seconds
            left before gc may delete them.
        busy: generations gc would delete but kept because readers hold them (pulls reading
            them: live reader leases), with how many; also one whose history copy gc deleted
            before a reader appeared (its parts are left for a later gc).
        deleted: objects deleted; ``deleted_bytes`` their bytes; ``aborted`` incomplete
            multipart uploads aborted (all 0 with ``dry_run``).
        failures: keys the server refused to delete.
        versioned: whether deleted objects remain as noncurrent versions (None: unknown).
        notes: one-line messages for the user.
        dry_run: nothing was deleted.
    """

    doomed: tuple[Doomed, ...]
    kept: tuple[str, ...]
    young: tuple[tuple[str, float], ...]
    deleted: int = 0
    deleted_bytes: int = 0
    aborted: int = 0
    failures: tuple[DeleteFailure, ...] = ()
    versioned: bool | None = False
    notes: tuple[str, ...] = ()
    dry_run: bool = False
    busy: tuple[tuple[str, int], ...] = ()


@dataclass(slots=True)
class _Manifests:
    """The current manifest and the history copies, as read: parsed (or None) and LastModified."""

    current: Manifest | None = None
    current_etag: str | None = None
    current_modified: float | None = None
    copies: dict[str, tuple[Manifest | None, float | None]] = field(default_factory=dict)


def _read_current(store: Store, location: Location) -> tuple[Manifest | None, str | None, float | None]:
    try:
        data, info = store.read(location.key(MANIFEST_NAME))
    except NotFoundError as err:
        if err.bucket_missing:
            raise
        return None, None, None
    try:
        return Manifest.from_json(data, location.url(MANIFEST_NAME)), info.etag, info.modified
    except ManifestError:
        return None, info.etag, info.modified


def _read_copies(store: Store, location: Location, gens: list[Generation],
                 concurrency: int) -> dict[str, tuple[Manifest | None, float | None]]:
    """The history copy of each generation that has one (in parallel: one GET each)."""
    def one(gen: Generation) -> tuple[str, tuple[Manifest | None, float | None]]:
        key = location.key(f"{gen.name}/{MANIFEST_NAME}")
        try:
            data, info = store.read(key)
        except NotFoundError:
            return gen.name, (None, None)
        try:
            return gen.name, (Manifest.from_json(data, location.url(f"{gen.name}/{MANIFEST_NAME}")), info.modified)
        except ManifestError:
            return gen.name, (None, info.modified)

    todo = [g for g in gens if any(o.key.endswith("/" + MANIFEST_NAME) for o in g.objects)]
    if not todo:
        return {}
    with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(todo))), thread_name_prefix="s3sync-gc") as pool:
        return dict(pool.map(one, todo))


def _survey_stable(store: Store, location: Location, settings: LeaseSettings, now: float,
                   process_start: Callable[[int], int | None] | None) -> tuple[Survey, _Manifests]:
    """The survey and the current manifest, read until the manifest did not change during the
    survey (as publish does): a generation committed meanwhile is never taken for history or a
    leftover.

    Raises:
        StoreError: a request failed, or the manifest kept changing (three tries).
    """
    me = leases.local_identity()
    for _ in range(3):
        cur, etag, modified = _read_current(store, location)
        found = survey(store, location, cur.generation if cur else None, me=me, settings=settings, now=now,
                       process_start=process_start)
        _, etag2, _ = _read_current(store, location)
        if etag2 == etag:
            return found, _Manifests(cur, etag, modified)
    raise StoreError(f"{location.url(MANIFEST_NAME)} kept changing while gc surveyed the prefix (publishes are "
                     "committing)", hint="run gc again when no publish of this dataset is running")


def stored(store: Store, location: Location, *, concurrency: int = 8,
           settings: LeaseSettings = LeaseSettings(),
           process_start: Callable[[int], int | None] | None = None) -> Stored:
    """Every generation stored under ``location``, newest first, with what its manifest says.

    Raises:
        NotFoundError: the bucket is missing.
        StoreError: a listing or request failed.
    """
    store.check_bucket()
    now = store.server_time() or time.time()
    found, mans = _survey_stable(store, location, settings, now, process_start)
    mans.copies = _read_copies(store, location, list(found.generations), concurrency)
    return Stored(_describe(found, mans), now, mans.current, mans.current_modified)


def _describe(found: Survey, mans: _Manifests) -> tuple[StoredGeneration, ...]:
    successor_at: dict[str, float] = {}
    if mans.current is not None and mans.current.previous and mans.current_modified is not None:
        successor_at[mans.current.previous] = mans.current_modified
    for m, modified in mans.copies.values():
        if m is not None and m.previous and modified is not None:
            successor_at[m.previous] = max(successor_at.get(m.previous, 0.0), modified)
    out = []
    for gen in found.generations:
        m, own_modified = mans.copies.get(gen.name, (None, None))
        if gen.kind == "current" and mans.current is not None:
            m = mans.current
        superseded = None
        if gen.kind == "history":
            bound = successor_at.get(gen.name, mans.current_modified)
            stamps = [t for t in (bound, own_modified) if t is not None]
            superseded = max(stamps) if stamps else None
        out.append(StoredGeneration(
            gen.name, gen.kind, m.created if m else "", m.files if m else None, m.extracted_size if m else None,
            len(gen.objects), gen.size, gen.state, superseded, gen, gen.live_readers))
    # Newest first: along the chain of ``previous`` links from the current manifest (publish
    # times have whole seconds: two publishes in one second would tie), then the generations
    # off the chain by publish time and name (generation ids start with their UTC time).
    chain: dict[str, int] = {}
    m = mans.current
    while m is not None and m.generation not in chain:
        chain[m.generation] = len(chain)
        m = mans.copies.get(m.previous, (None, None))[0] if m.previous else None
    rank = {"current": 0, "history": 1, "leftover": 2}
    out.sort(key=lambda g: (g.created, g.name), reverse=True)
    out.sort(key=lambda g: (rank[g.kind], chain.get(g.name, len(chain))))
    return tuple(out)


def collect(store: Store, location: Location, keep: int, *, grace_s: float = DEFAULT_GRACE_S,
            dry_run: bool = False, concurrency: int = 8, settings: LeaseSettings = LeaseSettings(),
            progress: Progress | None = None,
            process_start: Callable[[int], int | None] | None = None) -> GcResult:
    """Delete history generations beyond the newest ``keep`` and what dead publishes left.

    Args:
        keep: generations to keep, the current one included (at least 1).
        grace_s: a history generation that stopped being current less than this many seconds
            ago (server clock) is kept; so is an unleased leftover whose newest object, or the
            current manifest, is younger.
        dry_run: only say what would be deleted.
        settings: lease ttl (seconds) for leftovers without one.

    Raises:
        UsageError: ``keep`` < 1 or ``grace_s`` < 0.
        NotFoundError: no manifest at ``location`` (nothing published: nothing is current).
        StoreError: a listing or request failed as a whole (per-key refusals are reported).
    """
    if keep < 1:
        raise UsageError(f"--keep {keep}: gc keeps at least the current generation", hint="use --keep 1 or more")
    if grace_s < 0:
        raise UsageError(f"--grace {grace_s:g}: a grace period is 0 seconds or more",
                         hint="use --grace 0 or more (seconds; see 's3sync gc --help')")
    progress = progress or NullProgress()
    view = stored(store, location, concurrency=concurrency, settings=settings, process_start=process_start)
    if view.current is None:
        raise NotFoundError(f"no dataset at {location.url()}: {location.url(MANIFEST_NAME)} is missing or damaged; "
                            "gc keeps every generation of a prefix without a current one",
                            hint="publish the dataset first, or check the URL with 's3sync ls'",
                            manifest_missing=True)
    now = view.now
    committed = [g for g in view.generations if g.kind in ("current", "history")]
    kept = [g.name for g in committed[:keep]]
    doomed: list[tuple[StoredGeneration, str]] = []
    young: list[tuple[str, float]] = []
    busy: list[tuple[str, int]] = []
    for g in committed[keep:]:
        if g.kind == "current":
            continue
        if g.generation.alive and g.state:  # a publish still running (its lease) owns it
            kept.append(g.name)
            continue
        since = g.superseded if g.superseded is not None else now
        if grace_s and now - since < grace_s:  # (0: no grace; the Date header has whole seconds)
            young.append((g.name, grace_s - (now - since)))
            continue
        if g.readers:
            kept.append(g.name)
            busy.append((g.name, g.readers))
            continue
        doomed.append((g, "history"))
    for g in view.generations:
        if g.kind != "leftover":
            continue
        if g.readers:  # e.g. a history copy gc deleted as a reader started: kept until it ends
            busy.append((g.name, g.readers))
        elif not g.generation.alive:
            doomed.append((g, "leftover"))
        elif g.state == "unleased":
            stamps = [o.modified for o in g.generation.objects if o.modified is not None and not _reader_key(o.key)]
            stamps += [u.initiated for u in g.generation.uploads]
            if view.current_modified is not None:  # superseded (if it ever was current) before this
                stamps.append(view.current_modified)
            newest = max(stamps) if stamps else now
            if not grace_s or now - newest >= grace_s:
                doomed.append((g, "unleased"))
            else:
                young.append((g.name, grace_s - (now - newest)))
    order = {g.name: i for i, g in enumerate(view.generations)}
    doomed.sort(key=lambda d: (d[1] != "history", -order[d[0].name]))  # history oldest first, then leftovers
    listed = tuple(Doomed(g.name, why, g.objects, g.size, len(g.generation.uploads)) for g, why in doomed)
    if dry_run:
        return GcResult(listed, tuple(kept), tuple(young), dry_run=True, busy=tuple(busy))
    # Just before deleting: whatever is current now is never touched, even if it was history
    # when surveyed (it cannot be: a publish names a new generation; but a hand-made manifest may).
    latest, _, _ = _read_current(store, location)
    now_current = {view.current.generation, latest.generation if latest else ""}
    doomed = [(g, why) for g, why in doomed if g.name not in now_current]
    handled = {g.name for g, why in doomed if why != "leftover"} | now_current
    # leftovers.clean removes the dead publishes' leftovers (the same ones as ``doomed``'s) and
    # the dead leases left in committed generations, by publish's rules.
    others = Survey(None, tuple(g.generation for g in view.generations if g.name not in handled or
                                (g.kind == "current" and g.name == view.current.generation)))
    # Dead reader leases (a reader killed with kill -9) in the generations that stay: removed.
    dooming = {g.name for g, _ in doomed}
    stale = [o for g in view.generations if g.name not in dooming
             for r in g.generation.readers if not r.alive for o in g.generation.objects if o.key == r.key]
    return _delete(store, location, doomed, others, kept, tuple(young), busy, progress, settings, process_start,
                   now, stale)


def _reader_key(key: str) -> bool:
    parts = key.rsplit("/", 3)
    return len(parts) >= 3 and is_reader_name("/".join(parts[-2:]))


def _delete(store: Store, location: Location, doomed: list[tuple[StoredGeneration, str]], others: Survey,
            kept: list[str], young: tuple[tuple[str, float], ...], busy: list[tuple[str, int]],
            progress: Progress, settings: LeaseSettings,
            process_start: Callable[[int], int | None] | None, now: float,
            stale: list[ObjectInfo]) -> GcResult:
    """Delete in the documented order (module docstring); per-key refusals are collected and a
    generation whose history copy was refused is left whole."""
    failures: list[DeleteFailure] = []
    deleted = deleted_bytes = aborted = 0
    done: list[Doomed] = []
    notes: list[str] = []
    me = leases.local_identity()
    clock = time.monotonic()

    def readers_now(name: str) -> int:
        at = now + (time.monotonic() - clock)  # the survey's server time, moved on by this machine's clock
        return len(live_readers(store, location, name, at, me=me, settings=settings, process_start=process_start))

    for g, why in doomed:
        if why == "leftover":
            continue
        gen = g.generation
        objs = list(gen.objects)
        n_readers = readers_now(g.name)  # (0): a pull that started since the survey
        if n_readers:
            kept.append(g.name)
            busy.append((g.name, n_readers))
            continue
        copy = [o for o in objs if o.key.endswith("/" + MANIFEST_NAME)]
        if copy:
            refused = store.delete([o.key for o in copy])
            if refused:
                failures += refused
                continue
            deleted += len(copy)
            deleted_bytes += sum(o.size for o in copy)
            n_readers = readers_now(g.name)  # (1a): a reader that read the copy just before (1)
            if n_readers:
                busy.append((g.name, n_readers))
                notes.append(f"generation {g.name}: a reader started on it while gc deleted it: its history copy "
                             "is deleted (no new pull can start on it), its parts are left until no reader holds "
                             "them (a later gc deletes them)")
                continue
        for up in gen.uploads:
            store.abort_upload(up.key, up.upload_id)
            aborted += 1
        rest = [o for o in objs if o not in copy and not o.key.endswith("/" + LEASE_NAME)]
        lease = [o for o in objs if o.key.endswith("/" + LEASE_NAME)]
        n, size, refused = _delete_objects(store, rest)
        if not refused and lease:
            n2, size2, refused = _delete_objects(store, lease)
            n, size = n + n2, size + size2
        failures += refused
        deleted += n
        deleted_bytes += size
        done.append(Doomed(g.name, why, g.objects, g.size, len(gen.uploads)))
        progress.message(f"deleted generation {g.name} ({why}): {g.objects} object(s), {g.size} bytes")
    if stale:
        n, size, refused = _delete_objects(store, stale)
        failures += refused
        deleted += n
        deleted_bytes += size
        if n:
            progress.message(f"deleted {n} dead reader lease(s) of generations kept")
    versioned: bool | None = False
    if any(g.state and not g.alive for g in others.generations):
        cleanup: Cleanup = clean(store, location, others)
        failures += cleanup.failures
        deleted += cleanup.deleted
        deleted_bytes += cleanup.deleted_bytes
        aborted += cleanup.aborted
        cleaned = set(cleanup.generations)
        done += [Doomed(g.name, why, g.objects, g.size, len(g.generation.uploads)) for g, why in doomed
                 if why == "leftover" and g.name in cleaned]
        versioned = cleanup.versioned
    if deleted:
        try:
            versioned = store.versioned()
        except S3SyncError:
            versioned = None
    for f in failures:
        notes.append(f"could not delete s3://{location.bucket}/{f.key}: {f.code} {f.message}".rstrip())
    if deleted and versioned:
        notes.append(f"the bucket {location.bucket} is versioned: the {deleted} deleted object(s) remain as "
                     "noncurrent versions until a lifecycle rule or a versioned delete removes them")
    elif deleted and versioned is None:
        notes.append(f"could not tell whether bucket {location.bucket} is versioned: if it is, the deleted "
                     "objects remain as noncurrent versions")
    return GcResult(tuple(done), tuple(kept), young, deleted, deleted_bytes, aborted, tuple(failures), versioned,
                    tuple(notes), busy=tuple(busy))


def _delete_objects(store: Store, objs: list[ObjectInfo]) -> tuple[int, int, list[DeleteFailure]]:
    if not objs:
        return 0, 0, []
    refused = store.delete([o.key for o in objs])
    bad = {f.key for f in refused}
    return (sum(1 for o in objs if o.key not in bad), sum(o.size for o in objs if o.key not in bad), refused)
