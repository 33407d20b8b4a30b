"""Resolve a SOURCE that holds no s3sync manifest into a ``pieces.SplitArchive``: its
pieces in natural order, each with the strongest evidence available (issue 11, section 2).

- ``s3://BUCKET/PREFIX``: the objects directly under PREFIX, less sidecars and their detached
  signatures (``SHA256SUMS.gpg``), are the pieces; sidecars are read from the same listing.
- ``s3://BUCKET/KEY``: one object (when nothing lies under ``KEY/``); its sidecars are looked
  for beside it.
- ``http(s)://`` URLs: the pieces given; sidecars are looked for at ``URL.md5``,
  ``URL.sha256`` and the list files in each URL's directory (a 404 means none).

Evidence, strongest first: a sidecar; the S3 ETag when it is a plain MD5 (single-part
upload); a multipart ETag, recomputed from the bytes with the upload part size learnt from
``HEAD ?partNumber=1``; nothing. An http(s) server's ETag is never taken for an MD5: only
S3 defines it so.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import unquote, urlsplit

from .config import Location
from .errors import NotFoundError, SplitArchiveError, UsageError
from .manifest import MANIFEST_NAME, valid_name
from .pieces import (
    Evidence,
    Piece,
    SplitArchive,
    choose_evidence,
    claims_for,
    dataset_name,
    etag_md5,
    is_sidecar,
    multipart_etag_parts,
    order_pieces,
)
from .stores.base import ObjectInfo

LIST_SIDECARS = ("MD5SUMS", "SHA256SUMS", "SHA1SUMS", "SHA512SUMS", "md5sums.txt", "sha256sums.txt")
PIECE_SIDECARS = (".md5", ".sha256")
SIDECAR_MAX = 1 << 20
"""Bytes: a checksum file larger than this is not read (it would list ~10,000 pieces)."""


def from_s3(store, location: Location, name: str | None) -> SplitArchive:
    """The split archive at ``location`` (a prefix, or one object's key).

    Args:
        store: an ``S3Store`` for ``location.bucket``.
        location: where the archive is; its prefix holds no ``manifest.json``.
        name: the dataset name (default: the prefix's last component; for one object, its
            name less piece and archive suffixes).

    Raises:
        NotFoundError: nothing under the prefix and no object by that key.
        SplitArchiveError: the objects are not the pieces of one archive; a sidecar is unreadable.
        UsageError: no usable dataset name (give ``--name``).
        StoreError: listing or reading failed.
    """
    prefix = location.prefix
    # manifest.json is never a piece: a pull reads it as a manifest, and `adopt --replace` replaces it.
    children = [o for o in store.list_children(prefix) if not o.key.endswith("/") and _base(o.key) != MANIFEST_NAME]
    single = False
    if not children:
        if not prefix:
            raise NotFoundError(f"{location.url()}: the bucket holds no objects at its top level",
                                hint="give the prefix of a dataset or of an archive's pieces")
        try:
            info = store.head(prefix)
        except NotFoundError as err:
            raise NotFoundError(f"no dataset at {location.url()}: no manifest.json, no objects under it, and no "
                                "object by that name", hint="check the name with 's3sync ls', the bucket and "
                                "--endpoint-url") from err
        single = True
        parent = posixpath.dirname(prefix)
        siblings = [o for o in store.list_children(parent) if not o.key.endswith("/")]
        base = posixpath.basename(prefix)
        sidecar_objs = [o for o in siblings if _names_sidecar_of(_base(o.key), [base])]
        pieces_info = [info]
    else:
        sidecar_objs = [o for o in children if is_sidecar(_base(o.key))]
        by_name = {_base(o.key): o for o in children
                   if not is_sidecar(_base(o.key)) and not _is_signature(_base(o.key))}
        if not by_name:
            raise SplitArchiveError(f"{location.url()} holds only checksum files ("
                                    + ", ".join(sorted(_base(o.key) for o in sidecar_objs)[:5]) + ")")
        ordered = order_pieces(list(by_name), location.url())
        pieces_info = [by_name[n] for n in ordered]
    names = [_base(o.key) for o in pieces_info]
    texts = _read_all(lambda o: store.get(o.key), sidecar_objs, lambda o: f"s3://{store.bucket}/{o.key}")
    claims = claims_for(names, {_base(o.key): t for o, t in zip(sidecar_objs, texts)})

    def evidence(o: ObjectInfo) -> Evidence:
        claim = claims.get(_base(o.key))
        part_size = None
        if claim is None and (etag_md5(o.etag) or multipart_etag_parts(o.etag)):
            encryption = store.head(o.key).encryption  # a listing does not say
            if encryption:
                return Evidence("none", source=f"no sidecar, and the ETag of an object encrypted with {encryption} "
                                               "is not an MD5")
        if claim is None and etag_md5(o.etag) is None and multipart_etag_parts(o.etag):
            size, count = store.head_part(o.key, 1)
            if size and count == multipart_etag_parts(o.etag) and _tiles(o.size, size, count):
                part_size = size
        return choose_evidence(claim, o.etag, part_size, size=o.size)

    evidences = _parallel(evidence, pieces_info)
    pieces = tuple(Piece(_base(o.key), o.key, f"s3://{store.bucket}/{o.key}", o.size, o.etag, ev)
                   for o, ev in zip(pieces_info, evidences))
    default = dataset_name(names[0]) if single else posixpath.basename(prefix)
    return SplitArchive(_name(name, default, location.url()), location.url(), pieces, True)


def from_urls(store, urls: Sequence[str], name: str | None) -> SplitArchive:
    """The split archive made of the pieces at ``urls`` (http or https).

    Args:
        store: an ``HttpStore``.
        urls: one URL per piece, in any order (they are put in natural order by name).
        name: the dataset name (default: the first piece's name less piece and archive suffixes).

    Raises:
        UsageError: a URL without a file name, two pieces with the same name, no usable name.
        SplitArchiveError: the names are not the pieces of one archive; a sidecar is unreadable.
        StoreError: a piece cannot be reached (NotFoundError for a 404).
    """
    by_name: dict[str, str] = {}
    for url in urls:
        base = unquote(posixpath.basename(urlsplit(url).path))
        if not base:
            raise UsageError(f"{url}: names no file", hint="give the URL of each piece of the archive")
        if base in by_name:
            raise UsageError(f"{url} and {by_name[base]} have the same name {base!r}",
                             hint="give each piece once")
        by_name[base] = url
    # Messages name the URLs compactly: one line must not hold a hundred of them.
    where = urls[0] if len(urls) == 1 else f"{urls[0].rsplit('/', 1)[0]}/ ({len(urls)} URLs)"
    ordered = order_pieces(list(by_name), where) if len(by_name) > 1 else list(by_name)
    infos = _parallel(store.head, [by_name[n] for n in ordered])
    ranges = store.accepts_ranges(by_name[ordered[0]]) if any(i.size for i in infos) else True
    candidates: list[str] = []
    for n in ordered:
        candidates += [by_name[n] + suffix for suffix in PIECE_SIDECARS]
    for directory in dict.fromkeys(by_name[n].rsplit("/", 1)[0] for n in ordered):
        candidates += [f"{directory}/{f}" for f in LIST_SIDECARS]
    found = _parallel(lambda u: _get_optional(store, u), candidates)
    texts = {}
    for url, text in zip(candidates, found):
        if text is not None:
            texts.setdefault(unquote(posixpath.basename(urlsplit(url).path)), text)
    claims = claims_for(ordered, texts)
    pieces = tuple(Piece(n, by_name[n], by_name[n], info.size, info.etag,
                         choose_evidence(claims.get(n), "", None) if claims.get(n) else
                         Evidence("none", source="no sidecar (an http(s) ETag is not an MD5)"),
                         None if info.etag else info.modified)
                   for n, info in zip(ordered, infos))
    return SplitArchive(_name(name, dataset_name(ordered[0]), urls[0]), where, pieces, ranges)


def _get_optional(store, url: str) -> str | None:
    """The text at ``url``, or None if the server has none (404/410)."""
    try:
        return _decode(store.get(url), url)
    except NotFoundError:
        return None


def _read_all(get: Callable, objs: list, shown: Callable) -> list[str]:
    return _parallel(lambda o: _decode(get(o), shown(o)), objs)


def _decode(data: bytes, where: str) -> str:
    if len(data) > SIDECAR_MAX:
        raise SplitArchiveError(f"{where}: a checksum file of {len(data)} bytes is too large to be one")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _parallel(fn: Callable, items: list) -> list:
    if len(items) <= 1:
        return [fn(i) for i in items]
    with ThreadPoolExecutor(max_workers=min(8, len(items)), thread_name_prefix="s3sync-source") as pool:
        return list(pool.map(fn, items))


def _base(key: str) -> str:
    return key.rsplit("/", 1)[-1]


def _names_sidecar_of(name: str, pieces: list[str]) -> bool:
    """True if ``name`` is a list file or a per-piece sidecar of one of ``pieces``."""
    if name in LIST_SIDECARS:
        return True
    return is_sidecar(name) and any(name.startswith(p + ".") for p in pieces)


SIGNATURE_SUFFIXES = (".gpg", ".asc", ".sig")
"""A detached signature of a checksum file (``SHA256SUMS.gpg`` on Debian and Ubuntu mirrors):
neither a piece nor read (s3sync does not check OpenPGP signatures)."""


def _is_signature(name: str) -> bool:
    """True if ``name`` is a checksum file's detached signature (``SHA256SUMS.gpg``)."""
    stem, dot, ext = name.rpartition(".")
    return bool(dot) and f".{ext.lower()}" in SIGNATURE_SUFFIXES and is_sidecar(stem)


def _tiles(size: int, part_size: int, count: int) -> bool:
    """True if ``count`` upload parts of ``part_size`` bytes (the last one shorter or equal) make ``size``."""
    return part_size > 0 and (count - 1) * part_size < size <= count * part_size or (size == 0 and count == 1)


def _name(given: str | None, default: str, where: str) -> str:
    name = given or default
    if not name or not valid_name(name):
        raise UsageError(f"{where}: cannot tell the dataset's name" + (f" ({name!r} is not a valid name)" if name
                                                                        else ""),
                         hint="give one with --name NAME (letters, digits, '.', '_', '-', '+')")
    return name
