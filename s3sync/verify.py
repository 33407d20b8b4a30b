"""Verify: re-hash a pulled dataset against what its pull recorded.

A pull writes ``NAME/.s3sync/`` holding the manifest, a completion marker and an
index of every extracted member (path, kind, size, mode, mtime, digest or link
target). The index was computed from verified chunks, so it is as trustworthy as
the manifest's chunk digests; the marker pins the index's own digest. ``verify``
compares the tree on disk with it and names every entry that is missing, changed
(content, type, mode, mtime, link), not part of the dataset, or that only root can
read back. A ``--no-extract`` pull is verified by re-hashing the part files chunk
by chunk against the manifest, and naming anything else in the directory.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from . import archive, hashing
from .captionfiles import recheck
from .captions import CaptionCounts
from .errors import DestinationError, ManifestError
from .journal import INDEX_NAME, iter_index, load_index
from .manifest import MANIFEST_NAME, Manifest
from .planning import chunk_spans
from .progress import NullProgress, Progress
from .pull import read_marker

SPLIT_ARCHIVE = "split-archive"
"""The completion marker's ``source`` for a split archive s3sync did not publish: it has no
manifest, only the index of what was extracted (checked against the pieces' evidence)."""


@dataclass(frozen=True, slots=True)
class Problem:
    """One difference: ``path`` (relative), ``kind`` and a human ``detail``.

    Kinds: ``missing``, ``changed`` (size or content), ``type``, ``mode``, ``mtime``,
    ``link`` (symlink target, or a hard link that is no longer one), ``extra`` (not part
    of the dataset), ``unreadable`` (cannot be read now), ``unverifiable`` (published
    without owner read permission: only root can read it back; not a difference),
    ``incomplete`` (at path ``.``: the pull recorded fewer or more members, files or bytes
    than the manifest promises), ``captions`` (the dataset's captions file no longer parses,
    holds together, or has the image and caption counts the manifest records).
    """

    path: str
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of a verify: entries and bytes checked, the problems found, seconds taken, and
    the counts of the captions file where the manifest records them (None otherwise, or
    when the file could not be parsed)."""

    dest: Path
    name: str
    generation: str
    checked: int
    checked_bytes: int
    problems: tuple[Problem, ...]
    elapsed_s: float
    captions: CaptionCounts | None = None


def verify(dest: Path, concurrency: int = 4, progress: Progress | None = None) -> VerifyResult:
    """Check the dataset directory ``dest`` against its recorded index (or parts).

    Raises:
        DestinationError: ``dest`` is not a completed s3sync pull.
        ManifestError: the recorded manifest or index is damaged.
    """
    progress = progress or NullProgress()
    started = time.monotonic()
    meta = dest / archive.METADATA_DIR
    if not dest.is_dir():
        what = "not a directory" if os.path.lexists(dest) else "no such directory"
        raise DestinationError(f"{dest}: {what}", hint="give the directory a pull created, e.g. /data/sbu")
    marker = read_marker(dest)
    if marker is None:
        inside = [d for d in sorted(dest.iterdir()) if d.is_dir() and read_marker(d) is not None][:1]
        if inside:
            raise DestinationError(f"{dest}: not a completed s3sync pull", hint=f"did you mean {inside[0]}?")
        raise DestinationError(f"{dest}: not a completed s3sync pull (no {archive.METADATA_DIR}/complete.json)",
                               hint="give the directory a pull created, e.g. /data/sbu")
    manifest = None
    if marker.get("source") != SPLIT_ARCHIVE:
        try:
            manifest = Manifest.from_json((meta / MANIFEST_NAME).read_bytes(), str(meta / MANIFEST_NAME))
        except OSError as err:
            raise ManifestError(f"{meta / MANIFEST_NAME}: cannot read ({err.strerror})") from err
    if manifest is not None and marker.get("mode") == "parts":
        problems, checked, nbytes = _verify_parts(dest, manifest, progress)
    else:
        index_path = meta / INDEX_NAME
        try:
            index_digest = archive.file_digest(index_path)
        except OSError as err:
            raise ManifestError(f"{index_path}: cannot read ({err.strerror})") from err
        if index_digest != marker.get("index_digest"):
            raise ManifestError(f"{index_path}: digest does not match the completion marker",
                                hint="the dataset's metadata was modified; pull it again")
        try:
            records = list(load_index(index_path).values())
        except (ValueError, TypeError) as err:
            raise ManifestError(f"{index_path}: damaged record ({err})") from err
        problems, checked, nbytes = _verify_tree(dest, records, concurrency, progress)
        selection = marker.get("selection")
        if isinstance(selection, dict):
            # A partial pull (--include/--exclude): its members are checked against what the
            # selection held when pulled, not the whole manifest; unselected ones are not missing.
            problems += _unkept_selection(selection, records)
        elif manifest is not None:
            problems += _unkept_promises(manifest, index_path)
    found = None
    selected = {r.path for r in records} if isinstance(marker.get("selection"), dict) else None
    if manifest is not None and manifest.captions is not None and marker.get("mode") != "parts" and (
            selected is None or manifest.captions.path in selected):
        # The file's bytes were checked as a member above; this is the explicit count check.
        found, lines = recheck(dest, manifest.captions)
        problems += [Problem(manifest.captions.path, "captions", line) for line in lines]
    name, generation = (manifest.name, manifest.generation) if manifest is not None else \
        (str(marker.get("name", dest.name)), str(marker.get("generation", "")))
    return VerifyResult(dest, name, generation, checked, nbytes,
                        tuple(sorted(problems, key=lambda p: p.path)), time.monotonic() - started, found)


def _verify_tree(dest: Path, records: list[archive.MemberRecord], concurrency: int,
                 progress: Progress) -> tuple[list[Problem], int, int]:
    """Compare every recorded member with the tree, then list what the tree holds beyond them.

    Files: type, size, mode, mtime (in whole seconds, floored: ``archive.mtime_ns``)
    and digest. Hard links: a regular file, the same inode as their target (else the
    content is hashed against the target's digest). Directories: mode and mtime (set by
    ``finish_dirs`` once every member is in). Symlinks: target and mtime.
    """
    root = os.fspath(dest)
    problems: list[Problem] = []
    to_hash: list[tuple[archive.MemberRecord, str, int]] = []  # record, digest wanted, bytes
    by_path = {r.path: r for r in records}
    # Directories a member needs but the archive has no member for (a tar written by other
    # tools, e.g. `tar cf x.tar a/b.txt`): pull creates them (SafeExtractor._ensure_dir).
    implicit: set[str] = set()
    for r in records:
        parent = os.path.dirname(r.path)
        while parent and parent not in implicit:
            implicit.add(parent)
            parent = os.path.dirname(parent)
    closed = {r.path: r.mode for r in records
              if r.kind == "dir" and r.mode & (stat.S_IRUSR | stat.S_IXUSR) != stat.S_IRUSR | stat.S_IXUSR}
    for rec in records:
        path = os.path.join(root, rec.path)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            problems.append(Problem(rec.path, "missing", f"{rec.kind} is missing"))
            continue
        except OSError as err:
            problems.append(_cannot_check(rec, err, closed))
            continue
        if rec.kind == "file":
            if not stat.S_ISREG(st.st_mode):
                problems.append(Problem(rec.path, "type", "expected a regular file"))
                continue
            if st.st_size != rec.size:
                problems.append(Problem(rec.path, "changed", f"size {st.st_size}, expected {rec.size}"))
            else:
                to_hash.append((rec, rec.digest, rec.size))
            problems.extend(_mode_and_mtime(rec, st))
        elif rec.kind == "hardlink":
            if not stat.S_ISREG(st.st_mode):
                problems.append(Problem(rec.path, "type", "expected a regular file (a hard link)"))
                continue
            target = _link_target(rec, by_path)
            if target is None:  # the index is digest-pinned: only a damaged one gets here
                problems.append(Problem(rec.path, "link", f"hard link target {rec.link!r} is not in the index"))
                continue
            try:
                target_st = os.lstat(os.path.join(root, target.path))
            except OSError:
                target_st = None
            if target_st is not None and (target_st.st_dev, target_st.st_ino) == (st.st_dev, st.st_ino):
                continue  # one inode: its content, mode and mtime are checked as the target's
            problems.append(Problem(rec.path, "link", f"no longer a hard link to {target.path!r}"))
            if st.st_size != target.size:
                problems.append(Problem(rec.path, "changed", f"size {st.st_size}, expected {target.size}"))
            else:
                to_hash.append((rec, target.digest, target.size))
        elif rec.kind == "dir":
            if not stat.S_ISDIR(st.st_mode):
                problems.append(Problem(rec.path, "type", "expected a directory"))
                continue
            problems.extend(_mode_and_mtime(rec, st))
        elif rec.kind == "symlink":
            if not stat.S_ISLNK(st.st_mode):
                problems.append(Problem(rec.path, "type", "expected a symlink"))
                continue
            if (link := os.readlink(path)) != rec.link:
                problems.append(Problem(rec.path, "link", f"points to {link!r}, expected {rec.link!r}"))
            problems.extend(_mode_and_mtime(rec, st, mode=False))

    progress.start("verify", sum(n for _, _, n in to_hash))

    def check(item: tuple[archive.MemberRecord, str, int]) -> Problem | None:
        rec, want, nbytes = item
        try:
            got = archive.file_digest(os.path.join(root, rec.path))
        except OSError as err:
            return _cannot_check(rec, err, closed, by_path)
        finally:
            progress.advance("verify", nbytes)
        return None if got == want else Problem(rec.path, "changed", "content differs")

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        problems.extend(p for p in pool.map(check, to_hash) if p is not None)
    for dirpath, dirnames, filenames in _walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != archive.METADATA_DIR]
        for name in dirnames + filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rel not in by_path and not (rel in implicit and name in dirnames):
                problems.append(Problem(rel, "extra", "not part of the dataset"))
    progress.finish("verify")
    return problems, len(records), sum(n for _, _, n in to_hash)


def _walk(root: str) -> Iterator[tuple[str, list[str], list[str]]]:
    """``os.walk(root)`` (top-down, symlinks not followed, ``dirnames`` prunable) without
    recursion: Python 3.11's os.walk recurses once per level, and a dataset may nest
    directories deeper than the interpreter's recursion limit (a path of up to 4095 bytes
    holds ~2,000 levels)."""
    stack = [root]
    while stack:
        top = stack.pop()
        dirnames: list[str] = []
        filenames: list[str] = []
        try:
            with os.scandir(top) as it:
                for entry in it:
                    try:
                        is_dir = entry.is_dir(follow_symlinks=False)
                    except OSError:
                        is_dir = False
                    (dirnames if is_dir else filenames).append(entry.name)
        except OSError:
            continue  # as os.walk: an unreadable directory is skipped
        yield top, dirnames, filenames
        stack.extend(os.path.join(top, d) for d in reversed(dirnames))


def _mode_and_mtime(rec: archive.MemberRecord, st: os.stat_result, mode: bool = True) -> list[Problem]:
    """A ``mode`` and an ``mtime`` problem where the entry's differ from the record (pull
    applies whole seconds; symlinks have no mode of their own)."""
    out = []
    if mode and stat.S_IMODE(st.st_mode) != rec.mode:
        out.append(Problem(rec.path, "mode", f"mode {stat.S_IMODE(st.st_mode):o}, expected {rec.mode:o}"))
    if st.st_mtime_ns // 1_000_000_000 != rec.mtime:
        out.append(Problem(rec.path, "mtime", f"mtime {_when(st.st_mtime_ns // 1_000_000_000)}, "
                                              f"expected {_when(rec.mtime)}"))
    return out


def _when(seconds: int) -> str:
    """A whole-second time as UTC ISO 8601, or the raw number where that cannot be shown."""
    try:
        return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    except (OverflowError, OSError, ValueError):
        return str(seconds)


def _link_target(rec: archive.MemberRecord, by_path: dict[str, archive.MemberRecord]
                 ) -> archive.MemberRecord | None:
    """The regular-file record a hard link ends at (a link may name an earlier link)."""
    seen = {rec.path}
    target = by_path.get(rec.link)
    while target is not None and target.kind == "hardlink" and target.path not in seen:
        seen.add(target.path)
        target = by_path.get(target.link)
    return target if target is not None and target.kind == "file" else None


def _cannot_check(rec: archive.MemberRecord, err: OSError, closed: dict[str, int],
                  by_path: dict[str, archive.MemberRecord] | None = None) -> Problem:
    """The problem for an entry that cannot be stat-ed or read.

    A file published with no read permission for its owner (mode 0000, 0200...), or under
    a directory published without owner read or search permission, cannot be read back by
    anyone but root (CAP_DAC_OVERRIDE): that is how it was published, not a change, and
    pulling again cannot help. Anything else unreadable is reported as such.
    """
    if isinstance(err, PermissionError):
        mode = rec.mode
        if rec.kind == "hardlink" and by_path is not None:
            target = _link_target(rec, by_path)
            mode = target.mode if target is not None else mode
        if rec.kind in ("file", "hardlink") and not mode & stat.S_IRUSR:
            return Problem(rec.path, "unverifiable", f"published with mode {mode:04o} (no read permission for "
                                                     "its owner): only root can read it")
        parent = rec.path
        while "/" in parent:
            parent = parent.rsplit("/", 1)[0]
            if parent in closed:
                return Problem(rec.path, "unverifiable", f"inside {parent!r}, published with mode "
                                                         f"{closed[parent]:04o} (no read or search permission "
                                                         "for its owner): only root can read it")
    return Problem(rec.path, "unreadable", f"cannot read ({err.strerror or err})")


def _unkept_selection(selection: dict, records: list[archive.MemberRecord]) -> list[Problem]:
    """The recorded members against the counts a partial pull's marker records."""
    files = [r for r in records if r.kind == "file"]
    got = {"members": len(records), "files": len(files), "size": sum(r.size for r in files)}
    return [Problem(".", "incomplete", f"the selection held {selection.get(what)} {what}, the pull recorded {n}")
            for what, n in got.items() if selection.get(what) != n]


def _unkept_promises(manifest: Manifest, index_path: Path) -> list[Problem]:
    """The index against the manifest's counts: a pull by s3sync before 0.2 took the end of
    the data for the end of the archive, so a manifest that had lost parts gave a 'complete'
    pull of part of the dataset, whose index agreed with the tree.

    Raises:
        ManifestError: a damaged index record.
    """
    members = files = size = 0
    try:
        for rec in iter_index(index_path):
            members += 1
            if rec.kind == "file":
                files, size = files + 1, size + rec.size
    except (ValueError, TypeError) as err:
        raise ManifestError(f"{index_path}: damaged record ({err})") from err
    promised = (("members", manifest.members, members), ("files", manifest.files, files),
                ("bytes of file data", manifest.extracted_size, size))
    return [Problem(".", "incomplete", f"the manifest promises {want} {what}, the pull recorded {got}")
            for what, want, got in promised if want != got]


def _verify_parts(dest: Path, manifest: Manifest, progress: Progress) -> tuple[list[Problem], int, int]:
    """Re-hash each part file chunk by chunk; name anything in ``dest`` that is neither a
    part file nor ``.s3sync``."""
    problems = []
    progress.start("verify", manifest.stream_size)
    names = set()
    for part in manifest.parts:
        name = part.key.rsplit("/", 1)[-1]
        names.add(name)
        path = dest / name
        try:
            with archive.open_regular(path) as f:  # never blocks on a FIFO put in its place
                size = os.fstat(f.fileno()).st_size
                if size != part.size:
                    problems.append(Problem(name, "changed", f"size {size}, expected {part.size}"))
                    continue
                for span, want in zip(chunk_spans(part.size, manifest.chunk_size), part.chunks):
                    data = f.read(span.length)
                    progress.advance("verify", span.length)
                    if hashing.digest(data) != want:
                        problems.append(Problem(name, "changed", f"chunk {span.index} (bytes {span.offset}-"
                                                                 f"{span.offset + span.length - 1}) differs"))
                        break
        except FileNotFoundError:
            problems.append(Problem(name, "missing", "part file is missing"))
        except OSError as err:
            problems.append(Problem(name, "unreadable", f"cannot read ({err.strerror or err})"))
    for entry in sorted(os.listdir(dest)):
        if entry not in names and entry != archive.METADATA_DIR:
            problems.append(Problem(entry, "extra", "not a part file of the dataset"))
    progress.finish("verify")
    return problems, len(manifest.parts), manifest.stream_size
