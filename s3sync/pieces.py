"""Split archives s3sync did not publish: pieces, their natural order, and the evidence
that checks them (sidecar checksum files, S3 ETags). Pure data and parsing: no I/O.

A *piece* is one object (or URL) of a split archive; concatenated in natural order the
pieces give one tar stream, possibly compressed. A *sidecar* is a checksum file beside
the pieces (``PIECE.md5``, ``PIECE.sha256``, ``MD5SUMS``, ``SHA256SUMS``, ``md5sums.txt``).
Vocabulary: DESIGN.md section 5.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

EVIDENCE_KINDS = ("sidecar", "etag-md5", "etag-multipart", "none")
"""Kinds of evidence for a piece, strongest first (issue 11, section 2)."""


@dataclass(frozen=True, slots=True)
class Claim:
    """A digest a sidecar claims for one piece.

    Attributes:
        algorithm: hashlib name: ``md5``, ``sha256`` (also ``sha1``, ``sha512``).
        digest: lower-case hex.
        source: the sidecar's name (e.g. ``MD5SUMS`` or ``sbu.tar.part01.md5``).
    """

    algorithm: str
    digest: str
    source: str


@dataclass(frozen=True, slots=True)
class Evidence:
    """The strongest evidence available for one piece, and what it promises.

    Attributes:
        kind: one of ``EVIDENCE_KINDS``.
        algorithm: ``md5``, ``sha256``... (``sidecar``); ``md5`` (``etag-md5``,
            ``etag-multipart``); ``""`` for ``none``.
        expected: the hex digest promised; for ``etag-multipart`` the ETag without quotes,
            ``HEX-N`` (MD5 of the N multipart upload parts' binary MD5s).
        source: where it comes from: the sidecar's name, ``ETag``; for ``none`` why there
            is nothing (e.g. ``no sidecar; multipart ETag and the server does not give the
            upload part size``).
        upload_part_size: for ``etag-multipart``: bytes per multipart upload part (every
            part but the last has this size); else 0.
    """

    kind: str
    algorithm: str = ""
    expected: str = ""
    source: str = ""
    upload_part_size: int = 0


@dataclass(frozen=True, slots=True)
class Piece:
    """One object of a split archive.

    Attributes:
        name: its last path component, as shown to the user.
        key: the store key (S3: the full key in the bucket; HTTP: the absolute URL).
        url: ``s3://BUCKET/KEY`` or the http(s) URL, for messages.
        size: bytes.
        etag: as the server sent it (quotes included), ``""`` if none; pins every GET.
        evidence: what checks its bytes.
    """

    name: str
    key: str
    url: str
    size: int
    etag: str
    evidence: Evidence
    modified: float | None = None
    """Last-Modified (seconds since the epoch) where the server gives no ETag (many web
    servers): it identifies the piece's version instead."""


@dataclass(frozen=True, slots=True)
class SplitArchive:
    """The pieces of one archive, in order, as a pull or adopt reads them.

    Attributes:
        name: the dataset name (the directory a pull creates).
        source: the SOURCE as given (``s3://BUCKET/PREFIX``, an object, or URLs joined by spaces).
        pieces: in stream order.
        ranges: the server answers ranged GETs (S3 always; HTTP if it honours ``Range``):
            pieces are fetched in parallel chunks; otherwise each piece in one stream.
    """

    name: str
    source: str
    pieces: tuple[Piece, ...]
    ranges: bool = True

    @property
    def size(self) -> int:
        """Bytes in all pieces (the stored stream)."""
        return sum(p.size for p in self.pieces)

    def identity(self) -> bytes:
        """Canonical JSON of what makes two pulls the same pull: the pieces' keys, sizes,
        ETags (Last-Modified where there is none) and evidence. A resumed pull continues
        only if this is unchanged."""
        doc = {"format": "s3sync-split-archive", "version": 1, "name": self.name, "pieces": [
            {"key": p.key, "size": p.size, "etag": p.etag or f"modified:{p.modified}", "evidence": [
                p.evidence.kind, p.evidence.algorithm, p.evidence.expected, p.evidence.upload_part_size]}
            for p in self.pieces]}
        return (json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n").encode()
