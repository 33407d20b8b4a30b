"""Configuration values and their parsers: pure functions over strings and dicts, no I/O.

Settings are resolved once, by the CLI, from (lowest to highest precedence) the
built-in defaults, the TOML config file (``$S3SYNC_CONFIG`` or
``~/.config/s3sync/config.toml``), ``S3SYNC_*`` environment variables and the
flags actually given. Library code receives the frozen results and never reads
``os.environ``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .errors import ConfigError, UsageError
from .manifest import NAME_RULE, valid_name
from .planning import (
    DEFAULT_CHUNK_SIZE,
    DEFAULT_PART_SIZE,
    MAX_CHUNK_SIZE,
    MIN_CHUNK_SIZE,
    S3_MAX_OBJECT,
)

_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3,
    "t": 1000**4, "tb": 1000**4,
    "ki": 1024, "kib": 1024, "mi": 1024**2, "mib": 1024**2, "gi": 1024**3, "gib": 1024**3,
    "ti": 1024**4, "tib": 1024**4,
}
_SIZE_RE = re.compile(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([A-Za-z]*)\s*\Z")


def parse_size(text: str | int, what: str = "size") -> int:
    """Parse ``8MiB``, ``10GiB``, ``1.5GB`` or a plain byte count into bytes.

    Binary suffixes (KiB, MiB, GiB, TiB) are powers of 1024, decimal ones (KB, MB,
    GB, TB) powers of 1000, as in IEC 80000-13.

    Raises:
        UsageError: naming ``what`` if the text is not a size.
    """
    if isinstance(text, int) and not isinstance(text, bool):
        if text < 0:
            raise UsageError(f"{what}: {text} is negative")
        return text
    m = _SIZE_RE.match(str(text))
    unit = m and _UNITS.get(m.group(2).lower())
    if not m or unit is None:
        raise UsageError(f"{what}: {text!r} is not a size",
                         hint="write bytes, or a number with KiB, MiB, GiB (powers of 1024) or KB, MB, GB "
                              "(powers of 1000), e.g. 64MiB or 1GB")
    return int(float(m.group(1)) * unit)


def format_size(n: float) -> str:
    """Human-readable binary size, e.g. ``1.5 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True, slots=True)
class Location:
    """Where a dataset lives: ``s3://bucket/prefix`` (prefix without trailing slash)."""

    bucket: str
    prefix: str

    def key(self, relative: str) -> str:
        """The full key of ``relative`` under this prefix."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def url(self, relative: str = "") -> str:
        """``s3://`` URL of the prefix, or of ``relative`` under it."""
        path = self.key(relative) if relative else self.prefix
        return f"s3://{self.bucket}/{path}" if path else f"s3://{self.bucket}"


_BUCKET_RE = re.compile(r"[a-z0-9][a-z0-9.\-_]{1,254}\Z")


def valid_bucket(name: str) -> bool:
    """Whether ``name`` is a bucket name s3sync accepts (lower case, digits, ``.``, ``-``, ``_``)."""
    return bool(_BUCKET_RE.match(name))


def parse_s3_url(url: str) -> Location:
    """Parse ``s3://BUCKET[/PREFIX]`` into a Location.

    Raises:
        UsageError: if ``url`` is not an s3:// URL with a valid bucket name.
    """
    if not url.startswith("s3://"):
        raise UsageError(f"{url!r} is not an s3:// URL", hint="write s3://BUCKET/PREFIX")
    bucket, _, prefix = url[5:].partition("/")
    if not _BUCKET_RE.match(bucket):
        raise UsageError(f"{url!r}: {bucket!r} is not a valid bucket name", hint="write s3://BUCKET/PREFIX")
    prefix = prefix.strip("/")
    if any(seg in ("", ".", "..") for seg in prefix.split("/")) and prefix:
        raise UsageError(f"{url!r}: the prefix has an empty, '.' or '..' segment")
    return Location(bucket, prefix)


@dataclass(frozen=True, slots=True)
class S3Settings:
    """How to reach the object store; unset fields fall back to boto3's own chain."""

    endpoint_url: str | None = None
    profile: str | None = None
    region: str | None = None
    no_sign_request: bool = False
    connect_timeout_s: float = 10.0
    read_timeout_s: float = 20.0
    max_attempts: int = 3


@dataclass(frozen=True, slots=True)
class TransferSettings:
    """Sizes (bytes) and parallelism of publish and pull.

    ``window`` is how many chunks a pull may hold in memory at once (fetched or in
    flight); memory use is about ``window * chunk_size``.
    """

    concurrency: int = 8
    chunk_size: int = DEFAULT_CHUNK_SIZE
    part_size: int = DEFAULT_PART_SIZE
    window: int = 16
    retries: int = 10
    backoff_base_s: float = 0.25
    backoff_max_s: float = 20.0


@dataclass(frozen=True, slots=True)
class CatalogOverride:
    """A catalog entry from the config file: where a name lives."""

    name: str
    url: str


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything a command needs, resolved once."""

    s3: S3Settings = field(default_factory=S3Settings)
    transfer: TransferSettings = field(default_factory=TransferSettings)
    bucket: str | None = None
    catalog: tuple[CatalogOverride, ...] = ()


_FILE_KEYS = {"bucket", "endpoint_url", "profile", "region", "concurrency", "chunk_size", "part_size", "catalog"}
_ENV_KEYS = {
    "S3SYNC_BUCKET": "bucket",
    "S3SYNC_ENDPOINT_URL": "endpoint_url",
    "S3SYNC_CONCURRENCY": "concurrency",
    "S3SYNC_CHUNK_SIZE": "chunk_size",
    "S3SYNC_PART_SIZE": "part_size",
}


def check_endpoint_url(url: str) -> None:
    """Refuse an endpoint URL that is not ``http(s)://HOST[:PORT][/]``.

    botocore keeps an endpoint's path and puts the bucket after it, so
    ``http://host:9000/bucket`` with ``s3://bucket/x`` asks for ``/bucket/bucket/x``: the
    server then answers "no such bucket" or "no such key" for a bucket that exists. The
    bucket belongs in the s3:// URL.

    Raises:
        UsageError: naming the URL, and the path if that is what is wrong.
    """
    m = re.match(r"(https?)://([^/\s?#]+)(.*)\Z", url)
    if not m:
        raise UsageError(f"endpoint URL {url!r} must start with http:// or https://",
                         hint="e.g. --endpoint-url http://127.0.0.1:9000")
    if m[3] not in ("", "/"):
        raise UsageError(f"endpoint URL {url!r} has a path ({m[3]!r}); s3sync needs the server's root URL",
                         hint=f"write --endpoint-url {m[1]}://{m[2]} and put the bucket and prefix in "
                              "s3://BUCKET/PREFIX")


def default_concurrency(cpus: int | None) -> int:
    """Parallel requests when none is configured: 2 per CPU, from 4 to 32.

    Each connection costs CPU in this process (HTTP parsing, hashing, writing); on a
    2-core machine 4 connections measured faster than 8 (scripts/bench.py), while
    larger machines on high-latency links need more in flight.
    """
    return min(32, max(4, 2 * (cpus or 1)))


def resolve(file_doc: Mapping[str, Any], env: Mapping[str, str], flags: Mapping[str, Any],
            source: str = "config", cpus: int | None = None) -> Settings:
    """Merge config-file values, ``S3SYNC_*`` environment and flags (highest wins).

    Args:
        file_doc: the parsed TOML config (``{}`` if there is none).
        env: environment variables (only ``S3SYNC_*`` keys are read).
        flags: values of flags the user gave (``None`` values are ignored).
        source: the config file's path, for error messages.
        cpus: CPUs of this machine, for the default concurrency.

    Raises:
        ConfigError: for an unknown or mistyped config-file field.
        UsageError: for a bad size or number in the environment or flags.
    """
    unknown = set(file_doc) - _FILE_KEYS
    if unknown:
        raise ConfigError(f"{source}: unknown field {sorted(unknown)[0]!r}")
    for key in ("bucket", "endpoint_url", "profile", "region"):
        if key in file_doc and not isinstance(file_doc[key], str):
            raise ConfigError(f"{source}: {key} must be a string, not {file_doc[key]!r}")
    merged: dict[str, Any] = {k: v for k, v in file_doc.items() if k != "catalog"}
    for var, key in _ENV_KEYS.items():
        if env.get(var):
            merged[key] = env[var]
    merged.update({k: v for k, v in flags.items() if v is not None})

    def num(key: str, default: int, low: int, high: int) -> int:
        raw = merged.get(key, default)
        try:
            if isinstance(raw, float | bool):
                raise TypeError
            value = int(raw)
        except (TypeError, ValueError):
            raise UsageError(f"{key}: {raw!r} is not a whole number") from None
        if not low <= value <= high:
            raise UsageError(f"{key}: {value} is outside [{low}, {high}]")
        return value

    chunk = parse_size(merged.get("chunk_size", DEFAULT_CHUNK_SIZE), "chunk size")
    if not MIN_CHUNK_SIZE <= chunk <= MAX_CHUNK_SIZE:
        raise UsageError(f"chunk size {format_size(chunk)} is outside {format_size(MIN_CHUNK_SIZE)} to "
                         f"{format_size(MAX_CHUNK_SIZE)}", hint="pick a chunk size such as 16MiB")
    part = parse_size(merged.get("part_size", DEFAULT_PART_SIZE), "part size")
    if part < chunk:
        raise UsageError(f"part size {format_size(part)} ({part} bytes) is smaller than the chunk size "
                         f"{format_size(chunk)} ({chunk} bytes)",
                         hint=f"a part holds whole chunks: make --part-size at least {format_size(chunk)}, "
                              "or --chunk-size smaller")
    if part > S3_MAX_OBJECT:
        raise UsageError(f"part size {format_size(part)} ({part} bytes) is larger than S3's largest object, "
                         f"{format_size(S3_MAX_OBJECT)}", hint="a part is one S3 object: pick a part size such as 10GiB")
    concurrency = num("concurrency", default_concurrency(cpus), 1, 256)
    transfer = TransferSettings(
        concurrency=concurrency,
        chunk_size=chunk,
        part_size=part,
        window=max(4, 2 * concurrency),
    )
    endpoint = merged.get("endpoint_url") or None
    if endpoint is not None:
        check_endpoint_url(str(endpoint))
    s3 = S3Settings(
        endpoint_url=endpoint,
        profile=merged.get("profile") or None,
        region=merged.get("region") or None,
        no_sign_request=bool(merged.get("no_sign_request", False)),
    )
    catalog_doc = file_doc.get("catalog", {})
    if not isinstance(catalog_doc, dict):
        raise ConfigError(f"{source}: 'catalog' must be a table of [catalog.NAME] entries")
    catalog = []
    for name, entry in catalog_doc.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("url"), str):
            raise ConfigError(f"{source}: [catalog.{name}] needs url = \"s3://BUCKET/PREFIX\"")
        if set(entry) != {"url"}:
            raise ConfigError(f"{source}: [catalog.{name}] has unknown field {sorted(set(entry) - {'url'})[0]!r}",
                              hint="a catalog entry has one field: url = \"s3://BUCKET/PREFIX\"")
        if not valid_name(name):
            raise ConfigError(f"{source}: [catalog.{name!r}] is not a valid dataset name", hint=NAME_RULE)
        parse_s3_url(entry["url"])
        catalog.append(CatalogOverride(name, entry["url"]))
    bucket = merged.get("bucket") or None
    return Settings(s3=s3, transfer=transfer, bucket=bucket, catalog=tuple(catalog))
