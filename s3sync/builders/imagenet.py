"""``s3sync build imagenet``: ImageNet images crawled from a ``fall11_urls.txt``-style list.

The list (image-net.org's ``imagenet_fall11_urls.tgz`` holds ``fall11_urls.txt``: 14,197,121
lines) has one image a line, ``WNID_N<TAB>URL``: ``WNID`` the WordNet synset (``n`` and eight
digits), ``N`` the image's number in it (``n00004475_6590<TAB>http://farm4.static.flickr.com/...``).
It is read as a stream, never held in memory: a scan (line count, lines per synset,
duplicates; its result is kept in ``DIR/.s3sync/sources/`` for reruns over the same file),
a count of the selected lines, then the crawl. ``--urls`` may also name the ``.tgz`` itself
(its ``fall11_urls.txt`` is copied out once into ``DIR/.s3sync/sources/``). Not every line
is valid UTF-8, and some URLs hold non-ASCII characters (the crawler percent-quotes those).

A line that cannot be decoded as UTF-8, or does not have the form ``WNID_N<TAB>URL`` (with
``N`` decimal digits and a non-empty URL), is a *bad line*: it is never fetched and never
stops the build; it is recorded like a failed URL, with reason ``bad line`` in
``failures.tsv`` (the ``url`` column then holds the whole line as read, undecodable bytes as
``\\xNN``), counted in the result (with its first line numbers) and not fetched again by a
rerun. A valid line repeating the ``WNID_N`` of an earlier valid line of the list would
overwrite its image: it is recorded with reason ``duplicate`` instead (the first one wins,
whatever the selection, so runs over different selections agree). Duplicates are found by the
scan with the memory of one synset's numbers at a time when the list is grouped by synset
(as ``fall11_urls.txt`` is); synsets whose lines are scattered take a second pass holding
their numbers.

Selection: ``first``/``count`` are 0-based line numbers, as for SBU; ``wnids`` keeps only the
lines of those synsets (e.g. the 1,000 ILSVRC-2012 classes). A bad line whose synset cannot
be read is kept by any ``wnids`` (it is reported, not silently dropped).

Layout, in ``DIR``::

    WNID/WNID_N.EXT           the image of line WNID_N (EXT from the detected format, jpg mostly)
    WNID/BBBB/WNID_N.EXT      the same, for a synset with more than PER_DIR lines in the list:
                              BBBB = N // PER_DIR (four digits), so no directory holds more than
                              PER_DIR images (names are unique, so each bucket holds at most
                              PER_DIR numbers). Decided from the whole list's line counts, so it
                              does not depend on the selection and stays the same on a rerun.
    captions.json             COCO model: image ``id`` = the 0-based line number, ``file_name``
                              relative to DIR, ``url`` = the source URL, width, height; one
                              annotation per image whose ``caption`` is the synset's words from
                              ``words.txt`` (``WNID<TAB>words``), or the WNID itself when no words
                              file is given or it lacks the synset (every image needs a caption).
    failures.tsv              index, url, reason (header line first)

Resume, atomic writes, ``failures.tsv`` and the journal: as ``builders.listcrawl``.
"""

from __future__ import annotations

import itertools
import json
import re
import threading
from collections import Counter
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from .. import archive
from ..crawl import CrawlSettings
from ..errors import BuildError, UsageError
from ..fsutil import write_atomic
from ..images import PLACEHOLDER_MD5S
from ..progress import Progress
from .listcrawl import (
    META_DIR,
    UTF8_BOM,
    ListBuildResult,
    ListItem,
    build_from_list,
    without_bom,
)
from .sourcefiles import check_selection, source_file, sources_dir

PER_DIR = 10_000
"""Most images in one directory; a synset with more lines than this gets sub-directories."""
SCAN_NAME = "imagenet-scan.json"
"""The scan's result, kept in ``DIR/.s3sync/sources/`` for reruns over the same list."""
DESCRIPTION = "ImageNet (image-net.org) images from its URL list, built by s3sync build imagenet"
URL_MEMBERS = ("fall11_urls.txt", "winter11_urls.txt")
"""The URL list's name inside image-net.org's archives (``imagenet_fall11_urls.tgz``...)."""
ARCHIVE_SUFFIXES = (".tgz", ".tar.gz", ".tar", ".tar.bz2", ".tar.xz")
REASON_BAD_LINE = "bad line"
REASON_DUPLICATE = "duplicate"
EXAMPLES = 5
"""Line numbers of bad lines kept for the summary."""

_NAME = re.compile(rb"(n[0-9]{8})_([0-9]+)")
_WNID = re.compile(r"n[0-9]{8}")


@dataclass(frozen=True, slots=True)
class ImagenetBuildResult:
    """What ``build_imagenet`` did.

    Attributes:
        crawl: the crawl's tally (``listcrawl.ListBuildResult``); ``crawl.requested`` is the
            number of selected lines.
        lines: lines in the URL list.
        urls: where the URL list came from (path or URL).
        words: where the words came from ("" if not given).
        synsets: synsets with at least one line in the selection.
        bad_lines: bad lines in the selection (done now or by an earlier run).
        bad_line_numbers: the first few of them (0-based line numbers).
        split_synsets: synsets of the selection stored in sub-directories (more than
            ``per_dir`` lines in the list).
    """

    crawl: ListBuildResult
    lines: int
    urls: str
    words: str
    synsets: int
    bad_lines: int
    bad_line_numbers: tuple[int, ...] = ()
    split_synsets: tuple[str, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class Scan:
    """What one pass over the whole list found (independent of any selection).

    Attributes:
        lines: lines in the list (a last line without a newline counts).
        per_synset: lines per synset (lines whose synset can be read).
        duplicates: 0-based numbers of the valid lines whose ``WNID_N`` an earlier valid
            line already has.
    """

    lines: int
    per_synset: dict[str, int]
    duplicates: frozenset[int]


def image_stem(wnid: str, number: str, lines_in_synset: int, per_dir: int = PER_DIR) -> str:
    """Where the image ``WNID_N`` goes, relative to ``DIR``, less its extension.

    Args:
        wnid: the synset (``n01440764``).
        number: ``N`` as written in the list (decimal digits).
        lines_in_synset: the synset's lines in the whole list.
        per_dir: most images in one directory.
    """
    if lines_in_synset > per_dir:
        return f"{wnid}/{int(number) // per_dir:04d}/{wnid}_{number}"
    return f"{wnid}/{wnid}_{number}"


def parse_line(raw: bytes) -> tuple[str, str, str] | None:
    """``(wnid, number, url)`` of one line of the list (its line end removed), or None for a
    bad line (not UTF-8, no tab, a name that is not ``WNID_N``, an empty URL)."""
    name, tab, url_bytes = raw.rstrip(b"\r\n").partition(b"\t")
    match = _NAME.fullmatch(name)
    if not tab or match is None:
        return None
    try:
        url = url_bytes.decode("utf-8").strip()
    except UnicodeDecodeError:
        return None
    if not url or "\t" in url:
        return None
    return match.group(1).decode("ascii"), match.group(2).decode("ascii"), url


def _synset_of(raw: bytes) -> bytes | None:
    """The synset of a line, read cheaply (``n`` + 8 digits + ``_`` at its start), or None."""
    if raw[9:10] == b"_" and raw[:1] == b"n" and raw[1:9].isdigit():
        return raw[:9]
    return None


def scan(path: Path, name: str) -> Scan:
    """Read the list once: its lines, lines per synset, duplicate lines (see the module
    docstring for the memory this takes).

    Args:
        path: the list.
        name: how to name it in messages.

    Raises:
        BuildError: the file cannot be read.
    """
    per_synset: Counter[str] = Counter()
    duplicates: set[int] = set()
    lines = 0
    run, seen = "", set()  # the synset of the current run of lines, and its numbers so far
    ended: set[str] = set()  # synsets whose run of lines is over
    scattered: set[str] = set()  # synsets with more than one run
    try:
        with open(path, "rb") as f:
            for index, raw in enumerate(without_bom(f)):
                lines += 1
                parsed = parse_line(raw)
                if parsed is None:
                    wnid_bytes = _synset_of(raw)
                    if wnid_bytes is not None:
                        per_synset[wnid_bytes.decode("ascii")] += 1
                    continue
                wnid, number, _ = parsed
                per_synset[wnid] += 1
                if wnid != run:
                    ended.add(run)
                    if wnid in ended:
                        scattered.add(wnid)
                    run, seen = wnid, set()
                if number in seen:
                    duplicates.add(index)
                seen.add(number)
            if scattered:
                duplicates |= _scattered_duplicates(f, scattered)
    except OSError as err:
        raise BuildError(f"{name}: cannot read ({err.strerror})", hint="check the path") from err
    return Scan(lines, dict(per_synset), frozenset(duplicates))


def _scattered_duplicates(f: BinaryIO, scattered: set[str]) -> set[int]:
    """The duplicate lines of the synsets whose lines are not all in one run (a second pass)."""
    f.seek(0)
    numbers: dict[str, set[str]] = {wnid: set() for wnid in scattered}
    duplicates: set[int] = set()
    for index, raw in enumerate(without_bom(f)):
        parsed = parse_line(raw)
        if parsed is None or parsed[0] not in numbers:
            continue
        seen = numbers[parsed[0]]
        if parsed[1] in seen:
            duplicates.add(index)
        seen.add(parsed[1])
    return duplicates


def cached_scan(path: Path, name: str, sources: Path) -> Scan:
    """``scan``, or its result kept in ``sources`` from an earlier run over the same file
    (same resolved path, size and modification time).

    Raises:
        BuildError: the file cannot be read.
    """
    try:
        st = path.stat()
    except OSError as err:
        raise BuildError(f"{name}: cannot read ({err.strerror})", hint="check the path") from err
    key = {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns, "version": 2}
    cache = sources / SCAN_NAME
    try:
        doc = json.loads(cache.read_text(encoding="utf-8"))
        if doc.get("key") == key:
            return Scan(int(doc["lines"]), {str(k): int(v) for k, v in doc["per_synset"].items()},
                        frozenset(int(i) for i in doc["duplicates"]))
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        pass  # no cache, or not ours: scan again
    result = scan(path, name)
    doc = {"key": key, "lines": result.lines, "per_synset": result.per_synset,
           "duplicates": sorted(result.duplicates)}
    try:
        write_atomic(cache, json.dumps(doc).encode())
    except OSError:
        pass  # only a cache: the next run scans again
    return result


def count_selected(path: Path, name: str, first: int, end: int | None, wnids: frozenset[bytes] | None) -> int:
    """Lines in the selection: ``first <= index < end`` and, with ``wnids``, of those synsets
    (or of no readable synset: a bad line is reported whatever ``wnids`` says).

    Raises:
        BuildError: the file cannot be read.
    """
    selected = 0
    try:
        with open(path, "rb") as f:
            for raw in itertools.islice(without_bom(f), first, end):
                if wnids is None:
                    selected += 1
                    continue
                wnid = _synset_of(raw)
                selected += wnid is None or wnid in wnids
    except OSError as err:
        raise BuildError(f"{name}: cannot read ({err.strerror})", hint="check the path") from err
    return selected


class _Report:
    """What the item generator saw (read after the crawl has consumed it)."""

    def __init__(self) -> None:
        self.bad = 0
        self.examples: list[int] = []
        self.synsets: set[str] = set()
        self.split: set[str] = set()


def _items(path: Path, first: int, end: int | None, wnids: frozenset[bytes] | None, words: dict[str, str],
           scanned: Scan, per_dir: int, report: _Report) -> Iterator[ListItem]:
    """The selected lines as items, in line order (bad lines and duplicates as failed items)."""
    with open(path, "rb") as f:
        for index, raw in enumerate(itertools.islice(without_bom(f), first, end), start=first):
            wnid_bytes = _synset_of(raw)
            if wnids is not None and wnid_bytes is not None and wnid_bytes not in wnids:
                continue
            parsed = parse_line(raw)
            if parsed is None:
                report.bad += 1
                if len(report.examples) < EXAMPLES:
                    report.examples.append(index)
                text = raw.rstrip(b"\r\n").decode("utf-8", "backslashreplace").strip()
                yield ListItem(index, text, (), "", failure=REASON_BAD_LINE)
                continue
            wnid, number, url = parsed
            report.synsets.add(wnid)
            if index in scanned.duplicates:
                yield ListItem(index, url, (), "", failure=REASON_DUPLICATE)
                continue
            in_synset = scanned.per_synset.get(wnid, 0)
            if in_synset > per_dir:
                report.split.add(wnid)
            yield ListItem(index, url, (words.get(wnid) or wnid,), image_stem(wnid, number, in_synset, per_dir))


def read_wnids(path: Path, name: str) -> frozenset[str]:
    """The synsets listed in a file, one a line (blank lines and ``#`` comments ignored;
    anything after the WNID on a line, such as ILSVRC's class names, is ignored too).

    Raises:
        BuildError: the file cannot be read, or a line does not start with a WNID.
    """
    found = set()
    try:
        text = path.read_bytes().removeprefix(UTF8_BOM).decode("utf-8", "replace")
    except OSError as err:
        raise BuildError(f"{name}: cannot read ({err.strerror})", hint="check the path") from err
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        wnid = line.split(maxsplit=1)[0]
        if not _WNID.fullmatch(wnid):
            raise BuildError(f"{name}, line {number}: {wnid[:40]!r} is not a WordNet id (n and 8 digits)",
                             hint="give one WNID a line, such as n01440764")
        found.add(wnid)
    if not found:
        raise BuildError(f"{name}: no WNID in it", hint="give one WNID a line, such as n01440764")
    return frozenset(found)


def read_words(path: Path, name: str) -> dict[str, str]:
    """``words.txt``: ``WNID<TAB>words`` a line (undecodable bytes replaced; other lines ignored).

    Raises:
        BuildError: the file cannot be read, or holds no such line.
    """
    words: dict[str, str] = {}
    try:
        with open(path, "rb") as f:
            for raw in without_bom(f):
                wnid, tab, text = raw.decode("utf-8", "replace").rstrip("\r\n").partition("\t")
                if tab and _WNID.fullmatch(wnid.strip()) and text.strip():
                    words[wnid.strip()] = text.strip()
    except OSError as err:
        raise BuildError(f"{name}: cannot read ({err.strerror})", hint="check the path") from err
    if not words:
        raise BuildError(f"{name}: no 'WNID<TAB>words' line in it", hint="give ImageNet's words.txt")
    return words


def build_imagenet(dest: Path, *, urls: str, wnids: str | None = None, words: str | None = None, first: int = 0,
                   count: int | None = None, settings: CrawlSettings | None = None, per_dir: int = PER_DIR,
                   retry_failed: bool = False, placeholders: Collection[str] = PLACEHOLDER_MD5S,
                   progress: Progress | None = None, stop: threading.Event | None = None) -> ImagenetBuildResult:
    """Build (or resume building) ImageNet images in ``dest`` from a URL list.

    Args:
        dest: the dataset directory.
        urls: the ``WNID_N<TAB>URL`` list (local path or http(s) URL, downloaded once into
            ``dest/.s3sync/sources/``), or a tar archive holding it (``unpack_list``).
        wnids: a file (or URL) listing the synsets to keep, one a line (None: all).
        words: ``words.txt`` (file or URL): the captions (None: each image's WNID).
        first: the first line to build (0-based).
        count: how many lines from ``first`` (None: to the end); with ``wnids``, only the lines
            of those synsets among them are built.
        settings: the crawler's settings.
        per_dir: most images in one directory (``PER_DIR``; smaller in tests).
        retry_failed: fetch again the lines whose failure was not permanent.
        placeholders: MD5 digests refused as placeholders.
        progress: see ``listcrawl.build_from_list``.
        stop: set it to stop the crawl.

    Returns:
        The run's tally, with the bad lines of the selection.

    Raises:
        UsageError: ``first``/``count`` out of range.
        BuildError: a source cannot be read or downloaded, an archive holds no URL list, a
            ``wnids`` or ``words`` file is not what it should be, ``dest`` cannot be written.
    """
    check_selection(first, count)
    settings = settings or CrawlSettings()
    sources = sources_dir(dest, META_DIR)
    urls_path = unpack_list(source_path(urls, sources, settings, stop), urls, sources)
    keep = read_wnids(source_path(wnids, sources, settings, stop), wnids) if wnids else None
    captions = read_words(source_path(words, sources, settings, stop), words) if words else {}
    keep_bytes = frozenset(w.encode("ascii") for w in keep) if keep is not None else None
    end = None if count is None else first + count
    scanned = cached_scan(urls_path, urls, sources)
    if first > scanned.lines or (first == scanned.lines and scanned.lines):
        raise UsageError(f"--first {first} is past the end of {urls} ({scanned.lines:,} lines, numbered from 0)")
    selected = count_selected(urls_path, urls, first, end, keep_bytes)
    report = _Report()
    items = _items(urls_path, first, end, keep_bytes, captions, scanned, per_dir, report)
    result = build_from_list(dest, items, selected, description=DESCRIPTION, settings=settings,
                             url_field="url", retry_failed=retry_failed, placeholders=placeholders,
                             progress=progress, stop=stop)
    return ImagenetBuildResult(result, scanned.lines, urls, words or "", len(report.synsets), report.bad,
                               tuple(report.examples), tuple(sorted(report.split)))


def unpack_list(path: Path, name: str, sources: Path) -> Path:
    """The URL list itself, or, for a tar archive (by its name's suffix, as
    ``imagenet_fall11_urls.tgz``), its ``URL_MEMBERS`` member copied out once into
    ``sources/ARCHIVE-NAME.d/`` (kept for reruns).

    Raises:
        BuildError: the archive cannot be read or holds none of ``URL_MEMBERS``.
    """
    if not path.name.lower().endswith(ARCHIVE_SUFFIXES):
        return path
    unpacked = sources / f"{path.name}.d"
    for member in URL_MEMBERS:
        if (unpacked / member).is_file():
            return unpacked / member
    try:
        unpacked.mkdir(parents=True, exist_ok=True)
        found = archive.extract_named(path, URL_MEMBERS, unpacked)
    except OSError as err:
        raise BuildError(f"{name}: cannot read the archive ({err.strerror or err})") from err
    except Exception as err:
        if archive.is_tar_error(err) or isinstance(err, ValueError):
            raise BuildError(f"{name}: not a readable tar archive ({type(err).__name__})",
                             hint="give the unpacked fall11_urls.txt, or download the archive again") from err
        raise
    for member in URL_MEMBERS:
        if member in found:
            return found[member]
    raise BuildError(f"{name}: the archive holds no {' and no '.join(URL_MEMBERS)}",
                     hint="give the URL list itself with --urls")


def source_path(source: str, sources: Path, settings: CrawlSettings, stop: threading.Event | None) -> Path:
    """A local path for ``source``: itself, or its download in ``sources`` (kept for reruns,
    under a name that depends on the whole URL: ``sourcefiles.source_file``).

    Raises:
        BuildError: a local file that does not exist, or a failed download.
    """
    return source_file(source, sources, settings, stop)
