"""What a dataset prefix holds besides its current generation, and removing what dead publishes left.

Under ``PREFIX/`` a generation "directory" ``<generation>/`` is one of:

- the current one (``PREFIX/manifest.json`` names it);
- a history entry: it holds ``<generation>/manifest.json``, the copy of a manifest that was
  current once (kept until ``gc`` removes it);
- a leftover: neither, i.e. the parts of a publish that never committed. Its
  ``<generation>/lease.json`` (see ``lease``) says whether that publish may still be
  running; only a leftover whose lease is dead may be removed.

Reader leases ``<generation>/readers/<id>.json`` (``readers``) name pulls reading a generation
that is no longer current: they are s3sync's own objects, judged here, and a generation with a
live one is never removed (by ``clean`` or by ``gc``).

Incomplete multipart uploads under a generation belong to it. Used by ``publish`` (which
cleans up before it uploads) and ``s3sync ls -v`` (which shows). Must not import boto3.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from . import lease as leases
from .config import Location
from .errors import NotFoundError, S3SyncError
from .lease import LEASE_NAME, Identity, Lease, LeaseSettings
from .manifest import GENERATION_RE, INDEX_NAME, MANIFEST_NAME
from .readers import Reader, is_reader_name, judge_readers
from .stores.base import DeleteFailure, ObjectInfo, Store, UploadInfo

_PART_NAME = "part-"
OWN_NAMES = (LEASE_NAME, MANIFEST_NAME, INDEX_NAME)
"""Objects of a generation besides its ``part-*``: an s3sync older than the member index takes
a generation holding ``index.jsonl.zst`` for a user's directory and leaves it alone (safe)."""


@dataclass(frozen=True, slots=True)
class Generation:
    """One generation directory under the prefix.

    Attributes:
        name: the generation id.
        kind: ``current``, ``history`` or ``leftover``.
        state: for a leftover, the lease verdict (``running``, ``live``, ``dead``,
            ``expired``, ``unleased``); "" otherwise.
        alive: a leftover that a running publish may still be writing (never touched).
        lease: the parsed lease, if there is one.
        objects: its objects (full keys), lease and history copy included.
        size: bytes of those objects.
        uploads: incomplete multipart uploads under it.
        readers: its reader leases, judged (``readers.Reader``).
    """

    name: str
    kind: str
    state: str = ""
    alive: bool = False
    lease: Lease | None = None
    objects: tuple[ObjectInfo, ...] = ()
    size: int = 0
    uploads: tuple[UploadInfo, ...] = ()
    readers: tuple[Reader, ...] = ()

    @property
    def live_readers(self) -> int:
        """How many of its reader leases may still be reading it."""
        return sum(1 for r in self.readers if r.alive)


@dataclass(frozen=True, slots=True)
class Survey:
    """Everything under a prefix, by generation (sorted by name, i.e. by time)."""

    current: str | None
    generations: tuple[Generation, ...]

    @property
    def leftovers(self) -> tuple[Generation, ...]:
        return tuple(g for g in self.generations if g.kind == "leftover")

    @property
    def history(self) -> tuple[Generation, ...]:
        return tuple(g for g in self.generations if g.kind == "history")


@dataclass(slots=True)
class Cleanup:
    """What ``clean`` did: generations removed, objects deleted, uploads aborted, per-key
    failures, and whether deleted objects remain as noncurrent versions (None: unknown)."""

    generations: list[str] = field(default_factory=list)
    deleted: int = 0
    deleted_bytes: int = 0
    aborted: int = 0
    failures: list[DeleteFailure] = field(default_factory=list)
    versioned: bool | None = False


def _base(location: Location) -> str:
    return location.key("") if location.prefix else ""


def survey(store: Store, location: Location, current: str | None, *, me: Identity | None = None,
           settings: LeaseSettings = LeaseSettings(), now: float | None = None,
           process_start: Callable[[int], int | None] | None = None,
           skip: str | None = None) -> Survey:
    """List the generations under ``location`` and judge every leftover's lease.

    Only directories whose name is a valid generation and whose objects are all s3sync's own
    (``part-*``, ``index.jsonl.zst``, ``lease.json``, ``manifest.json``) are considered: anything else a user
    stored under the prefix is not ours to judge.

    Args:
        store: the bucket.
        location: the dataset prefix.
        current: the generation the current manifest names (None: no manifest).
        me: this machine (default: ``lease.local_identity()``).
        settings: the ttl for a generation without a lease.
        now: seconds since the epoch (default: now).
        process_start: see ``lease.judge``.
        skip: a generation to leave out (the caller's own).

    Raises:
        StoreError: listing failed.
    """
    me = me or leases.local_identity()
    now = time.time() if now is None else now
    base = _base(location)
    by_gen: dict[str, list[ObjectInfo]] = {}
    foreign: set[str] = set()
    for obj in store.list(base):
        gen, sep, rest = obj.key[len(base):].partition("/")
        if not sep:
            continue
        if not GENERATION_RE.match(gen) or not (
                is_reader_name(rest) or ("/" not in rest and (rest in OWN_NAMES or rest.startswith(_PART_NAME)))):
            foreign.add(gen)
        by_gen.setdefault(gen, []).append(obj)
    uploads: dict[str, list[UploadInfo]] = {}
    for up in store.list_uploads(base):
        gen, sep, _ = up.key[len(base):].partition("/")
        if sep and GENERATION_RE.match(gen):
            uploads.setdefault(gen, []).append(up)
    out = []
    for gen in sorted(set(by_gen) | set(uploads)):
        if gen in foreign or gen == skip:
            continue
        objs = tuple(by_gen.get(gen, ()))
        ups = tuple(uploads.get(gen, ()))
        size = sum(o.size for o in objs)
        names = {o.key[len(base) + len(gen) + 1:]: o for o in objs}
        readers = judge_readers(store, [o for n, o in names.items() if is_reader_name(n)], now, me,
                                process_start, settings)
        kind = "current" if gen == current else "history" if MANIFEST_NAME in names else "leftover"
        lease = None
        lease_obj = names.get(LEASE_NAME)
        if lease_obj is not None:
            try:
                lease = Lease.from_json(store.get(lease_obj.key))
            except NotFoundError:
                lease_obj = None  # finished between the listing and now
        if kind != "leftover" and lease_obj is None:
            out.append(Generation(gen, kind, objects=objs, size=size, uploads=ups, readers=readers))
            continue
        stamps = [o.modified for n, o in names.items() if o.modified is not None and not is_reader_name(n)]
        stamps += [u.initiated for u in ups]
        verdict = leases.judge(lease, lease_obj.modified if lease_obj else None,
                               max(stamps) if stamps else None, now, me,
                               process_start or leases.process_start, settings.ttl_s)
        # In a committed generation (current or history) the verdict only concerns the lease
        # object itself: a publish that committed and died before removing it.
        out.append(Generation(gen, kind, verdict.state, verdict.alive, lease, objs, size, ups, readers))
    return Survey(current, tuple(out))


def clean(store: Store, location: Location, found: Survey) -> Cleanup:
    """Remove the leftovers of ``found`` whose publish is dead; never touch a live one.

    Multipart uploads are aborted first, then the objects deleted (the lease last, so that a
    cleanup cut short is found again). Dead leases inside current or history generations (a
    publish that committed and died before removing its lease) are removed too.

    Raises:
        StoreError: a listing or request failed as a whole (per-key refusals are collected).
    """
    result = Cleanup()
    doomed: list[ObjectInfo] = []
    for gen in found.generations:
        if gen.kind != "leftover" and gen.state and not gen.alive:
            doomed.extend(o for o in gen.objects if o.key.endswith("/" + LEASE_NAME))
        elif gen.kind == "leftover" and not gen.alive and not gen.live_readers:
            # (live readers: a history generation whose copy gc deleted as a pull started on it)
            for up in gen.uploads:
                store.abort_upload(up.key, up.upload_id)
                result.aborted += 1
            objs = sorted(gen.objects, key=lambda o: o.key.endswith("/" + LEASE_NAME))
            doomed.extend(objs)
            result.generations.append(gen.name)
    if doomed:
        # Leases go in a second request, after every other object is gone: DeleteObjects
        # is not atomic (a request cut short may have removed any subset), and a leftover
        # that lost its lease first would no longer be recognised as a dead publish's.
        is_lease = [o.key.endswith("/" + LEASE_NAME) for o in doomed]
        result.failures = store.delete([o.key for o, lease in zip(doomed, is_lease) if not lease])
        refused_gens = {f.key.rsplit("/", 2)[-2] for f in result.failures}
        leases = [o.key for o, lease in zip(doomed, is_lease) if lease and o.key.rsplit("/", 2)[-2] not in refused_gens]
        if leases:
            result.failures += store.delete(leases)
        failed = {f.key for f in result.failures} | {o.key for o, lease in zip(doomed, is_lease)
                                                     if lease and o.key.rsplit("/", 2)[-2] in refused_gens}
        result.deleted = sum(1 for o in doomed if o.key not in failed)
        result.deleted_bytes = sum(o.size for o in doomed if o.key not in failed)
        result.versioned = store.versioned()
    return result


def describe(result: Cleanup, location: Location) -> list[str]:
    """One-line messages about a cleanup, for the progress display."""
    lines = []
    if result.generations:
        lines.append(f"removed what dead publishes left under {location.url()}: "
                     f"{len(result.generations)} generation(s) ({', '.join(result.generations)}), "
                     f"{result.deleted} object(s), {result.deleted_bytes} bytes, "
                     f"{result.aborted} incomplete multipart upload(s)")
    for f in result.failures:
        lines.append(f"could not delete s3://{location.bucket}/{f.key}: {f.code} {f.message}".rstrip())
    if result.deleted and result.versioned:
        lines.append(f"the bucket {location.bucket} is versioned: the {result.deleted} deleted object(s) remain "
                     "as noncurrent versions until a lifecycle rule or a versioned delete removes them")
    elif result.deleted and result.versioned is None:
        lines.append(f"could not tell whether bucket {location.bucket} is versioned: if it is, the deleted "
                     "objects remain as noncurrent versions")
    return lines


def safe_clean(store: Store, location: Location, found: Survey) -> tuple[Cleanup | None, list[str]]:
    """``clean``, with a failure reported as a message instead of raised: cleaning up after
    others must not stop a publish."""
    try:
        result = clean(store, location, found)
    except S3SyncError as err:
        return None, [f"could not remove what dead publishes left under {location.url()}: {err}"]
    return result, describe(result, location)
