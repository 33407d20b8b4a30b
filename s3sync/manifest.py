"""The manifest: what a publish commits and a pull trusts, as validated frozen values.

Pure data, no I/O. The JSON format is specified in ``docs/manifest.md``; this module
is its reference implementation. ``Manifest.from_json`` treats its input as
untrusted: every field is type-checked, sizes must be consistent, chunk lists must
tile each part exactly, and part keys must be plain relative names (no ``..``,
no leading ``/``) so that a hostile manifest cannot point a pull elsewhere.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from . import hashing
from .errors import ManifestError
from .planning import MAX_CHUNK_SIZE, MIN_CHUNK_SIZE, chunk_count

FORMAT = "s3sync-manifest"
VERSION = 1
MANIFEST_NAME = "manifest.json"

# \Z, not $ (which also matches before a trailing newline); [0-9], not \d (Unicode digits).
_GENERATION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_PART_KEY_RE = re.compile(r"(?P<gen>[A-Za-z0-9][A-Za-z0-9._-]{0,63})/part-(?P<n>[0-9]{5,})\.tar\Z")
GENERATION_RE = _GENERATION_RE
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}\Z")


@dataclass(frozen=True, slots=True)
class PartEntry:
    """One part: an S3 object holding ``size`` bytes of the tar stream.

    Attributes:
        key: object key relative to the dataset prefix, ``<generation>/part-NNNNN.tar``.
        size: bytes.
        etag: the object's ETag as S3 returned it (quotes included), pinned by pulls.
        digest: digest of the whole part.
        chunks: digest of each chunk, in order; ``ceil(size / chunk_size)`` entries.
    """

    key: str
    size: int
    etag: str
    digest: str
    chunks: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Manifest:
    """A published dataset (format version 1).

    Attributes:
        name: dataset name, the directory a pull creates.
        generation: id of this publish; all part keys start with it.
        created: ISO 8601 UTC time of the publish.
        chunk_size: bytes per chunk (the last chunk of a part may be shorter).
        stream_size: bytes in the whole tar stream (sum of part sizes).
        stream_digest: digest of the whole tar stream.
        files: number of regular files in the dataset.
        extracted_size: bytes of regular file data once extracted.
        members: number of tar members (files, directories, links).
        parts: the parts in stream order.
        hash: algorithm of every digest (``xxh3-128``).
        previous: the generation this one replaced (None for the first publish, or when the
            manifest it replaced could not be read). Readers that predate the field ignore it.
    """

    name: str
    generation: str
    created: str
    chunk_size: int
    stream_size: int
    stream_digest: str
    files: int
    extracted_size: int
    members: int
    parts: tuple[PartEntry, ...]
    hash: str = hashing.ALGORITHM
    previous: str | None = None

    def to_json(self) -> bytes:
        """Serialise to UTF-8 JSON bytes (stable key order)."""
        doc = {
            "format": FORMAT,
            "version": VERSION,
            "name": self.name,
            "generation": self.generation,
            "previous": self.previous,
            "created": self.created,
            "hash": self.hash,
            "chunk_size": self.chunk_size,
            "stream": {"size": self.stream_size, "digest": self.stream_digest},
            "dataset": {
                "files": self.files,
                "extracted_size": self.extracted_size,
                "members": self.members,
            },
            "parts": [
                {"key": p.key, "size": p.size, "etag": p.etag, "digest": p.digest,
                 "chunks": list(p.chunks)}
                for p in self.parts
            ],
        }
        return (json.dumps(doc, indent=1, ensure_ascii=False) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, data: bytes, source: str = "manifest") -> Manifest:
        """Parse and validate untrusted manifest bytes.

        Args:
            data: the manifest object's body.
            source: what to call it in error messages (e.g. its s3:// URL).

        Raises:
            ManifestError: naming ``source`` and the first bad field.
        """
        try:
            doc = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ManifestError(f"{source}: not valid JSON ({err})") from err
        except RecursionError as err:  # hostile nesting depth
            raise ManifestError(f"{source}: not valid JSON (nested too deeply)") from err
        v = _Validator(source)
        if not isinstance(doc, dict):
            raise ManifestError(f"{source}: top level is not a JSON object")
        if doc.get("format") != FORMAT:
            raise ManifestError(f"{source}: field 'format' is not {FORMAT!r}")
        version = doc.get("version")
        if type(version) is not int or version != VERSION:  # true == 1 and 1.0 == 1 in Python
            raise ManifestError(
                f"{source}: format version {version!r} is not supported (this s3sync reads {VERSION})",
                hint="upgrade s3sync, or republish the dataset with this version",
            )
        if doc.get("hash") != hashing.ALGORITHM:
            raise ManifestError(f"{source}: field 'hash' is {doc.get('hash')!r}, expected {hashing.ALGORITHM!r}")
        name = v.string(doc, "name", _NAME_RE)
        generation = v.string(doc, "generation", _GENERATION_RE)
        previous = doc.get("previous")
        if previous is not None:
            previous = v.string(doc, "previous", _GENERATION_RE)
        created = v.string(doc, "created")
        chunk_size = v.integer(doc, "chunk_size", MIN_CHUNK_SIZE, MAX_CHUNK_SIZE)
        stream = v.obj(doc, "stream")
        stream_size = v.integer(stream, "stream.size")
        stream_digest = v.digest(stream, "stream.digest")
        dataset = v.obj(doc, "dataset")
        files = v.integer(dataset, "dataset.files")
        extracted_size = v.integer(dataset, "dataset.extracted_size")
        members = v.integer(dataset, "dataset.members")
        raw_parts = doc.get("parts")
        if not isinstance(raw_parts, list) or not raw_parts:
            raise ManifestError(f"{source}: field 'parts' must be a non-empty list")
        parts = []
        total = 0
        for i, raw in enumerate(raw_parts):
            field = f"parts[{i}]"
            if not isinstance(raw, dict):
                raise ManifestError(f"{source}: {field} is not an object")
            key = v.string(raw, f"{field}.key")
            m = _PART_KEY_RE.match(key)
            if not m or m["gen"] != generation or int(m["n"]) != i:
                raise ManifestError(
                    f"{source}: {field}.key {key!r} is not '{generation}/part-{i:05d}.tar'"
                )
            size = v.integer(raw, f"{field}.size")
            etag = v.string(raw, f"{field}.etag")
            digest = v.digest(raw, f"{field}.digest")
            chunks = raw.get("chunks")
            if not isinstance(chunks, list) or not all(hashing.is_digest(c) for c in chunks):
                raise ManifestError(f"{source}: {field}.chunks must be a list of {hashing.ALGORITHM} digests")
            if len(chunks) != chunk_count(size, chunk_size):
                raise ManifestError(
                    f"{source}: {field}.chunks has {len(chunks)} entries but a part of {size} bytes "
                    f"in chunks of {chunk_size} needs {chunk_count(size, chunk_size)}"
                )
            parts.append(PartEntry(key, size, etag, digest, tuple(chunks)))
            total += size
        if total != stream_size:
            raise ManifestError(f"{source}: part sizes add up to {total}, but stream.size is {stream_size}")
        if extracted_size > stream_size:
            raise ManifestError(f"{source}: dataset.extracted_size {extracted_size} exceeds stream.size {stream_size}")
        _check_consistency(source, stream_size, stream_digest, files, extracted_size, members, parts)
        return cls(name, generation, created, chunk_size, stream_size, stream_digest,
                   files, extracted_size, members, tuple(parts), previous=previous)


TAR_BLOCK = 512
"""Bytes in a tar block: every header and every member's padded data is a whole number of them."""
END_OF_ARCHIVE = 2 * TAR_BLOCK
"""The end-of-archive marker: two zero blocks (POSIX.1-2017, pax, "ustar Interchange Format")."""
_EMPTY_DIGEST = hashing.digest(b"")


def _check_consistency(source: str, stream_size: int, stream_digest: str, files: int, extracted_size: int,
                       members: int, parts: list[PartEntry]) -> None:
    """Cross-field rules that hold for every manifest a publish writes (docs/manifest.md section 6).

    A manifest that breaks one was edited or damaged: refusing it before any GET is
    cheaper and clearer than finding out at the end of the pull. Each rule follows from
    the definitions alone, so no valid manifest is refused:

    - the stream is a tar archive: whole 512-byte blocks, ending with the 1024-byte
      end-of-archive marker;
    - every member takes at least one header block and every file its data, so
      ``members * 512 + extracted_size + 1024 <= stream.size``;
    - files are members (``files <= members``), and file data needs files;
    - digests of the same bytes are equal: a part of one chunk has that chunk's digest,
      an empty part the digest of no bytes, and a stream of one non-empty part that
      part's digest.

    Raises:
        ManifestError: naming ``source`` and the rule broken.
    """
    def fail(what: str) -> ManifestError:
        return ManifestError(f"{source}: inconsistent manifest: {what}")

    if stream_size % TAR_BLOCK:
        raise fail(f"stream.size {stream_size} is not a whole number of {TAR_BLOCK}-byte tar blocks")
    if stream_size < END_OF_ARCHIVE:
        raise fail(f"stream.size {stream_size} cannot hold the {END_OF_ARCHIVE}-byte tar end-of-archive marker")
    if files > members:
        raise fail(f"dataset.files {files} exceeds dataset.members {members}")
    if extracted_size and not files:
        raise fail(f"dataset.extracted_size is {extracted_size} but dataset.files is 0")
    least = members * TAR_BLOCK + extracted_size + END_OF_ARCHIVE
    if least > stream_size:
        raise fail(f"{members} members ({TAR_BLOCK}-byte headers), {extracted_size} bytes of file data and the "
                   f"end-of-archive marker need at least {least} bytes, but stream.size is {stream_size}")
    for i, part in enumerate(parts):
        if part.size == 0 and part.digest != _EMPTY_DIGEST:
            raise fail(f"parts[{i}] is empty but its digest is not the digest of no bytes")
        if len(part.chunks) == 1 and part.chunks[0] != part.digest:
            raise fail(f"parts[{i}] is one chunk, but its digest differs from that chunk's")
    full = [part for part in parts if part.size]
    if len(full) == 1 and full[0].digest != stream_digest:
        raise fail("the stream is a single part, but stream.digest differs from that part's digest")


class _Validator:
    """Field checks that raise ManifestError naming the source and field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def _fail(self, field: str, what: str) -> ManifestError:
        return ManifestError(f"{self.source}: field '{field}' {what}")

    def obj(self, doc: dict[str, Any], field: str) -> dict[str, Any]:
        value = doc.get(field)
        if not isinstance(value, dict):
            raise self._fail(field, "must be an object")
        return value

    def string(self, doc: dict[str, Any], field: str, pattern: re.Pattern[str] | None = None) -> str:
        value = doc.get(field.rsplit(".", 1)[-1])
        if not isinstance(value, str) or not value:
            raise self._fail(field, "must be a non-empty string")
        if pattern is not None and not pattern.match(value):
            raise self._fail(field, f"has an invalid value {value!r}")
        return value

    def integer(self, doc: dict[str, Any], field: str, low: int = 0, high: int | None = None) -> int:
        value = doc.get(field.rsplit(".", 1)[-1])
        if isinstance(value, bool) or not isinstance(value, int):
            raise self._fail(field, "must be an integer")
        if value < low or (high is not None and value > high):
            raise self._fail(field, f"is {value}, outside [{low}, {high if high is not None else 'inf'}]")
        return value

    def digest(self, doc: dict[str, Any], field: str) -> str:
        value = doc.get(field.rsplit(".", 1)[-1])
        if not hashing.is_digest(value):
            raise self._fail(field, f"must be a {hashing.ALGORITHM} hex digest")
        return value


def valid_name(name: str) -> bool:
    """True if ``name`` can be a dataset name (a single safe path component)."""
    return bool(_NAME_RE.match(name)) and name not in (".", "..")


NAME_RULE = ("a dataset name is 1 to 128 letters, digits, '.', '_', '+' or '-', starting with a letter or "
             "a digit")
"""``valid_name``'s rule in words, for hints."""


def claims_format(data: bytes) -> bool:
    """True if ``data`` is a JSON object whose ``format`` field names s3sync's manifest
    format, valid or not: a damaged manifest of ours may be replaced by a publish, an
    object that is not ours (a user's own ``manifest.json``) never is."""
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        return False
    return isinstance(doc, dict) and doc.get("format") == FORMAT
