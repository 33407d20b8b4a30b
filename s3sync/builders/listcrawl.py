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
(as the pull's journal).

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
from collections.abc import Collection, Iterable, Iterator
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import captions as coco
from ..crawl import Crawler, CrawlSettings, Failed, Fetched, crawl
from ..errors import BuildError
from ..fsutil import write_atomic
from ..images import PLACEHOLDER_MD5S, ImageInfo, check_image
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


class _Journal:
    """The append-only resume journal (see the module docstring)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.records: dict[int, dict[str, Any]] = {}
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
        """Read every whole line; cut a torn last line off (a kill during a write)."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return
        except OSError as err:
            raise BuildError(f"{self.path}: cannot read the build journal ({err.strerror})") from err
        end = data.rfind(b"\n") + 1
        for line in data[:end].splitlines():
            try:
                rec = json.loads(line)
                self.records[int(rec["index"])] = rec
            except (ValueError, KeyError, TypeError):
                continue  # not ours or damaged: the item is simply done again
        if end < len(data):
            os.truncate(self.path, end)

    def add(self, rec: dict[str, Any]) -> None:
        self.records[rec["index"]] = rec
        self._file.write(json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
        self._pending += 1
        if self._pending >= JOURNAL_BATCH or time.monotonic() - self._last_flush >= JOURNAL_INTERVAL_S:
            self.flush()

    def flush(self, sync: bool = False) -> None:
        self._file.flush()
        if sync:
            os.fsync(self._file.fileno())
        self._pending = 0
        self._last_flush = time.monotonic()

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._file.close()


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
    """
    started = time.monotonic()
    settings = settings or CrawlSettings()
    progress = progress or NullProgress()
    stop = stop or threading.Event()
    meta = dest / META_DIR
    tmp = meta / TMP_DIR
    try:
        tmp.mkdir(parents=True, exist_ok=True)
        for leftover in tmp.iterdir():  # a killed run's half-written images
            leftover.unlink()
    except OSError as err:
        raise BuildError(f"{dest}: cannot create the build directory ({err.strerror})",
                         hint="check the path and its permissions") from err
    journal = _Journal(meta / JOURNAL_NAME)
    try:
        stored_names = {rec["file"] for rec in journal.records.values() if "file" in rec}
        orphans = _orphans(dest, stored_names)
        tally = _Tally(requested)
        progress.start(STAGE, requested)
        progress.start(FAILED_STAGE, 0)
        crawler = Crawler(settings, stop)
        lock = threading.Lock()

        def todo() -> Iterator[ListItem]:
            for item in items:
                rec = journal.records.get(item.index)
                if rec is not None and rec.get("url") == item.url and (
                        "file" in rec or not retry_failed or rec.get("permanent")):
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
            with lock:
                orphan = orphans.pop(item.stem, None)
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
        progress.finish(STAGE)
        progress.finish(FAILED_STAGE)
        images, failures = _write_outputs(dest, journal.records, description, url_field)
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
        # gets the same body, so the failure is permanent.
        return _Failure(item.index, item.url, info.reason, True)
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


def _orphans(dest: Path, stored: set[str]) -> dict[str, str]:
    """Files under ``dest`` that the journal does not name, by name less extension.

    Skips ``.s3sync/`` and the top-level outputs."""
    found: dict[str, str] = {}
    top_level = {coco.CAPTIONS_NAME, FAILURES_NAME}
    for root, dirs, files in os.walk(dest):
        rel_root = os.path.relpath(root, dest)
        if rel_root == ".":
            dirs[:] = [d for d in dirs if d != META_DIR]
            files = [f for f in files if f not in top_level]
        for name in files:
            rel = name if rel_root == "." else f"{rel_root.replace(os.sep, '/')}/{name}"
            if rel not in stored:
                found[rel.rsplit(".", 1)[0] if "." in name else rel] = rel
    return found


def _write_outputs(dest: Path, records: dict[int, dict[str, Any]], description: str,
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
    for index in sorted(records):
        rec = records[index]
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


