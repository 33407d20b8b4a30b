"""The Python API: ``s3sync.pull``, ``publish``, ``verify`` and ``ls`` for scripts and training jobs.

A second client of the pipelines beside the CLI (interface layer). Each function takes the
CLI's options as keyword arguments, resolves settings exactly as the command does
(``configfile.load``: defaults < config file < ``S3SYNC_*`` variables < the arguments given),
reports through a ``progress`` object or callback, returns the pipeline's frozen dataclass and
raises ``s3sync.errors`` exceptions. It never prints and never exits.

The environment: ``env=None`` (the default) reads ``os.environ`` as the CLI does, so
``S3SYNC_BUCKET``, ``S3SYNC_CONFIG`` and the other ``S3SYNC_*`` variables mean the same to a
script as to the command; pass a mapping (``env={}``) to decide yourself. AWS credentials,
profiles and ``AWS_ENDPOINT_URL_S3`` always come from boto3's own chain, as on the CLI.

Ctrl-C: while a call runs in the main thread with Python's default SIGINT handler, the call
installs the CLI's handler for its duration, so an interrupt lands only where the resume
state is consistent; it is raised as ``KeyboardInterrupt`` and a rerun resumes.

The pipelines are imported inside the functions, so that ``import s3sync`` stays fast.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from . import configfile, interrupts
from .config import Settings
from .errors import DestinationBusyError, NotFoundError, SourceError, UsageError
from .progress import NullProgress, Progress

if TYPE_CHECKING:
    from .catalog import CatalogEntry, Discovery
    from .manifest import Manifest
    from .publish import PublishResult
    from .pull import PullResult
    from .repair import RepairResult
    from .verify import VerifyResult

__all__ = ["CatalogListing", "ProgressCallback", "ls", "publish", "pull", "repair", "verify"]

ProgressCallback = Callable[[str, int, int], None]
T = TypeVar("T")
"""``callback(stage, done, total)``: bytes (or items, for ``progress.ITEM_STAGES``) done in
``stage`` so far, of ``total`` (0: unknown). Called from worker threads."""


@dataclass(frozen=True, slots=True)
class CatalogListing:
    """One catalog name as ``ls()`` sees it.

    Attributes:
        name: the dataset name.
        entry: the built-in entry (title, approximate size, licence), None for a name the
            config file adds.
        url: where the name resolves (``s3://BUCKET/PREFIX``), None without a bucket.
        published: whether a manifest is there; None when that could not be told.
        detail: why ``published`` is None or False ("" otherwise).
    """

    name: str
    entry: CatalogEntry | None
    url: str | None
    published: bool | None
    detail: str = ""


class _CallbackProgress:
    """Adapts a ``ProgressCallback`` to the ``Progress`` protocol (thread-safe)."""

    def __init__(self, callback: ProgressCallback) -> None:
        self._callback = callback
        self._lock = threading.Lock()
        self._done: dict[str, int] = {}
        self._total: dict[str, int] = {}

    def start(self, stage: str, total: int) -> None:
        with self._lock:
            self._total[stage] = total
            done = self._done.setdefault(stage, 0)
        self._callback(stage, done, total)

    def advance(self, stage: str, n: int) -> None:
        with self._lock:
            done = self._done[stage] = self._done.get(stage, 0) + n
            total = self._total.get(stage, 0)
        self._callback(stage, done, total)

    def message(self, text: str) -> None:
        pass

    def finish(self, stage: str) -> None:
        with self._lock:
            total = self._total.get(stage, 0)
            done = self._done[stage] = max(self._done.get(stage, 0), total)
        self._callback(stage, done, total)


# DestinationBusyError's hint names the CLI's --wait; the API's callers pass wait=True.
_BUSY_HINT = "wait for it to finish (or stop it), or call again with wait=True"


def _progress(progress: Progress | ProgressCallback | None) -> Progress:
    if progress is None:
        return NullProgress()
    if all(hasattr(progress, m) for m in ("start", "advance", "message", "finish")):
        return progress  # type: ignore[return-value]
    if callable(progress):
        return _CallbackProgress(progress)
    raise UsageError(f"progress={progress!r}: give a Progress object (start, advance, message, finish) "
                     "or a callable(stage, done, total)")


def _settings(env: Mapping[str, str] | None, **flags: Any) -> Settings:
    """Settings as the CLI resolves them (``configfile.load``); None flags are not given."""
    if flags.get("no_sign_request") is False:
        flags["no_sign_request"] = None  # "not given": the config file may not set it, as on the CLI
    return configfile.load(os.environ if env is None else env, flags)


def _store(settings: Settings, bucket: str) -> Any:
    from .stores.s3 import S3Store, make_client

    client = make_client(settings.s3, max_connections=settings.transfer.concurrency + 4)
    return S3Store(client, bucket, concurrency=settings.transfer.concurrency)


@contextmanager
def _interruptible() -> Iterator[None]:
    """Route SIGINT through ``interrupts.deliver`` for the call, where the caller left Python's
    default handler in the main thread; otherwise leave the caller's handling alone."""
    if (threading.current_thread() is not threading.main_thread()
            or signal.getsignal(signal.SIGINT) is not signal.default_int_handler):
        yield
        return

    def handler(signum: int, frame: object) -> None:
        interrupts.deliver()

    signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def _path(value: str | os.PathLike[str], what: str) -> Path:
    if not isinstance(value, str | os.PathLike):
        raise UsageError(f"{what}={value!r} is not a path")
    return Path(value).expanduser()


def _patterns(given: str | Sequence[str]) -> list[str]:
    """``include``/``exclude`` as a list: one string is one pattern (not one per character)."""
    return [given] if isinstance(given, str) else list(given)


def _waiting(call: Callable[[], T], wait: bool, sink: Progress) -> T:
    """``call()``; if the destination is busy (another s3sync holds its lock), wait for the
    lock and call again when ``wait``, else raise with the API's hint (``wait=True``).

    Raises:
        DestinationBusyError: busy and not ``wait``.
    """
    from .journal import wait_for_lock
    while True:
        try:
            return call()
        except DestinationBusyError as err:
            if not wait:
                err.hint = _BUSY_HINT
                raise
            sink.message(f"{err}; waiting for it to finish")
            wait_for_lock(err.staging)


def pull(source: str, dest_parent: str | os.PathLike[str], *, name: str | None = None, extract: bool = True,
         wait: bool = False, generation: str | None = None, include: str | Sequence[str] = (),
         exclude: str | Sequence[str] = (), delete_extra: bool = False,
         endpoint_url: str | None = None, profile: str | None = None, region: str | None = None,
         no_sign_request: bool = False, concurrency: int | None = None,
         progress: Progress | ProgressCallback | None = None, env: Mapping[str, str] | None = None) -> PullResult:
    """Pull a dataset into ``dest_parent / NAME``, verified and resumable (``s3sync pull``).

    Args:
        source: a dataset name (resolved through the config file and ``S3SYNC_BUCKET``) or
            ``s3://BUCKET/PREFIX`` of an s3sync dataset.
        dest_parent: the directory that receives the dataset directory.
        name: the dataset directory's name (default: the manifest's).
        extract: False stores the verified parts as ``NAME/part-NNNNN.tar`` (``--no-extract``).
        wait: if another pull is writing the same directory, wait for it to finish, then go on
            (usually finding the dataset complete); False raises ``DestinationBusyError``.
        generation: pull this stored generation instead of the current one (``--generation``).
        include, exclude: gitignore-style globs on member paths (``--include``/``--exclude``; one
            string is one pattern):
            a partial pull of the matching members.
        delete_extra: an update in place drops what the directory holds beyond the dataset's
            members (``--delete-extra``); by default it is kept and counted
            (``result.updated.extras``), and one in the way of a new member is refused.
        endpoint_url, profile, region, no_sign_request, concurrency: as the CLI's flags.
        progress: a ``Progress`` object or a ``callback(stage, done, total)``.
        env: the environment to resolve settings from (None: ``os.environ``).

    Returns:
        ``pull.PullResult``: the manifest, the destination, bytes received, retries, whether
        it was already up to date, seconds taken.

    Raises:
        UsageError: a bad name, URL or option (also ``ConfigError``).
        NotFoundError: no bucket, or no manifest at the source (``err.manifest_missing``).
        DestinationError: the destination holds something else, or is not writable; an entry
            that is not part of the dataset is in the way of a member (without ``delete_extra``).
        DestinationBusyError: another pull is writing it (``holder_pid``), and ``wait`` is False.
        InsufficientSpaceError, StoreError, IntegrityError, ManifestError, UnsafeArchiveError:
            as the pipeline says (``s3sync.pull.pull``); a rerun resumes.
        KeyboardInterrupt: Ctrl-C; the resume state is flushed and a rerun resumes.
    """
    from . import catalog
    from .manifest import NAME_RULE, valid_name
    from .pull import pull as run
    from .selection import Selection

    if name is not None and not valid_name(name):
        raise UsageError(f"name {name!r} is not a valid dataset name", hint=NAME_RULE)
    include, exclude = _patterns(include), _patterns(exclude)
    selection = Selection.make(include, exclude) if include or exclude else None
    sink = _progress(progress)
    dest = _path(dest_parent, "dest_parent")
    settings = _settings(env, endpoint_url=endpoint_url, profile=profile, region=region,
                         no_sign_request=no_sign_request, concurrency=concurrency)
    resolved = catalog.resolve(source, settings)
    store = _store(settings, resolved.location.bucket)
    try:
        with _interruptible():
            return _waiting(lambda: run(resolved.location, name or resolved.name, dest, store, settings.transfer,
                                        extract=extract, progress=sink, generation=generation,
                                        selection=selection, delete_extra=delete_extra), wait, sink)
    finally:
        store.close()


def publish(src: str | os.PathLike[str], *, to: str | None = None, name: str | None = None,
            part_size: int | str | None = None, chunk_size: int | str | None = None,
            endpoint_url: str | None = None, profile: str | None = None, region: str | None = None,
            no_sign_request: bool = False, concurrency: int | None = None,
            progress: Progress | ProgressCallback | None = None,
            env: Mapping[str, str] | None = None) -> PublishResult:
    """Pack directory ``src`` and publish it as a new generation (``s3sync publish``).

    Args:
        src: the dataset directory.
        to: ``s3://BUCKET/PREFIX`` (default: where ``name`` resolves, ``s3://$S3SYNC_BUCKET/NAME``).
        name: the dataset name (default: ``src``'s basename).
        part_size, chunk_size: bytes, or a size such as ``"10GiB"``.
        endpoint_url, profile, region, no_sign_request, concurrency: as the CLI's flags.
        progress: a ``Progress`` object or a ``callback(stage, done, total)``.
        env: the environment to resolve settings from (None: ``os.environ``).

    Returns:
        ``publish.PublishResult``: the committed manifest, its location, seconds taken,
        notes (what it removed of dead publishes, what it could not).

    Raises:
        UsageError: a bad name, URL or size (also ``ConfigError``); a new dataset's prefix inside a
            dataset or above datasets (nothing was uploaded).
        SourceError: ``src`` is not a readable directory or holds an unsupported file.
        CaptionsError: its ``captions.json`` does not hold together; nothing was uploaded.
        PublishConflictError: another publish of the same prefix committed first.
        StoreError: as the pipeline says (``s3sync.publish.publish``).
        KeyboardInterrupt: Ctrl-C; what was published before is unchanged.
    """
    from . import catalog
    from .manifest import NAME_RULE, valid_name
    from .publish import publish as run

    sink = _progress(progress)
    path = _path(src, "src")
    chosen = name if name is not None else path.resolve().name
    if not valid_name(chosen):
        raise UsageError(f"{'name' if name is not None else 'the basename of src'} {chosen!r} is not a valid "
                         "dataset name", hint=f"{NAME_RULE}; pass name=...")
    if not path.is_dir():
        raise SourceError(f"{path}: {'not a directory' if path.exists() else 'no such directory'}",
                          hint="give the dataset's directory as src")
    if to is not None and not to.startswith("s3://"):
        raise UsageError(f"to={to!r} is not an s3:// URL", hint="write to='s3://BUCKET/PREFIX'")
    settings = _settings(env, endpoint_url=endpoint_url, profile=profile, region=region,
                         no_sign_request=no_sign_request, concurrency=concurrency,
                         part_size=part_size, chunk_size=chunk_size)
    location = catalog.resolve(to, settings).location if to else catalog.location_for_name(chosen, settings)
    store = _store(settings, location.bucket)
    try:
        with _interruptible():
            return run(path, chosen, location, store, settings.transfer, sink)
    finally:
        store.close()


def verify(directory: str | os.PathLike[str], *, concurrency: int | None = None,
           progress: Progress | ProgressCallback | None = None,
           env: Mapping[str, str] | None = None) -> VerifyResult:
    """Re-hash a pulled dataset against its manifest (``s3sync verify``).

    Unlike the command, a difference is not an exception: the result lists it. The dataset
    is intact when ``result.problems`` is empty (``Problem.kind`` ``unverifiable`` names a
    file only root can read back, not a difference).

    Args:
        directory: a directory ``pull`` created (``DEST_PARENT/NAME``).
        concurrency: files hashed in parallel (default: as the CLI's).
        progress: a ``Progress`` object or a ``callback(stage, done, total)``.
        env: the environment to resolve settings from (None: ``os.environ``).

    Returns:
        ``verify.VerifyResult``: entries and bytes checked, problems, seconds taken.

    Raises:
        DestinationError: ``directory`` is not a dataset ``pull`` completed.
        ManifestError: its recorded manifest or index is damaged.
    """
    from .verify import verify as run

    sink = _progress(progress)
    settings = _settings(env, concurrency=concurrency)
    with _interruptible():
        return run(_path(directory, "directory"), settings.transfer.concurrency, sink)


def repair(directory: str | os.PathLike[str], *, delete_extra: bool = False, wait: bool = False, endpoint_url: str | None = None,
           profile: str | None = None, region: str | None = None, no_sign_request: bool = False,
           concurrency: int | None = None, progress: Progress | ProgressCallback | None = None,
           env: Mapping[str, str] | None = None) -> RepairResult:
    """Fetch again only what ``verify`` flags in a pulled dataset (``s3sync repair``), from
    the source and generation recorded at pull time.

    Args:
        directory: a directory ``pull`` created (``DEST_PARENT/NAME``).
        delete_extra: also delete entries that are not part of the dataset.
        wait: if another repair of ``directory`` is running, wait for it to finish, then go
            on; False raises ``DestinationBusyError``.
        endpoint_url, profile, region, no_sign_request, concurrency: as the CLI's flags.
        progress: a ``Progress`` object or a ``callback(stage, done, total)``.
        env: the environment to resolve settings from (None: ``os.environ``).

    Returns:
        ``repair.RepairResult``: what was fetched, remade, fixed, found extra, deleted, and
        what could not be repaired (``unrepaired``: empty when the dataset matches again).

    Raises:
        DestinationBusyError: another repair of it is running (``holder_pid``), and ``wait`` is False.
        DestinationError: ``directory`` is not a completed pull.
        NotFoundError: the generation is no longer stored (removed by ``gc``).
        ManifestError, MemberIndexError, DamagedDatasetError, StoreError, IntegrityError:
            as ``s3sync.repair.repair`` says; a rerun does the rest.
    """
    from .repair import repair as run
    from .repair import source_of

    sink = _progress(progress)
    dest = _path(directory, "directory")
    settings = _settings(env, endpoint_url=endpoint_url, profile=profile, region=region,
                         no_sign_request=no_sign_request, concurrency=concurrency)
    location = source_of(dest)
    store = _store(settings, location.bucket)
    try:
        with _interruptible():
            return _waiting(lambda: run(dest, location, store, settings.transfer, delete_extra=delete_extra,
                                        progress=sink), wait, sink)
    finally:
        store.close()


def ls(source: str | None = None, *, endpoint_url: str | None = None, profile: str | None = None,
       region: str | None = None, no_sign_request: bool = False, concurrency: int | None = None,
       env: Mapping[str, str] | None = None) -> Manifest | Discovery | tuple[CatalogListing, ...]:
    """What is published (``s3sync ls``).

    Args:
        source: None: every catalog name and whether it is published. A dataset name or
            ``s3://BUCKET/PREFIX`` of one dataset: its current manifest. ``s3://BUCKET[/PREFIX]``
            above datasets: the datasets published one or two levels down.
        endpoint_url, profile, region, no_sign_request, concurrency: as the CLI's flags.
        env: the environment to resolve settings from (None: ``os.environ``).

    Returns:
        A tuple of ``CatalogListing`` (no source), a ``manifest.Manifest`` (one dataset: files,
        extracted_size, generation, captions...), or a ``catalog.Discovery`` (datasets below a
        prefix: ``datasets`` of ``PublishedDataset(location, manifest, error)``, ``complete``).

    Raises:
        UsageError: a bad name or URL (also ``ConfigError``).
        NotFoundError: no bucket, or no dataset at or below ``source``.
        ManifestError: the manifest is damaged or of an unknown version.
        StoreError: as the store says (credentials, access, network).
    """
    from . import catalog
    from .pull import fetch_manifest

    settings = _settings(env, endpoint_url=endpoint_url, profile=profile, region=region,
                         no_sign_request=no_sign_request, concurrency=concurrency)
    if source is None:
        names = catalog.names(settings)
        found = catalog.presence([loc for _, _, loc in names], lambda bucket: _store(settings, bucket),
                                 settings.transfer.concurrency)
        return tuple(CatalogListing(name, entry, loc.url() if loc else None,
                                    {catalog.PUBLISHED: True, catalog.NOT_PUBLISHED: False}.get(here.state),
                                    here.detail)
                     for (name, entry, loc), here in zip(names, found, strict=True))
    resolved = catalog.resolve(source, settings)
    store = _store(settings, resolved.location.bucket)
    try:
        try:
            return fetch_manifest(store, resolved.location)[0]
        except NotFoundError as err:
            if not err.manifest_missing or resolved.name is not None:
                raise
            listing = catalog.discover(store, resolved.location, concurrency=settings.transfer.concurrency)
            if not listing.datasets:
                raise
            return listing
    finally:
        store.close()
