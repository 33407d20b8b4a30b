"""Build a dataset by crawling a list of image URLs: the part SBU and ImageNet share.

Input: ``ListItem``s (line index, URL, captions, the image's file name less its extension).
Output, in ``DIR``::

    <stem>.<ext>              each image whose body is a whole image, bytes as served
    captions.json             COCO model (s3sync.captions): one image per stored item, id = index
    failures.tsv              index<TAB>url<TAB>reason, one line per failed item, after a header
    .s3sync/build-journal.jsonl   the resume journal (publish leaves .s3sync/ out)
    .s3sync/tmp/              images being written (renamed into place when whole)

Resume is at URL granularity. The journal gets one JSON line per finished item, appended
by the main thread only after the worker that fetched the item has renamed its image into
place; lines are flushed in batches (every ``JOURNAL_BATCH`` items or ``JOURNAL_INTERVAL_S``
seconds) and on every exit, Ctrl-C included. So after ``kill -9`` the journal names only
images that are in place, and an image in place may lack its line (its batch was not yet
flushed): a rerun checks such a file again with ``images.check_image`` and keeps it (or
deletes it and fetches its URL again), never trusting it blindly. A torn last line is
dropped. A rerun fetches no URL already stored or already failed (``retry_failed`` fetches
again the failures that were not permanent); a line whose URL changed since is fetched again.
The journal protects against the process dying, not against the OS losing unsynced data
(as the pull's journal). In memory it costs about 110 bytes a line (a million-line journal
loads in about 4 s); the records are read back from the file only to write the outputs.

``captions.json`` and ``failures.tsv`` are written at the end, atomically, from the whole
journal (all selections built into ``DIR`` so far, in index order); a run that is
interrupted does not write them, so a half-built ``DIR`` has no ``captions.json`` that
could pass for complete.
"""

from __future__ import annotations

import fcntl
import json
import os
import threading
import time
import zlib
from collections.abc import Collection, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import captions as coco
from ..crawl import Crawler, CrawlSettings, Failed, Fetched, crawl
from ..errors import BuildError, Interrupted
from ..fsutil import write_atomic
from ..images import PLACEHOLDER_MD5S, REASON_TRUNCATED, ImageInfo, check_image
from ..progress import NullProgress, Progress

META_DIR = ".s3sync"  # archive.METADATA_DIR: left out of a publish
JOURNAL_NAME = "build-journal.jsonl"
TMP_DIR = "tmp"
FAILURES_NAME = "failures.tsv"
FAILURES_HEADER = "index\turl\treason"
JOURNAL_BATCH = 256
JOURNAL_INTERVAL_S = 1.0
STAGE = "crawl"
"""Progress stage: one unit per item of the selection done (stored or failed)."""
FAILED_STAGE = "failed"
"""Progress stage: one unit per item that failed."""


@dataclass(frozen=True, slots=True)
class ListItem:
    """One line of a URL list.

    Attributes:
        index: 0-based line number in the list; the image's ``id`` in ``captions.json``.
        url: the image's URL as listed.
        captions: its captions (one for SBU).
        stem: where the image goes, relative to ``DIR``, ``/``-separated, without extension
            (``images/0000/0000123``); the extension comes from the detected format.
        failure: a reason to record this line as failed for good without fetching anything
            (ImageNet's ``bad line``: a line that cannot be decoded or parsed); "" to fetch.
    """

    index: int
    url: str
    captions: tuple[str, ...]
    stem: str
    failure: str = ""


@dataclass(frozen=True, slots=True)
class ListBuildResult:
    """What one run of ``build_from_list`` did.

    Attributes:
        dest: the dataset directory.
        requested: items in the selection.
        stored: images stored by this run (fetched, or found whole on disk without a journal line).
        recovered: of ``stored``, the images found on disk after an interruption and kept.
        failed: items that failed in this run, by reason (``http 404``: 12, ...).
        skipped: items already done (stored or failed) by an earlier run.
        images: images in ``captions.json`` (every run so far).
        failures: lines in ``failures.tsv`` (every run so far).
        elapsed_s: seconds.
    """

    dest: Path
    requested: int
    stored: int
    recovered: int
    failed: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    images: int = 0
    failures: int = 0
    elapsed_s: float = 0.0

    @property
    def failed_total(self) -> int:
        return sum(self.failed.values())


@dataclass(frozen=True, slots=True)
class _Stored:
    index: int
    url: str
    file_name: str
    width: int
    height: int
    captions: tuple[str, ...]
    recovered: bool = False


@dataclass(frozen=True, slots=True)
class _Failure:
    index: int
    url: str
    reason: str
    permanent: bool


_STORED, _FAILED_FOR_GOOD, _FAILED_FOR_NOW = 0, 1, 2
_URL_BITS = 28
_OFFSET_BITS = 38  # a journal of up to 256 GiB
_URL_SHIFT = _OFFSET_BITS + 2


def _url_key(url: str) -> int:
    """28 bits of the URL's CRC-32: enough to notice that a list line changed between runs."""
    return zlib.crc32(url.encode("utf-8", "surrogateescape")) & ((1 << _URL_BITS) - 1)


class _Journal:
    """The append-only resume journal (see the module docstring).

    In memory it keeps one int per index, not the records: the offset of the index's last
    line in the file, its state (stored, failed for good, failed for now) and a short key
    of its URL (about 100 bytes an index instead of 1.5 KB: a million-line SBU build would
    otherwise hold 1.5 GB for days). The records themselves are read again from the file
    when the outputs are written.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._entries: dict[int, int] = {}  # index -> url_key << _URL_SHIFT | offset << 2 | state
        self._size = 0
        self.damaged = 0  # whole lines that are not records (skipped)
        self._load()
        self._file = open(path, "ab")  # noqa: SIM115 - closed by close()
        try:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            self._file.close()
            raise BuildError(f"{path.parent.parent}: another build is running into this directory",
                             hint="wait for it to finish, or build into another directory") from err
        self._pending = 0
        self._last_flush = time.monotonic()

    def _load(self) -> None:
        """Index every whole line; cut a torn last line off (a kill during a write)."""
        try:
            f = open(self.path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            return
        except OSError as err:
            raise BuildError(f"{self.path}: cannot read the build journal ({err.strerror})") from err
        offset = 0
        with f:
            for line in f:
                if not line.endswith(b"\n"):
                    break  # torn
                rec = _parse(line)
                if rec is not None:
                    self._index(rec, offset)
                else:
                    self.damaged += 1
                offset += len(line)
        self._size = offset
        if offset < self.path.stat().st_size:
            os.truncate(self.path, offset)

    def _index(self, rec: dict[str, Any], offset: int) -> None:
        state = _STORED if "file" in rec else _FAILED_FOR_GOOD if rec.get("permanent") else _FAILED_FOR_NOW
        self._entries[rec["index"]] = _url_key(rec["url"]) << _URL_SHIFT | offset << 2 | state

    def done(self, index: int, url: str, retry_failed: bool) -> bool:
        """Whether the item needs no fetch: stored, or failed (for good, or at all unless
        ``retry_failed``), under the same URL."""
        entry = self._entries.get(index)
        if entry is None or entry >> _URL_SHIFT != _url_key(url):
            return False
        state = entry & 3
        return state != _FAILED_FOR_NOW or not retry_failed

    def known(self, index: int) -> bool:
        """Whether the journal has a line for ``index``."""
        return index in self._entries

    def add(self, rec: dict[str, Any]) -> None:
        line = json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogateescape") + b"\n"
        try:
            self._file.write(line)
        except OSError as err:
            raise self._write_error(err) from err
        self._index(rec, self._size)
        self._size += len(line)
        self._pending += 1
        if self._pending >= JOURNAL_BATCH or time.monotonic() - self._last_flush >= JOURNAL_INTERVAL_S:
            self.flush()

    def records(self) -> Iterator[dict[str, Any]]:
        """The last record of every index, in index order, read back from the file one line
        at a time (lines are nearly in index order, so the seeks are short and mostly inside
        the read buffer)."""
        self.flush()
        mask = (1 << _OFFSET_BITS) - 1
        offsets = [entry >> 2 & mask for _, entry in sorted(self._entries.items())]
        with open(self.path, "rb") as f:
            for offset in offsets:
                f.seek(offset)
                rec = _parse(f.readline())
                if rec is not None:
                    yield rec

    def flush(self, sync: bool = False) -> None:
        """Hand the buffered lines to the OS (and to the disk with ``sync``).

        Raises:
            BuildError: the journal cannot grow (ENOSPC, EFBIG, EIO...).
        """
        try:
            self._file.flush()
            if sync:
                os.fsync(self._file.fileno())
        except OSError as err:
            raise self._write_error(err) from err
        self._pending = 0
        self._last_flush = time.monotonic()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            try:
                self._file.close()
            except OSError:
                pass  # the same failure, already raised by flush()

    def _write_error(self, err: OSError) -> BuildError:
        return BuildError(f"{self.path}: cannot write the build journal ({err.strerror or err})",
                          hint="free some space (or raise the file size limit), then run the same command "
                               "again: it resumes")


def _parse(line: bytes) -> dict[str, Any] | None:
    """A journal line's record, or None if it is not one of ours (damaged or edited by hand:
    the index is then as if that line were absent, and is fetched again unless an earlier
    line covers it). A stored record has ``file``, ``width``, ``height`` and ``captions``;
    a failure ``reason`` and ``permanent``."""
    try:
        rec = json.loads(line)
    except ValueError:
        return None
    if not (isinstance(rec, dict) and _is_int(rec.get("index")) and rec["index"] >= 0
            and isinstance(rec.get("url"), str)):
        return None
    if "file" in rec:
        ok = (isinstance(rec["file"], str) and _is_int(rec.get("width")) and _is_int(rec.get("height"))
              and isinstance(rec.get("captions"), list) and all(isinstance(c, str) for c in rec["captions"]))
    else:
        ok = isinstance(rec.get("reason"), str) and isinstance(rec.get("permanent"), bool)
    return rec if ok else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _OnDisk:
    """Image files already in a directory, by name less extension, listed on first use:
    how a rerun finds the images a killed run renamed into place but did not journal."""

    def __init__(self, dest: Path) -> None:
        self._dest = dest
        self._lock = threading.Lock()
        self._dirs: dict[str, dict[str, str]] = {}

    def take(self, stem: str) -> str | None:
        """The file (relative to ``dest``) named ``stem.EXT``, if any; each stem is asked once."""
        parent, _, base = stem.rpartition("/")
        with self._lock:
            names = self._dirs.get(parent)
            if names is None:
                names = {}
                try:
                    with os.scandir(self._dest / parent) as it:
                        for e in it:
                            if e.is_file(follow_symlinks=False) and "." in e.name:
                                names[e.name.rsplit(".", 1)[0]] = e.name
                except (FileNotFoundError, NotADirectoryError):
                    pass
                self._dirs[parent] = names
            name = names.pop(base, None)
        return None if name is None else (f"{parent}/{name}" if parent else name)


def select(items: Iterable[ListItem], first: int = 0, count: int | None = None) -> Iterator[ListItem]:
    """The items with ``first <= index < first + count`` (``count`` None: to the end)."""
    for item in items:
        if item.index < first:
            continue
        if count is not None and item.index >= first + count:
            return
        yield item


def build_from_list(dest: Path, items: Iterable[ListItem], requested: int, *, description: str,
                    settings: CrawlSettings | None = None, url_field: str = "flickr_url",
                    retry_failed: bool = False, placeholders: Collection[str] = PLACEHOLDER_MD5S,
                    progress: Progress | None = None, stop: threading.Event | None = None) -> ListBuildResult:
    """Crawl ``items`` into ``dest``; see the module docstring for the layout and resume rules.

    Args:
        dest: the dataset directory (created if missing).
        items: the selected items, in index order, each index once.
        requested: how many ``items`` there are (for progress).
        description: ``info.description`` of ``captions.json``.
        settings: the crawler's settings (default ``CrawlSettings()``).
        url_field: the images' field that holds the source URL (``flickr_url`` as COCO's).
        retry_failed: fetch again the items whose failure was not permanent.
        placeholders: MD5 digests of bodies refused as placeholders (``images.check_image``).
        progress: stages ``crawl`` and ``failed``, counted in items (``progress.ITEM_STAGES``).
        stop: set it to stop the crawl (what Ctrl-C does).

    Returns:
        The run's tally.

    Raises:
        BuildError: ``dest`` cannot be written, or another build holds its journal.
        CaptionsError: the captions document does not hold together (a bug, or files removed
            from ``dest`` during the build).
        KeyboardInterrupt: after flushing the journal; ``captions.json`` is not written.
        Interrupted: ``stop`` was set (likewise).
    """
    started = time.monotonic()
    settings = settings or CrawlSettings()
    progress = progress or NullProgress()
    stop = stop or threading.Event()
    meta = dest / META_DIR
    tmp = meta / TMP_DIR
    try:
        tmp.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise BuildError(f"{dest}: cannot create the build directory ({err.strerror})",
                         hint="check the path and its permissions") from err
    journal = _Journal(meta / JOURNAL_NAME)  # locks DIR against a second build
    try:
        if journal.damaged:
            progress.message(f"{journal.path}: {journal.damaged:,} damaged line(s) ignored (their items are "
                             f"fetched again unless an earlier line covers them)")
        try:
            for leftover in tmp.iterdir():  # a killed run's half-written images
                leftover.unlink()
        except OSError as err:
            raise BuildError(f"{tmp}: cannot clean up ({err.strerror})") from err
        on_disk = _OnDisk(dest)
        tally = _Tally(requested)
        progress.start(STAGE, requested)
        progress.start(FAILED_STAGE, 0)
        crawler = Crawler(settings, stop)

        def todo() -> Iterator[ListItem]:
            for item in items:
                if journal.done(item.index, item.url, retry_failed):
                    tally.skipped += 1
                    continue
                if tally.skipped != tally.reported_skips:
                    tally.reported_skips = tally.skipped
                    progress.start(STAGE, requested - tally.skipped)
                yield item
            if tally.skipped != tally.reported_skips:
                progress.start(STAGE, requested - tally.skipped)

        def work(item: ListItem) -> _Stored | _Failure:
            if item.failure:
                return _Failure(item.index, item.url, item.failure, True)
            # Only an index the journal has never seen can have an unrecorded image on disk
            # (a journaled one whose URL changed has the old URL's image there).
            orphan = None if journal.known(item.index) else on_disk.take(item.stem)
            if orphan is not None:
                kept = _recover(dest, item, orphan, placeholders)
                if kept is not None:
                    return kept
            got = crawler.fetch(item.url)
            if isinstance(got, Failed):
                return _Failure(item.index, item.url, got.reason, got.permanent)
            return _keep(dest, tmp, item, got, placeholders)

        try:
            with closing(crawl(todo(), work, settings.threads, stop)) as results:
                for result in results:
                    journal.add(_record(result))
                    tally.count(result)
                    progress.advance(STAGE, 1)
                    if isinstance(result, _Failure):
                        progress.advance(FAILED_STAGE, 1)
        finally:
            crawler.close()
            journal.flush()
        if stop.is_set():
            raise Interrupted(f"{dest}: the build was stopped; {tally.stored:,} images stored so far are kept",
                              hint="run the same command again: the build resumes")
        progress.finish(STAGE)
        progress.finish(FAILED_STAGE)
        images, failures = _write_outputs(dest, journal.records(), description, url_field)
        journal.flush(sync=True)
    finally:
        journal.close()
    return ListBuildResult(dest, requested, tally.stored, tally.recovered, dict(sorted(tally.failed.items())),
                           tally.skipped, images, failures, time.monotonic() - started)


class _Tally:
    def __init__(self, requested: int) -> None:
        self.requested = requested
        self.stored = 0
        self.recovered = 0
        self.failed: dict[str, int] = {}
        self.skipped = 0
        self.reported_skips = 0

    def count(self, result: _Stored | _Failure) -> None:
        if isinstance(result, _Stored):
            self.stored += 1
            self.recovered += result.recovered
        else:
            self.failed[result.reason] = self.failed.get(result.reason, 0) + 1


def _record(result: _Stored | _Failure) -> dict[str, Any]:
    if isinstance(result, _Stored):
        return {"index": result.index, "url": result.url, "file": result.file_name, "width": result.width,
                "height": result.height, "captions": list(result.captions)}
    return {"index": result.index, "url": result.url, "reason": result.reason, "permanent": result.permanent}


def _keep(dest: Path, tmp: Path, item: ListItem, got: Fetched,
          placeholders: Collection[str]) -> _Stored | _Failure:
    """Check a fetched body; store a whole image at ``<stem>.<ext>`` (temp file, rename).

    Raises:
        BuildError: the image cannot be written (ENOSPC, permissions).
    """
    info = check_image(got.data, placeholders)
    if not isinstance(info, ImageInfo):
        # Served as it is on purpose (an HTML page, a placeholder, a cut file): asking again
        # gets the same body, so the failure is permanent; except a cut image whose transfer
        # had no known end (no Content-Length, not chunked): the network may have cut it.
        cut_in_transit = info.reason == REASON_TRUNCATED and not got.framed
        return _Failure(item.index, item.url, info.reason, not cut_in_transit)
    name = f"{item.stem}.{info.extension}"
    target = dest / name
    part = tmp / f"{item.index}.part"
    try:
        with open(part, "wb") as f:
            f.write(got.data)
        try:
            os.replace(part, target)
        except FileNotFoundError:
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(part, target)
    except OSError as err:
        part.unlink(missing_ok=True)
        raise BuildError(f"{target}: cannot write the image ({err.strerror})",
                         hint="free some space or fix the permissions, then run the same command again; "
                              "it resumes") from err
    return _Stored(item.index, item.url, name, info.width, info.height, item.captions)


def _recover(dest: Path, item: ListItem, orphan: str, placeholders: Collection[str]) -> _Stored | None:
    """An image found on disk without a journal line (written just before a kill): kept if
    it is whole and has the name its format gives; else deleted, so it is fetched again."""
    path = dest / orphan
    try:
        data = path.read_bytes()
    except OSError:
        return None
    info = check_image(data, placeholders)
    if isinstance(info, ImageInfo) and orphan == f"{item.stem}.{info.extension}":
        return _Stored(item.index, item.url, orphan, info.width, info.height, item.captions, recovered=True)
    path.unlink(missing_ok=True)
    return None


def _write_outputs(dest: Path, records: Iterable[dict[str, Any]], description: str,
                   url_field: str) -> tuple[int, int]:
    """Write ``captions.json`` and ``failures.tsv`` from the journal's records; return their
    counts (images, failures).

    Raises:
        CaptionsError: the document does not hold together (``captions.check``).
        BuildError: a file cannot be written.
    """
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    lines = [FAILURES_HEADER]
    for rec in records:
        index = rec["index"]
        if "file" in rec:
            images.append({"id": index, "file_name": rec["file"], url_field: rec["url"],
                           "width": rec["width"], "height": rec["height"]})
            for caption in rec.get("captions") or ():
                annotations.append({"id": len(annotations), "image_id": index, "caption": caption})
        else:
            url = rec["url"].replace("\t", "%09").replace("\n", "%0A").replace("\r", "%0D")
            lines.append(f"{index}\t{url}\t{rec['reason']}")
    doc = coco.new_document(description, images, annotations)
    coco.check(doc, coco.CAPTIONS_NAME, exists=lambda name: os.path.isfile(dest / name))
    try:
        write_atomic(dest / FAILURES_NAME, ("\n".join(lines) + "\n").encode("utf-8"))
        write_atomic(dest / coco.CAPTIONS_NAME, coco.dumps(doc))
    except OSError as err:
        raise BuildError(f"{dest}: cannot write {coco.CAPTIONS_NAME} or {FAILURES_NAME} ({err.strerror})") from err
    return len(images), len(lines) - 1


UTF8_BOM = b"\xef\xbb\xbf"


def without_bom(lines: Iterable[bytes]) -> Iterator[bytes]:
    """The lines of a file, the first without a leading UTF-8 byte order mark (which some
    editors write, Notepad for one: it is not part of the first line's URL or caption)."""
    it = iter(lines)
    for first in it:
        yield first.removeprefix(UTF8_BOM)
        break
    yield from it
