"""Update in place: bring a complete pull of an older generation to the current one,
fetching only the members that are new or changed.

Design (issue 13, section 2): a directory-level swap. The new generation's member index
(``indexfile``) is compared with the pull's own ``.s3sync/index.jsonl``. A new tree is staged
in ``DEST_PARENT/.NAME.s3sync-update/tree``: directories are made; what the user added to
the old tree (``find_extras``: not members of its generation) is carried over (hard links,
symlinks, directories) or, with ``delete_extra``, left out, and refused before anything is
fetched where a new member needs its place; unchanged files (same recorded digest and size,
still a regular file with the recorded mtime) are hard-linked from the old tree (copied where a
link is refused, or where only mode or mtime changed) and kept only if the link (or the copy)
hashes to the new digest; symlinks are made from the index; the new, changed or altered
files are fetched by ranged GETs of their byte spans (``spans``: each member's data checked
against the index's digest, or whole chunks against their digests for a member larger than a
chunk) and extracted by ``SafeExtractor`` from a
stream made of just those spans; each member's digest must then be the index's. Then the
metadata (manifest, index, completion marker) is written into the staged tree, the extras
are looked for again (``_carry_again``: what the user wrote into the old tree during the
download is carried too), and the swap:
rename(2) ``NAME`` -> ``.NAME.s3sync-old``, ``tree`` -> ``NAME``, then the old tree is removed.

Crash safety: until the first rename, ``NAME`` is the old generation, untouched (hard links
share its inodes, but nothing writes through them: a file whose mode or mtime changes is
copied). Between the two renames, ``NAME`` is missing and ``.NAME.s3sync-old`` holds the old
generation: ``recover`` (run first by every pull) renames it back. After the second rename,
``NAME`` is the new generation, complete with its marker; a leftover ``.NAME.s3sync-old`` is
removed by ``recover``. An interrupted update is resumed by the same pull (``IDENTITY``): the
members it had fetched and written completely (``DONE``) are kept, the unchanged ones are
linked (and hashed) again, the extras carried again, anything else the interrupted run had
staged is removed (``_prune``), and only the rest is fetched.

Trust: members that are not fetched are taken as the member index describes them (their
local bytes hash to its digest); see docs/manifest.md section 10, "Trust".

The same machinery makes a partial pull (``--include``/``--exclude``, ``selection``): only the
selected members are staged, into a fresh ``NAME`` or in place of an earlier pull.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import json
import os
import shutil
import stat
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from . import archive, hashing, indexfile
from .config import Location, TransferSettings
from .engine import ChunkFetcher
from .errors import (
    DamagedDatasetError,
    DestinationBusyError,
    DestinationError,
    UsageError,
)
from .journal import INDEX_NAME, iter_index, rmtree_at, try_lock
from .manifest import MANIFEST_NAME, Manifest
from .progress import Progress
from .selection import Selection
from .spans import MemberSpan, SpanReader, check_range, plan_ranges, span_bytes
from .stores.base import Store

MARKER = "complete.json"
REPAIR_LOCK = "repair.lock"
"""In ``DIR/.s3sync``: held by ``repair``, and by an update of ``DIR`` (a running one holds an exclusive ``flock`` on it)."""
TREE = "tree"


def update_dir(dest_parent: Path, name: str) -> Path:
    """Where an update of ``name`` stages the new tree."""
    return dest_parent / f".{name}.s3sync-update"


def old_dir(dest_parent: Path, name: str) -> Path:
    """Where the old generation sits for a moment during the swap."""
    return dest_parent / f".{name}.s3sync-old"


@dataclass(frozen=True, slots=True)
class UpdateResult:
    """What an update did.

    Attributes:
        old_generation: the generation the destination held before ("" if none: a fresh
            partial pull).
        fetched: members fetched (new or changed files).
        fetched_size: bytes of file data in them.
        reused: files taken from the old tree (hard-linked or copied).
        removed: members of the old generation that the new one no longer has.
        bytes_received: bytes received from the store.
        retries: chunk attempts that were retried.
        resumed: files an interrupted run of the same pull had fetched already.
        partial: only the members an ``--include``/``--exclude`` selection picks were pulled.
        reused_size: bytes of the reused files, every one hashed (XXH3-128) as it went into the
            new tree: a file is reused only if its content has the new member's digest.
        altered: files of the old tree whose content no longer had their recorded digest
            (changed in place since the pull): fetched like changed members; and members the
            user replaced by another kind of entry (a file where a symlink or directory was), or
            edited where the new generation drops them: not kept (a warning names them).
        extras: entries of the old tree that are not members of its generation (files, symlinks,
            directories the user put there): carried into the new tree (kept), or left out with
            ``delete_extra`` (then ``extras_deleted``). ``verify`` lists kept ones as ``extra``.
        extra_paths: the first few of them (at most ``EXTRA_SAMPLE``), for a report.
        extras_deleted: the extras were left out (``delete_extra``), not kept.
    """

    old_generation: str
    fetched: int
    fetched_size: int
    reused: int
    removed: int
    bytes_received: int
    retries: int
    resumed: int = 0
    partial: bool = False
    reused_size: int = 0
    altered: int = 0
    extras: int = 0
    extra_paths: tuple[str, ...] = ()
    extras_deleted: bool = False


EXTRA_SAMPLE = 5
"""How many extra paths an ``UpdateResult`` names (the CLI prints them; verify lists all)."""
CHECK_BATCH = 1024
"""Reused files hashed per batch of the thread pool (``_stage``)."""


def _real_dir(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def recover(dest_parent: Path, name: str, progress: Progress, ident: bytes | None = None) -> None:
    """Finish or undo a swap that an interrupted update left half done (see the module
    docstring); do nothing if there is none.

    Raises:
        DestinationBusyError: another pull is updating it now (it holds the staging lock).
        DestinationError: the old tree cannot be renamed back or removed.
    """
    dest, old = dest_parent / name, old_dir(dest_parent, name)
    staging = update_dir(dest_parent, name)
    if _real_dir(staging):
        # An update running now (its lock held) may be between its renames, or removing the
        # old tree: nothing here is left over. DestinationBusyError: --wait waits for it.
        try:
            os.close(_lock(staging, dest))
        except DestinationBusyError:
            raise
        except (OSError, DestinationError):
            pass  # gone since, or not lockable: handled below as before
    if _real_dir(old):
        _put_back(dest, old, name, progress)
    if _real_dir(staging):
        try:
            mine = ident is not None and (staging / IDENTITY).read_bytes() == ident
        except OSError:
            mine = False
        if not mine:  # another pull's (or a finished one's): this pull would not resume it
            _remove_unlocked(staging)


def _put_back(dest: Path, old: Path, name: str, progress: Progress) -> None:
    try:
        if not os.path.lexists(dest):
            os.rename(old, dest)
            progress.message(f"an interrupted update left {name} aside as {old.name}: put back in place")
        else:
            _remove(old)
    except OSError as err:
        raise DestinationError(f"{old}: left by an interrupted update; cannot clean up ({err.strerror})",
                               hint=f"if {dest} is complete ('s3sync verify'), remove {old}") from err


def _remove_unlocked(staging: Path) -> None:
    """Remove a staging directory an interrupted update left, unless an update running now
    holds its lock. Never raises: ``update`` removes it anyway before it stages again."""
    try:
        fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        _remove(staging)
    except OSError:
        pass
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        rmtree_at(fd, path.name)
    finally:
        os.close(fd)


def swap(dest: Path, move_new) -> None:
    """Replace the directory ``dest`` by the tree ``move_new()`` renames to ``dest`` (see the
    module docstring for what a crash at each step leaves).

    Raises:
        DestinationError: a rename failed (the old tree is put back).
    """
    old = old_dir(dest.parent, dest.name)
    if _real_dir(old):
        _remove(old)
    try:
        os.rename(dest, old)
    except OSError as err:
        raise DestinationError(f"{dest}: cannot move the old generation aside ({err.strerror})") from err
    try:
        move_new()
    except BaseException:
        if not os.path.lexists(dest):
            os.rename(old, dest)
        raise
    try:
        _remove(old)
    except OSError:
        pass  # the next pull removes it (recover)


def _real_parents(dest: Path, rel: str, real_dirs: set[str]) -> bool:
    """True if every directory between ``dest`` and the member ``rel`` is a real directory,
    not a symlink (one planted in the old tree could point outside it: its files must not be
    hard-linked into the new generation). ``real_dirs`` caches the directories found real:
    one ``lstat`` per directory of the tree."""
    parts = rel.split("/")[:-1]
    for k in range(1, len(parts) + 1):
        sub = "/".join(parts[:k])
        if sub in real_dirs:
            continue
        try:
            st = os.lstat(dest / sub)
        except OSError:
            return False
        if not stat.S_ISDIR(st.st_mode):
            return False
        real_dirs.add(sub)
    return True


def _same_file(old: archive.MemberRecord | None, new: archive.MemberRecord, path: str) -> bool:
    """True if the old tree's file at ``path`` may serve: recorded with the new digest and
    size, and still a regular file of that size (its mtime may have moved: a file edited in
    place is then hashed and reported, not fetched in silence). Only a candidate: ``_reuse``
    takes it only if its content hashes to that digest."""
    if not _unchanged_member(old, new):
        return False
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISREG(st.st_mode) and st.st_size == new.size


def _unchanged_member(old: archive.MemberRecord | None, new: archive.MemberRecord) -> bool:
    """True if the publisher did not change the file: the old pull recorded it with the new
    digest and size."""
    return old is not None and old.kind == "file" and old.digest == new.digest and old.size == new.size


def find_extras(dest: Path, old: dict[str, archive.MemberRecord],
                changed: list[str] | None = None) -> list[tuple[str, str]]:
    """The entries of the tree ``dest`` that are not members of the generation it holds
    (``old``: its ``.s3sync/index.jsonl`` records, the directories that hold them included),
    ``DIR/.s3sync`` aside: what the user put there. Top-down (a directory before what it
    holds); symlinks are not followed. Each is ``(path, kind)``, kind ``dir``, ``symlink``
    or ``file`` (any other entry: regular, FIFO, socket...). ``changed``, if given, gets the
    members found as another kind than recorded (a file where a symlink or directory was...):
    no extra system call, the walk's ``d_type``.

    Every directory of the walk is checked to be on ``dest``'s file system: one mounted
    inside (a member directory or an extra) would be emptied with the old tree after the
    swap, or copied file by file into the new one.

    Raises:
        DestinationError: an extra directory cannot be read (what it holds would be lost); a
            directory is a mount point (``MountInside``).
    """
    members = set(old)
    for path in old:
        while "/" in path:
            path = path.rsplit("/", 1)[0]
            if path in members:
                break
            members.add(path)
    out: list[tuple[str, str]] = []
    try:
        device = os.lstat(dest).st_dev
    except OSError as err:
        raise DestinationError(f"{dest}: cannot be read ({err.strerror})") from err
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            with os.scandir(dest / rel_dir if rel_dir else dest) as it:
                entries = sorted((e.name, e.is_dir(follow_symlinks=False), e.is_symlink(), _device(e, device))
                                 for e in it)
        except FileNotFoundError:
            continue  # removed since it was listed
        except OSError as err:
            if rel_dir and rel_dir not in members:
                raise DestinationError(f"{dest / rel_dir}: not part of the dataset and cannot be read "
                                       f"({err.strerror}): an update would drop what it holds",
                                       hint="make it readable or move it out, or pull with --delete-extra") from err
            continue  # a member directory without read permission (as verify: checked as a member)
        subdirs = []
        for name, is_dir, is_link, dev in entries:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if rel == archive.METADATA_DIR:
                continue
            if dev != device:
                raise MountInside(f"{dest / rel}: is a mount point: unmount it or move it out of {dest} "
                                  "(an update would empty it with the old tree; nothing was changed)")
            kind = "dir" if is_dir else "symlink" if is_link else "file"
            if rel not in members:
                out.append((rel, kind))
            elif changed is not None and rel in old and old[rel].kind != kind:
                changed.append(rel)
            if is_dir:
                subdirs.append(rel)
        stack.extend(reversed(subdirs))
    return out


def _device(entry: os.DirEntry, default: int) -> int:
    """The ``st_dev`` of a directory entry (``lstat``), ``default`` for any other or one gone."""
    try:
        return entry.stat(follow_symlinks=False).st_dev if entry.is_dir(follow_symlinks=False) else default
    except OSError:
        return default


class _InTheWay(DestinationError):
    """An extra of the old tree is where the new tree needs a member (``_refuse_collision``)."""


class MountInside(_InTheWay):
    """A directory of the tree to update is another file system's mount point (``find_extras``)."""


def _refuse_collision(dest: Path, extras: list[tuple[str, str]], members: set[str], dirs: set[str],
                      generation: str) -> None:
    """Refuse (before anything is fetched) an extra that a member of the new generation would
    replace: the same path (but a directory where one is needed), or a path under a file or
    symlink member. ``members``: the new tree's file and symlink paths; ``dirs``: its directories.

    Raises:
        DestinationError: naming the first such path (``_InTheWay``).
    """
    for path, kind in extras:
        parts = path.split("/")
        under = next(("/".join(parts[:k]) for k in range(1, len(parts)) if "/".join(parts[:k]) in members), None)
        if under is None and path not in members and (path not in dirs or kind == "dir"):
            continue
        where = f"under {under!r}, a member of generation {generation}" if under is not None else \
            f"a {'directory' if path in dirs else 'member'} of generation {generation} takes its place"
        raise _InTheWay(f"{dest / path}: not part of the dataset pulled there, and {where}: not updating "
                               "(nothing was changed)",
                               hint="move it out of the directory, or pull with --delete-extra to drop what is "
                                    "not part of the dataset")


def _carry(dest: Path, tree: Path, extras: list[tuple[str, str]], dirs: set[str],
           ids: dict[str, tuple[str, int, int, int]] | None = None) -> tuple[list[str], list]:
    """Put the old tree's extras into the new tree: files hard-linked (copied where a link is
    refused: nothing is ever written through a link to the old tree), symlinks made again,
    directories made (mode and mtime given at the end, ``_finish_carried_dirs``), with any
    directory above them that the new generation no longer has. An entry already there (an
    interrupted run's) is made again.

    ``ids``, if given, gets each carried path's ``(kind, st_ino, st_size, st_mtime_ns)`` as
    it was carried (the inode linked; for a copy, the source's before copying): what
    ``_carry_again`` compares.

    Returns:
        the paths carried (extras of the new tree), and the carried directories as
        ``(path, mode, atime_ns, mtime_ns)``.

    Raises:
        DestinationError: an extra cannot be carried (named).
    """
    carried: list[str] = []
    made_dirs: list[tuple[str, int, int, int]] = []
    made: set[str] = set()

    def make_dir(rel: str) -> None:
        st = os.lstat(dest / rel)
        target = tree / rel
        if _real_dir(target):
            os.chmod(target, 0o700)
        else:
            if os.path.lexists(target):
                os.unlink(target)
            os.mkdir(target, 0o700)
        made.add(rel)
        carried.append(rel)
        made_dirs.append((rel, stat.S_IMODE(st.st_mode), st.st_atime_ns, st.st_mtime_ns))
        if ids is not None:
            ids[rel] = ("dir", st.st_ino, 0, 0)

    for path, kind in extras:
        parents, parent = [], path.rpartition("/")[0]
        while parent and parent not in dirs and parent not in made:
            parents.append(parent)
            parent = parent.rpartition("/")[0]
        try:
            for p in reversed(parents):  # a directory of the old generation the new one dropped
                make_dir(p)
            if kind == "dir":
                if path not in dirs:
                    make_dir(path)
                continue
            source, target = dest / path, tree / path
            if os.path.lexists(target):
                os.unlink(target)
            if kind == "symlink":
                st = os.lstat(source)
                os.symlink(os.readlink(source), target)
                os.utime(target, ns=(st.st_atime_ns, st.st_mtime_ns), follow_symlinks=False)
            else:
                try:
                    os.link(source, target, follow_symlinks=False)
                    st = os.lstat(target)  # the very inode linked
                except OSError as err:
                    if err.errno not in (errno.EMLINK, errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP) \
                            or not stat.S_ISREG(os.lstat(source).st_mode):
                        raise
                    st = os.lstat(source)
                    shutil.copy2(source, target, follow_symlinks=False)
            if ids is not None:
                ids[path] = (kind, st.st_ino, st.st_size, st.st_mtime_ns)
            carried.append(path)
        except FileNotFoundError:
            continue  # gone since the walk: nothing left to keep
        except OSError as err:
            raise DestinationError(f"{dest / path}: not part of the dataset, cannot be kept in the updated tree "
                                   f"({err.strerror})", hint="move it out of the directory, or pull with "
                                                             "--delete-extra to drop it") from err
    return carried, made_dirs


def _kind(st: os.stat_result) -> str:
    return "dir" if stat.S_ISDIR(st.st_mode) else "symlink" if stat.S_ISLNK(st.st_mode) else "file"


def _carry_again(dest: Path, tree: Path, old: dict[str, archive.MemberRecord], carried: list[str],
                 ids: dict[str, tuple[str, int, int, int]], dirs: set[str], members: set[str],
                 generation: str) -> list[str]:
    """Look for the old tree's extras again, just before the swap (``_stage`` found and
    carried them before the download): what the user wrote, saved again (an editor's rename
    over the file) or deleted in ``dest`` meanwhile. A new extra is carried; one whose inode,
    size or mtime changed since it was carried is carried again (its staged entry replaced);
    one gone (or now another kind of entry) is removed from the staged tree. The mtimes of
    the staged directories holding them are kept as they were.

    Returns:
        the paths carried now (extras of the new tree), in ``_carry``'s order.

    Raises:
        DestinationError: a new extra is where a member of the new tree is, or cannot be
            carried (the staged tree is kept: a rerun resumes it); a mount point appeared.
    """
    touched: set[str] = set()
    gone: set[str] = set()
    for path in reversed(carried):  # what a directory holds before the directory
        kind = ids[path][0]
        try:
            st = os.lstat(dest / path)
        except FileNotFoundError:
            st = None
        if st is not None and _kind(st) == kind:
            continue
        gone.add(path)
        touched.add(path)
        target = tree / path
        try:
            _remove(target) if _real_dir(target) else os.unlink(target)
        except FileNotFoundError:
            pass
    try:
        found = find_extras(dest, old)
    except _InTheWay as err:  # a mount point made meanwhile: keep the staged tree for a rerun
        raise DestinationError(str(err), hint=err.hint) from None
    todo: list[tuple[str, str]] = []
    for path, kind in found:
        was = ids.get(path)
        if was is not None and path not in gone and was[0] == kind:
            if kind == "dir":
                continue
            try:
                st = os.lstat(dest / path)
            except FileNotFoundError:
                continue  # gone since the walk: its staged entry goes below with the next rescan
            if (st.st_ino, st.st_size, st.st_mtime_ns) == was[1:]:
                continue
        todo.append((path, kind))
        touched.add(path)
    if not todo and not gone:
        return carried
    try:
        _refuse_collision(dest, todo, members, dirs, generation)
    except _InTheWay as err:  # not the refusal before fetching: keep the staged tree for a rerun
        raise DestinationError(str(err).replace("(nothing was changed)", "(it appeared during the update: "
                                                "nothing was changed; what was fetched is kept for a rerun)"),
                               hint=err.hint) from None
    parents = {p.rpartition("/")[0] for p in touched}
    times = {}
    for p in parents:
        try:
            st = os.lstat(tree / p if p else tree)
            times[p] = (st.st_atime_ns, st.st_mtime_ns)
        except OSError:
            pass
    present = {p for p in carried if p not in gone and ids[p][0] == "dir"}
    again, made_dirs = _carry(dest, tree, todo, dirs | present, ids)
    _finish_carried_dirs(tree, made_dirs)
    for p, ns in sorted(times.items(), key=lambda kv: kv[0].count("/"), reverse=True):
        try:
            os.utime(tree / p if p else tree, ns=ns, follow_symlinks=False)
        except OSError:
            pass  # removed with a directory that went
    kept = [p for p in carried if p not in gone]
    seen = set(kept)
    return kept + [p for p in again if p not in seen]


def _prune(tree: Path, keep: set[str]) -> None:
    """Remove from a staged tree an interrupted run left what this run does not put there
    (``keep``: the new tree's members and directories, the extras carried now): an extra
    deleted since, or carried by a run without ``delete_extra`` resumed with it. Never
    through a symlink (entries are unlinked; directories removed by ``_remove``)."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        try:
            with os.scandir(tree / rel_dir if rel_dir else tree) as it:
                entries = [(e.name, e.is_dir(follow_symlinks=False)) for e in it]
        except OSError:
            continue
        for name, is_dir in entries:
            rel = f"{rel_dir}/{name}" if rel_dir else name
            if rel == archive.METADATA_DIR:
                continue  # written again at the end
            if rel in keep:
                if is_dir:
                    stack.append(rel)
            elif is_dir:
                _remove(tree / rel)
            else:
                os.unlink(tree / rel)


def _finish_carried_dirs(tree: Path, made_dirs: list[tuple[str, int, int, int]]) -> None:
    """Give the carried directories their old mode and times, deepest first (what went in
    them moved their mtime)."""
    for rel, mode, atime_ns, mtime_ns in sorted(made_dirs, key=lambda d: d[0].count("/"), reverse=True):
        os.chmod(tree / rel, mode)
        os.utime(tree / rel, ns=(atime_ns, mtime_ns))


IDENTITY = "identity.json"
"""In the staging directory: what it is being built for (manifest digest, selection, the
tree it started from), so that a rerun of the same pull resumes it and any other removes it."""
DONE = "done.jsonl"
"""In the staging directory: the fetched members completely written into ``tree/`` so far,
one ``journal.iter_index`` record a line, appended after each (a rerun takes them as they are
after checking type and size, as ``pull.read_back`` does)."""


def identity(manifest_bytes: bytes, selection: Selection | None, dest: Path) -> bytes:
    """What a staging directory is built for (see ``IDENTITY``)."""
    marker = dest / archive.METADATA_DIR / MARKER
    try:
        before = hashing.digest(marker.read_bytes()) if not dest.is_symlink() else ""
    except OSError:
        before = ""
    return json.dumps({"manifest_digest": hashing.digest(manifest_bytes), "from": before,
                       "selection": selection.to_json() if selection else None}, sort_keys=True).encode()


def update(location: Location, dest: Path, store: Store, settings: TransferSettings, manifest: Manifest,
           manifest_bytes: bytes, old_generation: str | None, progress: Progress,
           selection: Selection | None = None, delete_extra: bool = False) -> UpdateResult:
    """Bring ``dest`` to ``manifest``'s generation (only the members ``selection`` picks, if given),
    fetching only what ``dest`` does not hold already. ``old_generation``: the generation of the
    pull at ``dest`` (complete or partial), or None if there is none (a fresh partial pull).

    The manifest must name a member index (``manifest.index``), be version 1 and uncompressed.
    An interrupted run is resumed by the same pull (same manifest, selection and ``dest``):
    members already fetched into the staged tree are kept.

    A file of the old tree is reused only if its content hashes to the new member's digest.
    Entries of ``dest`` that are not members of its generation (the user's: see
    ``find_extras``) are carried into the new tree, or left out if ``delete_extra``; one that
    a member of the new tree would replace, or a mount point inside ``dest``, is refused
    before anything is fetched. ``dest`` is walked again just before the swap
    (``_carry_again``): what the user wrote, saved again or deleted there during the update is
    carried, carried again or left out. Remaining window: an entry written into ``dest``
    between that walk and the first rename of the swap (the staged tree's ``chmod``, then
    ``rename``) is in the old tree and deleted with it. ``dest`` keeps its mode.

    Raises:
        DestinationBusyError: another pull is updating ``dest`` (it holds the staging directory's lock).
        DestinationError: the staging directory cannot be written; a rename failed; an extra is in
            the way of a member (not with ``delete_extra``; also one written during the update,
            the staged tree kept for a rerun); a directory inside ``dest`` is a mount point.
        MemberIndexError: the index is missing, damaged or disagrees with the manifest.
        DamagedDatasetError: a fetched member is not what the index says.
        IntegrityError, StoreError: a chunk failed for good (a rerun resumes).
        UnsafeArchiveError: a fetched member tried to escape.
    """
    from .pull import fetch_settings  # pull imports this module lazily: no import cycle

    staging = update_dir(dest.parent, dest.name)
    ident = identity(manifest_bytes, selection, dest)
    if os.path.lexists(staging) and not _real_dir(staging):
        os.unlink(staging)  # not ours: a symlink or a file is never followed
    try:
        os.mkdir(staging, 0o700)
    except FileExistsError:
        pass
    except OSError as err:
        raise DestinationError(f"{staging}: cannot create ({err.strerror})") from err
    lock = _lock(staging, dest)
    try:
        repair_lock = _lock_repair(dest) if old_generation is not None else None
    except BaseException:
        os.close(lock)
        raise
    try:
        try:
            resumed = (staging / IDENTITY).read_bytes() == ident and _real_dir(staging / TREE)
        except OSError:
            resumed = False
        if not resumed:
            for entry in os.listdir(staging):
                _remove(staging / entry) if _real_dir(staging / entry) else os.unlink(staging / entry)
            # made as a full pull makes its tree (0777 less the umask): what a fresh partial pull's
            # NAME keeps; an update gives it the old NAME's mode before the swap (staging is 0700)
            os.mkdir(staging / TREE)
            (staging / IDENTITY).write_bytes(ident)
        try:
            result = _stage(location, dest, staging, store, fetch_settings(settings, manifest.chunk_size), manifest,
                            manifest_bytes, old_generation, progress, selection, delete_extra, resumed)
        except _InTheWay:
            if not resumed:
                _remove(staging)  # it holds nothing but the member index: leave nothing behind
            raise
        tree = staging / TREE
        if old_generation is not None:
            try:
                os.chmod(tree, stat.S_IMODE(os.lstat(dest).st_mode))  # NAME keeps its mode (0755, 2775...)
            except OSError as err:
                raise DestinationError(f"{dest}: cannot read its mode ({err.strerror})") from err
            swap(dest, lambda: os.rename(tree, dest))
        else:
            try:
                os.rename(tree, dest)  # replaces an empty directory made beforehand, nothing else
            except OSError as err:
                raise DestinationError(f"{dest} appeared while pulling and is in the way; the pulled dataset "
                                       f"stays in {tree}", hint="remove it, then run the command again") from err
        _remove(staging)
        return result
    finally:
        if repair_lock is not None:
            os.close(repair_lock)
        os.close(lock)


def _lock(staging: Path, dest: Path) -> int:
    """Open and lock the staging directory of an update of ``dest``; the descriptor holds the lock.

    Raises:
        DestinationBusyError: another pull holds it (``holder_pid``): it is updating ``dest``.
        DestinationError: it cannot be locked.
        OSError: it cannot be opened.
    """
    lock = os.open(staging, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)
    try:
        busy = try_lock(lock, f"is already updating {dest} (it holds {staging})", staging, "pull")
    except OSError as err:
        os.close(lock)
        raise DestinationError(f"{staging}: cannot lock ({err.strerror})") from err
    if busy is not None:
        os.close(lock)
        raise busy
    return lock


def _lock_repair(dest: Path) -> int | None:
    """Hold ``dest``'s repair lock (``REPAIR_LOCK``) for the update: a repair and an update of
    the same directory never run at once (the swap would pull the tree from under the repair).
    None if ``dest`` has no metadata directory to hold it.

    Raises:
        DestinationBusyError: a repair holds it (``holder_pid``).
    """
    try:
        meta = os.open(dest / archive.METADATA_DIR, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        fd = os.open(REPAIR_LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=meta)
    except OSError:
        return None
    finally:
        os.close(meta)
    busy = try_lock(fd, f"is repairing {dest}", dest / archive.METADATA_DIR / REPAIR_LOCK)
    if busy is not None:
        os.close(fd)
        raise busy
    return fd


def _done_records(staging: Path) -> dict[str, archive.MemberRecord]:
    """Members an interrupted run of this pull fetched and wrote completely (``DONE``) that
    are still in the staged tree as recorded (a regular file of that size)."""
    out = {}
    try:
        for rec in iter_index(staging / DONE):
            try:
                st = os.lstat(staging / TREE / rec.path)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode) and st.st_size == rec.size:
                out[rec.path] = rec
    except (ValueError, TypeError):
        pass  # a line cut by the kill: what came before it stands
    return out


def _stage(location: Location, dest: Path, staging: Path, store: Store, settings: TransferSettings,
           manifest: Manifest, manifest_bytes: bytes, old_generation: str | None, progress: Progress,
           selection: Selection | None, delete_extra: bool, resumed: bool) -> UpdateResult:
    """Build the new tree in ``staging/tree``, its metadata included; return the counts.

    Order: read the index and sort its members (fetch, reuse, symlink, directory); find the
    old tree's extras and refuse a collision (nothing written or fetched yet); make the
    directories; carry the extras; reuse the unchanged files, each hashed as it is linked or
    copied (a file whose content lost its digest is fetched instead); fetch the rest.
    """
    tree = staging / TREE
    meta = dest / archive.METADATA_DIR
    old = {r.path: r for r in iter_index(meta / INDEX_NAME)} if old_generation is not None else {}
    done = _done_records(staging)
    index_file = indexfile.fetch(store, location, manifest, staging / "index.zst")
    records: list[archive.MemberRecord | None] = []
    offsets: list[int] = []  # every index entry's stream offset, in stream order
    files: list[tuple[int, int, archive.MemberRecord]] = []  # (entry number, position in records, record)
    header_modes: dict[int, int] = {}  # entry number -> the index's mode, where it has bits the tree does not
    dirs: list[tuple[int, archive.MemberRecord]] = []
    needed_dirs: set[str] = set()
    links: list[archive.MemberRecord] = []
    real_dirs: set[str] = set()  # directories of the old tree found to be real (not symlinks)
    kept = 0
    seen: set[str] = set()

    def need_parents(path: str) -> None:
        while "/" in path:
            path = path.rsplit("/", 1)[0]
            if path in needed_dirs:
                return
            needed_dirs.add(path)

    for entry in indexfile.read(index_file, manifest, location.url(manifest.index.key)):
        offsets.append(entry.offset)
        rec = entry.record
        mode = rec.mode & 0o777
        if rec.kind == "dir":
            dirs.append((len(records), archive.MemberRecord(rec.path, "dir", 0, mode, rec.mtime)))
            records.append(None)  # kept if selected or holding a selected member (below)
            if selection is None or selection.selects(rec.path, True):
                needed_dirs.add(rec.path)
                need_parents(rec.path)
            continue
        if selection is not None and not selection.selects(rec.path):
            continue
        need_parents(rec.path)
        seen.add(rec.path)
        if rec.kind == "symlink":
            links.append(archive.MemberRecord(rec.path, "symlink", 0, 0o777, rec.mtime, link=rec.link))
            records.append(links[-1])
            continue
        new = archive.MemberRecord(rec.path, "file", rec.size, mode, rec.mtime, rec.digest)
        if done.get(rec.path) == new:
            records.append(new)  # fetched by an interrupted run of this pull
            kept += 1
            continue
        files.append((len(offsets) - 1, len(records), new))
        if rec.mode != mode:
            header_modes[len(offsets) - 1] = rec.mode  # setuid/setgid/sticky: in the header, not the tree
        records.append(None)
    if selection is not None and not seen and not needed_dirs:
        # A typo (captions.jsn) would otherwise be recorded as a complete, empty partial pull.
        raise UsageError(f"{_describe(selection)} matches no member of {manifest.name} (generation "
                         f"{manifest.generation})", hint=selection.empty_hint(manifest.name))
    retyped: list[str] = []  # members the user replaced by another kind of entry
    extras = find_extras(dest, old, retyped) if old_generation is not None else []
    if extras and not delete_extra:
        _refuse_collision(dest, extras, seen, needed_dirs, manifest.generation)
    for pos, d in dirs:
        if d.path in needed_dirs:
            records[pos] = d
    for path in sorted(needed_dirs):
        os.makedirs(tree / path, exist_ok=True)
    if resumed:
        keep = seen | needed_dirs
        for path, _ in ([] if delete_extra else extras):
            while path and path not in keep:  # the extra and the directories above it
                keep.add(path)
                path = path.rpartition("/")[0]
        _prune(tree, keep)
    carried: list[str] = []
    carried_dirs: list = []
    carried_ids: dict[str, tuple[str, int, int, int]] = {}
    if extras and not delete_extra:
        carried, carried_dirs = _carry(dest, tree, extras, needed_dirs, carried_ids)
    elif extras:  # dropped: report those the new tree would not have had anyway
        carried = [p for p, kind in extras if not (kind == "dir" and p in needed_dirs)]
    # Reuse: only a file whose content hashes to the new member's digest (checked on the very
    # inode that goes into the new tree); any other is fetched like a changed member.
    candidates = [(n, pos, new) for n, pos, new in files
                  if _real_parents(dest, new.path, real_dirs) and _same_file(old.get(new.path), new,
                                                                              os.fspath(dest / new.path))]
    if candidates:
        progress.start("check", sum(new.size for _, _, new in candidates))

    def check(item: tuple[int, int, archive.MemberRecord]) -> bool:
        _, _, new = item
        target = tree / new.path
        if os.path.lexists(target):
            os.unlink(target)  # made by an interrupted run
        try:
            return _reuse(dest / new.path, target, old[new.path], new)
        finally:
            progress.advance("check", new.size)

    reusable: set[int] = set()
    pool = ThreadPoolExecutor(max_workers=max(1, settings.concurrency))
    try:
        # in batches: a bounded number of futures whatever the number of files, and on Ctrl-C
        # only the batch's running ones are waited for (the rest are cancelled)
        for i in range(0, len(candidates), CHECK_BATCH):
            batch = candidates[i:i + CHECK_BATCH]
            for item, ok in zip(batch, pool.map(check, batch)):
                if ok:
                    reusable.add(item[0])
                    records[item[1]] = item[2]
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
    if candidates:
        progress.finish("check")
    altered = [new.path for n, _, new in candidates if n not in reusable]
    # A file the publisher did not change that is no longer the regular file of its size in the
    # old tree (appended to, truncated): the user's edit, lost to the fetch: say so too.
    chosen = {n for n, _, _ in candidates}
    altered += [new.path for n, _, new in files if n not in chosen and _unchanged_member(old.get(new.path), new)
                and os.path.lexists(dest / new.path)]
    # What the user changed that goes with the old tree: a member replaced by another kind of
    # entry (a file where a symlink or directory was; a directory only if nothing it holds is
    # carried), a file the new generation drops edited since the pull. Reported, not kept.
    carried_set = set(carried) if not delete_extra else set()
    lost = [p for p in retyped if p not in carried_set]
    retyped_set = set(retyped)
    for path, r in old.items():
        if r.kind != "file" or path in seen or path in retyped_set:
            continue
        try:
            st = os.lstat(dest / path)
        except OSError:
            continue  # deleted by the user: nothing lost
        if not stat.S_ISREG(st.st_mode) or st.st_size != r.size or st.st_mtime_ns // 1_000_000_000 != r.mtime:
            lost.append(path)
    wanted: list[tuple[int, archive.MemberRecord]] = []  # (position in records, index record)
    spans: list[MemberSpan] = []
    for n, pos, new in files:
        if n in reusable:
            continue
        wanted.append((pos, new))
        last = n + 1 == len(offsets)
        spans.append(MemberSpan(offsets[n], manifest.tar_stream_size if last else offsets[n + 1],
                                dataclasses.replace(new, mode=header_modes.get(n, new.mode))))
    reused = len(reusable)
    reused_size = sum(new.size for n, _, new in candidates if n in reusable)
    removed = sum(1 for path, r in old.items() if r.kind != "dir" and path not in seen)
    fetched_size = sum(r.size for _, r in wanted)
    what = f"updating {dest.name} from generation {old_generation} to {manifest.generation}" \
        if old_generation is not None else f"pulling {dest.name} (generation {manifest.generation})"
    if selection is not None:
        what += f", the members selected by {_describe(selection)}"
    progress.message(f"{what}: {len(wanted)} files to fetch, {reused} unchanged ({reused_size:,} bytes hashed), "
                     f"{removed} removed" + (f", {kept} fetched by the interrupted run" if kept else ""))
    if altered:
        progress.message(f"warning: {len(altered)} file(s) of {dest} no longer had the content recorded when they "
                         f"were pulled (changed in place): fetched again: {', '.join(altered[:EXTRA_SAMPLE])}"
                         + (", ..." if len(altered) > EXTRA_SAMPLE else ""))
    if lost:
        progress.message(f"warning: {len(lost)} member(s) of generation {old_generation} in {dest} were changed since "
                         "they were pulled (replaced by another kind of entry, or edited where the new generation "
                         f"drops them): not kept: {', '.join(lost[:EXTRA_SAMPLE])}"
                         + (", ..." if len(lost) > EXTRA_SAMPLE else ""))
    fetcher = ChunkFetcher(store, location.key, settings, progress, check_members=check_range)
    jobs = plan_ranges(manifest, spans)
    progress.start("download", sum(j.length for j in jobs))
    extractor = archive.SafeExtractor(tree)
    got = iter(wanted)
    with open(staging / DONE, "a", encoding="utf-8", errors="surrogateescape") as log:

        def on_member(_next: int, record: archive.MemberRecord) -> None:
            pos, want = next(got, (None, None))
            if want is None or record != want:
                raise DamagedDatasetError(
                    f"dataset {manifest.name} (generation {manifest.generation}) is damaged: the member extracted "
                    f"from the byte span of {want.path if want else 'nothing'!r} is {record.path!r} "
                    f"({record.kind}, {record.size} bytes, digest {record.digest}), not what the member index says")
            records[pos] = record
            r = record
            log.write(json.dumps((r.path, r.kind, r.size, r.mode, r.mtime, r.digest, r.link), ensure_ascii=False,
                                 separators=(",", ":")) + "\n")
            log.flush()  # to the kernel: a kill -9 loses nothing written

        if jobs:
            chunks = fetcher.fetch(jobs)
            try:
                extractor.extract(SpanReader(span_bytes(chunks, spans), fetcher.next_ready), on_member)
            finally:
                chunks.close()
    if next(got, None) is not None:
        raise DamagedDatasetError(f"dataset {manifest.name} (generation {manifest.generation}) is damaged: "
                                  "fewer members in the fetched spans than the member index lists")
    progress.finish("download")
    for rec in links:
        if os.path.lexists(tree / rec.path):
            os.unlink(tree / rec.path)  # made by an interrupted run
        os.symlink(rec.link, tree / rec.path)
        os.utime(tree / rec.path, ns=(rec.mtime * 1_000_000_000,) * 2, follow_symlinks=False)
    _finish_carried_dirs(tree, carried_dirs)
    extractor.finish_dirs([d for _, d in dirs if d.path in needed_dirs])
    _write_metadata(tree, manifest, manifest_bytes, records, old_generation, selection, location)
    if old_generation is not None and not delete_extra:
        carried = _carry_again(dest, tree, old, carried, carried_ids, needed_dirs, seen, manifest.generation)
    return UpdateResult(old_generation or "", len(wanted), fetched_size, reused, removed,
                        fetcher.stats.bytes_received, fetcher.stats.retries, kept, selection is not None,
                        reused_size, len(altered) + len(lost), len(carried), tuple(carried[:EXTRA_SAMPLE]),
                        bool(carried) and delete_extra)


def _describe(selection: Selection) -> str:
    return " ".join([f"--include {p}" for p in selection.include] + [f"--exclude {p}" for p in selection.exclude])


def _reuse(source: Path, target: Path, old: archive.MemberRecord, new: archive.MemberRecord) -> bool:
    """Put the old tree's file ``source`` at ``target`` if its content still has the new
    member's digest; return whether it did (else ``target`` is left absent: fetch it).

    If its mode and mtime stay (recorded, and as the linked inode has them now: a member the
    user chmod-ed is not taken as is) it is hard-linked, and the link is hashed: the very inode the
    new tree will hold, reached through the staging directory (mode 0700, this pull's alone),
    so nothing can be swapped in between the hash and the swap. Else (a link would change the
    old tree's file, still in place) it is copied from a descriptor ``archive.open_regular``
    opened (``O_NOFOLLOW``, checked to be a regular file), hashed as it is copied, and the copy
    gets the new mode and mtime. Digest: XXH3-128 (``hashing``), as ``verify`` computes it.

    Raises:
        OSError: ``target`` cannot be written (ENOSPC, EACCES...).
    """
    if (old.mode, old.mtime) == (new.mode, new.mtime):
        try:
            os.link(source, target, follow_symlinks=False)
        except FileNotFoundError:
            return False
        except OSError as err:
            if err.errno not in (errno.EMLINK, errno.EPERM, errno.EXDEV, errno.ENOTSUP, errno.EOPNOTSUPP):
                raise
        else:
            try:
                st = os.lstat(target)
            except OSError:
                return False
            if (stat.S_IMODE(st.st_mode), st.st_mtime_ns // 1_000_000_000) == (new.mode, new.mtime):
                try:
                    ok = archive.file_digest(target) == new.digest  # refuses what is not a regular file
                except OSError:
                    ok = False
                if not ok:
                    os.unlink(target)
                return ok
            os.unlink(target)  # the user chmod-ed or touched it: a copy gets the new mode and mtime
    try:
        src = archive.open_regular(source)
    except OSError:
        return False
    hasher = hashing.Hasher()
    with src, open(target, "wb") as out:
        while True:
            try:
                block = src.read(archive.COPY_BUFSIZE)
            except OSError:
                block = None
            if not block:
                break
            hasher.update(block)
            out.write(block)
    if block is None or hasher.hexdigest() != new.digest:
        os.unlink(target)
        return False
    os.chmod(target, new.mode)
    os.utime(target, ns=(new.mtime * 1_000_000_000,) * 2)
    return True


def _write_metadata(tree: Path, manifest: Manifest, manifest_bytes: bytes,
                    records: list[archive.MemberRecord | None], old_generation: str | None,
                    selection: Selection | None, location: Location) -> None:
    """Write ``.s3sync/`` as a pull does (manifest, index, completion marker with the source
    ``url`` that ``repair`` reads), fsynced."""
    meta = tree / archive.METADATA_DIR
    meta.mkdir(exist_ok=True)
    with open(meta / INDEX_NAME, "wb") as f:
        for r in records:
            if r is not None:  # every one is by now: _stage checked that each fetched member arrived
                f.write((json.dumps((r.path, r.kind, r.size, r.mode, r.mtime, r.digest, r.link), ensure_ascii=False,
                                    separators=(",", ":")) + "\n").encode("utf-8", "surrogateescape"))
        os.fsync(f.fileno())
    kept = [r for r in records if r is not None]
    marker: dict[str, object] = {"generation": manifest.generation, "manifest_digest": hashing.digest(manifest_bytes),
                                 "mode": "extract", "name": manifest.name, "url": location.url()}
    if old_generation is not None:
        marker["updated_from"] = old_generation
    if selection is not None:
        # verify checks the recorded members against these counts, not the manifest's
        marker["selection"] = {**selection.to_json(), "members": len(kept),
                               "files": sum(1 for r in kept if r.kind == "file"),
                               "size": sum(r.size for r in kept if r.kind == "file")}
    marker.update({
                   "index_digest": archive.file_digest(meta / INDEX_NAME),
                   "completed": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    for name, data in ((MANIFEST_NAME, manifest_bytes), (MARKER, (json.dumps(marker) + "\n").encode())):
        with open(meta / name, "wb") as f:
            f.write(data)
            os.fsync(f.fileno())
