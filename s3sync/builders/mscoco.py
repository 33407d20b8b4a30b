"""Build MS COCO from its original zips (issue 12, section 1): ``s3sync build mscoco DIR``.

For a year (2014 or 2017) three zips are read from the COCO site
(``http://images.cocodataset.org``, an S3 bucket) or a mirror with the same paths:
``zips/trainY.zip``, ``zips/valY.zip`` and ``annotations/annotations_trainvalY.zip``. Each is
extracted while it downloads (``zipstream``) into a staging area inside DIR and moved into
place only once its digest matched (MD5: built in for the official files, ``--checksums``
overrides; the server's ETag, where it is a plain MD5, must agree). Then ``DIR/captions.json``
(train and val captions merged, COCO model, ``file_name`` relative to DIR) and
``DIR/neuraltalk2.json`` are written.

Layout of DIR while building (``.s3sync/mscoco/`` stays, holding the completion records)::

    DIR/.s3sync/build.json                  the build state record (``buildstate``): complete or not,
                                           which root files builds of DIR wrote
    DIR/.s3sync/mscoco/lock                 flock: one build per DIR at a time
    DIR/.s3sync/mscoco/NAME.zip.json        completion record: url, size, ETag, digest, evidence,
                                           members [[name, size], ...], top-level entries
    DIR/.s3sync/mscoco/NAME.zip/state.json  what is being extracted (url, size, ETag, expected digest)
    DIR/.s3sync/mscoco/NAME.zip/members.jsonl  one line per member written and checked (CRC-32)
    DIR/.s3sync/mscoco/NAME.zip/verified.json  the zip checked out: its entries are being moved
    DIR/.s3sync/mscoco/NAME.zip/tree/       the members extracted so far

Resume, the design that downloads least while every byte in DIR is checked:

- a zip with a completion record whose members are all there with their sizes is not
  fetched at all (no request);
- an interrupted zip whose server ETag is a plain MD5 equal to the expected digest: only the
  byte ranges of the members not yet recorded are fetched (each checked by its CRC-32, every
  request pinned to that ETag with If-Match), plus the zip's tail (its central directory).
  The whole-zip MD5 cannot be computed again without all bytes (hashlib states cannot be
  saved), so its evidence is the ETag: S3 computed it over the object every byte came from;
- otherwise (no MD5 ETag: a mirror), the whole zip is read again so that its digest is
  computed in this run, and only the members not yet recorded are written.

A zip whose digest differs is read once more (``ZIP_ATTEMPTS`` in all), then ``BuildError``
names it with the expected and computed digests; its staging area is removed, so nothing
unverified is ever presented as complete.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .. import buildstate, captions
from ..archive import METADATA_DIR
from ..config import TransferSettings
from ..engine import with_retries
from ..errors import BuildError, CaptionsError, DestinationError, S3SyncError
from ..fsutil import write_atomic
from ..pieces import Claim, etag_md5
from ..progress import NullProgress, Progress
from ..pull import fetch_settings
from ..zipstream import (
    ExtractedMember,
    ZipDirectory,
    read_bytes,
    read_directory,
    stream_extract,
)

COCO_SITE = "http://images.cocodataset.org"
YEARS = (2014, 2017)
BUILD_DIR = f"{METADATA_DIR}/mscoco"
"""The build's own state, inside the metadata directory that publish leaves out."""
NEURALTALK2_NAME = "neuraltalk2.json"
ZIP_ATTEMPTS = 2
"""Whole passes over a zip whose digest differs before the build fails."""
RECORD_VERSION = 1
RERUN_HINT = ("the source or the network failed for now (after retries): run the same build command again "
              "later; it resumes")


@dataclass(frozen=True, slots=True)
class KnownZip:
    """An official COCO zip: size (bytes) and MD5 (hex), from datasets.md (checked against
    the COCO site's S3 ETags)."""

    size: int
    md5: str


KNOWN: dict[str, KnownZip] = {
    "zips/train2014.zip": KnownZip(13_510_573_713, "0da8c0bd3d6becc4dcb32757491aca88"),
    "zips/val2014.zip": KnownZip(6_645_013_297, "a3d79f5ed8d289b7a7554ce06a5782b3"),
    "annotations/annotations_trainval2014.zip": KnownZip(252_872_794, "0a379cfc70b0e71301e0f377548639bd"),
    "zips/train2017.zip": KnownZip(19_336_861_798, "cced6f7f71b7629ddf16f17bbcfab6b2"),
    "zips/val2017.zip": KnownZip(815_585_330, "442b8da7639aecaf257c1dceb8ba8c80"),
    "annotations/annotations_trainval2017.zip": KnownZip(252_907_541, "f4bbac642086de4f52a3fdda2de5fa2c"),
}
SPLITS = ("train", "val")


@dataclass(frozen=True, slots=True)
class Expected:
    """The digest a zip must have: hashlib ``algorithm``, hex ``digest``, and where it comes from."""

    algorithm: str
    digest: str
    source: str


@dataclass(frozen=True, slots=True)
class ZipOutcome:
    """What the build did with one zip.

    Attributes:
        name: the zip's file name (``train2014.zip``).
        url: where it was read.
        size: its bytes.
        fetched: False if a complete earlier build made it (no request at all).
        mode: ``full`` (every byte read, digest computed), ``partial`` (only missing
            members), or ``skipped``.
        bytes_received: bytes received for it in this run (retries included).
        members: its members (files and directories).
        written: members written in this run.
        refetched: members fetched again after a failed CRC-32.
        digest: the digest checked (hex), ``algorithm`` its hashlib name.
        evidence: how the zip was checked, as a phrase.
    """

    name: str
    url: str
    size: int
    fetched: bool
    mode: str
    bytes_received: int
    members: int
    written: int
    refetched: int
    algorithm: str
    digest: str
    evidence: str


@dataclass(frozen=True, slots=True)
class MscocoResult:
    """What ``build_mscoco`` did.

    Attributes:
        dest: DIR.
        year: 2014 or 2017.
        zips: one outcome per zip, in build order.
        zips_fetched, zips_skipped: how many were read / already complete.
        bytes_received: bytes received in this run.
        members: members of the three zips.
        images, captions: counts of ``captions.json``.
        elapsed_s: wall time in seconds.
    """

    dest: Path
    year: int
    zips: tuple[ZipOutcome, ...]
    zips_fetched: int
    zips_skipped: int
    bytes_received: int
    members: int
    images: int
    captions: int
    elapsed_s: float


def zip_paths(year: int) -> tuple[str, ...]:
    """The paths (under the site's base URL) of a year's zips: train images, val images,
    annotations."""
    return (f"zips/train{year}.zip", f"zips/val{year}.zip", f"annotations/annotations_trainval{year}.zip")


def expected_digests(year: int, checksums: dict[str, Claim] | None = None) -> dict[str, Expected]:
    """The digest each of ``year``'s zips must have: the built-in MD5, unless ``checksums``
    (``pieces.parse_checksums`` of an md5sum-format file) lists the zip by path or file name.

    Raises:
        BuildError: a zip neither built in nor listed (cannot happen for 2014 and 2017).
    """
    out = {}
    for path in zip_paths(year):
        claim = (checksums or {}).get(path) or (checksums or {}).get(path.rsplit("/", 1)[1])
        if claim is not None:
            out[path] = Expected(claim.algorithm, claim.digest, claim.source)
        elif path in KNOWN:
            out[path] = Expected("md5", KNOWN[path].md5, "s3sync's table of the official COCO zips")
        else:
            raise BuildError(f"no checksum known for {path}", hint="pass --checksums FILE (md5sum format)")
    return out


class _Stage:
    """The engine's ``download`` bytes reported under the zip's own stage name."""

    def __init__(self, progress: Progress, stage: str) -> None:
        self._progress, self._stage = progress, stage

    def start(self, stage: str, total: int) -> None:
        self._progress.start(self._stage, total)

    def advance(self, stage: str, n: int) -> None:
        self._progress.advance(self._stage, n)

    def message(self, text: str) -> None:
        self._progress.message(text)

    def finish(self, stage: str) -> None:
        self._progress.finish(self._stage)


def build_mscoco(dest: Path, store, settings: TransferSettings, *, year: int = 2014, base_url: str = COCO_SITE,
                 checksums: dict[str, Claim] | None = None, progress: Progress | None = None,
                 on_zip: Callable[[ZipOutcome], None] = lambda z: None) -> MscocoResult:
    """Build MS COCO ``year`` into ``dest`` (see the module docstring).

    Args:
        dest: DIR (created if missing).
        store: an ``HttpStore``.
        settings: concurrency, chunk size and retries.
        year: 2014 or 2017.
        base_url: the COCO site or a mirror with the same paths.
        checksums: claims from a ``--checksums`` file, overriding the built-in MD5s.
        progress: gets bytes per zip (stage = the zip's file name) and messages.
        on_zip: called once per zip when it is verified (or found complete).

    Raises:
        BuildError: a zip's digest differs after ``ZIP_ATTEMPTS``, its size or ETag
            disagrees with the expected one, a member still fails its CRC-32, DIR holds
            an entry s3sync did not make where a zip's would go, or a ``captions.json`` or
            ``neuraltalk2.json`` no build of DIR wrote.
        CaptionsError: the captions files do not hold together.
        DestinationError: DIR cannot be written, or another build holds it.
        S3SyncError: a download failed for good (a transient failure, after the retries,
            carries the hint to run the build again: it resumes).
    """
    if year not in YEARS:
        raise BuildError(f"no COCO build for year {year}", hint="use --year 2014 or --year 2017")
    started = time.monotonic()
    progress = progress or NullProgress()
    expected = expected_digests(year, checksums)
    fetch = fetch_settings(settings, settings.chunk_size)
    outcomes = []
    with _locked(dest) as meta:
        state = buildstate.begin(dest, "mscoco", (captions.CAPTIONS_NAME, NEURALTALK2_NAME))
        # Every zip still to fetch is checked before the first is downloaded: a mirror or a
        # --checksums file that does not fit one zip is said at once, not after 20 GB.
        for path in zip_paths(year):
            if not _recorded(meta, path):
                url = f"{base_url.rstrip('/')}/{path}"
                try:
                    _check_served(store, url, path, expected[path], fetch, progress)
                except S3SyncError as err:
                    if err.retriable:
                        err.hint = RERUN_HINT
                    raise
        for path in zip_paths(year):
            url = f"{base_url.rstrip('/')}/{path}"
            try:
                outcome = _build_zip(dest, meta, path, url, expected[path], store, fetch, progress)
            except S3SyncError as err:
                if err.retriable:  # retried already: the store's hint (about --endpoint-url) does not fit a build
                    err.hint = RERUN_HINT
                raise
            outcomes.append(outcome)
            on_zip(outcome)
        counts = write_captions(dest, year)
        buildstate.finish(state)
    return MscocoResult(dest, year, tuple(outcomes), sum(o.fetched for o in outcomes),
                        sum(not o.fetched for o in outcomes), sum(o.bytes_received for o in outcomes),
                        sum(o.members for o in outcomes), counts.images, counts.annotations,
                        time.monotonic() - started)


def _recorded(meta: Path, path: str) -> bool:
    """Whether the zip at ``path`` has a completion record (it is not fetched again)."""
    record = _load_json(meta / f"{path.rsplit('/', 1)[1]}.json")
    return record is not None and record.get("version") == RECORD_VERSION


def _check_served(store, url: str, path: str, expected: Expected, settings: TransferSettings,
                  progress: Progress):
    """HEAD ``url`` and check what it serves against what is expected of ``path``: the size of
    the official file when the built-in MD5 applies, and an ETag that is an MD5. Returns the
    ``ObjectInfo``.

    Raises:
        BuildError: the size or the ETag disagrees.
    """
    name = path.rsplit("/", 1)[1]
    info = with_retries(lambda: store.head(url), settings, _retrying(progress, f"HEAD {url}"))
    known = KNOWN.get(path)
    if known is not None and expected.digest == known.md5 and info.size != known.size:
        raise BuildError(f"{url} is {info.size:,} bytes, but the official {name} is {known.size:,} bytes "
                         f"(MD5 {known.md5})", hint="check --mirror, or pass --checksums listing the files it serves")
    served_md5 = etag_md5(info.etag)
    if served_md5 is not None and expected.algorithm == "md5" and served_md5 != expected.digest:
        raise BuildError(f"{url}: the server's ETag says its MD5 is {served_md5}, but {expected.source} says "
                         f"{expected.digest}: two sources disagree", hint="check --mirror and --checksums")
    return info


@contextlib.contextmanager
def _locked(dest: Path) -> Iterator[Path]:
    """``DIR/.s3sync/mscoco``, created, held under an exclusive flock for the build."""
    meta = dest / BUILD_DIR
    try:
        meta.mkdir(parents=True, exist_ok=True)
        fd = os.open(meta / "lock", os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    except OSError as err:
        raise DestinationError(f"{meta}: cannot create ({err.strerror})") from err
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DestinationError(f"another s3sync build is writing {dest}",
                                   hint="wait for it to finish (or stop it), then run the command again") from None
        yield meta
    finally:
        os.close(fd)


# ---------------------------------------------------------------------------- one zip


def _build_zip(dest: Path, meta: Path, path: str, url: str, expected: Expected, store,
               settings: TransferSettings, progress: Progress) -> ZipOutcome:
    name = path.rsplit("/", 1)[1]
    record_path = meta / f"{name}.json"
    record = _load_json(record_path)
    if record is not None and record.get("version") == RECORD_VERSION and record.get("digest") != expected.digest:
        raise BuildError(f"{dest} holds {name} built with {record.get('algorithm', '').upper()} {record.get('digest')}, "
                         f"but {expected.source} says {expected.digest}",
                         hint=f"pass the --checksums (or --year, --mirror) the build of {dest} used; or, to build "
                              f"this {name}, use another DIR or remove {record_path} and the directories it made "
                              f"({', '.join(record.get('tops', []))})")
    if record is not None and record.get("version") == RECORD_VERSION:
        missing = _missing(dest, record["members"])
        if missing is None:
            return ZipOutcome(name, url, record["size"], False, "skipped", 0, len(record["members"]), 0, 0,
                              record["algorithm"], record["digest"], record["evidence"])
        raise BuildError(f"{dest / missing}: missing or not the size {name} gives it, though {name} was built "
                         "(something removed or changed it)",
                         hint=f"remove {record_path} and the directories {name} made "
                              f"({', '.join(record['tops'])} in {dest}), then run the same command again")
    info = _check_served(store, url, path, expected, settings, progress)
    served_md5 = etag_md5(info.etag)
    staging = meta / name
    state = {"version": RECORD_VERSION, "url": url, "size": info.size, "etag": info.etag,
             "algorithm": expected.algorithm, "expected": expected.digest}
    verified = _load_json(staging / "verified.json")
    if verified is not None and _load_json(staging / "state.json") == state:
        return _commit(dest, staging, record_path, name, url, verified, progress)
    if verified is not None:
        _take_back(dest, staging, name, verified, progress)
    if info.size and not with_retries(lambda: store.accepts_ranges(url), settings,
                                      _retrying(progress, f"the range probe of {url}")):
        raise BuildError(f"{url}: the server does not answer ranged GETs (Range), which extracting while "
                         "downloading needs: a zip's central directory is at its end",
                         hint="use a --mirror that answers them (the COCO site, S3, nginx, Apache and "
                              "'rclone serve http' do; 'python -m http.server' does not)")
    done = _resume_state(staging, state)
    etag_evidence = served_md5 is not None and served_md5 == expected.digest
    stage = _Stage(progress, name)

    def fetch(offset: int, length: int) -> bytes:
        return read_bytes(store, url, offset, length, info.etag or None, settings)

    received = refetched = written = 0
    for attempt in range(1, ZIP_ATTEMPTS + 1):
        directory = read_directory(fetch, info.size, url)
        received += info.size - directory.tail_offset
        _check_tops(dest, directory, name)
        # A member counts as done only if the central directory read now gives it the CRC-32 recorded.
        done = {m.name: m.crc for m in directory.members if done.get(m.name) == (0 if m.is_dir else m.crc)}
        full = not done or not etag_evidence
        todo = [m for m in directory.members if m.name not in done]
        progress.start(name, directory.size if full else sum(m.span_end - m.offset for m in todo))
        if done:
            progress.message(f"{name}: {len(done):,} of {len(directory.members):,} members were extracted by an "
                             "earlier run; " + ("fetching only the others" if not full else
                                               "reading the whole zip again to compute its digest"))
        journal_path = staging / "members.jsonl"
        try:
            journal = open(journal_path, "a", encoding="utf-8")  # noqa: SIM115 - closed by the with below
        except OSError as err:
            raise _write_error(journal_path, err) from err
        with journal:

            def record_member(m: ExtractedMember) -> None:
                try:
                    journal.write(json.dumps([m.name, m.size, m.crc]) + "\n")
                    journal.flush()  # a kill after this line keeps the member; before it, the member is redone
                except OSError as err:
                    raise _write_error(journal_path, err) from err

            result = stream_extract(store, directory, info.etag, staging / "tree", settings, full=full,
                                    skip=frozenset(done), algorithm=expected.algorithm, on_member=record_member,
                                    progress=stage)
        progress.finish(name)
        received += result.bytes_received
        refetched += result.refetched
        written += result.written
        if not full:
            evidence = (f"CRC-32 of every member; whole-zip MD5 from the server's ETag (every request pinned to it): "
                        f"{len(done):,} members were extracted by an earlier run")
            digest = expected.digest
            break
        if result.digest == expected.digest:
            evidence = f"{expected.algorithm.upper()} of the whole zip, computed in this run, and CRC-32 of every member"
            digest = result.digest
            break
        progress.message(f"warning: {name} has {expected.algorithm.upper()} {result.digest}, expected "
                         f"{expected.digest} ({expected.source})" + ("; fetching it again" if attempt < ZIP_ATTEMPTS
                                                                      else ""))
        shutil.rmtree(staging, ignore_errors=True)
        if attempt == ZIP_ATTEMPTS:
            raise BuildError(f"{url}: {expected.algorithm.upper()} is {result.digest} after {ZIP_ATTEMPTS} downloads, "
                             f"expected {expected.digest} ({expected.source}); nothing of it was kept",
                             hint="the file at the source is not the one expected: check --mirror and --checksums")
        done = _resume_state(staging, state)
    members = [[m.name, m.size] for m in directory.members]
    tops = sorted({m.name.split("/", 1)[0] for m in directory.members})
    verified = {"digest": digest, "algorithm": expected.algorithm, "evidence": evidence, "members": members,
                "tops": tops, "size": info.size, "etag": info.etag, "bytes_received": received,
                "written": written, "refetched": refetched, "mode": "full" if full else "partial"}
    _sync()
    _write(staging / "verified.json", json.dumps(verified).encode())
    return _commit(dest, staging, record_path, name, url, verified, progress)


def _commit(dest: Path, staging: Path, record_path: Path, name: str, url: str, verified: dict,
            progress: Progress) -> ZipOutcome:
    """Move a verified zip's top-level entries from staging into DIR, write its completion
    record, remove its staging area. Each step can be repeated after a kill."""
    tree = staging / "tree"
    for top in verified["tops"]:
        source, target = tree / top, dest / top
        if os.path.lexists(source):
            try:
                os.rename(source, target)
            except OSError as err:
                raise BuildError(f"{target}: cannot move {name}'s {top} into place ({err.strerror})",
                                 hint=f"remove {target} if s3sync did not make it, then run the same command "
                                      "again") from err
    record = {"version": RECORD_VERSION, "url": url, **verified}
    _write(record_path, json.dumps(record).encode())
    shutil.rmtree(staging, ignore_errors=True)
    progress.message(f"{name}: verified ({verified['evidence']})")
    return ZipOutcome(name, url, verified["size"], True, verified["mode"], verified["bytes_received"],
                      len(verified["members"]), verified["written"], verified["refetched"], verified["algorithm"],
                      verified["digest"], verified["evidence"])


def _take_back(dest: Path, staging: Path, name: str, verified: dict, progress: Progress) -> None:
    """Remove from DIR what a killed ``_commit`` of an older version of the zip moved there.

    ``verified.json`` in the staging area says the build was moving these top-level
    entries into DIR when it stopped (no completion record yet); the zip at the source is
    another one now (size, ETag or expected digest changed), so they are not the zip's to
    keep and are built again. ``verified.json`` is removed only once they are gone, so a
    kill during the removal is resumed the same way.

    Raises:
        DestinationError: an entry cannot be removed.
    """
    tree = staging / "tree"
    tops = [top for top in verified.get("tops") or [] if isinstance(top, str) and "/" not in top
            and top not in ("", ".", "..", METADATA_DIR, captions.CAPTIONS_NAME, NEURALTALK2_NAME)]
    moved = [top for top in tops if os.path.lexists(dest / top) and not os.path.lexists(tree / top)]
    if moved:
        progress.message(f"{name}: changed at the source since an interrupted run verified it; removing what that "
                         f"run had moved into place ({', '.join(moved)}) to build it again")
    for top in moved:
        target = dest / top
        try:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink()
        except OSError as err:
            raise DestinationError(f"{target}: cannot remove the old {name}'s {top} ({err.strerror or err})",
                                   hint=f"remove {target} yourself, then run the same command again") from err
    (staging / "verified.json").unlink(missing_ok=True)


def _retrying(progress: Progress, what: str) -> Callable[[S3SyncError, float], None]:
    def say(err: S3SyncError, delay_s: float) -> None:
        progress.message(f"retrying {what} in {delay_s:.1f}s: {err}")
    return say


def _resume_state(staging: Path, state: dict) -> dict[str, int]:
    """The members an earlier run of the same zip extracted (recorded, and present with their
    sizes), name -> recorded CRC-32; an area left by another zip (other size, ETag or digest)
    is emptied."""
    if _load_json(staging / "state.json") != state:
        shutil.rmtree(staging, ignore_errors=True)
    try:
        (staging / "tree").mkdir(parents=True, exist_ok=True)
        if not (staging / "state.json").exists():
            write_atomic(staging / "state.json", json.dumps(state).encode())
    except OSError as err:
        raise DestinationError(f"{staging}: cannot create ({err.strerror})") from err
    done: dict[str, int] = {}
    try:
        lines = (staging / "members.jsonl").read_text(encoding="utf-8").splitlines()
    except FileNotFoundError:
        return done
    tree = staging / "tree"
    for line in lines:
        try:
            member, size, crc = json.loads(line)
        except ValueError:
            continue  # the line a kill cut short: that member is done again
        if _present(tree / member, member, size):
            done[member] = crc
    return done


def _present(path: Path, member: str, size: int) -> bool:
    try:
        st = path.lstat()
    except OSError:
        return False
    return path.is_dir() if member.endswith("/") else (path.is_file() and st.st_size == size)


def _missing(dest: Path, members: list) -> str | None:
    """The first member of a completion record not in DIR with its size, else None."""
    for member, size in members:
        if not _present(dest / member, member, size):
            return member
    return None


def _check_tops(dest: Path, directory: ZipDirectory, name: str) -> None:
    """Refuse a zip whose top-level entries would replace something in DIR that no build made."""
    for top in sorted({m.name.split("/", 1)[0] for m in directory.members}):
        if top in (METADATA_DIR, captions.CAPTIONS_NAME, NEURALTALK2_NAME):
            raise BuildError(f"{directory.url}: its member {top!r} would overwrite what the build writes",
                             hint="the zip is not a COCO zip: check --mirror")
        if os.path.lexists(dest / top):
            raise BuildError(f"{dest / top} exists, but no build of {name} made it",
                             hint=f"remove or move {dest / top} (or build into another DIR), then run the same "
                                  "command again")


def _write_error(path: Path, err: OSError) -> DestinationError:
    """A failed write of one of the build's files (ENOSPC, EFBIG, EACCES...) as one line naming it."""
    return DestinationError(f"{path}: cannot write ({err.strerror or err})",
                            hint="free some space or fix the permissions, then run the same command again; "
                                 "it resumes")


def _write(path: Path, data: bytes) -> None:
    """``fsutil.write_atomic`` of one of the build's files; its OSError as ``DestinationError``.

    Raises:
        DestinationError: naming ``path``.
    """
    try:
        write_atomic(path, data)
    except OSError as err:
        raise _write_error(path, err) from err


def _load_json(path: Path) -> dict | None:
    try:
        doc = json.loads(path.read_bytes())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) else None


def _sync() -> None:
    """Flush the extracted files to disk before their zip is recorded as verified (one
    ``sync(2)`` per zip instead of an fsync per member)."""
    os.sync()


# ---------------------------------------------------------------------------- captions


def write_captions(dest: Path, year: int) -> captions.CaptionCounts:
    """Write ``DIR/captions.json`` (train and val captions merged) and ``DIR/neuraltalk2.json``.

    COCO's own image and annotation ids are kept (they are unique across the splits:
    ``captions.check`` confirms it); each ``file_name`` gets its split's directory
    (``train2014/COCO_train2014_000000000009.jpg``) and must name a file in DIR.

    Raises:
        BuildError: a captions file is missing.
        CaptionsError: a captions file does not parse, or the merged one does not hold together.
        DestinationError: ``captions.json`` or ``neuraltalk2.json`` cannot be written (a full disk).
    """
    images: list[dict] = []
    annotations: list[dict] = []
    licenses: list[dict] = []
    for split in SPLITS:
        folder = f"{split}{year}"
        path = dest / "annotations" / f"captions_{folder}.json"
        try:
            data = path.read_bytes()
        except OSError as err:
            raise BuildError(f"{path}: cannot read ({err.strerror})",
                             hint=f"annotations_trainval{year}.zip should hold it: check --mirror") from err
        doc = captions.parse(data, str(path))
        for i, image in enumerate(doc["images"]):
            if not isinstance(image, dict):
                raise CaptionsError(f"{path}: images[{i}] is a JSON {type(image).__name__}, not an object",
                                    hint="the annotations zip is damaged or not COCO's: check --mirror")
        images += [{**image, "file_name": f"{folder}/{image.get('file_name')}"} for image in doc["images"]]
        annotations += doc["annotations"]
        known = {lic.get("id") for lic in licenses}
        licenses += [lic for lic in doc.get("licenses") or [] if isinstance(lic, dict) and lic.get("id") not in known]
    merged = captions.new_document(f"MS COCO {year} captions, train{year} and val{year} (built by s3sync)",
                                   images, annotations, licenses)
    counts = captions.check(merged, str(dest / captions.CAPTIONS_NAME), exists=lambda n: (dest / n).is_file())
    _write(dest / captions.CAPTIONS_NAME, captions.dumps(merged))
    _write(dest / NEURALTALK2_NAME, captions.dumps(captions.to_neuraltalk2(merged)))
    return counts


__all__ = ["COCO_SITE", "KNOWN", "YEARS", "Expected", "KnownZip", "MscocoResult", "ZipOutcome", "build_mscoco",
           "expected_digests", "write_captions", "zip_paths"]
