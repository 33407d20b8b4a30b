"""Captions files on disk: the checks publish and verify make, and ``captions merge``.

The pure model (parse, check, merge) is ``captions.py``; this module reads and writes the
files around it: ``check_tree`` checks a dataset's ``captions.json`` against the tree a
publish scanned (no second stat of every image), ``recheck`` parses a pulled one again for
``verify``, ``merge_files`` combines several files into one whose ``file_name``s are relative
to its own directory and writes it atomically. Pipelines layer: reports through ``progress``,
returns frozen dataclasses, never prints.
"""

from __future__ import annotations

import os
import posixpath
import stat
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import archive, captions
from .captions import CAPTIONS_NAME, CaptionCounts, MergeInput
from .errors import CaptionsError, DestinationError, SourceError, UsageError
from .fsutil import write_atomic
from .manifest import CaptionsSummary
from .progress import NullProgress, Progress

_MAX_HOPS = 40  # symlinks followed in one name, as Linux's path resolution (path_resolution(7))


# --------------------------------------------------------------------------- publish


def check_tree(src: Path, entries: Iterable[archive._Entry],
               checked: list[archive._Entry] | None = None) -> CaptionsSummary | None:
    """Check ``src/captions.json`` against the tree a publish scanned (``archive.scan_tree``).

    Every ``file_name`` must be a regular file among ``entries`` (or a symlink in the tree
    that ends at one): a set lookup per image, no system call. The file is read with the
    scan's change check (``archive.open_regular`` and ``check_unchanged``: same inode, size,
    mtime and ctime), and the tar writer makes the same check when it packs it, so the counts
    describe the bytes that are published.

    Args:
        src: the directory being published.
        entries: ``archive.walk_tree(src)`` or ``archive.scan_tree(src)``: consumed to the
            end (a publish passes its first walk through a ``TreeSurvey``). Only paths are
            kept, and only when ``src/captions.json`` exists.
        checked: if given, the scanned entry of the file whose bytes were checked is
            appended: a publish that walks the tree again to write it checks that it is
            unchanged then (``archive.check_unchanged``).

    Returns:
        The counts for the manifest, or None if there is no ``captions.json`` at the root.

    Raises:
        CaptionsError: the file is not a regular file, does not parse, or does not hold
            together (naming it and the first problems).
        SourceError: it cannot be read, or changed since the scan.
    """
    shown = os.path.join(os.fspath(src), CAPTIONS_NAME)
    if not os.path.lexists(shown):
        for e in entries:  # the walk goes on (a publish counts the tree through it)
            if e.rel == CAPTIONS_NAME:
                raise SourceError(f"{shown}: appeared while the tree was being scanned",
                                  hint="publish again when nothing is writing to SRC_DIR")
        return None
    # Paths only, not entries: a million files would hold ~1 GiB of stat results.
    files: set[str] = set()
    links: dict[str, str] = {}
    kinds: dict[str, archive._Entry] = {}
    for e in entries:
        if e.link is not None:
            links[e.rel] = e.link
        elif stat.S_ISREG(e.st.st_mode):
            files.add(e.rel)
        if e.rel == CAPTIONS_NAME:
            kinds[e.rel] = e
    if CAPTIONS_NAME not in kinds:
        return None
    target = resolve(CAPTIONS_NAME, links)
    entry = None
    if target is not None and target in files:
        entry = kinds[CAPTIONS_NAME] if target == CAPTIONS_NAME else _scan_one(src, target)
    if entry is None:
        what = "a directory" if stat.S_ISDIR(kinds[CAPTIONS_NAME].st.st_mode) else "a symlink that ends at no regular file"
        raise CaptionsError(f"{shown}: {what}, not a COCO-model captions file",
                            hint="make captions.json a regular file at the dataset's root, or rename it")
    data = _read_scanned(entry)
    if checked is not None:
        checked.append(entry)
    doc = captions.parse(data, shown)

    def exists(name: str) -> bool:
        if name in files:
            return True
        if name.endswith("/"):  # names a directory: no file opens by that name
            return False
        found = resolve(posixpath.normpath(name), links)
        return found is not None and found in files

    try:
        got = captions.check(doc, shown, exists)
    except CaptionsError as err:
        raise CaptionsError(f"{err}; nothing was uploaded",
                            hint="fix or rebuild captions.json (or move it out of SRC_DIR), then publish again") from None
    return CaptionsSummary(CAPTIONS_NAME, got.images, got.annotations)


def _scan_one(src: Path, rel: str) -> archive._Entry | None:
    """The entry of the regular file ``rel`` in ``src`` (a symlinked captions.json's
    target), as the walk would see it now, or None if it is not a regular file."""
    path = os.path.join(os.fspath(src), *rel.split("/"))
    try:
        st = os.lstat(path)
    except OSError:
        return None
    return archive._Entry(rel, path, st, None) if stat.S_ISREG(st.st_mode) else None


def resolve(name: str, links: dict[str, str]) -> str | None:
    """``name`` (a normalised relative path) with every symlink of the tree on its way
    replaced by its target, or None if it leaves the tree or loops.

    Args:
        name: path relative to the tree's root, ``/``-separated.
        links: relative path -> symlink target, for the tree's symlinks.
    """
    if not links:
        return name
    parts = name.split("/")
    hops = 0
    i = 0
    while i < len(parts):
        head = "/".join(parts[: i + 1])
        if head in links:
            hops += 1
            target = posixpath.normpath(posixpath.join(posixpath.dirname(head), links[head]))
            if hops > _MAX_HOPS or target == ".." or target.startswith(("../", "/")):
                return None
            parts = ([] if target == "." else target.split("/")) + parts[i + 1:]
            i = 0
            continue
        i += 1
    return "/".join(parts)


def _read_scanned(entry: archive._Entry) -> bytes:
    """The bytes of a scanned regular file, read while it stays as scanned.

    Raises:
        SourceError: cannot be read, or changed since the scan.
    """
    try:
        with archive.open_regular(entry.path, entry.st) as f:
            data = f.read()
            after = os.fstat(f.fileno())
        archive.check_unchanged(entry.st, after)
    except archive.SourceChanged as err:
        raise SourceError(f"{entry.path}: changed while publishing ({err})",
                          hint="wait until nothing writes to SRC_DIR, then publish again") from err
    except OSError as err:
        raise SourceError(f"{entry.path}: cannot read ({err.strerror or err})") from err
    return data


# --------------------------------------------------------------------------- verify


def recheck(root: Path, summary: CaptionsSummary) -> tuple[CaptionCounts | None, list[str]]:
    """Parse a pulled dataset's captions file again and compare its counts with the manifest's.

    Args:
        root: the dataset directory.
        summary: the manifest's ``captions``.

    Returns:
        The counts found (None if the file could not be parsed, or is missing: the tree
        check names a missing file) and one line per problem: unreadable, not parsable,
        counts that differ from ``summary``, not holding together (the structure alone: the
        tree check already names missing images).
    """
    path = root / summary.path
    shown = os.fspath(path)
    try:
        real = os.path.realpath(path)
        if os.path.commonpath([real, os.path.realpath(root)]) != os.path.realpath(root):
            return None, [f"{shown} leads out of the dataset (a symlink to {real})"]
        with archive.open_regular(real) as f:
            data = f.read()
    except FileNotFoundError:
        return None, []
    except OSError as err:
        return None, [f"cannot read {shown} ({err.strerror or err})"]
    try:
        doc = captions.parse(data, shown)
    except CaptionsError as err:
        return None, [str(err)]
    got = captions.counts(doc)
    problems = []
    if (got.images, got.annotations) != (summary.images, summary.annotations):
        problems.append(f"{got.images:,} images and {got.annotations:,} captions, but the manifest records "
                        f"{summary.images:,} images and {summary.annotations:,} captions")
    try:
        captions.check(doc, shown)
    except CaptionsError as err:
        problems.append(str(err))
    return got, problems


# --------------------------------------------------------------------------- merge


@dataclass(frozen=True, slots=True)
class MergeSource:
    """One input of ``merge_files``: a captions file and the tag its images get."""

    path: Path
    dataset: str


@dataclass(frozen=True, slots=True)
class MergedInput:
    """What one input contributed: its path, tag, the prefix its ``file_name``s got (POSIX,
    relative to the output's directory; ``""`` if the same) and its counts."""

    path: Path
    dataset: str
    prefix: str
    images: int
    annotations: int


@dataclass(frozen=True, slots=True)
class MergeResult:
    """A merge written: the output file, its bytes, each input's share, the totals, seconds."""

    out: Path
    size: int
    inputs: tuple[MergedInput, ...]
    images: int
    annotations: int
    elapsed_s: float


def default_tag(path: Path) -> str:
    """The dataset tag of a captions file by default: the name of its directory
    (``/data/sbu/captions.json`` -> ``sbu``); ``""`` for a file at ``/``."""
    return path.resolve().parent.name


def merge_files(out: Path, sources: Sequence[MergeSource], *, force: bool = False,
                progress: Progress | None = None) -> MergeResult:
    """Merge COCO-model captions files into ``out``, written atomically.

    Each input is parsed and checked (every ``file_name`` must be a file relative to the
    input's directory), then ``captions.merge`` renumbers ids, prefixes each ``file_name``
    with the path from ``out``'s directory to the input's, and tags each image with its
    input's ``dataset``. Counts are preserved: the output holds the sum of the inputs'.

    Args:
        out: the file to write; its directory must exist, and every input must lie under it
            (a ``file_name`` starting with ``..`` is not one a dataset can hold).
        sources: the inputs, in output order.
        force: replace ``out`` if it exists (never an input).
        progress: stage ``merge``, counted in bytes of input read.

    Raises:
        UsageError: no input, ``out`` is an input, exists without ``force``, or its directory
            is missing; an input is not under ``out``'s directory; a tag is empty.
        CaptionsError: an input cannot be read, parsed or does not hold together.
        DestinationError: ``out`` cannot be written.
    """
    progress = progress or NullProgress()
    started = time.monotonic()
    if not sources:
        raise UsageError("no input captions file given", hint="s3sync captions merge OUT.json IN.json...")
    out_dir = out.parent.resolve()
    if not out_dir.is_dir():
        raise UsageError(f"{out}: directory {out.parent} does not exist", hint="create it, or choose another OUT")
    out_abs = out_dir / out.name
    for src in sources:
        if src.path.resolve() == out_abs:
            raise UsageError(f"{out} is also an input: merge never overwrites an input",
                             hint="write the merged file under another name")
    if out_abs.exists() and not force:
        raise DestinationError(f"{out} exists: not overwritten", hint="pass --force to replace it, or choose another OUT")
    seen: dict[Path, Path] = {}
    tags: dict[str, Path] = {}
    for src in sources:
        if (first := seen.setdefault(src.path.resolve(), src.path)) is not src.path:
            raise UsageError(f"{src.path} is given twice (also as {first}): its images would be counted twice",
                             hint="give each input once")
        if (other := tags.setdefault(src.dataset, src.path)) is not src.path:
            raise UsageError(f"{other} and {src.path} would both tag their images {src.dataset!r}: the merged "
                             "file could not tell them apart", hint="give one a tag of its own as IN.json:TAG")
    inputs: list[MergeInput] = []
    done: list[MergedInput] = []
    progress.start("merge", sum(_size(s.path) for s in sources))
    for src in sources:
        if not src.dataset or not src.dataset.isprintable():
            raise UsageError(f"{src.path}: empty or unprintable dataset tag {src.dataset!r}",
                             hint="give one as IN.json:TAG")
        in_dir = src.path.resolve().parent
        prefix = "" if in_dir == out_dir else os.path.relpath(in_dir, out_dir).replace(os.sep, "/")
        if prefix == ".." or prefix.startswith("../"):
            raise UsageError(f"{src.path} is not under {out_dir} (OUT's directory): its file_names would start "
                             f"with '{prefix}/'", hint="write OUT in a directory above every input "
                                                   "(e.g. /data/captions.json for /data/sbu and /data/mscoco)")
        shown = os.fspath(src.path)
        try:
            data = src.path.read_bytes()
        except OSError as err:
            raise CaptionsError(f"{shown}: cannot read ({err.strerror or err})",
                                hint="check the input's path") from err
        doc = captions.parse(data, shown)
        got = captions.check(doc, shown, _exists_under(in_dir))
        inputs.append(MergeInput(src.dataset, doc, prefix))
        done.append(MergedInput(src.path, src.dataset, prefix, got.images, got.annotations))
        progress.advance("merge", len(data))
    merged = captions.merge(inputs)
    total = captions.check(merged, os.fspath(out))  # the merge's own promise: ids unique, counts kept
    assert (total.images, total.annotations) == (sum(d.images for d in done), sum(d.annotations for d in done))
    data = captions.dumps(merged)
    try:
        write_atomic(out_abs, data)
    except OSError as err:
        raise DestinationError(f"{out}: cannot write ({err.strerror or err})") from err
    progress.finish("merge")
    return MergeResult(out, len(data), tuple(done), total.images, total.annotations, time.monotonic() - started)


def _size(path: Path) -> int:
    """Bytes of ``path`` for the progress total (0 if it cannot be stat-ed: reading it fails later)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _exists_under(root: Path) -> Callable[[str], bool]:
    """``exists`` for ``captions.check``: a ``file_name`` names a regular file under ``root``
    (symlinks followed)."""
    base = os.fspath(root)
    return lambda name: os.path.isfile(os.path.join(base, name))


def summary_json(summary: CaptionsSummary | None) -> dict[str, Any] | None:
    """The ``captions`` object of ``--json`` outputs (None without captions)."""
    if summary is None:
        return None
    return {"path": summary.path, "images": summary.images, "annotations": summary.annotations}


def describe(summary: CaptionsSummary) -> str:
    """``captions.json: 1,000 images, 2,000 captions`` (for ``ls``, ``pull``, ``verify``)."""
    return (f"{summary.path}: {summary.images:,} image{'s' if summary.images != 1 else ''}, "
            f"{summary.annotations:,} caption{'s' if summary.annotations != 1 else ''}")
