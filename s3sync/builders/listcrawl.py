"""Build a dataset by crawling a list of image URLs: the part SBU and ImageNet share.

Input: ``ListItem``s (line index, URL, captions, the image's file name less its extension).
Output, in ``DIR``::

    <stem>.<ext>              each image whose body is a whole image, bytes as served
    captions.json             COCO model (s3sync.captions): one image per stored item, id = index
    failures.tsv              index<TAB>url<TAB>reason, one line per failed item, after a header
    .s3sync/build-journal.jsonl   the resume journal (publish leaves .s3sync/ out)
    .s3sync/build.json        the build state record (``buildstate``): publish refuses DIR until it says complete
    .s3sync/tmp/              images being written (renamed into place when whole)

Resume is at URL granularity. The journal gets one JSON line per finished item, appended
by the main thread only after the worker that fetched the item has renamed its image into
place; lines are flushed in batches (every ``JOURNAL_BATCH`` items or ``JOURNAL_INTERVAL_S``
seconds) and on every exit, Ctrl-C included. So after ``kill -9`` the journal names only
images that are in place, and an image in place may lack its line (its batch was not yet
flushed): a rerun checks such a file again with ``images.check_image`` and keeps it (or
deletes it and fetches its URL again), never trusting it blindly. It does so only for an
index that an earlier run *claimed*: before handing out an item, the build appends (and
flushes) a ``{"claim": [lo, hi]}`` line covering the next ``CLAIM_SPAN`` indexes, so a file
at an image's place that no run claimed was not written by the build (a stranger planted in
a fresh DIR): it is moved to ``.s3sync/displaced/`` (with a warning) and the URL is fetched.
The same check runs for an index whose last line is a non-permanent failure (a killed
``--retry-failed`` run may have stored its image), with or without ``retry_failed``. A torn
last line is dropped; a whole line that is not a valid record is ignored (counted, shown with
-v). A rerun fetches no URL already stored or already failed (``retry_failed`` fetches
again the failures that were not permanent); a line whose URL changed since is fetched again,
and once its new result is in the journal the old URL's image is removed if it has another
name (another format) or the line now fails. A stored line whose captions changed (a
corrected caption list) is recorded again with the new captions after its image on disk is
checked again, without fetching it.
The journal protects against the process dying, not against the OS losing unsynced data
(as the pull's journal). In memory it costs about 110 bytes a line (a million-line journal
loads in about 4 s); the records are read back from the file only to write the outputs.

``captions.json`` and ``failures.tsv`` are written at the end, atomically, from the whole
journal (all selections built into ``DIR`` so far, in index order); a run that is
interrupted does not write them, so a half-built ``DIR`` has no ``captions.json`` that
could pass for complete.
"""

from __future__ import annotations

import bisect
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

from .. import buildstate
from .. import captions as coco
from ..crawl import Crawler, CrawlSettings, Failed, Fetched, crawl
from ..errors import BuildError, Interrupted
from ..fsutil import write_atomic
from ..images import PLACEHOLDER_MD5S, REASON_TRUNCATED, ImageInfo, check_image
from ..progress import NullProgress, Progress

META_DIR = ".s3sync"  # archive.METADATA_DIR: left out of a publish
JOURNAL_NAME = "build-journal.jsonl"
TMP_DIR = "tmp"
DISPLACED_DIR = "displaced"
"""Under ``.s3sync/``: files found where the build writes an image, that it did not write."""
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
class _Job:
    """An item to do; ``orphan``: an image on disk without a journal line (relative to
    DIR), adopted after a check if ``adopt``, else moved aside (not this build's)."""

    item: ListItem
    orphan: str | None = None
    adopt: bool = False


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
_CAPTIONS_SHIFT = _URL_SHIFT + _URL_BITS
_KEY_MASK = (1 << _URL_BITS) - 1
CLAIM_SPAN = 256
"""Indexes claimed by one ``claim`` line (see ``_Journal.claim``)."""


def _captions_key(captions: Iterable[str]) -> int:
    """28 bits of the captions' CRC-32: enough to notice that a caption list changed."""
    text = "\x1f".join(captions)
    return zlib.crc32(text.encode("utf-8", "surrogateescape")) & _KEY_MASK


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
        # index -> captions_key << _CAPTIONS_SHIFT | url_key << _URL_SHIFT | offset << 2 | state
        self._entries: dict[int, int] = {}
        self._claims: list[tuple[int, int]] = []  # [lo, hi) ranges, sorted, merged
        self._lock = threading.RLock()  # claims are written from the crawl's worker threads
        self._size = 0
        self.damaged = 0  # whole lines that are not records (skipped)
        self._load()
        self._earlier_claims = self._claims  # what runs before this one claimed
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
                if line.startswith(b'{"claim":'):
                    claim = _parse_claim(line)
                    if claim is not None:
                        self._add_claim(*claim)
                    else:
                        self.damaged += 1
                    offset += len(line)
                    continue
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
        captions = _captions_key(rec["captions"]) if state == _STORED else 0
        self._entries[rec["index"]] = (captions << _CAPTIONS_SHIFT | _url_key(rec["url"]) << _URL_SHIFT
                                       | offset << 2 | state)

    def lookup(self, item: ListItem) -> tuple[int, bool, bool] | None:
        """``(state, same URL, same captions)`` of the item's last line, or None if it has none."""
        entry = self._entries.get(item.index)
        if entry is None:
            return None
        same_url = entry >> _URL_SHIFT & _KEY_MASK == _url_key(item.url)
        return entry & 3, same_url, entry >> _CAPTIONS_SHIFT == _captions_key(item.captions)

    def claim(self, index: int) -> None:
        """Record (in the file, before returning) that this build may write the image of
        ``index``: a rerun adopts an image found on disk without a journal line only for a
        claimed index (one this build wrote just before a kill), never a file it did not
        write. One line claims ``CLAIM_SPAN`` indexes from ``index``.

        Raises:
            BuildError: the journal cannot grow.
        """
        if self.claimed(index):
            return
        with self._lock:
            line = b'{"claim":[%d,%d]}\n' % (index, index + CLAIM_SPAN)
            try:
                self._file.write(line)
            except OSError as err:
                raise self._write_error(err) from err
            self._size += len(line)
            self.flush()  # in the file before any image of these indexes is renamed into place
            self._add_claim(index, index + CLAIM_SPAN)

    def claimed(self, index: int, earlier: bool = False) -> bool:
        """Whether a ``claim`` line covers ``index`` (with ``earlier``: one written before
        this run: only an earlier run can have left an image without its journal line)."""
        claims = self._earlier_claims if earlier else self._claims
        at = bisect.bisect_right(claims, (index, 1 << 62)) - 1
        return at >= 0 and claims[at][0] <= index < claims[at][1]

    def _add_claim(self, lo: int, hi: int) -> None:
        merged: list[tuple[int, int]] = []
        for a, b in sorted([*self._claims, (lo, hi)]):
            if merged and a <= merged[-1][1]:
                merged[-1] = (merged[-1][0], max(merged[-1][1], b))
            else:
                merged.append((a, b))
        self._claims = merged

    def stored_file(self, index: int) -> str | None:
        """The file of the index's last line if that line says stored (read back from the
        file: main thread only), else None."""
        entry = self._entries.get(index)
        if entry is None or entry & 3 != _STORED:
            return None
        self.flush()
        with open(self.path, "rb") as f:
            f.seek(entry >> 2 & (1 << _OFFSET_BITS) - 1)
            rec = _parse(f.readline())
        return None if rec is None else rec["file"]

    def done(self, index: int, url: str, retry_failed: bool) -> bool:
        """Whether the item needs no fetch: stored, or failed (for good, or at all unless
        ``retry_failed``), under the same URL."""
        entry = self._entries.get(index)
        if entry is None or entry >> _URL_SHIFT & _KEY_MASK != _url_key(url):
            return False
        state = entry & 3
        return state != _FAILED_FOR_NOW or not retry_failed

    def add(self, rec: dict[str, Any]) -> None:
        line = json.dumps(rec, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogateescape") + b"\n"
        with self._lock:
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
        with self._lock:
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


def _parse_claim(line: bytes) -> tuple[int, int] | None:
    """A ``{"claim": [lo, hi]}`` line's range, or None."""
    try:
        rec = json.loads(line)
        lo, hi = rec["claim"]
    except (ValueError, TypeError, KeyError):
        return None
    return (lo, hi) if _is_int(lo) and _is_int(hi) and 0 <= lo < hi else None


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class _OnDisk:
    """Image files already in a directory, by name less extension, listed on first use:
    how a rerun finds the images a killed run renamed into place but did not journal."""

    def __init__(self, dest: Path) -> None:
        self._dest = dest
        self._lock = threading.Lock()
        self._dirs: dict[str, dict[str, str]] = {}

    def put_back(self, stem: str, name: str) -> None:
        """Undo ``take`` (the file stays where it is, unused)."""
        parent, _, base = stem.rpartition("/")
        with self._lock:
            self._dirs.setdefault(parent, {})[base] = name.rpartition("/")[2]

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
                    retry_failed: bool = False, builder: str = "list",
                    placeholders: Collection[str] = PLACEHOLDER_MD5S,
                    progress: Progress | None = None, stop: threading.Event | None = None) -> ListBuildResult:
    """Crawl ``items`` into ``dest``; see the module docstring for the layout and resume rules.

    Args:
        dest: the dataset directory (created if missing).
        items: the selected items, in index order, each index once.
        requested: how many ``items`` there are (for progress).
        description: ``info.description`` of ``captions.json``.
        settings: the crawler's settings (default ``CrawlSettings()``).
        url_field: the images' field that holds the source URL (``flickr_url`` as COCO's).
        builder: the builder's name for the build state record (``sbu``, ``imagenet``).
        retry_failed: fetch again the items whose failure was not permanent.
        placeholders: MD5 digests of bodies refused as placeholders (``images.check_image``).
        progress: stages ``crawl`` and ``failed``, counted in items (``progress.ITEM_STAGES``).
        stop: set it to stop the crawl (what Ctrl-C does).

    Returns:
        The run's tally.

    Raises:
        BuildError: ``dest`` cannot be written, another build holds its journal, or it holds
            a ``captions.json`` or ``failures.tsv`` no build of ``dest`` wrote.
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
        state = buildstate.begin(dest, builder, (coco.CAPTIONS_NAME, FAILURES_NAME))
        # While a run is under way DIR holds no captions.json or failures.tsv: an earlier run's
        # would look complete beside images it does not list. They are written again, from the
        # whole journal, at the end; the earlier ones stay in .s3sync/ as previous-*.
        for name in (coco.CAPTIONS_NAME, FAILURES_NAME):
            try:
                if os.path.lexists(dest / name):
                    os.replace(dest / name, meta / f"previous-{name}")
            except OSError as err:
                raise BuildError(f"{dest / name}: cannot move aside ({err.strerror})") from err
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

        def plan(item: ListItem) -> _Job | None:
            """What to do for an item: None if nothing (done by an earlier run)."""
            if item.failure:
                return None if journal.done(item.index, item.url, retry_failed) else _Job(item)
            seen = journal.lookup(item)
            if seen is not None:
                state, same_url, same_captions = seen
                if not same_url:
                    # Fetched again; the old URL's image is removed when the new result is
                    # recorded (main loop).
                    journal.claim(item.index)
                    return _Job(item)
                if state == _STORED:
                    if same_captions:
                        return None
                    # The captions changed (a corrected list): the image on disk is checked
                    # again and recorded with them, not fetched (unless it is gone or bad).
                    return _Job(item, on_disk.take(item.stem), adopt=True)
                if state == _FAILED_FOR_GOOD:
                    return None
                # Failed for now: a --retry-failed run killed before its journal batch may have
                # left the image in place (claimed): adopt it, whatever this run's options.
                orphan = on_disk.take(item.stem)
                if orphan is not None and journal.claimed(item.index, earlier=True):
                    return _Job(item, orphan, adopt=True)
                if not retry_failed:
                    if orphan is not None:
                        on_disk.put_back(item.stem, orphan)
                    return None
                journal.claim(item.index)
                return _Job(item, orphan, adopt=False)
            orphan = on_disk.take(item.stem)
            adopt = journal.claimed(item.index, earlier=True)  # else the file is not this build's: moved aside
            journal.claim(item.index)
            return _Job(item, orphan, adopt)

        def todo() -> Iterator[_Job]:
            for item in items:
                job = plan(item)
                if job is None:
                    tally.skipped += 1
                    continue
                if tally.skipped != tally.reported_skips:
                    tally.reported_skips = tally.skipped
                    progress.start(STAGE, requested - tally.skipped)
                yield job
            if tally.skipped != tally.reported_skips:
                progress.start(STAGE, requested - tally.skipped)

        def work(job: _Job) -> _Stored | _Failure:
            item, orphan = job.item, job.orphan
            if item.failure:
                return _Failure(item.index, item.url, item.failure, True)
            if orphan is not None:
                if job.adopt:
                    kept = _recover(dest, item, orphan, placeholders)
                    if kept is not None:
                        return kept
                else:
                    moved = _move_aside(dest, meta / DISPLACED_DIR, orphan)
                    progress.message(f"warning: {dest / orphan} was not written by this build: moved to {moved}")
            got = crawler.fetch(item.url)
            if isinstance(got, Failed):
                return _Failure(item.index, item.url, got.reason, got.permanent)
            return _keep(dest, tmp, item, got, placeholders)

        try:
            with closing(crawl(todo(), work, settings.threads, stop)) as results:
                for result in results:
                    old = journal.stored_file(result.index)
                    journal.add(_record(result))
                    if old is not None and old != getattr(result, "file_name", None):
                        # The line's new result replaces an image of another name (its URL
                        # changed): removed once the new line is in the journal file.
                        journal.flush()
                        (dest / old).unlink(missing_ok=True)
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
        buildstate.finish(state)
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


def _move_aside(dest: Path, displaced: Path, name: str) -> Path:
    """Move ``dest/name`` (a file this build did not write, where it would write one) to
    ``displaced/name``, keeping any earlier one there; return where it went.

    Raises:
        BuildError: it cannot be moved.
    """
    target = displaced / name
    n = 1
    while target.exists():
        target = displaced / f"{name}.{n}"
        n += 1
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(dest / name, target)
    except OSError as err:
        raise BuildError(f"{dest / name}: cannot move it aside to {target} ({err.strerror})",
                         hint="move or remove the file yourself, then run the same command again") from err
    return target


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
