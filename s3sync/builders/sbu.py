"""``s3sync build sbu``: the SBU Captioned Photo Dataset, crawled from its URL list.

The distribution (Ordonez, Kulkarni, Berg, "Im2Text", NIPS 2011; vicente.cs.virginia.edu's
``SBUCaptionedPhotoDataset.tar.gz``) holds two line-aligned files of 1,000,000 lines:
``dataset/SBU_captioned_photo_dataset_urls.txt`` (one Flickr URL a line) and
``dataset/SBU_captioned_photo_dataset_captions.txt`` (one caption a line). Line ``i`` of
both describes image ``i``. Either file may also be given on its own (a local path or an
http(s) URL, downloaded once into ``DIR/.s3sync/sources/``, see ``builders.sourcefiles``).

Layout: ``DIR/images/NNNN/IIIIIII.EXT``: image of line ``I`` (seven digits) in directory
``I // PER_DIR`` (four digits), so that no directory holds more than ``PER_DIR`` files;
``EXT`` from the detected format (``jpg`` for nearly all). Everything else (captions.json,
failures.tsv, resume) as ``builders.listcrawl``.
"""

from __future__ import annotations

import hashlib
import itertools
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import archive
from ..crawl import CrawlSettings
from ..errors import BuildError, UsageError
from ..images import PLACEHOLDER_MD5S
from ..progress import Progress
from .listcrawl import META_DIR, ListBuildResult, ListItem, build_from_list, without_bom
from .sourcefiles import cached_name, check_selection, is_url, source_file, sources_dir

ARCHIVE_URL = "http://www.cs.virginia.edu/~vicente/sbucaptions/SBUCaptionedPhotoDataset.tar.gz"
ARCHIVE_MD5 = "9aec147b3488753cf758b4d493422285"
URLS_MEMBER = "SBU_captioned_photo_dataset_urls.txt"
CAPTIONS_MEMBER = "SBU_captioned_photo_dataset_captions.txt"
PER_DIR = 10_000
"""Most image files in one directory of ``DIR/images/``."""
DESCRIPTION = "SBU Captioned Photo Dataset (Stony Brook University), built by s3sync build sbu"


@dataclass(frozen=True, slots=True)
class SbuBuildResult:
    """What ``build_sbu`` did.

    Attributes:
        crawl: the crawl's tally (``listcrawl.ListBuildResult``).
        lines: lines in the lists.
        urls: where the URL list came from (path or URL; ``ARCHIVE_URL#member`` for the archive).
        captions: where the caption list came from.
    """

    crawl: ListBuildResult
    lines: int
    urls: str
    captions: str


def image_stem(index: int, per_dir: int = PER_DIR) -> str:
    """``images/NNNN/IIIIIII``: where the image of line ``index`` goes, less its extension."""
    return f"images/{index // per_dir:04d}/{index:07d}"


def build_sbu(dest: Path, *, urls: str | None = None, captions: str | None = None, first: int = 0,
              count: int | None = None, settings: CrawlSettings | None = None, per_dir: int = PER_DIR,
              retry_failed: bool = False, archive_url: str = ARCHIVE_URL, archive_md5: str = ARCHIVE_MD5,
              placeholders: Collection[str] = PLACEHOLDER_MD5S, progress: Progress | None = None,
              stop: threading.Event | None = None) -> SbuBuildResult:
    """Build (or resume building) the SBU dataset in ``dest``.

    Args:
        dest: the dataset directory.
        urls: the URL list (local path or http(s) URL); with ``captions``, or neither (then
            both come from the archive at ``archive_url``).
        captions: the caption list, line-aligned with ``urls``.
        first: the first line to build (0-based).
        count: how many lines from ``first`` (None: to the end).
        settings: the crawler's settings.
        per_dir: most image files in one directory (``PER_DIR``; smaller in tests).
        retry_failed: fetch again the lines whose failure was not permanent.
        archive_url: the distribution archive (a URL or a local path).
        archive_md5: its MD5 (hex), checked after download ("" to skip).
        placeholders: MD5 digests refused as placeholders.
        progress: see ``listcrawl.build_from_list``.
        stop: set it to stop the crawl.

    Raises:
        UsageError: only one of ``urls`` and ``captions``, or ``first``/``count`` out of range.
        BuildError: a source cannot be read or downloaded, the archive's MD5 differs or it
            lacks a list, the two lists have different line counts, ``dest`` cannot be written.
    """
    if (urls is None) != (captions is None):
        raise UsageError("give both --urls and --captions (line-aligned lists), or neither to use the SBU archive")
    check_selection(first, count)
    settings = settings or CrawlSettings()
    sources = sources_dir(dest, META_DIR)
    if urls is None or captions is None:
        urls_path, captions_path = _from_archive(archive_url, archive_md5, sources, settings, stop)
        urls_name, captions_name = f"{archive_url}#{URLS_MEMBER}", f"{archive_url}#{CAPTIONS_MEMBER}"
    else:
        urls_path, urls_name = source_file(urls, sources, settings, stop), urls
        captions_path, captions_name = source_file(captions, sources, settings, stop), captions
    lines = _count_lines(urls_path, urls_name)
    caption_lines = _count_lines(captions_path, captions_name)
    if lines != caption_lines:
        raise BuildError(f"the lists are not line-aligned: {urls_name} has {lines:,} lines, {captions_name} has "
                         f"{caption_lines:,}", hint="give the URL and caption files of the same SBU distribution")
    if first > lines or (first == lines and lines):
        raise UsageError(f"--first {first} is past the end of the lists ({lines:,} lines, numbered from 0)")
    requested = max(0, min(lines - first, count if count is not None else lines))
    items = _items(urls_path, captions_path, first, requested, per_dir)
    result = build_from_list(dest, items, requested, description=DESCRIPTION, settings=settings,
                             url_field="flickr_url", retry_failed=retry_failed, builder="sbu", placeholders=placeholders,
                             progress=progress, stop=stop)
    return SbuBuildResult(result, lines, urls_name, captions_name)


def _items(urls: Path, captions: Path, first: int, count: int, per_dir: int) -> Iterator[ListItem]:
    """The selected lines as items (URL stripped; caption stripped of its line end, decoded as
    UTF-8 with undecodable bytes replaced; a UTF-8 byte order mark at the start of either
    file dropped)."""
    with open(urls, "rb") as u, open(captions, "rb") as c:
        pairs = itertools.islice(zip(without_bom(u), without_bom(c)), first, first + count)
        for index, (url, caption) in enumerate(pairs, start=first):
            yield ListItem(index, url.decode("utf-8", "replace").strip(),
                           (caption.decode("utf-8", "replace").rstrip("\r\n").strip(),), image_stem(index, per_dir))


def _count_lines(path: Path, name: str) -> int:
    """Lines in a file (a last line without a newline counts)."""
    n = 0
    last = b"\n"
    try:
        with open(path, "rb") as f:
            while block := f.read(1024 * 1024):
                n += block.count(b"\n")
                last = block[-1:]
    except OSError as err:
        raise BuildError(f"{name}: cannot read ({err.strerror})", hint="check the path") from err
    return n + (last != b"\n")


def _from_archive(url: str, md5: str, sources: Path, settings: CrawlSettings,
                  stop: threading.Event | None) -> tuple[Path, Path]:
    """Download the distribution archive (once), check its MD5, take out the two lists (once,
    into a directory named after the archive's download, or after a local archive's path,
    size and modification time: another archive never reuses them)."""
    path = source_file(url, sources, settings, stop, default="sbu.tar.gz")
    if is_url(url):
        unpacked = sources / f"{path.name}.d"
    else:
        try:
            st = path.stat()
        except OSError as err:
            raise BuildError(f"{url}: cannot read ({err.strerror})") from err
        unpacked = sources / f"{cached_name(f'{path.resolve()}:{st.st_size}:{st.st_mtime_ns}', path.name)}.d"
    urls_path, captions_path = unpacked / URLS_MEMBER, unpacked / CAPTIONS_MEMBER
    if urls_path.is_file() and captions_path.is_file():
        return urls_path, captions_path
    if md5:
        got = _md5(path)
        if got != md5:
            if is_url(url):
                path.unlink(missing_ok=True)  # fetched again by the next run
            raise BuildError(f"{url}: MD5 {got}, expected {md5} (the download is damaged or the file changed)",
                             hint="run the same command again to download it again, or give --urls and --captions")
    try:
        unpacked.mkdir(parents=True, exist_ok=True)
        found = archive.extract_named(path, (URLS_MEMBER, CAPTIONS_MEMBER), unpacked)
    except OSError as err:
        raise BuildError(f"{url}: cannot read the archive ({err.strerror or err})") from err
    except Exception as err:
        if archive.is_tar_error(err) or isinstance(err, ValueError):
            raise BuildError(f"{url}: not a readable tar archive ({type(err).__name__})") from err
        raise
    missing = [name for name in (URLS_MEMBER, CAPTIONS_MEMBER) if name not in found]
    if missing:
        raise BuildError(f"{url}: the archive holds no {' and no '.join(missing)}",
                         hint="give the lists with --urls and --captions")
    return found[URLS_MEMBER], found[CAPTIONS_MEMBER]


def _md5(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while block := f.read(1024 * 1024):
            h.update(block)
    return h.hexdigest()
