"""Adopt: turn a split archive already in S3 into an s3sync dataset, in place (issue 11, section 4).

Pipeline: ``sources.from_s3`` (pieces in natural order, each with its evidence) -> the
archive read ONCE from byte 0 with ``splitpull``'s machinery (``ChunkFetcher`` pinned to
each piece's ETag -> ``CheckedPieces``: each piece checked against its evidence, each
chunk's and piece's XXH3-128 and the stored stream's recorded -> ``OrderedReader`` ->
``codecs.DecodedReader`` if compressed) -> ``archive.ArchiveScanner`` (exactly the checks a
pull's extraction applies, writing nothing: members, files and bytes counted) -> the tar
end-of-archive marker required, only zeros after it -> a format version 2 manifest
(docs/manifest.md section 7) written at ``PREFIX/manifest.json``.

No piece is ever written, copied or deleted: the manifest names them where they are
(plain names directly under PREFIX). An existing manifest is never overwritten silently:
without ``replace`` any manifest refuses the adoption; with it, only an s3sync manifest is
replaced, conditionally on its ETag, after its history copy was written as ``publish``
writes one (``PREFIX/<generation>/manifest.json``). The write is read back, because some
servers (rclone serve s3) ignore conditional writes.

Must not import boto3, tarfile or rich.
"""

from __future__ import annotations

import posixpath
import time
from dataclasses import dataclass

from . import archive as tar
from . import sources
from .config import Location, TransferSettings, format_size
from .errors import (
    DamagedArchiveError,
    IntegrityError,
    ManifestError,
    PartChangedError,
    PieceDigestError,
    S3SyncError,
    StoreError,
    UnsafeArchiveError,
    UsageError,
)
from .manifest import (
    ADOPTED_VERSION,
    MANIFEST_NAME,
    Adoption,
    Manifest,
    PartEntry,
    PieceEvidence,
    claims_format,
)
from .pieces import Piece, SplitArchive, describe
from .progress import NullProgress, Progress
from .publish import Held, new_generation, read_current
from .pull import Tally
from .splitpull import (
    CheckedPiece,
    CheckedPieces,
    archive_codec,
    check_end,
    open_tar,
    piece_chunks,
    piece_fetcher,
    plan_chunks,
)
from .stores.base import Store


@dataclass(frozen=True, slots=True)
class AdoptResult:
    """What an adoption wrote.

    Attributes:
        manifest: the version 2 manifest now at ``url``.
        url: ``s3://BUCKET/PREFIX/manifest.json``.
        pieces: the pieces named by it, in order, each with the evidence that checked it.
        elapsed_s: wall time in seconds.
        replaced: the generation of the s3sync manifest replaced (``replace``), else None.
        unverified: names of pieces that had no evidence (adopted as read).
        bytes_received: bytes read from the store.
    """

    manifest: Manifest
    url: str
    pieces: tuple[Piece, ...]
    elapsed_s: float
    replaced: str | None = None
    unverified: tuple[str, ...] = ()
    bytes_received: int = 0


def manifest_location(location: Location, archive: SplitArchive) -> Location:
    """Where the manifest of ``archive`` goes: ``location`` itself for a prefix; for one
    object ``s3://B/DIR/KEY``, its directory ``s3://B/DIR`` (the manifest names that one piece)."""
    if len(archive.pieces) == 1 and archive.pieces[0].key == location.prefix:
        return Location(location.bucket, posixpath.dirname(location.prefix))
    return location


def _refuse_existing(held: Held, where: Location, replace: bool) -> None:
    """Refuse to write over ``held`` (the object at ``where``'s manifest key) unless
    ``replace`` and it is an s3sync manifest (valid, or damaged: ``claims_format``) that is
    not a history copy.

    Raises:
        UsageError: an s3sync manifest is there and ``replace`` was not asked for; or it is
            the history copy of a generation (``PARENT/<generation>/manifest.json``).
        StoreError: an object that is not an s3sync manifest is there.
    """
    if held.data is None:
        return
    url = where.url(MANIFEST_NAME)
    if held.generation is None and claims_format(held.data):
        # A damaged s3sync manifest (publish replaces one without asking): replaced only when
        # asked; it names no generation, so no history copy is written.
        if replace:
            return
        raise UsageError(f"{url} exists (a damaged s3sync manifest): adopt never overwrites a manifest unless "
                         "asked", hint="pass --replace to replace it")
    if held.generation is None:
        raise StoreError(f"{url} exists and is not a valid s3sync manifest: never overwritten",
                         hint="remove that object if it is yours to remove, then adopt again")
    parent, _, last = where.prefix.rpartition("/")
    if last == held.generation:
        # s3sync's own parts are a split tar too; replacing the history copy a publish keeps
        # there (docs/manifest.md) would lose that generation's record (pull refuses it alike).
        raise UsageError(f"{url} is the history copy of generation {held.generation} of "
                         f"{Location(where.bucket, parent).url()}: adopt never replaces it",
                         hint=f"pull {Location(where.bucket, parent).url()} instead (an s3sync dataset already)")
    if not replace:
        raise UsageError(f"{url} exists (generation {held.generation}): adopt never overwrites a manifest "
                         "unless asked", hint="pass --replace to replace it (it is kept as a history copy), or "
                                              "pull the dataset as it is")


def adopt(location: Location, store: Store, settings: TransferSettings, *, name: str | None = None,
          replace: bool = False, progress: Progress | None = None) -> AdoptResult:
    """Read the split archive at ``location`` once, check it, and write a version 2 manifest
    beside its pieces that names them in place.

    Args:
        location: ``s3://BUCKET/PREFIX`` holding the pieces (and sidecars), or one object's URL.
        store: an ``S3Store`` for ``location.bucket``.
        settings: transfer settings; ``chunk_size`` becomes the manifest's chunk size (bytes).
        name: the dataset name (default as ``sources.from_s3``).
        replace: replace an existing s3sync manifest (never another object).
        progress: where to report (pieces as they are checked, warnings).

    Returns:
        What was written.

    Raises:
        UsageError: a manifest exists and ``replace`` is False; no usable name.
        StoreError: an object that is not an s3sync manifest is where the manifest goes;
            another writer changed the manifest meanwhile; a request failed.
        SplitArchiveError, NotFoundError: the source is not one archive's pieces.
        PieceDigestError: a piece does not match its sidecar or ETag (nothing written).
        UnsafeArchiveError: a member a pull would refuse (nothing written).
        DamagedArchiveError: not a whole tar (or compressed tar) stream (nothing written).
        IntegrityError: a chunk failed for good (nothing written).
    """
    progress = progress or NullProgress()
    started = time.monotonic()
    # Checked before anything is read: a prefix that already holds a manifest is refused at once.
    held = read_current(store, location)
    _refuse_existing(held, location, replace)
    archive = sources.from_s3(store, location, name)
    where = manifest_location(location, archive)
    if where != location:
        held = read_current(store, where)
        _refuse_existing(held, where, replace)
    unverified = tuple(p.name for p in archive.pieces if p.evidence.kind == "none")
    if unverified:
        progress.message(f"warning: {len(unverified)} of {len(archive.pieces)} pieces have no sidecar and no MD5 "
                         f"ETag ({', '.join(unverified[:3])}{', ...' if len(unverified) > 3 else ''}): the manifest "
                         "will pin bytes that were never checked against a checksum")
    read = _read(archive, store, settings, progress)
    tally, checked = read.tally, read.known
    adoption = Adoption(archive.source, tuple(
        PieceEvidence(p.evidence.kind, p.evidence.algorithm, p.evidence.expected, p.evidence.source)
        for p in archive.pieces))
    parts = tuple(PartEntry(p.name, p.size, p.etag, checked[i].digest, checked[i].chunks)
                  for i, p in enumerate(archive.pieces))
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    manifest = Manifest(
        name=archive.name, generation="adopted-" + new_generation(), created=stamp,
        chunk_size=settings.chunk_size, stream_size=archive.size, stream_digest=read.stream_digest,
        files=tally.files, extracted_size=tally.extracted_size, members=tally.members, parts=parts,
        previous=held.generation, version=ADOPTED_VERSION, compression=read.codec, tar_size=read.tar_size,
        adopted=adoption)
    data = manifest.to_json()
    try:
        manifest = Manifest.from_json(data, where.url(MANIFEST_NAME))  # what every pull will check
    except ManifestError as err:
        raise ManifestError(f"cannot adopt {archive.source}: {err}",
                            hint="rename the piece named above (a manifest cannot name it safely)") from err
    _commit(store, where, held, data, manifest, replace)
    return AdoptResult(manifest, where.url(MANIFEST_NAME), archive.pieces, time.monotonic() - started,
                       held.generation, unverified, read.received)


@dataclass(frozen=True, slots=True)
class _Read:
    """What reading the archive once established: the compression, the tar stream's size
    (bytes, decompressed), the member tally, each piece's digests, the stored stream's
    digest and the bytes received."""

    codec: str
    tar_size: int
    tally: Tally
    known: dict[int, CheckedPiece]
    stream_digest: str
    received: int


def _read(archive: SplitArchive, store: Store, settings: TransferSettings, progress: Progress) -> _Read:
    """Read ``archive`` once from byte 0: check every piece, scan every member, require the
    end-of-archive marker and only zeros after it."""
    chunk_size = settings.chunk_size
    codec = archive_codec(archive, store, settings)
    fetcher = piece_fetcher(archive, store, settings, progress)
    jobs = plan_chunks(archive, chunk_size, 0, {})
    progress.start("download", archive.size)

    def on_checked(piece: CheckedPiece) -> None:
        p = archive.pieces[piece.index]
        progress.message(f"piece {piece.index + 1}/{len(archive.pieces)} {p.name} ({format_size(p.size)}): "
                         + describe(p.evidence) + (f": {piece.computed}, matches" if piece.verified else ""))

    chunks = piece_chunks(fetcher, archive, store, jobs, settings, progress)
    checked = CheckedPieces(archive, chunks, chunk_size, {}, on_checked, lambda: (0, 0), stream_digest=True)
    checked.check_empty_pieces()
    tally = Tally()
    stored, decoded, reader = open_tar(archive, checked, codec, 0, fetcher.next_ready if archive.ranges else None)
    scanner = tar.ArchiveScanner()
    end = 0

    def on_member(next_offset: int, record: tar.MemberRecord) -> None:
        nonlocal end
        end = next_offset
        tally.add(record)

    try:
        try:
            scanner.scan(reader, on_member)
            check_end(archive, reader, end, decoded is not None, progress, strict=True)
            if decoded is not None:
                decoded.drain()  # to the end of the compressed stream: its last checksum
            tar_size = reader.tell()
            stored.drain()  # every piece to its end: every digest checked
        except PieceDigestError:
            raise
        except (DamagedArchiveError, UnsafeArchiveError, IntegrityError) as err:
            # A damaged piece shows first as a tar or decompression error: its digest, once
            # the piece has been read to its end, is the better report (as in pull_split).
            try:
                checked.finish_current()
            except PieceDigestError as bad:
                raise bad from err
            except S3SyncError:
                pass
            if isinstance(err, IntegrityError) and stored.tell() >= archive.size:
                # Every byte was read: the tar stream itself is cut short (not a failed fetch).
                raise DamagedArchiveError(f"{archive.source}: the archive ends inside a tar member; a piece may "
                                          "be missing") from err
            raise
        finally:
            if decoded is not None:
                decoded.close()
            getattr(chunks, "close", lambda: None)()
            checked.close()  # its hashing thread
    except BaseException:
        fetcher.cancel()
        raise
    progress.finish("download")
    missing = [i for i in range(len(archive.pieces)) if i not in checked.known]
    if missing:  # cannot happen: every byte was read; never write a manifest on it anyway
        raise DamagedArchiveError(f"{archive.pieces[missing[0]].url} was not read to its end")
    return _Read(codec, tar_size, tally, dict(checked.known), checked.stream.hexdigest(),
                 fetcher.stats.bytes_received)


def _commit(store: Store, where: Location, held: Held, data: bytes, manifest: Manifest, replace: bool) -> None:
    """Write the manifest: ``If-None-Match: *`` where there was none; with ``replace``, the
    old manifest's history copy first, then ``If-Match`` its ETag. Then read back what the
    server holds (rclone serve s3 ignores both conditions); also when the write failed, as
    it may have been applied with its answer lost: then holding our bytes is success.

    Raises:
        StoreError: the manifest changed since it was read (another adopt or publish), or
            the server holds something else after the write.
    """
    key = where.key(MANIFEST_NAME)
    url = where.url(MANIFEST_NAME)
    latest = read_current(store, where)
    if latest.etag != held.etag:
        raise StoreError(f"{url} changed while the archive was read (another publish or adopt?); nothing was "
                         "written", hint="run 's3sync ls' on the prefix, then adopt again (with --replace)")
    try:
        if held.data is not None and held.generation is not None and replace:
            try:  # as publish: the replaced manifest stays reachable as a history entry
                store.put(where.key(f"{held.generation}/{MANIFEST_NAME}"), held.data, if_none_match=True)
            except PartChangedError:
                pass  # already there
        store.put(key, data, if_match=held.etag, if_none_match=held.etag is None)
    except StoreError as err:
        # The PUT may have been applied with its answer lost (a reset connection): the
        # request failed, or a retry of it (botocore's) failed its own condition (412).
        # What the server holds decides, as for publish's commit.
        try:
            now = store.get(key)
        except S3SyncError:
            now = None
        if now != data:
            if isinstance(err, PartChangedError):
                raise StoreError(f"{url} was written by someone else meanwhile; adopt wrote nothing",
                                 hint="run 's3sync ls' on the prefix to see what is there") from err
            raise
        return
    try:
        now = store.get(key)
    except S3SyncError as err:
        raise StoreError(f"could not read back {url} after writing it ({err})",
                         hint="run 's3sync ls' on the prefix to see what is there") from err
    if now != data:
        raise StoreError(f"{url} holds another manifest than the one adopt wrote (a concurrent publish or adopt "
                         "won; this server may ignore conditional writes)",
                         hint="run 's3sync ls' on the prefix to see what is there")

