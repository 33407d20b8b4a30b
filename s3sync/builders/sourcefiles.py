"""A builder's source files (URL lists, caption lists, distribution archives): a local path
as it is, or an http(s) URL downloaded once into ``DIR/.s3sync/sources/``.

A download is kept under a name made of a digest of the whole URL (scheme, host, path and
query) and the URL's last path segment, ``<sha256[:16]>-<name>``, so that two URLs that end
the same (``.../u/list.txt`` and ``.../c/list.txt``, ``v1/urls.txt`` and ``v2/urls.txt``,
``?v=1`` and ``?v=2``) never share a file. Beside it, ``<that name>.source.json`` records
the URL, the answer's ``ETag`` and ``Last-Modified`` and the size (for a person looking at
the directory; a rerun over the same URL uses the kept file without asking the server
again: remove the file to fetch it again).
"""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

from ..crawl import CrawlSettings, download
from ..errors import BuildError, UsageError
from ..fsutil import write_atomic

RECORD_SUFFIX = ".source.json"
SOURCES_DIR = "sources"
"""Where downloads are kept, inside ``DIR/.s3sync/``."""


def check_selection(first: int, count: int | None) -> None:
    """Refuse a negative ``--first`` or ``--count``.

    Raises:
        UsageError: naming the option.
    """
    if first < 0:
        raise UsageError(f"--first {first}: must be 0 or more")
    if count is not None and count < 0:
        raise UsageError(f"--count {count}: must be 0 or more")


def sources_dir(dest: Path, meta_dir: str) -> Path:
    """``DIR/<meta_dir>/sources``, created.

    Raises:
        BuildError: it cannot be created.
    """
    sources = dest / meta_dir / SOURCES_DIR
    try:
        sources.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BuildError(f"{dest}: cannot create the build directory ({err.strerror})") from err
    return sources


def is_url(source: str) -> bool:
    """Whether ``source`` names an http(s) URL (else a local path)."""
    return source.startswith(("http://", "https://"))


def cached_name(url: str, default: str = "list.txt") -> str:
    """The file name a download of ``url`` is kept under (see the module docstring)."""
    digest = hashlib.sha256(url.encode("utf-8", "surrogateescape")).hexdigest()[:16]
    last = url.split("#", 1)[0].split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    if not last or last.startswith("."):
        last = default
    return f"{digest}-{last}"


def source_file(source: str, sources: Path, settings: CrawlSettings, stop: threading.Event | None,
                default: str = "list.txt") -> Path:
    """A local path for ``source``: itself, or its download in ``sources`` (kept for reruns).

    Args:
        source: a local path or an http(s) URL.
        sources: the directory downloads are kept in.
        settings: the downloader's timeouts and retries.
        stop: set it to stop a download.
        default: the name's tail when the URL has no last path segment.

    Raises:
        BuildError: a local file that does not exist, or a failed download.
        KeyboardInterrupt: ``stop`` was set during a download.
    """
    if not is_url(source):
        path = Path(source).expanduser()
        if not path.is_file():
            raise BuildError(f"{source}: no such file", hint="give a local file or an http(s):// URL")
        return path
    path = sources / cached_name(source, default)
    if not path.is_file():  # a download lands whole (temp + rename) or not at all
        got = download(source, path, settings, stop)
        record = {"url": source, "etag": got.etag, "last_modified": got.last_modified, "size": got.size}
        try:
            write_atomic(path.with_name(path.name + RECORD_SUFFIX), json.dumps(record, indent=1).encode() + b"\n",
                         sync=False)
        except OSError:
            pass  # only a note for people: the download itself is in place
    return path
