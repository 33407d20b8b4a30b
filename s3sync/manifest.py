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
"""The version ``publish`` writes (every s3sync reads it)."""
ADOPTED_VERSION = 2
"""The version ``adopt`` writes: pieces in place under PREFIX, maybe compressed (docs/manifest.md section 7)."""
VERSIONS = (VERSION, ADOPTED_VERSION)
"""Versions this s3sync reads."""
MANIFEST_NAME = "manifest.json"
COMPRESSIONS = ("none", "gzip", "zstd", "bzip2", "xz")
"""Values of a version 2 manifest's ``compression``: ``codecs.CODECS`` (this module is core and
must not import codecs; tests/unit/test_manifest_v2.py checks that the two agree)."""
EVIDENCE_KINDS = ("sidecar", "etag-md5", "etag-multipart", "none")
"""``pieces.EVIDENCE_KINDS`` (pieces imports this module, so the tuple is repeated; a test checks it)."""
METADATA_DIR = ".s3sync"
"""``archive.METADATA_DIR``: the directory a pull keeps beside the data (repeated: core does not
import machinery; a test checks that they agree). A ``--no-extract`` pull stores each piece
under its own name beside it, so no piece may take that name."""
INDEX_NAME = "index.jsonl.zst"
"""The member index's object name under ``<generation>/`` (``index.py`` owns its format)."""
MAX_KEY_BYTES = 1024
"""S3's longest object key (UTF-8 bytes): a piece name cannot be longer."""

# \Z, not $ (which also matches before a trailing newline); [0-9], not \d (Unicode digits).
_GENERATION_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
_PART_KEY_RE = re.compile(r"(?P<gen>[A-Za-z0-9][A-Za-z0-9._-]{0,63})/part-(?P<n>[0-9]{5,})\.tar\Z")
GENERATION_RE = _GENERATION_RE
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_PRINTABLE_RE = re.compile(r"[^\x00-\x1f\x7f-\x9f]*\Z")
"""A string with no control character (C0, DEL, C1): free text that ``ls`` prints, so that
a hostile manifest cannot send terminal escape sequences."""
_HEX_RE = re.compile(r"[0-9a-f]{1,128}(-[0-9]{1,5})?\Z")
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,127}\Z")


@dataclass(frozen=True, slots=True)
class PartEntry:
    """One part: an S3 object holding ``size`` bytes of the tar stream.

    Attributes:
        key: object key relative to the dataset prefix: ``<generation>/part-NNNNN.tar``
            (version 1), or a piece's plain name directly under the prefix (version 2).
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
class PieceEvidence:
    """What checked an adopted piece's bytes when ``adopt`` read them (``pieces.Evidence``).

    Attributes:
        kind: one of ``EVIDENCE_KINDS``.
        algorithm: ``md5``, ``sha256``...; ``""`` for ``none``.
        expected: the hex digest that matched (``HEX-N`` for a multipart ETag); ``""`` for ``none``.
        source: the sidecar's name, ``ETag``, or why there was nothing.
    """

    kind: str
    algorithm: str = ""
    expected: str = ""
    source: str = ""


@dataclass(frozen=True, slots=True)
class Adoption:
    """Where an adopted dataset's pieces came from (version 2 only).

    Attributes:
        source: the URL adopted (``s3://BUCKET/PREFIX`` or the one object's URL).
        evidence: per part, in order, what checked its bytes during ``adopt``.
    """

    source: str
    evidence: tuple[PieceEvidence, ...]


@dataclass(frozen=True, slots=True)
class CaptionsSummary:
    """The counts of the COCO-model captions file a publish checked (optional manifest field
    ``captions``, docs/manifest.md section 2).

    Attributes:
        path: the file's path relative to the dataset root (``captions.json``).
        images: entries of its ``images`` list.
        annotations: entries of its ``annotations`` list (captions).
    """

    path: str
    images: int
    annotations: int


@dataclass(frozen=True, slots=True)
class IndexRef:
    """Where a generation's member index is and how to check it (optional manifest field
    ``index``, docs/manifest.md section 10).

    Attributes:
        key: object key relative to the dataset prefix: ``<generation>/index.jsonl.zst``.
        size: bytes of the (compressed) object.
        digest: digest of those bytes.
    """

    key: str
    size: int
    digest: str


@dataclass(frozen=True, slots=True)
class Manifest:
    """A published (version 1) or adopted (version 2) dataset.

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
        version: format version: 1 (``publish``) or 2 (``adopt``).
        compression: version 2: the compression of the stored stream (one of
            ``COMPRESSIONS``); chunk, part and stream digests are over the stored bytes.
        tar_size: version 2: bytes of the (decompressed) tar stream; 0 means
            ``stream_size`` (version 1, or uncompressed).
        adopted: version 2: the source and each piece's evidence.
        captions: the counts of the dataset's ``captions.json`` as checked by the publish, or
            None (no captions file, or a publish before the field existed). Optional, no
            version bump: readers that predate it ignore it.
        index: the generation's member index, or None (a publish before issue 13, an adopted
            archive). Optional, no version bump: readers that predate it ignore it.
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
    version: int = VERSION
    compression: str = "none"
    tar_size: int = 0
    adopted: Adoption | None = None
    captions: CaptionsSummary | None = None
    index: IndexRef | None = None

    @property
    def tar_stream_size(self) -> int:
        """Bytes of the tar stream once decompressed (``stream_size`` when not compressed)."""
        return self.tar_size or self.stream_size

    @property
    def compressed(self) -> bool:
        """True if the stored stream is compressed (version 2 only)."""
        return self.compression != "none"

    def to_json(self) -> bytes:
        """Serialise to UTF-8 JSON bytes (stable key order)."""
        doc = {
            "format": FORMAT,
            "version": self.version,
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
        if self.captions is not None:
            doc["captions"] = {"path": self.captions.path, "images": self.captions.images,
                               "annotations": self.captions.annotations}
        if self.index is not None:
            doc["index"] = {"key": self.index.key, "size": self.index.size, "digest": self.index.digest}
        if self.version >= ADOPTED_VERSION:
            doc["compression"] = self.compression
            doc["tar_size"] = self.tar_stream_size
            adopted = self.adopted or Adoption("", ())
            doc["adopted"] = {"source": adopted.source, "evidence": [
                {"kind": e.kind, "algorithm": e.algorithm, "expected": e.expected, "source": e.source}
                for e in adopted.evidence]}
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
        try:
            json.dumps(doc, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as err:
            raise ManifestError(f"{source}: holds a lone UTF-16 surrogate escape (\\ud800-\\udfff), which is not "
                                "text") from err
        v = _Validator(source)
        if not isinstance(doc, dict):
            raise ManifestError(f"{source}: top level is not a JSON object")
        if doc.get("format") != FORMAT:
            raise ManifestError(f"{source}: field 'format' is not {FORMAT!r}")
        version = doc.get("version")
        if type(version) is not int or version not in VERSIONS:  # true == 1 and 1.0 == 1 in Python
            raise ManifestError(
                f"{source}: format version {version!r} is not supported (this s3sync reads versions "
                f"{', '.join(map(str, VERSIONS))}): upgrade s3sync to read it",
                hint="upgrade s3sync (pip install -U s3sync), or republish the dataset with this version",
            )
        adopted_format = version == ADOPTED_VERSION
        if doc.get("hash") != hashing.ALGORITHM:
            raise ManifestError(f"{source}: field 'hash' is {doc.get('hash')!r}, expected {hashing.ALGORITHM!r}")
        name = v.string(doc, "name", _NAME_RE)
        generation = v.string(doc, "generation", _GENERATION_RE)
        previous = doc.get("previous")
        if previous is not None:
            previous = v.string(doc, "previous", _GENERATION_RE)
        created = v.string(doc, "created", _PRINTABLE_RE)  # printed by `ls`: no escape sequences
        chunk_size = v.integer(doc, "chunk_size", MIN_CHUNK_SIZE, MAX_CHUNK_SIZE)
        stream = v.obj(doc, "stream")
        stream_size = v.integer(stream, "stream.size")
        stream_digest = v.digest(stream, "stream.digest")
        dataset = v.obj(doc, "dataset")
        files = v.integer(dataset, "dataset.files")
        extracted_size = v.integer(dataset, "dataset.extracted_size")
        members = v.integer(dataset, "dataset.members")
        captions = _captions(v, doc) if "captions" in doc else None
        index = _index(v, doc, generation) if "index" in doc else None
        raw_parts = doc.get("parts")
        if not isinstance(raw_parts, list) or not raw_parts:
            raise ManifestError(f"{source}: field 'parts' must be a non-empty list")
        parts = []
        total = 0
        seen_keys: set[str] = set()
        for i, raw in enumerate(raw_parts):
            field = f"parts[{i}]"
            if not isinstance(raw, dict):
                raise ManifestError(f"{source}: {field} is not an object")
            key = v.string(raw, f"{field}.key")
            if adopted_format:
                _check_piece_key(source, field, key, seen_keys)
            else:
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
        if not adopted_format:
            if extracted_size > stream_size:
                raise ManifestError(
                    f"{source}: dataset.extracted_size {extracted_size} exceeds stream.size {stream_size}")
            _check_consistency(source, stream_size, stream_digest, files, extracted_size, members, parts)
            return cls(name, generation, created, chunk_size, stream_size, stream_digest,
                       files, extracted_size, members, tuple(parts), previous=previous, captions=captions,
                       index=index)
        compression = doc.get("compression")
        if not isinstance(compression, str) or compression not in COMPRESSIONS:
            raise ManifestError(f"{source}: field 'compression' is {compression!r}, not one of "
                                f"{', '.join(COMPRESSIONS)}", hint="upgrade s3sync to read this compression")
        tar_size = v.integer(doc, "tar_size")
        if compression == "none" and tar_size != stream_size:
            raise ManifestError(f"{source}: field 'tar_size' is {tar_size}, but an uncompressed stream's tar "
                                f"size is stream.size {stream_size}")
        adopted = _adoption(v, doc, source, len(parts))
        _check_adopted(source, stream_size, stream_digest, tar_size, files, extracted_size, members, parts)
        return cls(name, generation, created, chunk_size, stream_size, stream_digest,
                   files, extracted_size, members, tuple(parts), previous=previous, version=version,
                   compression=compression, tar_size=tar_size, adopted=adopted, captions=captions, index=index)


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
    _check_digests(fail, parts, stream_digest)


def _check_digests(fail, parts: list[PartEntry], stream_digest: str) -> None:
    """The digest rules every manifest obeys, whoever wrote its tar stream: an empty part has
    the digest of no bytes, a one-chunk part that chunk's digest, a one-part stream that
    part's digest."""
    for i, part in enumerate(parts):
        if part.size == 0 and part.digest != _EMPTY_DIGEST:
            raise fail(f"parts[{i}] is empty but its digest is not the digest of no bytes")
        if len(part.chunks) == 1 and part.chunks[0] != part.digest:
            raise fail(f"parts[{i}] is one chunk, but its digest differs from that chunk's")
    full = [part for part in parts if part.size]
    if len(full) == 1 and full[0].digest != stream_digest:
        raise fail("the stream is a single part, but stream.digest differs from that part's digest")


def _check_piece_key(source: str, field: str, key: str, seen: set[str]) -> None:
    """A version 2 part key: a piece's plain name directly under the prefix (no ``/``, no
    ``..``, not ``manifest.json`` or ``.s3sync``, no control character, at most ``MAX_KEY_BYTES`` bytes of
    UTF-8), named once. A hostile manifest cannot make a pull read another prefix's objects,
    or its own manifest, as data.

    Raises:
        ManifestError: naming the field and what is wrong.
    """
    def fail(what: str) -> ManifestError:
        return ManifestError(f"{source}: {field}.key {key!r} {what}")

    if "/" in key or key in (".", ".."):
        raise fail("is not a plain piece name directly under the prefix")
    if key == MANIFEST_NAME:
        raise fail("names the manifest itself")
    if key == METADATA_DIR:
        # --no-extract writes each piece under its key into the tree whose .s3sync/ holds the
        # resume state and the completion marker.
        raise fail("is the name of the metadata directory a pull keeps beside the pieces")
    if _CONTROL_RE.search(key):
        raise fail("holds a control character")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as err:  # a lone surrogate from a \ud800 escape
        raise fail("is not valid Unicode") from err
    if size > MAX_KEY_BYTES:
        raise fail(f"is {size} bytes of UTF-8, longer than S3's {MAX_KEY_BYTES}")
    if key in seen:
        raise fail("names a piece twice")
    seen.add(key)


def _captions(v: _Validator, doc: dict[str, Any]) -> CaptionsSummary:
    """The optional ``captions`` object: ``path`` a relative path inside the dataset (``verify``
    reads the file there, ``ls`` prints it: no ``..``, no control character, not under
    ``.s3sync/``), ``images`` and ``annotations`` integers >= 0.

    Raises:
        ManifestError: naming the field and what is wrong.
    """
    raw = v.obj(doc, "captions")
    path = v.string(raw, "captions.path", _PRINTABLE_RE)
    parts = path.split("/")
    if path.startswith("/") or "\\" in path or any(p in ("", ".", "..") for p in parts) or parts[0] == METADATA_DIR \
            or len(path.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise ManifestError(f"{v.source}: field 'captions.path' {path!r} is not a relative path inside the dataset")
    return CaptionsSummary(path, v.integer(raw, "captions.images"), v.integer(raw, "captions.annotations"))


def _index(v: _Validator, doc: dict[str, Any], generation: str) -> IndexRef:
    """The optional ``index`` object: ``key`` exactly ``<generation>/index.jsonl.zst`` (a hostile
    manifest cannot make a reader fetch another object as the index), ``size`` an integer >= 1,
    ``digest`` a digest.

    Raises:
        ManifestError: naming the field and what is wrong.
    """
    raw = v.obj(doc, "index")
    key = v.string(raw, "index.key")
    if key != f"{generation}/{INDEX_NAME}":
        raise ManifestError(f"{v.source}: field 'index.key' {key!r} is not '{generation}/{INDEX_NAME}'")
    return IndexRef(key, v.integer(raw, "index.size", 1), v.digest(raw, "index.digest"))


def _adoption(v: _Validator, doc: dict[str, Any], source: str, parts: int) -> Adoption:
    """The ``adopted`` object of a version 2 manifest: ``source`` and one evidence per part."""
    adopted = v.obj(doc, "adopted")
    url = v.string(adopted, "adopted.source", _PRINTABLE_RE)  # printed by `ls`
    raw = adopted.get("evidence")
    if not isinstance(raw, list) or len(raw) != parts:
        raise ManifestError(f"{source}: field 'adopted.evidence' must be a list of {parts} entries (one per part)")
    out = []
    for i, e in enumerate(raw):
        field = f"adopted.evidence[{i}]"
        if not isinstance(e, dict):
            raise ManifestError(f"{source}: {field} is not an object")
        kind = e.get("kind")
        if kind not in EVIDENCE_KINDS:
            raise ManifestError(f"{source}: {field}.kind is {kind!r}, not one of {', '.join(EVIDENCE_KINDS)}")
        values = [e.get(k) for k in ("algorithm", "expected", "source")]
        if not all(isinstance(x, str) and not _CONTROL_RE.search(x) for x in values):
            raise ManifestError(f"{source}: {field}: algorithm, expected and source must be strings")
        algorithm, expected, origin = values
        if kind == "none" and (algorithm or expected):
            raise ManifestError(f"{source}: {field}: evidence 'none' has no algorithm or digest")
        if kind != "none" and (not re.fullmatch(r"[a-z0-9-]{1,16}", algorithm) or not _HEX_RE.match(expected)):
            raise ManifestError(f"{source}: {field}: algorithm {algorithm!r} or digest {expected!r} is invalid")
        out.append(PieceEvidence(kind, algorithm, expected, origin))
    return Adoption(url, tuple(out))


def _check_adopted(source: str, stream_size: int, stream_digest: str, tar_size: int, files: int,
                   extracted_size: int, members: int, parts: list[PartEntry]) -> None:
    """The cross-field rules of ``_check_consistency`` that hold for any tar stream, not only
    the ones s3sync's own writer makes (docs/manifest.md section 7.3). Relaxed for version 2:
    ``extracted_size`` may exceed the stream (GNU sparse members; compression), the tar
    stream need not be whole 1024-byte end-of-archive plus record padding (GNU tar accepts
    one zero block), and the stored stream of a compressed archive has any size. Kept:
    the tar stream holds a header per member and at least one zero block, files are
    members, file data needs files, and digests of the same bytes are equal.

    Raises:
        ManifestError: naming ``source`` and the rule broken.
    """
    def fail(what: str) -> ManifestError:
        return ManifestError(f"{source}: inconsistent manifest: {what}")

    if files > members:
        raise fail(f"dataset.files {files} exceeds dataset.members {members}")
    if extracted_size and not files:
        raise fail(f"dataset.extracted_size is {extracted_size} but dataset.files is 0")
    least = members * TAR_BLOCK + TAR_BLOCK
    if least > tar_size:
        raise fail(f"{members} members ({TAR_BLOCK}-byte headers) and the end-of-archive marker need at least "
                   f"{least} bytes, but tar_size is {tar_size}")
    if not stream_size:
        raise fail("stream.size is 0: an archive has at least one byte")
    _check_digests(fail, parts, stream_digest)


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
