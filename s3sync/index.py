"""The member index: one record per tar member of a generation, published beside its manifest.

Pure data, no I/O (compression and the bucket are ``indexfile``'s business). The format is
specified in ``docs/manifest.md`` section 10; this module is its reference implementation.

An index is UTF-8 text, one JSON value per line (JSON Lines): a header object, then one array
per member in stream order::

    {"format":"s3sync-member-index","version":1,"generation":"G","members":N}
    [offset,path,kind,size,mode,mtime,digest,link]
    ...

``offset`` is the tar stream offset (bytes) of the member's first header block (its pax
extended header, if it has one); the other seven values are the fields of ``MemberRecord``,
in the order of a pull's own ``.s3sync/index.jsonl`` lines (``journal.iter_index``): one
concept, one record. ``parse`` treats its input as untrusted: every value is type-checked,
paths must be relative and stay inside the dataset, members must come in the order publish
writes them (which rules out duplicates in constant memory), offsets must leave room for
each member's header and data and stay inside the tar stream, and the totals must agree with
the manifest.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from . import hashing
from .errors import MemberIndexError
from .manifest import END_OF_ARCHIVE, INDEX_NAME, METADATA_DIR, TAR_BLOCK, Manifest

__all__ = ["INDEX_NAME", "FORMAT", "VERSION", "IndexEntry", "MemberRecord", "encode", "header_line", "parse",
           "symlink_target_ok"]

FORMAT = "s3sync-member-index"
VERSION = 1
KINDS = ("file", "dir", "symlink", "hardlink")
"""Values of ``MemberRecord.kind``; a published index holds the first three only (publish stores
hard-linked files as separate regular files)."""
PUBLISHED_KINDS = ("file", "dir", "symlink")
MAX_LINE = 64 * 1024
"""Longest index line accepted (bytes): a path and a link target of up to 4,096 bytes each
(Linux PATH_MAX) fit many times over; a hostile index cannot make the parser hold more."""


@dataclass(frozen=True, slots=True)
class MemberRecord:
    """One member: as a pull extracted it (``.s3sync/index.jsonl``), or as a publish wrote it
    (the member index).

    Attributes:
        path: relative POSIX path inside the dataset (no trailing ``/``).
        kind: ``file``, ``dir``, ``symlink`` or ``hardlink``.
        size: bytes of file data (0 for others).
        mode: permission bits: as extracted (a pull's index) or as in the tar header (the
            member index).
        mtime: seconds since the epoch (integer).
        digest: digest of the file data (``file`` and ``hardlink``), else "".
        link: symlink target or hard link target path, else "".
    """

    path: str
    kind: str
    size: int
    mode: int
    mtime: int
    digest: str = ""
    link: str = ""


@dataclass(frozen=True, slots=True)
class IndexEntry:
    """One line of the member index: where the member starts in the tar stream, and what it is.

    Attributes:
        offset: tar stream offset (bytes) of the member's first header block. The member
            (headers, data, padding) ends where the next entry starts; the last one ends
            before the end-of-archive marker.
        record: the member.
    """

    offset: int
    record: MemberRecord


def symlink_target_ok(rel: str, target: str) -> bool:
    """True if a symlink at ``rel`` pointing to ``target`` provably stays inside the tree.

    The target must be relative, go up (``..``) only at its start, and not climb above
    the root. Going up only at the start means it climbs through the link's own
    parents, which extraction guarantees are real directories; a ``..`` after another
    component could climb out through a symlink created later by another member
    (``x -> d/..`` followed by ``d -> .``).
    """
    if not target or os.path.isabs(target) or "\x00" in target:
        return False
    parts = [p for p in target.split("/") if p not in ("", ".")]
    ups = 0
    while ups < len(parts) and parts[ups] == "..":
        ups += 1
    if ".." in parts[ups:]:
        return False
    depth = len([p for p in rel.split("/") if p]) - 1
    return ups <= depth


def header_line(generation: str, members: int) -> bytes:
    """The first line of an index (with its newline)."""
    doc = {"format": FORMAT, "version": VERSION, "generation": generation, "members": members}
    return json.dumps(doc, separators=(",", ":")).encode("ascii") + b"\n"


_DIGEST = re.compile(r"[0-9a-f]{%d}" % hashing.DIGEST_HEX_LENGTH)
"""``hashing.is_digest`` as one regular expression (a generator per line cost 2.5 us)."""
_PLAIN = re.compile(r'[ !#-\[\]-~]*')
"""Printable ASCII but ``"`` and ``\\``: what JSON writes as it is between quotes."""


def encode(offset: int, r: MemberRecord) -> bytes:
    """One member's line (with its newline). Names that are not UTF-8 (``surrogateescape``
    from the file system) are written back as their original bytes, as a pull's index does.

    The usual member (a printable ASCII name) is formatted directly: ``json.dumps`` cost 2 us
    of the 3 a member took (publish of 50,000 files); the bytes are the same (a property test
    compares the two)."""
    if _PLAIN.fullmatch(r.path) and (not r.link or _PLAIN.fullmatch(r.link)):
        return (f'[{offset},"{r.path}","{r.kind}",{r.size},{r.mode},{r.mtime},"{r.digest}","{r.link}"]\n'
                .encode("ascii"))
    return (json.dumps((offset, r.path, r.kind, r.size, r.mode, r.mtime, r.digest, r.link),
                       ensure_ascii=False, separators=(",", ":")) + "\n").encode("utf-8", "surrogateescape")


def member_span(size: int) -> int:
    """The least bytes a member of ``size`` bytes of data takes in the stream: one header
    block and its data padded to whole blocks (a pax extended header adds more)."""
    return TAR_BLOCK + size + -size % TAR_BLOCK


def _sort_key(path: str) -> bytes:
    """The order publish writes members in: depth-first, each directory's entries sorted by the
    bytes of their names, which is the lexicographic order of the paths' component lists. With
    each ``/`` made a NUL (which no name holds, and which sorts before every byte of a name),
    comparing the bytes gives that order in one step."""
    return path.encode("utf-8", "surrogateescape").replace(b"/", b"\0")


def _check_path(path: str) -> bool:
    parts = path.split("/")
    return not (path.startswith("/") or "\x00" in path or any(p in ("", ".", "..") for p in parts)
                or parts[0] == METADATA_DIR)


def parse(lines: Iterable[bytes], manifest: Manifest, source: str = "member index") -> Iterator[IndexEntry]:
    """Parse and validate untrusted index lines, streaming: one entry at a time, in stream order.

    Memory is bounded by one line (``MAX_LINE`` bytes) whatever the index size. The totals
    (members, files, bytes of file data) are compared with ``manifest`` once the last line
    has been read: a caller must consume the whole iterator before trusting what it yielded
    as complete.

    Args:
        lines: the decompressed index, split after each ``\\n`` (a file object iterates so).
        manifest: the generation's manifest (generation, counts, tar stream size).
        source: what to call the index in error messages (its s3:// URL).

    Raises:
        MemberIndexError: naming ``source``, the line number and what is wrong.
    """
    def fail(lineno: int, what: str) -> MemberIndexError:
        return MemberIndexError(f"{source}: line {lineno}: {what}")

    it = iter(lines)
    first = next(it, None)
    if first is None:
        raise MemberIndexError(f"{source}: empty (no header line)")
    head = _load(first, 1, fail)
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise fail(1, f"not a member index (header without \"format\": \"{FORMAT}\")")
    if type(head.get("version")) is not int or head["version"] != VERSION:
        raise MemberIndexError(f"{source}: member index version {head.get('version')!r} is not supported "
                               f"(this s3sync reads {VERSION})", hint="upgrade s3sync to read it")
    if head.get("generation") != manifest.generation:
        raise fail(1, f"generation {head.get('generation')!r} is not the manifest's {manifest.generation!r}")
    if head.get("members") != manifest.members or type(head.get("members")) is not int:
        raise fail(1, f"members {head.get('members')!r} is not the manifest's {manifest.members}")
    tar_size = manifest.tar_stream_size
    end = 0  # the least offset the next member may start at
    prev: bytes | None = None
    members = files = data = 0
    for lineno, line in enumerate(it, start=2):
        value = _load(line, lineno, fail)
        if not isinstance(value, list) or len(value) != 8:
            raise fail(lineno, "not an array of 8 values [offset, path, kind, size, mode, mtime, digest, link]")
        offset, path, kind, size, mode, mtime, digest, link = value
        if not (type(offset) is int and type(size) is int and type(mode) is int and type(mtime) is int):
            raise fail(lineno, "offset, size, mode and mtime must be integers")
        if not (type(path) is str and type(kind) is str and type(digest) is str and type(link) is str):
            raise fail(lineno, "path, kind, digest and link must be strings")
        if not _check_path(path):
            raise fail(lineno, f"path {path!r} is not a relative path inside the dataset")
        key = _sort_key(path)
        if prev is not None and key <= prev:
            raise fail(lineno, f"path {path!r} is out of order (members are sorted depth-first by name, each once)")
        prev = key
        if kind not in PUBLISHED_KINDS:
            raise fail(lineno, f"kind {kind!r} is not one of {', '.join(PUBLISHED_KINDS)}")
        if size < 0 or (kind != "file" and size):
            raise fail(lineno, f"size {size} is invalid for a {kind}")
        if not 0 <= mode <= 0o7777:
            raise fail(lineno, f"mode {mode} is not permission bits (0 to 0o7777)")
        if not -2**63 <= mtime < 2**63:
            raise fail(lineno, f"mtime {mtime} is out of range")
        if kind == "file" and not _DIGEST.fullmatch(digest):
            raise fail(lineno, f"digest {digest!r} is not a {hashing.ALGORITHM} digest")
        if kind != "file" and digest:
            raise fail(lineno, f"a {kind} has no digest")
        if kind == "symlink":
            if not symlink_target_ok(path, link):
                raise fail(lineno, f"symlink target {link!r} may point outside the dataset")
        elif link:
            raise fail(lineno, f"a {kind} has no link target")
        if offset % TAR_BLOCK or offset < end:
            raise fail(lineno, f"offset {offset} is not a tar block at or after {end} (the end of the previous "
                               "member)")
        end = offset + member_span(size)
        if end + END_OF_ARCHIVE > tar_size:
            raise fail(lineno, f"member at offset {offset} ({size} bytes of data) runs past the end of the "
                               f"{tar_size}-byte tar stream")
        members += 1
        if members > manifest.members:
            raise fail(lineno, f"more members than the manifest's {manifest.members}")
        if kind == "file":
            files += 1
            data += size
        yield IndexEntry(offset, MemberRecord(path, kind, size, mode, mtime, digest, link))
    if (members, files, data) != (manifest.members, manifest.files, manifest.extracted_size):
        raise MemberIndexError(f"{source}: {members} members, {files} files, {data} bytes of file data, but the "
                               f"manifest says {manifest.members}, {manifest.files}, {manifest.extracted_size}")


def _load(line: bytes, lineno: int, fail) -> object:
    if len(line) > MAX_LINE:
        raise fail(lineno, f"longer than {MAX_LINE} bytes")
    if not line.endswith(b"\n"):
        raise fail(lineno, "cut short (no newline at the end)")
    try:
        return json.loads(line.decode("utf-8", "surrogateescape"))
    except (json.JSONDecodeError, RecursionError) as err:
        raise fail(lineno, "not valid JSON") from err
