"""Hostile local state around a pull (issue 10, items 2 and 13): a symlink planted at every path
pull creates must never be followed (a victim directory and file with canaries stay untouched;
the pull refuses clearly or works without following); a destination that appears while pulling
is left alone; an empty destination that cannot be removed (a mount point, a read-only parent)
and a read-only DEST_PARENT are clear DestinationErrors, not internal errors.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

from s3sync.errors import DestinationError
from s3sync.journal import Journal, staging_dir

from .conftest import Kit
from .test_pull_crash_points import (  # noqa: F401
    CHUNK_SMALL,
    FILES,
    interrupted_pull,
    moto_only,
    small_batches,
)

STAGED = ["", "tree", "journal.json", "journal.json.tmp", "reserve", "manifest.json", "tree/.s3sync",
          "tree/.s3sync/index.jsonl", "tree/.s3sync/manifest.json", "tree/.s3sync/complete.json"]
"""Paths under DEST_PARENT/.NAME.s3sync-partial that pull creates ("" is the directory itself)."""


def victims(kit: Kit) -> tuple[Path, Path]:
    vdir = kit.tmp / "victim"
    vdir.mkdir(exist_ok=True)
    (vdir / "canary.txt").write_bytes(b"canary")
    (vdir / "index.jsonl").write_bytes(b"precious index\n")
    vfile = kit.tmp / "victim.txt"
    vfile.write_bytes(b"precious")
    return vdir, vfile


def untouched(vdir: Path, vfile: Path) -> None:
    assert sorted(p.name for p in vdir.iterdir()) == ["canary.txt", "index.jsonl"], "written through a symlink"
    assert (vdir / "canary.txt").read_bytes() == b"canary"
    assert (vdir / "index.jsonl").read_bytes() == b"precious index\n"
    assert vfile.read_bytes() == b"precious"


def plant(path: Path, target: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()
    path.symlink_to(target)


@pytest.mark.parametrize("rel", STAGED, ids=[r or "staging" for r in STAGED])
def test_symlink_planted_in_staging_is_never_followed(kit, monkeypatch, small_batches, rel):  # noqa: F811
    """After an interrupted pull (or none, for the staging directory itself), a symlink at
    ``rel`` pointing at a victim (a directory for directories, a file for files); the pull
    refuses with a DestinationError or completes with the right tree; the victims are intact."""
    moto_only(kit)
    src = kit.tree(FILES)
    pub = kit.publish(src, chunk_size=CHUNK_SMALL)
    dest_parent = kit.tmp / "dest"
    staging = staging_dir(dest_parent, pub.name)
    vdir, vfile = victims(kit)
    if rel:
        assert interrupted_pull(kit, pub, dest_parent, monkeypatch, Journal, "add", 3, "before")
    else:
        dest_parent.mkdir()
    is_dir = rel in ("", "tree", "tree/.s3sync")
    plant(staging / rel, vdir if is_dir else vfile)
    try:
        result = kit.pull(pub, dest_parent, store=kit.store(kit.server.endpoint_url))
    except DestinationError as err:
        assert str(staging) in str(err) and err.hint, err
    else:
        kit.assert_same_tree(src, result.dest)
    untouched(vdir, vfile)


def test_symlink_at_the_destination_is_refused(kit):
    moto_only(kit)
    src = kit.tree(FILES)
    pub = kit.publish(src, chunk_size=CHUNK_SMALL)
    dest_parent = kit.tmp / "dest"
    dest_parent.mkdir()
    vdir, vfile = victims(kit)
    (dest_parent / pub.name).symlink_to(vdir)
    with pytest.raises(DestinationError, match="already exists"):
        kit.pull(pub, dest_parent)
    untouched(vdir, vfile)


@pytest.mark.parametrize("what", ["symlink", "non-empty directory", "file"])
def test_destination_appearing_before_the_rename_is_left_alone(kit, monkeypatch, what):
    """Something appears at DEST_PARENT/NAME between the start of the pull and its rename: the
    rename neither follows nor replaces it; the dataset stays staged, and once the way is clear
    a rerun only moves it into place."""
    moto_only(kit)
    src = kit.tree(FILES)
    pub = kit.publish(src, chunk_size=CHUNK_SMALL)
    dest_parent = kit.tmp / "dest"
    dest = dest_parent / pub.name
    vdir, vfile = victims(kit)
    real = Journal.move_tree

    def appear_then_move(self, name):
        if what == "symlink":
            dest.symlink_to(vdir)
        elif what == "file":
            dest.write_bytes(b"mine")
        else:
            dest.mkdir()
            (dest / "mine.txt").write_bytes(b"mine")
        return real(self, name)

    monkeypatch.setattr(Journal, "move_tree", appear_then_move)
    with pytest.raises(DestinationError, match="appeared while pulling") as caught:
        kit.pull(pub, dest_parent)
    assert caught.value.hint
    untouched(vdir, vfile)
    assert (staging_dir(dest_parent, pub.name) / "tree" / ".s3sync" / "complete.json").is_file()
    monkeypatch.setattr(Journal, "move_tree", real)
    if dest.is_dir() and not dest.is_symlink():
        assert (dest / "mine.txt").read_bytes() == b"mine"
        shutil.rmtree(dest)
    else:
        dest.unlink()
    before = kit.sent("part-")
    result = kit.pull(pub, dest_parent)
    assert kit.sent("part-") == before
    kit.assert_same_tree(src, result.dest)
    assert sorted(os.listdir(dest_parent)) == [pub.name]


# --------------------------------------------------------------------------- item 13


@pytest.fixture
def tmpfs(tmp_path):
    mounted: list[Path] = []

    def mount(path: Path | None = None, *options: str) -> Path:
        path = path or tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
        path.mkdir(exist_ok=True)
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", ",".join(("size=200m", *options)), "tmpfs",
                               str(path)], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs (needs root): {proc.stderr.strip() or proc.returncode}")
        mounted.append(path)
        return path

    yield mount
    for path in reversed(mounted):
        subprocess.run(["umount", "-l", str(path)], capture_output=True, check=False)


def remount_ro(path: Path) -> None:
    proc = subprocess.run(["mount", "-o", "remount,ro", str(path)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        pytest.skip(f"cannot remount read-only: {proc.stderr.strip()}")


def test_empty_destination_that_is_a_mount_point_is_refused_clearly(kit, tmpfs):
    moto_only(kit)
    pub = kit.publish(kit.tree(FILES), chunk_size=CHUNK_SMALL)
    dest_parent = kit.tmp / "dest"
    dest_parent.mkdir()
    tmpfs(dest_parent / pub.name)
    with pytest.raises(DestinationError, match="mount point") as caught:
        kit.pull(pub, dest_parent)
    assert str(dest_parent / pub.name) in caught.value.hint
    assert not staging_dir(dest_parent, pub.name).exists()
    # The hint's way out works: the mount point as DEST_PARENT.
    result = kit.pull(pub, dest_parent / pub.name)
    kit.assert_same_tree(pub.src, result.dest)


def test_empty_destination_under_a_read_only_parent_is_refused_clearly(kit, tmpfs):
    moto_only(kit)
    pub = kit.publish(kit.tree(FILES), chunk_size=CHUNK_SMALL)
    dest_parent = tmpfs()
    (dest_parent / pub.name).mkdir()
    remount_ro(dest_parent)
    with pytest.raises(DestinationError, match="cannot replace") as caught:
        kit.pull(pub, dest_parent)
    assert "writable" in caught.value.hint


def test_read_only_dest_parent_is_refused_clearly(kit, tmpfs):
    """No NAME yet, and DEST_PARENT read-only: the staging directory cannot be made."""
    moto_only(kit)
    pub = kit.publish(kit.tree(FILES), chunk_size=CHUNK_SMALL)
    dest_parent = tmpfs()
    remount_ro(dest_parent)
    with pytest.raises(DestinationError, match="cannot create") as caught:
        kit.pull(pub, dest_parent)
    assert "writable" in caught.value.hint
    code = kit.cli("pull", pub.url, dest_parent, "--endpoint-url", kit.server.endpoint_url)
    _out, err = code.communicate(timeout=60)
    assert code.returncode != 0 and "internal error" not in err.decode() and "Traceback" not in err.decode()


def test_dest_parent_that_is_itself_a_pulled_dataset_is_refused(kit) -> None:
    """``pull sbu /data/sbu`` would nest a copy at /data/sbu/sbu (which the outer dataset's
    verify then calls extra): refused, and nothing is written."""
    pub = kit.publish(kit.tree({"a.txt": 10}))
    first = kit.pull(pub, kit.tmp / "data")
    before = sorted(p.name for p in first.dest.iterdir())
    with pytest.raises(DestinationError, match="is itself a pulled dataset"):
        kit.pull(pub, first.dest)
    assert sorted(p.name for p in first.dest.iterdir()) == before
