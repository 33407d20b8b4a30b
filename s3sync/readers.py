"""Reader leases: who is reading a generation that is no longer current, so that ``gc`` spares it.

A pull (also an update in place, a partial pull, a repair) that reads a generation other than
the current one writes ``PREFIX/<generation>/readers/<id>.json`` (a ``lease.Lease`` with
``reader`` set to the command) before it reads any of that generation's objects, then reads
the generation's history copy ``<generation>/manifest.json`` again: if ``gc`` deleted it
meanwhile, the reader stops at once (``generation_deleted``). The lease is re-written every
``refresh_s`` seconds (``lease.LeaseKeeper``) and deleted when the reader ends, also on an
error or Ctrl-C. ``gc`` judges reader leases as a publish's (``lease.judge``: same host, boot
and PID namespace, a dead pid at once; elsewhere, ``ttl_s`` after the object's LastModified)
and never deletes a generation that has a live one (docs/manifest.md section 11).

The current generation needs no lease: the grace period of ``gc`` covers a pull that started
on it. Read-only credentials are normal for pulls: a lease that cannot be written is skipped
with a note (gc cannot see that reader); a lease never fails a read.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from . import lease as leases
from .config import Location
from .errors import (
    DamagedDatasetError,
    MemberIndexError,
    NotFoundError,
    PartChangedError,
    S3SyncError,
)
from .lease import Identity, Lease, LeaseKeeper, LeaseSettings
from .manifest import MANIFEST_NAME, Manifest
from .stores.base import ObjectInfo, Store, error_chain

READERS_DIR = "readers"
"""``<generation>/readers/<id>.json``: one object per running reader."""


@dataclass(frozen=True, slots=True)
class Reader:
    """One reader lease as ``gc`` judged it.

    Attributes:
        key: the object's full key.
        lease: the parsed lease (None: unreadable, judged by its LastModified and the default ttl).
        alive: the reader may still be running.
        state: ``running``, ``dead``, ``live`` or ``expired`` (``lease.Verdict``).
    """

    key: str
    lease: Lease | None
    alive: bool
    state: str


def is_reader_name(rest: str) -> bool:
    """Whether ``rest`` (a key relative to its generation directory) names a reader lease."""
    head, sep, name = rest.partition("/")
    return head == READERS_DIR and bool(sep) and "/" not in name and name.endswith(".json") and len(name) > 5


def reader_prefix(location: Location, generation: str) -> str:
    """The key prefix of ``generation``'s reader leases."""
    return location.key(f"{generation}/{READERS_DIR}/")


def judge_readers(store: Store, objs: list[ObjectInfo], now: float, me: Identity,
                  process_start: Callable[[int], int | None] | None,
                  settings: LeaseSettings) -> tuple[Reader, ...]:
    """Read and judge the reader leases ``objs`` (one GET each; one that vanished meanwhile
    has ended and is left out).

    Raises:
        StoreError: a GET failed otherwise.
    """
    out = []
    for obj in objs:
        try:
            data = store.get(obj.key)
        except NotFoundError:
            continue
        lease = Lease.from_json(data)
        if lease is None:
            # Not a lease (damaged, or a newer format): alive until the default ttl after its
            # last write, so that a garbage object cannot keep a generation forever.
            fresh = obj.modified is not None and obj.modified + settings.ttl_s > now
            out.append(Reader(obj.key, None, fresh, "live" if fresh else "expired"))
            continue
        verdict = leases.judge(lease, obj.modified, obj.modified, now, me,
                               process_start or leases.process_start, settings.ttl_s)
        out.append(Reader(obj.key, lease, verdict.alive, verdict.state))
    return tuple(out)


def live_readers(store: Store, location: Location, generation: str, now: float, *,
                 me: Identity | None = None, settings: LeaseSettings = LeaseSettings(),
                 process_start: Callable[[int], int | None] | None = None) -> tuple[Reader, ...]:
    """The live reader leases of ``generation``, listed now (``gc``'s checks before deleting).

    Raises:
        StoreError: the listing or a GET failed.
    """
    objs = [o for o in store.list(reader_prefix(location, generation))
            if is_reader_name(o.key[len(location.key(f"{generation}/")):])]
    found = judge_readers(store, objs, now, me or leases.local_identity(), process_start, settings)
    return tuple(r for r in found if r.alive)


def generation_deleted(location: Location, generation: str, command: str, current: str | None) -> NotFoundError:
    """The one-line error of a reader whose generation ``gc`` deleted."""
    now = f"; the current generation is {current}" if current else ""
    return NotFoundError(f"generation {generation} of {location.url()} was deleted (by gc) before or while this "
                         f"{command} read it{now}",
                         hint=f"pull the current generation (s3sync pull {location.url()} DEST_PARENT), or list "
                              f"those still stored with 's3sync ls {location.url()} --generations'")


def _current(store: Store, location: Location) -> str | None:
    """The generation the current manifest names (None: none, unreadable, or a request failed)."""
    try:
        return Manifest.from_json(store.get(location.key(MANIFEST_NAME)), location.url(MANIFEST_NAME)).generation
    except S3SyncError:
        return None


def explain_missing(store: Store, location: Location, manifest: Manifest, err: BaseException,
                    command: str) -> NotFoundError | None:
    """What an object of ``manifest``'s generation found missing while reading it means: if the
    generation is no longer current and its history copy is gone, ``gc`` deleted it (the error
    to raise instead of calling the dataset damaged); else None (it is damaged, as ``err`` says).
    """
    if not isinstance(err, (DamagedDatasetError, MemberIndexError, PartChangedError)):
        return None
    if not any(isinstance(e, NotFoundError) and not e.bucket_missing for e in error_chain(err)):
        return None
    if manifest.version != 1:
        return None  # an adopted archive's pieces are nobody's generation: gc never deletes them
    current = _current(store, location)
    if current == manifest.generation:
        return None
    try:
        store.head(location.key(f"{manifest.generation}/{MANIFEST_NAME}"))
    except NotFoundError:
        return generation_deleted(location, manifest.generation, command, current)
    except S3SyncError:
        return None
    return None


class ReaderLease:
    """A reader's lease on a generation, as a context manager: ``__enter__`` writes it and
    checks the generation is still stored; ``__exit__`` removes it, and turns a missing part or
    index of a generation that ``gc`` deleted into ``generation_deleted`` (not "damaged").

    ``current``: the generation is the current one (no lease is written). ``require_copy``:
    a missing history copy means gc deleted the generation (a pull found the copy a moment
    ago); False for a repair, whose generation may predate history copies (then a missing
    object is explained when it is met). ``notes`` collects one-line messages for the user
    (a lease that could not be written).

    Raises (``__enter__``):
        NotFoundError: ``generation_deleted`` (the lease is removed first), or the bucket is gone.
    """

    def __init__(self, store: Store, location: Location, manifest: Manifest, *, current: bool, command: str,
                 settings: LeaseSettings = LeaseSettings(), require_copy: bool = True) -> None:
        self.store, self.location, self.manifest = store, location, manifest
        self.current, self.command, self.settings = current, command, settings
        self.require_copy = require_copy
        self.notes: list[str] = []
        self.key: str | None = None
        self._keeper: LeaseKeeper | None = None

    def __enter__(self) -> ReaderLease:
        if self.current or self.manifest.version != 1:
            return self
        generation = self.manifest.generation
        me = leases.local_identity()
        pid = os.getpid()
        lease = Lease(generation, me.host, me.boot_id, pid, leases.process_start(pid) or 0,
                      datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"), self.settings.ttl_s,
                      me.pid_ns, reader=self.command)
        key = reader_prefix(self.location, generation) + f"{secrets.token_hex(8)}.json"
        body = lease.to_json()
        try:
            self.store.put(key, body)
        except S3SyncError as err:
            # Read-only credentials (a public dataset) are normal for a reader: go on without.
            first = str(err).splitlines()[0] if str(err) else type(err).__name__
            self.notes.append(f"no reader lease for this {self.command} ({first}): 's3sync gc' cannot see it "
                              f"and may delete generation {generation} while it runs")
            key = None
        except BaseException:
            self._forget(key)
            raise
        self.key = key
        # Only now read the history copy again: gc deletes it before it checks the readers a
        # second time, so either gc sees this lease or this read sees the copy gone.
        try:
            self.store.head(self.location.key(f"{generation}/{MANIFEST_NAME}"))
        except NotFoundError as err:
            if err.bucket_missing or self.require_copy:
                self._forget(key)
                if err.bucket_missing:
                    raise
                raise generation_deleted(self.location, generation, self.command,
                                         _current(self.store, self.location)) from err
        except BaseException:
            self._forget(key)
            raise
        if key is not None:
            self._keeper = LeaseKeeper(self.store, key, body, self.settings.refresh_s)
            self._keeper.start()
        return self

    def _forget(self, key: str | None) -> None:
        if key is None:
            return
        try:
            self.store.delete([key])
        except S3SyncError:
            pass  # judged dead once this process is gone

    def __exit__(self, kind, value, tb) -> None:  # noqa: ANN001
        try:
            if self._keeper is not None:
                self._keeper.stop()
        finally:
            self._forget(self.key)
            self.key = None
        if isinstance(value, Exception):
            deleted = explain_missing(self.store, self.location, self.manifest, value, self.command)
            if deleted is not None:
                raise deleted from value

