"""Dataset names: the built-in catalog and how a name resolves to an s3:// location.

A SOURCE is either ``s3://BUCKET/PREFIX`` or a name. A name resolves to the URL a
``[catalog.NAME]`` table of the config file gives, else to
``s3://$S3SYNC_BUCKET/NAME``. The built-in entries describe the seed datasets
(facts from their publishers' pages); they carry no location of their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from .config import Location, Settings, parse_s3_url, valid_bucket
from .errors import UsageError
from .manifest import NAME_RULE, valid_name


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
