"""Verify: re-hash a pulled dataset against what its pull recorded.

A pull writes ``NAME/.s3sync/`` holding the manifest, a completion marker and an
index of every extracted member (path, kind, size, mode, mtime, digest or link
target). The index was computed from verified chunks, so it is as trustworthy as
the manifest's chunk digests; the marker pins the index's own digest. ``verify``
compares the tree on disk with it and names every file that is missing,
changed, or not part of the dataset. A ``--no-extract`` pull is verified by
re-hashing the part files chunk by chunk against the manifest.
"""

from __future__ import annotations

import os
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import archive, hashing
from .errors import DestinationError, ManifestError
from .journal import INDEX_NAME, iter_index, load_index
from .manifest import MANIFEST_NAME, Manifest
from .planning import chunk_spans
from .progress import NullProgress, Progress
from .pull import read_marker


@dataclass(frozen=True, slots=True)
class Problem:
    """One difference: ``path`` (relative), ``kind`` (missing, changed, type, mode, link,
    extra, unreadable; incomplete, at path ``.``: the pull recorded fewer members, files
    or bytes than the manifest promises) and a human ``detail``."""

    path: str
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class VerifyResult:
    """Outcome of a verify: entries and bytes checked, the problems found, seconds taken."""

    dest: Path
    name: str
    generation: str
    checked: int
    checked_bytes: int
    problems: tuple[Problem, ...]
    elapsed_s: float


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
        raise DestinationError(f"{dest}: no such directory", hint="give the directory a pull created, e.g. /data/sbu")
    marker = read_marker(dest)
    if marker is None:
        inside = [d for d in sorted(dest.iterdir()) if d.is_dir() and read_marker(d) is not None][:1]
        if inside:
            raise DestinationError(f"{dest}: not a completed s3sync pull", hint=f"did you mean {inside[0]}?")
        raise DestinationError(f"{dest}: not a completed s3sync pull (no {archive.METADATA_DIR}/complete.json)",
                               hint="give the directory a pull created, e.g. /data/sbu")
    try:
        manifest = Manifest.from_json((meta / MANIFEST_NAME).read_bytes(), str(meta / MANIFEST_NAME))
    except OSError as err:
        raise ManifestError(f"{meta / MANIFEST_NAME}: cannot read ({err.strerror})") from err
    if marker.get("mode") == "parts":
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
        problems += _unkept_promises(manifest, index_path)
    return VerifyResult(dest, manifest.name, manifest.generation, checked, nbytes,
                        tuple(sorted(problems, key=lambda p: p.path)), time.monotonic() - started)


def _verify_tree(dest: Path, records: list[archive.MemberRecord], concurrency: int,
                 progress: Progress) -> tuple[list[Problem], int, int]:
    root = os.fspath(dest)
    problems: list[Problem] = []
    files: list[archive.MemberRecord] = []
    progress.start("verify", sum(r.size for r in records if r.kind == "file"))
    for rec in records:
        path = os.path.join(root, rec.path)
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            problems.append(Problem(rec.path, "missing", f"{rec.kind} is missing"))
            continue
        if rec.kind in ("file", "hardlink"):
            if not stat.S_ISREG(st.st_mode):
                problems.append(Problem(rec.path, "type", "expected a regular file"))
            elif rec.kind == "file":
                if st.st_size != rec.size:
                    problems.append(Problem(rec.path, "changed", f"size {st.st_size}, expected {rec.size}"))
                else:
                    files.append(rec)
                if stat.S_IMODE(st.st_mode) != rec.mode:
                    problems.append(Problem(rec.path, "mode", f"mode {stat.S_IMODE(st.st_mode):o}, expected {rec.mode:o}"))
        elif rec.kind == "dir":
            if not stat.S_ISDIR(st.st_mode):
                problems.append(Problem(rec.path, "type", "expected a directory"))
        elif rec.kind == "symlink":
            if not stat.S_ISLNK(st.st_mode):
                problems.append(Problem(rec.path, "type", "expected a symlink"))
            elif os.readlink(path) != rec.link:
                problems.append(Problem(rec.path, "link", f"points to {os.readlink(path)!r}, expected {rec.link!r}"))

    def check(rec: archive.MemberRecord) -> Problem | None:
        try:
            got = archive.file_digest(os.path.join(root, rec.path))
        except OSError as err:
            return Problem(rec.path, "unreadable", f"cannot read ({err.strerror or err})")
        finally:
            progress.advance("verify", rec.size)
        return None if got == rec.digest else Problem(rec.path, "changed", "content differs")

    with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
        problems.extend(p for p in pool.map(check, files) if p is not None)
    known = {r.path for r in records}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == ".":
            dirnames[:] = [d for d in dirnames if d != archive.METADATA_DIR]
        for name in dirnames + filenames:
            rel = name if rel_dir == "." else f"{rel_dir}/{name}"
            if rel not in known:
                problems.append(Problem(rel, "extra", "not part of the dataset"))
    progress.finish("verify")
    return problems, len(records), sum(r.size for r in files)


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
    problems = []
    progress.start("verify", manifest.stream_size)
    for part in manifest.parts:
        name = part.key.rsplit("/", 1)[-1]
        path = dest / name
        try:
            with open(path, "rb", buffering=0) as f:
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
    progress.finish("verify")
    return problems, len(manifest.parts), manifest.stream_size
