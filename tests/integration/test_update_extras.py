"""Update in place and what the pulled tree holds beyond its dataset (issue 13, breaker findings
of test_break13), on moto and rclone:

- a file of the old tree is reused only if its content hashes to the new member's digest (a
  file altered in place, its mtime put back, is fetched again);
- files, symlinks and directories the user added inside DIR (extras) are carried into the new
  tree and reported, or dropped with ``--delete-extra``; one in the way of a new member is
  refused before anything is fetched; a partial pull's extras are what its selection did not
  pull; ``verify`` lists the kept ones as ``extra``;
- Ctrl-C or kill -9 while hashing or carrying leaves the old tree as it was.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from s3sync import archive, cli, update
from s3sync.config import Location, S3Settings, TransferSettings
from s3sync.errors import DestinationError
from s3sync.publish import publish
from s3sync.pull import pull
from s3sync.selection import Selection
from s3sync.stores.s3 import S3Store, make_client
from s3sync.verify import verify
from tests.faults.proxy import FaultProxy, Rule

WORKTREE = Path(__file__).resolve().parents[2]
SMALL = TransferSettings(concurrency=4, chunk_size=64 * 1024, part_size=256 * 1024, window=8)


@pytest.fixture
def store(s3_server, bucket):
    client = make_client(S3Settings(endpoint_url=s3_server.endpoint_url))
    s = S3Store(client, bucket, concurrency=4)
    yield s
    s.close()


def make_tree(root: Path) -> Path:
    """30 files of 5-20 KB in 3 directories, a captions file, a symlink, an empty directory."""
    for d in range(3):
        (root / "images" / f"{d:04d}").mkdir(parents=True)
        for i in range(10):
            (root / "images" / f"{d:04d}" / f"{i:09d}.jpg").write_bytes(os.urandom(5_000 + 1_511 * i))
    (root / "old").mkdir()
    (root / "old" / "gone.txt").write_text("this directory goes in the next generation")
    (root / "empty_dir").mkdir()
    (root / "captions.json").write_text('{"images": [], "annotations": []}')
    os.symlink("images/0000/000000001.jpg", root / "link.jpg")
    return root


def tree_of(root: Path) -> dict[str, object]:
    """Kind, content, mode, mtime (whole seconds) and inode of everything under ``root`` but
    ``.s3sync``."""
    out: dict[str, object] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not (d == ".s3sync" and Path(dirpath) == root)]
        for name in filenames + dirnames:
            p = Path(dirpath, name)
            st = p.lstat()
            rel = p.relative_to(root).as_posix()
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p), int(st.st_mtime))
            elif p.is_dir():
                out[rel] = ("dir", st.st_mode & 0o7777, int(st.st_mtime))
            else:
                out[rel] = ("file", p.read_bytes(), st.st_mode & 0o7777, int(st.st_mtime), st.st_ino)
    return out


def without_inodes(tree: dict[str, object]) -> dict[str, object]:
    return {k: v[:4] if v[0] == "file" else v for k, v in tree.items()}


def add_extras(dest: Path) -> list[str]:
    """What a user adds inside a pulled dataset; returns every path verify lists as extra. The
    member directories get their mtimes back (else verify lists them as changed too)."""
    touched = [dest / "images", dest / "images" / "0001", dest / "old"]
    times = [(p, p.stat()) for p in touched]
    (dest / "notes.txt").write_text("a week of work")
    (dest / "images" / "0001" / "mine.jpg").write_bytes(b"my own image")
    os.symlink("../notes.txt", dest / "images" / "my-link")
    (dest / "work" / "deep").mkdir(parents=True)
    (dest / "work" / "deep" / "result.csv").write_text("a,b\n1,2\n")
    (dest / "work" / "empty").mkdir()
    os.chmod(dest / "work" / "deep", 0o750)
    os.utime(dest / "work" / "deep", (1_500_000_000, 1_500_000_000))
    (dest / "old" / "kept-here.txt").write_text("in a directory the next generation drops")
    for p, st in times:
        os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))
    return sorted(["notes.txt", "images/0001/mine.jpg", "images/my-link", "work", "work/deep",
                   "work/deep/result.csv", "work/empty", "old", "old/kept-here.txt"])


def change(src: Path) -> None:
    (src / "images" / "0001" / "000000005.jpg").write_bytes(os.urandom(12_000))
    (src / "images" / "0002" / "000000100.jpg").write_bytes(os.urandom(9_000))
    (src / "images" / "0000" / "000000007.jpg").unlink()
    (src / "old" / "gone.txt").unlink()
    (src / "old").rmdir()


def setup(store: S3Store, tmp_path: Path, selection: Selection | None = None):
    src = make_tree(tmp_path / "src" / "ds")
    loc = Location(store.bucket, "ds")
    a = publish(src, "ds", loc, store, SMALL).manifest
    dest = pull(loc, None, tmp_path / "data", store, SMALL, selection=selection).dest
    return src, loc, a, dest


def extras_of(dest: Path) -> list[str]:
    problems = verify(dest, 2).problems
    assert all(p.kind == "extra" for p in problems), problems
    return sorted(p.path for p in problems)


def store_url(store: S3Store) -> str:
    return store.client.meta.endpoint_url


# --------------------------------------------------------------------------- reuse by content


def test_reused_files_are_hashed_and_an_altered_one_is_fetched(store: S3Store, tmp_path: Path) -> None:
    src, loc, a, dest = setup(store, tmp_path)
    victim = dest / "images" / "0002" / "000000003.jpg"
    st = victim.stat()
    data = bytearray(victim.read_bytes())
    data[7] ^= 1
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))
    kept = dest / "images" / "0000" / "000000002.jpg"
    inode = kept.stat().st_ino
    change(src)
    b = publish(src, "ds", loc, store, SMALL).manifest
    r = pull(loc, None, tmp_path / "data", store, SMALL).updated
    assert r is not None and r.altered == 1 and r.fetched == 3 and r.extras == 0
    assert r.reused == b.files - 3
    # every reused byte was hashed: all the file data but what was fetched
    assert r.reused_size == b.extracted_size - r.fetched_size > 0
    assert kept.stat().st_ino == inode  # still a hard link of the old file
    assert victim.read_bytes() == (src / "images" / "0002" / "000000003.jpg").read_bytes()
    assert verify(dest, 2).problems == ()


def test_files_edited_in_place_are_reported_however_edited(store: S3Store, tmp_path: Path, capsys) -> None:
    """A file the publisher did not change, edited by the user (bytes overwritten with a new mtime,
    or appended to): fetched again, and reported as altered with a warning naming it (a second
    new user saw the edit replaced in silence)."""
    src, loc, a, dest = setup(store, tmp_path)
    over = dest / "images" / "0002" / "000000003.jpg"
    with open(over, "r+b") as f:
        f.write(b"ZZ")  # same size, new mtime
    grown = dest / "images" / "0000" / "000000002.jpg"
    with open(grown, "ab") as f:
        f.write(b"more")
    change(src)
    publish(src, "ds", loc, store, SMALL)
    code = cli.main(["pull", loc.url(), str(tmp_path / "data"), "--endpoint-url", store.client.meta.endpoint_url])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "000000003.jpg" in err and "000000002.jpg" in err and "changed in place" in err, err
    assert over.read_bytes() == (src / "images" / "0002" / "000000003.jpg").read_bytes()
    assert grown.read_bytes() == (src / "images" / "0000" / "000000002.jpg").read_bytes()
    assert verify(dest, 2).problems == ()


def test_a_changed_mode_copy_is_hashed_too(store: S3Store, tmp_path: Path) -> None:
    """Mode changed in the new generation: the old file is copied, not linked; an altered one
    (same size, mtime put back) is fetched instead of copied."""
    src, loc, a, dest = setup(store, tmp_path)
    rel = "images/0001/000000004.jpg"
    st = (dest / rel).stat()
    (dest / rel).write_bytes(b"\0" * st.st_size)
    os.utime(dest / rel, ns=(st.st_atime_ns, st.st_mtime_ns))
    os.chmod(src / rel, 0o600)
    publish(src, "ds", loc, store, SMALL)
    r = pull(loc, None, tmp_path / "data", store, SMALL).updated
    assert r is not None and r.altered == 1 and r.fetched == 1
    assert (dest / rel).read_bytes() == (src / rel).read_bytes() and (dest / rel).stat().st_mode & 0o777 == 0o600
    assert verify(dest, 2).problems == ()


# --------------------------------------------------------------------------- extras


def test_extras_are_kept_reported_and_listed_by_verify(store: S3Store, tmp_path: Path, capsys) -> None:
    src, loc, a, dest = setup(store, tmp_path)
    extras = add_extras(dest)
    mine = dest / "images" / "0001" / "mine.jpg"
    inode = mine.stat().st_ino
    before = {k: v for k, v in tree_of(dest).items() if k in extras}
    change(src)
    b = publish(src, "ds", loc, store, SMALL).manifest
    code = cli.main(["pull", loc.url(), str(tmp_path / "data"), "--endpoint-url", store_url(store), "--json"])
    out, err = capsys.readouterr()
    assert code == 0, err
    doc = json.loads(out)
    assert doc["updated"]["extras"] == len(extras) and not doc["updated"]["extras_deleted"]
    assert set(doc["updated"]["extra_paths"]) <= set(extras)
    assert extras_of(dest) == extras
    now = tree_of(dest)
    # carried as they were: the same inode for files, targets for symlinks, mode and mtime for directories
    assert {k: v for k, v in now.items() if k in extras} == before
    assert mine.stat().st_ino == inode
    assert verify(dest, 2).generation == b.generation
    # the dataset itself is the new generation
    members = {k: v for k, v in without_inodes(now).items() if k not in extras}
    assert members == without_inodes(tree_of(src))


def test_extras_report_on_the_command_line(store: S3Store, tmp_path: Path, capsys) -> None:
    src, loc, a, dest = setup(store, tmp_path)
    (dest / "notes.txt").write_text("mine")
    change(src)
    publish(src, "ds", loc, store, SMALL)
    assert cli.main(["pull", loc.url(), str(tmp_path / "data"), "--endpoint-url", store_url(store)]) == 0
    err = capsys.readouterr().err
    assert "kept 1 entry that is not part of the dataset: notes.txt;" in err, err


def test_delete_extra_drops_them(store: S3Store, tmp_path: Path, capsys) -> None:
    src, loc, a, dest = setup(store, tmp_path)
    extras = add_extras(dest)
    change(src)
    publish(src, "ds", loc, store, SMALL)
    code = cli.main(["pull", loc.url(), str(tmp_path / "data"), "--endpoint-url", store_url(store),
                     "--delete-extra"])
    err = capsys.readouterr().err
    assert code == 0, err
    # all but "old": a directory of the old generation (it held kept-here.txt), not an extra
    assert f"deleted {len(extras) - 1} entries" in err, err
    assert verify(dest, 2).problems == ()
    assert without_inodes(tree_of(dest)) == without_inodes(tree_of(src))


def test_delete_extra_through_the_api(store: S3Store, tmp_path: Path, s3_server) -> None:
    from s3sync import api
    src, loc, a, dest = setup(store, tmp_path)
    (dest / "notes.txt").write_text("mine")
    change(src)
    publish(src, "ds", loc, store, SMALL)
    r = api.pull(loc.url(), tmp_path / "data", delete_extra=True, endpoint_url=s3_server.endpoint_url)
    assert r.updated is not None and r.updated.extras == 1 and r.updated.extras_deleted
    assert not (dest / "notes.txt").exists() and verify(dest, 2).problems == ()


COLLISIONS = {
    # an extra at the path of a member the new generation adds
    "same-path": (lambda dest: (dest / "images" / "0002" / "000000100.jpg").write_bytes(b"mine"),
                  lambda src: None, "images/0002/000000100.jpg"),
    # an extra file where the new generation needs a directory
    "file-for-dir": (lambda dest: (dest / "newdir").write_bytes(b"mine"),
                     lambda src: ((src / "newdir").mkdir(), (src / "newdir" / "f").write_bytes(b"f")), "newdir"),
    # an extra under a directory that becomes a file
    "under-a-file": (lambda dest: (dest / "empty_dir" / "mine").write_bytes(b"mine"),
                     lambda src: ((src / "empty_dir").rmdir(), (src / "empty_dir").write_bytes(b"now a file")),
                     "empty_dir/mine"),
    # an extra directory where the new generation has a symlink
    "dir-for-link": (lambda dest: (dest / "newlink").mkdir(),
                     lambda src: os.symlink("captions.json", src / "newlink"), "newlink"),
}


@pytest.mark.parametrize("case", sorted(COLLISIONS))
def test_an_extra_in_the_way_is_refused_before_fetching(store: S3Store, tmp_path: Path, s3_server, capsys,
                                                        case: str) -> None:
    plant, edit, named = COLLISIONS[case]
    src, loc, a, dest = setup(store, tmp_path)
    plant(dest)
    change(src)
    edit(src)
    b = publish(src, "ds", loc, store, SMALL).manifest
    before = tree_of(dest)
    with FaultProxy(s3_server.endpoint_url) as proxy:
        code = cli.main(["pull", loc.url(), str(tmp_path / "data"), "--endpoint-url", proxy.url])
        parts = proxy.stats(f"{b.generation}/part-").requests
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    first = err.strip().splitlines()[0]
    assert str(dest / named) in first and "--delete-extra" in err, err
    assert parts == 0  # refused before fetching any member
    assert tree_of(dest) == before and verify(dest, 2).generation == a.generation
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["ds"]  # no staging left
    # the way out: --delete-extra
    assert cli.main(["pull", loc.url(), str(tmp_path / "data"), "--endpoint-url", store_url(store),
                     "--delete-extra"]) == 0
    capsys.readouterr()
    assert verify(dest, 2).problems == () and without_inodes(tree_of(dest)) == without_inodes(tree_of(src))


def test_partial_pull_extras_are_what_its_selection_did_not_pull(store: S3Store, tmp_path: Path) -> None:
    src, loc, a, dest = setup(store, tmp_path, Selection.make(["images/0000/"]))
    (dest / "images" / "mine.txt").write_text("mine")
    (dest / "captions.json").write_text("my own captions")  # a member the selection left out
    # another selection: both are extras, neither in the way
    r = pull(loc, None, tmp_path / "data", store, SMALL, selection=Selection.make(["images/0001/"])).updated
    assert r is not None and r.extras == 2 and r.partial
    assert extras_of(dest) == ["captions.json", "images/mine.txt"]
    # all members: captions.json is in the way (the user's, not the dataset's)
    with pytest.raises(DestinationError, match="captions.json"):
        pull(loc, None, tmp_path / "data", store, SMALL)
    assert (dest / "captions.json").read_text() == "my own captions"
    r = pull(loc, None, tmp_path / "data", store, SMALL, delete_extra=True).updated
    assert r is not None and r.extras == 2 and r.extras_deleted
    assert verify(dest, 2).problems == () and without_inodes(tree_of(dest)) == without_inodes(tree_of(src))


def test_no_index_generation_with_extras_is_refused(store: S3Store, tmp_path: Path) -> None:
    """A generation without a member index replaces the tree whole: refused while extras are
    there (before fetching), done with delete_extra."""
    import dataclasses

    from s3sync.manifest import MANIFEST_NAME
    src, loc, a, dest = setup(store, tmp_path)
    (dest / "notes.txt").write_text("mine")
    change(src)
    b = publish(src, "ds", loc, store, SMALL).manifest
    store.client.put_object(Bucket=store.bucket, Key=loc.key(MANIFEST_NAME),
                            Body=dataclasses.replace(b, index=None).to_json())
    before = tree_of(dest)
    with pytest.raises(DestinationError, match="notes.txt"):
        pull(loc, None, tmp_path / "data", store, SMALL)
    assert tree_of(dest) == before
    pull(loc, None, tmp_path / "data", store, SMALL, delete_extra=True)
    assert verify(dest, 2).problems == ()


# --------------------------------------------------------------------------- interrupted


def hook(monkeypatch, owner, attr: str, k: int, fired: list) -> None:
    real = getattr(owner, attr)
    calls = itertools.count(1)

    def hooked(*args, **kwargs):
        if next(calls) == k and not fired:
            fired.append(attr)
            signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, attr, hooked)


# os.link 2: carrying the extras (they come before the reused files); file_digest 5: hashing a
# reused file (from a worker thread); _finish_carried_dirs: after the fetch
STEPS = [(os, "link", 2), (os, "symlink", 1), (archive, "file_digest", 5), (update, "_finish_carried_dirs", 1)]


@pytest.mark.parametrize(("owner", "attr", "k"), STEPS, ids=[f"{a}-{k}" for _, a, k in STEPS])
def test_ctrl_c_while_hashing_or_carrying_leaves_the_old_tree(store: S3Store, tmp_path: Path, monkeypatch,
                                                              s3_server, owner, attr: str, k: int) -> None:
    if s3_server.name != "moto":
        pytest.skip("the crash points are the client's; one server is enough")
    src, loc, a, dest = setup(store, tmp_path)
    extras = add_extras(dest)
    snap = tree_of(dest)
    change(src)
    b = publish(src, "ds", loc, store, SMALL).manifest
    fired: list = []
    saved = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, cli.on_interrupt)
    try:
        with monkeypatch.context() as m:
            hook(m, owner, attr, k, fired)
            try:
                pull(loc, None, tmp_path / "data", store, SMALL)
            except KeyboardInterrupt:
                pass
    finally:
        signal.signal(signal.SIGINT, saved)
    assert fired, f"{attr} #{k} was never reached"
    assert tree_of(dest) == snap  # the old tree, extras and all, inodes included
    assert verify(dest, 2).generation == a.generation and extras_of(dest) == [e for e in extras if e != "old"]
    r = pull(loc, None, tmp_path / "data", store, SMALL)
    assert r.updated is not None and r.updated.extras == len(extras)
    assert verify(dest, 2).generation == b.generation and extras_of(dest) == extras
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["ds"]


KILLER = """
import os, signal, sys
from s3sync import archive, cli
real, n = archive.file_digest, [0]
def digest(path):
    n[0] += 1
    if n[0] == int(sys.argv[1]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(path)
archive.file_digest = digest
sys.exit(cli.main(sys.argv[2:]))
"""


def test_kill_9_while_hashing_then_rerun(store: S3Store, tmp_path: Path) -> None:
    src, loc, a, dest = setup(store, tmp_path)
    extras = add_extras(dest)
    snap = tree_of(dest)
    change(src)
    b = publish(src, "ds", loc, store, SMALL).manifest
    env = {**os.environ, "PYTHONPATH": str(WORKTREE)}
    cmd = ["pull", loc.url(), str(tmp_path / "data"), "--endpoint-url", store_url(store), "-q"]
    proc = subprocess.run([sys.executable, "-c", KILLER, "7", *cmd], env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert tree_of(dest) == snap
    assert verify(dest, 2).generation == a.generation and extras_of(dest) == [e for e in extras if e != "old"]
    assert update.update_dir(dest.parent, "ds").exists()  # the staged tree the kill left
    done = subprocess.run([sys.executable, "-m", "s3sync", *cmd], env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert verify(dest, 2).generation == b.generation and extras_of(dest) == extras
    members = {k: v for k, v in without_inodes(tree_of(dest)).items() if k not in extras}
    assert members == without_inodes(tree_of(src))
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["ds"]


@pytest.mark.parametrize("then", ["one-extra-removed", "delete-extra"])
def test_a_resumed_update_drops_what_the_interrupted_one_carried_and_is_no_longer_wanted(
        store: S3Store, tmp_path: Path, monkeypatch, s3_server, then: str) -> None:
    """Interrupted after carrying the extras (Ctrl-C at the fetch): the rerun resumes the staged
    tree; an extra the user removed meanwhile, or every extra with --delete-extra, is not in the
    new tree."""
    if s3_server.name != "moto":
        pytest.skip("the crash points are the client's; one server is enough")
    src, loc, a, dest = setup(store, tmp_path)
    extras = add_extras(dest)
    change(src)
    b = publish(src, "ds", loc, store, SMALL).manifest
    fired: list = []
    saved = signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGINT, cli.on_interrupt)
    try:
        with monkeypatch.context() as m:
            hook(m, archive.SafeExtractor, "extract", 1, fired)
            with pytest.raises(KeyboardInterrupt):
                pull(loc, None, tmp_path / "data", store, SMALL)
    finally:
        signal.signal(signal.SIGINT, saved)
    staged = update.update_dir(dest.parent, "ds") / "tree"
    assert (staged / "work" / "deep" / "result.csv").exists()  # carried before the interruption
    if then == "one-extra-removed":
        (dest / "work" / "deep" / "result.csv").unlink()
        r = pull(loc, None, tmp_path / "data", store, SMALL).updated
        assert r is not None and r.extras == len(extras) - 1
        assert extras_of(dest) == [e for e in extras if e != "work/deep/result.csv"]
    else:
        r = pull(loc, None, tmp_path / "data", store, SMALL, delete_extra=True).updated
        assert r is not None and r.extras_deleted
        assert verify(dest, 2).problems == ()
        assert without_inodes(tree_of(dest)) == without_inodes(tree_of(src))
    assert verify(dest, 2).generation == b.generation


# --------------------------------------------------------------------------- what the user does during the download


def test_extras_changed_during_the_download_are_looked_for_again(store: S3Store, tmp_path: Path,
                                                                 s3_server) -> None:
    src, loc, a, dest = setup(store, tmp_path)
    listed = add_extras(dest)
    change(src)
    b = publish(src, "ds", loc, store, SMALL).manifest

    def user(_request) -> None:
        member_dir = dest / "images" / "0001"
        st = member_dir.stat()
        (dest / "notes.txt").unlink()  # deleted
        (dest / "work" / "empty").rmdir()
        (dest / "work" / "deep" / "result.csv").write_text("a,b\n1,2\n3,4\n")  # in place: same inode
        (dest / "old" / "late.txt").write_text("in the directory the new generation drops")  # new
        (dest / "late" / "sub").mkdir(parents=True)
        (dest / "late" / "sub" / "x.txt").write_text("x")
        (member_dir / "late.jpg").write_bytes(b"mine too")  # in a member directory
        os.utime(member_dir, ns=(st.st_atime_ns, st.st_mtime_ns))

    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.add(Rule("hook", key=f"{b.generation}/part-", method="GET", times=1, hook=user))
        proxied = S3Store(make_client(S3Settings(endpoint_url=proxy.url)), store.bucket, concurrency=4)
        try:
            r = pull(loc, None, tmp_path / "data", proxied, SMALL).updated
        finally:
            proxied.close()
    assert r is not None
    want = sorted(set(listed) - {"notes.txt", "work/empty"}
                  | {"old/late.txt", "late", "late/sub", "late/sub/x.txt", "images/0001/late.jpg"})
    assert extras_of(dest) == want and r.extras == len(want)  # member directories' mtimes kept
    assert verify(dest, 2).generation == b.generation
    assert (dest / "work" / "deep" / "result.csv").read_text() == "a,b\n1,2\n3,4\n"
    assert (dest / "late" / "sub" / "x.txt").read_text() == "x"


def test_a_file_written_at_a_new_member_path_during_the_download_is_refused_and_kept(
        store: S3Store, tmp_path: Path, s3_server, capsys) -> None:
    src, loc, a, dest = setup(store, tmp_path)
    change(src)
    b = publish(src, "ds", loc, store, SMALL).manifest

    def user(_request) -> None:
        (dest / "images" / "0002" / "000000100.jpg").write_bytes(b"mine")  # a member of b only

    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.add(Rule("hook", key=f"{b.generation}/part-", method="GET", times=1, hook=user))
        code = cli.main(["pull", loc.url(), str(tmp_path / "data"), "--endpoint-url", proxy.url])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" not in err, err
    first = next(line for line in err.splitlines() if line.startswith("error:"))
    assert str(dest / "images" / "0002" / "000000100.jpg") in first and "during the update" in first, err
    assert (dest / "images" / "0002" / "000000100.jpg").read_bytes() == b"mine"
    assert verify(dest, 2).generation == a.generation
    (dest / "images" / "0002" / "000000100.jpg").unlink()
    with FaultProxy(store_url(store)) as proxy:  # the rerun resumes: nothing fetched again
        assert cli.main(["pull", loc.url(), str(tmp_path / "data"), "--endpoint-url", proxy.url]) == 0
        parts = proxy.stats(f"{b.generation}/part-").requests
    assert parts == 0
    assert verify(dest, 2).problems == () and verify(dest, 2).generation == b.generation
