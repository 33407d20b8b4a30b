"""Dataset names: the built-in catalog, how a name resolves to an s3:// location, and what is
published in a bucket.

A SOURCE is either ``s3://BUCKET/PREFIX`` or a name. A name resolves to the URL a
``[catalog.NAME]`` table of the config file gives, else to
``s3://$S3SYNC_BUCKET/NAME``. The built-in entries describe the seed datasets
(facts from their publishers' pages); they carry no location of their own.

``discover`` finds the datasets published under ``s3://BUCKET[/PREFIX]`` one or two levels
down (``PREFIX/NAME/manifest.json``, ``PREFIX/GROUP/NAME/manifest.json``) with ListObjectsV2
and ``Delimiter='/'``: one listing per directory visited, whatever the number of part keys
below a dataset (a generation's parts are never listed). ``presence`` says, per catalog
name, whether its manifest is there (one HEAD per name, in parallel).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from .config import Location, Settings, parse_s3_url, valid_bucket
from .errors import (
    AccessDeniedError,
    CredentialsError,
    ManifestError,
    NotFoundError,
    StoreError,
    UsageError,
)
from .manifest import MANIFEST_NAME, NAME_RULE, Manifest, claims_format, valid_name
from .stores.base import Store


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    """What is known about a dataset before fetching its manifest.

    Attributes:
        name: the dataset name (also the directory a pull creates).
        title: human title.
        source: where the data originally comes from.
        approx_size: bytes on disk once extracted (approximate).
        approx_files: number of files (approximate).
        captions: number of captions (approximate), 0 if unknown.
        licence: a short licence/terms note.
    """

    name: str
    title: str
    source: str
    approx_size: int
    approx_files: int
    captions: int
    licence: str


GB = 1000**3

BUILTIN: tuple[CatalogEntry, ...] = (
    CatalogEntry("mscoco", "MS COCO captions", "mscoco.org", 30 * GB, 125_000, 600_000,
                 "images belong to their Flickr owners; annotations CC BY 4.0 (COCO terms of use)"),
    CatalogEntry("sbu", "SBU Captioned Photo Dataset (im2text)", "Stony Brook University",
                 120 * GB, 890_000, 890_000,
                 "images belong to their Flickr owners; for research use"),
    CatalogEntry("imagenet", "ImageNet with captions", "image-net.org", 0, 0, 919_000,
                 "images belong to their owners; ImageNet terms of access (non-commercial research)"),
)


@dataclass(frozen=True, slots=True)
class Resolved:
    """A SOURCE resolved: the dataset ``name`` (None for an s3:// URL: the manifest's
    name is used), its ``location`` and catalog ``entry`` if any."""

    name: str | None
    location: Location
    entry: CatalogEntry | None


def builtin(name: str) -> CatalogEntry | None:
    """The built-in entry for ``name``, if there is one."""
    return next((e for e in BUILTIN if e.name == name), None)


def location_for_name(name: str, settings: Settings) -> Location:
    """Where dataset ``name`` lives according to the config file and ``S3SYNC_BUCKET``.

    Raises:
        UsageError: the name is not a valid dataset name, or no bucket is configured.
    """
    if not valid_name(name):
        raise UsageError(f"{name!r} is not a valid dataset name",
                         hint=f"{NAME_RULE}; or give an s3://BUCKET/PREFIX URL")
    for override in settings.catalog:
        if override.name == name:
            return parse_s3_url(override.url)
    if not settings.bucket:
        raise UsageError(f"no location for dataset {name!r}: S3SYNC_BUCKET is not set",
                         hint=f"set S3SYNC_BUCKET, add [catalog.{name}] url = \"s3://...\" to the config, "
                              "or give an s3:// URL")
    if not valid_bucket(settings.bucket):
        # The rule of an s3:// URL's bucket (S3SYNC_BUCKET=a/b reached botocore's parameter
        # validation and came back as a failure of the request, exit 1).
        raise UsageError(f"bucket {settings.bucket!r} (S3SYNC_BUCKET or the config file's bucket) is not a "
                         "valid bucket name", hint="set S3SYNC_BUCKET to a bucket name such as my-datasets")
    return Location(settings.bucket, name)


def resolve(source: str, settings: Settings) -> Resolved:
    """Resolve a SOURCE argument (name or s3:// URL).

    Raises:
        UsageError: bad URL, bad name, or nowhere to look for the name.
    """
    if source.startswith("s3://"):
        loc = parse_s3_url(source)
        return Resolved(None, loc, None)
    return Resolved(source, location_for_name(source, settings), builtin(source))


def names(settings: Settings) -> list[tuple[str, CatalogEntry | None, Location | None]]:
    """Every known name (built-in and configured) with its entry and location (None if unset)."""
    out = []
    seen = set()
    for e in BUILTIN:
        seen.add(e.name)
        try:
            loc = location_for_name(e.name, settings)
        except UsageError:
            loc = None
        out.append((e.name, e, loc))
    for o in settings.catalog:
        if o.name not in seen:
            seen.add(o.name)
            out.append((o.name, None, parse_s3_url(o.url)))
    return out


DISCOVER_DEPTH = 2
"""How many directory levels below the given prefix ``discover`` looks for datasets."""
MAX_DIRECTORIES = 10_000
"""``discover`` stops after listing this many directories (a bucket of loose files is no
catalogue of datasets); the result then says it is incomplete."""


@dataclass(frozen=True, slots=True)
class PublishedDataset:
    """A dataset found in a bucket: its location and manifest, or why the manifest is unusable.

    Attributes:
        location: the dataset's prefix.
        manifest: the current manifest, or None if it is damaged or of an unknown version.
        error: why ``manifest`` is None ("" otherwise).
    """

    location: Location
    manifest: Manifest | None
    error: str = ""


@dataclass(frozen=True, slots=True)
class Discovery:
    """``discover``'s answer: datasets by prefix, and whether the walk stopped early
    (``MAX_DIRECTORIES``), in which case some may be missing."""

    datasets: tuple[PublishedDataset, ...]
    complete: bool = True


def discover(store: Store, location: Location, *, depth: int = DISCOVER_DEPTH, concurrency: int = 8) -> Discovery:
    """The datasets published below ``location`` (not at it: the caller reads that manifest).

    A directory holding ``manifest.json`` is a dataset and is not descended into (its
    sub-directories are generations); a ``manifest.json`` that is not an s3sync manifest is
    ignored, and so is a generation's history copy found where the current manifest is
    missing (its directory is named after the generation it names).

    Raises:
        NotFoundError: the bucket is missing.
        StoreError: a listing failed.
    """
    root = location.key("") if location.prefix else ""
    found: list[str] = []
    level = [root]
    listed = 0
    complete = True
    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="s3sync-ls") as pool:
        for d in range(depth + 1):
            if not level:
                break
            if listed + len(level) > MAX_DIRECTORIES:
                level, complete = level[: MAX_DIRECTORIES - listed], False
            listed += len(level)
            nxt: list[str] = []
            for prefix, (objs, subs) in zip(level, pool.map(store.list_dir, level)):
                if d and any(o.key == prefix + MANIFEST_NAME for o in objs):
                    found.append(prefix)
                elif d < depth:
                    nxt += subs
            level = nxt
            if not complete:
                break
        docs = list(pool.map(lambda p: _read_manifest(store, location.bucket, p), found))
    return Discovery(tuple(d for d in docs if d is not None), complete)


NESTING_LISTINGS = 100
"""``check_destination`` lists at most this many directories below a new dataset's prefix."""


def check_destination(store: Store, location: Location) -> None:
    """Refuse a new dataset's prefix that would hide or nest datasets: one above which a
    dataset lives (``s3://b/birds`` when publishing to ``s3://b/birds/sub``: the new one would
    sit among birds' generations, unseen by ``ls s3://b``), or one below which datasets live
    (the bucket root of a bucket holding ``s3://b/x``: ``ls s3://b`` would show only the new
    one). Costs one GET per level above ``location`` and a ``Delimiter='/'`` listing per
    directory below it, down to ``DISCOVER_DEPTH`` levels, stopping at the first dataset
    found and after ``NESTING_LISTINGS`` listings.

    Raises:
        UsageError: a dataset lives above or below ``location`` (named).
        StoreError: a request failed.
    """
    parts = location.prefix.split("/") if location.prefix else []
    for i in range(len(parts)):
        above = Location(location.bucket, "/".join(parts[:i]))
        if _read_manifest(store, location.bucket, above.key("")) is not None:
            inside = location.url().removeprefix(above.url().rstrip("/") + "/")
            raise UsageError(f"{above.url()} is a dataset: publishing to {location.url()} would put a dataset "
                             f"inside it (among its generations, unseen by 's3sync ls')",
                             hint=f"publish to a prefix of its own, beside it (e.g. --to "
                                  f"s3://{location.bucket}/{inside.replace('/', '-')})")
    level, listed = [location.key("") if location.prefix else ""], 0
    for depth in range(DISCOVER_DEPTH + 1):
        nxt: list[str] = []
        for prefix in level:
            if listed >= NESTING_LISTINGS:
                return
            listed += 1
            objs, subs = store.list_dir(prefix)
            if depth and any(o.key == prefix + MANIFEST_NAME for o in objs):
                if _read_manifest(store, location.bucket, prefix) is not None:
                    below = Location(location.bucket, prefix.rstrip("/"))
                    raise UsageError(f"{location.url()} already holds datasets below it ({below.url()}): a dataset "
                                     f"published there would hide them from 's3sync ls {location.url()}'",
                                     hint=f"publish to a prefix of its own (e.g. --to {location.url().rstrip('/')}"
                                          "/NAME)")
            elif depth < DISCOVER_DEPTH:
                nxt += subs
        level = nxt


def _read_manifest(store: Store, bucket: str, prefix: str) -> PublishedDataset | None:
    loc = Location(bucket, prefix.rstrip("/"))
    try:
        data = store.get(loc.key(MANIFEST_NAME))
    except NotFoundError:
        return None  # removed since the listing
    except StoreError as err:
        return PublishedDataset(loc, None, str(err))
    try:
        m = Manifest.from_json(data, loc.url(MANIFEST_NAME))
    except ManifestError as err:
        return PublishedDataset(loc, None, str(err)) if claims_format(data) else None
    if loc.prefix.rpartition("/")[2] == m.generation:
        return None  # a history copy: PARENT/<generation>/manifest.json
    return PublishedDataset(loc, m)


PUBLISHED, NOT_PUBLISHED, UNKNOWN = "published", "not published", "unknown"


@dataclass(frozen=True, slots=True)
class Presence:
    """Whether a catalog name's manifest is at its location: ``state`` is ``PUBLISHED``,
    ``NOT_PUBLISHED`` or ``UNKNOWN``; ``detail`` says why when it is not plain."""

    state: str
    detail: str = ""


def presence(locations: list[Location | None], store_for_bucket: Callable[[str], Store],
             concurrency: int = 8) -> list[Presence]:
    """For each location (None: no bucket configured), whether a manifest is there: one HEAD
    each, in parallel. Never raises for one location: missing credentials, a refused request
    or an unreachable server give ``UNKNOWN`` with the reason, so that a listing never fails.

    Args:
        store_for_bucket: makes the store of a bucket (called once per bucket).
    """
    stores: dict[str, Store | BaseException] = {}

    def store(bucket: str) -> Store:
        if bucket not in stores:
            try:
                stores[bucket] = store_for_bucket(bucket)
            except Exception as err:  # a bad profile or region: said as the reason, per entry
                stores[bucket] = err
        value = stores[bucket]
        if isinstance(value, BaseException):
            raise value
        return value

    for loc in locations:  # built in this thread: store construction is not thread-safe
        if loc is not None:
            try:
                store(loc.bucket)
            except Exception:
                pass

    def one(loc: Location | None) -> Presence:
        if loc is None:
            return Presence(UNKNOWN, "no bucket configured (set S3SYNC_BUCKET)")
        try:
            store(loc.bucket).head(loc.key(MANIFEST_NAME))
        except NotFoundError as err:
            return Presence(NOT_PUBLISHED, "bucket not found" if err.bucket_missing else "")
        except (CredentialsError, AccessDeniedError) as err:
            return Presence(UNKNOWN, str(err))
        except Exception as err:  # StoreError, or what building the store raised
            return Presence(UNKNOWN, str(err) or type(err).__name__)
        return Presence(PUBLISHED)

    try:
        with ThreadPoolExecutor(max_workers=max(1, min(concurrency, len(locations) or 1)),
                                thread_name_prefix="s3sync-head") as pool:
            return list(pool.map(one, locations))
    finally:
        for value in stores.values():
            if not isinstance(value, BaseException):
                value.close()
