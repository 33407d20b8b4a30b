"""Symlinks swapped in DURING a pull (issue 10, item 2): after the staging directory was opened,
someone who can write DEST_PARENT renames it away and puts a symlink (to a victim directory
shaped like the staging directory) in its place. Nothing the pull writes, clears or removes may
land in the victim."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from s3sync.errors import DestinationError
from s3sync.journal import Journal, staging_dir

from .test_pull_crash_points import (  # noqa: F401
    CHUNK_SMALL,
    cli_signal_handlers,
    count_calls,
    moto_only,
    small_batches,
)

FILES = {**{f"t/t{i:02d}.txt": 100 + i for i in range(12)}, "big/a.bin": 150 * 1024, "z/late.txt": 10}


def shaped_victim(root: Path) -> list[tuple[str, bytes]]:
    """A directory shaped like the staging directory and its tree: every file a canary."""
    canaries = [("journal.json", b"j"), ("reserve", b"r"), ("tree/t/t05.txt", b"c1"), ("tree/t/t11.txt", b"c2"),
                ("tree/big/a.bin", b"c3"), ("tree/z/late.txt", b"c4"), ("tree/.s3sync/index.jsonl", b"c5"),
                ("tree/canary.txt", b"c6")]
    for rel, data in canaries:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return canaries


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("extract", [True, False], ids=["extract", "no-extract"])
@pytest.mark.parametrize("swap", ["staging", "tree"])
@pytest.mark.parametrize("k", [1, 3])
def test_staging_swapped_for_a_symlink_mid_pull(kit, monkeypatch, small_batches, swap, k, extract):  # noqa: F811
    """Swapped after the k-th checkpoint: the pull either completes into DEST_PARENT/NAME (it
    kept writing into the directory it opened) or refuses clearly; the victim is untouched."""
    moto_only(kit)
    src = kit.tree(FILES)
    pub = kit.publish(src, chunk_size=CHUNK_SMALL)
    dest_parent = kit.tmp / "dest"
    staging = staging_dir(dest_parent, pub.name)
    victim = kit.tmp / "victim"
    canaries = shaped_victim(victim)
    before = listing(victim)
    calls = [0]
    real = Journal.checkpoint

    def add_then_swap(self, *args, **kwargs):
        real(self, *args, **kwargs)
        calls[0] += 1
        if calls[0] == k:
            if swap == "staging":
                os.rename(staging, kit.tmp / "moved")
                staging.symlink_to(victim)
            else:
                os.rename(staging / "tree", staging / "moved-tree")
                (staging / "tree").symlink_to(victim / "tree")

    monkeypatch.setattr(Journal, "checkpoint", add_then_swap)
    try:
        result = kit.pull(pub, dest_parent, store=kit.store(kit.server.endpoint_url), extract=extract)
    except DestinationError as err:
        assert swap == "tree" and str(staging / "tree") in str(err) and err.hint, err
    else:
        assert calls[0] >= k
        assert not result.dest.is_symlink()
        kit.assert_pulled(pub, result.dest, extract)
    assert listing(victim) == before, "the pull wrote into the victim through the symlink"
    for rel, data in canaries:
        assert (victim / rel).read_bytes() == data, rel


@pytest.mark.parametrize("extract", [True, False], ids=["extract", "no-extract"])
def test_tree_swapped_for_a_symlink_just_before_the_rename(kit, monkeypatch, extract):
    """tree/ replaced by a symlink after the completion marker was written, just before the
    rename: the symlink must not be renamed into DEST_PARENT/NAME as if it were the dataset.
    The pull refuses; once the symlink is gone, a rerun completes."""
    moto_only(kit)
    src = kit.tree(FILES)
    pub = kit.publish(src, chunk_size=CHUNK_SMALL)
    dest_parent = kit.tmp / "dest"
    staging = staging_dir(dest_parent, pub.name)
    victim = kit.tmp / "victim"
    canaries = shaped_victim(victim)
    before = listing(victim)
    real = Journal.move_tree

    def swap_then_move(self, name):
        os.rename(staging / "tree", kit.tmp / "moved-tree")
        (staging / "tree").symlink_to(victim / "tree")
        return real(self, name)

    with monkeypatch.context() as m:
        m.setattr(Journal, "move_tree", swap_then_move)
        with pytest.raises(DestinationError) as caught:
            kit.pull(pub, dest_parent, store=kit.store(kit.server.endpoint_url), extract=extract)
    assert str(staging / "tree") in str(caught.value) and caught.value.hint
    dest = dest_parent / pub.name
    assert not dest.exists() and not dest.is_symlink(), "a symlink was committed as the dataset"
    assert listing(victim) == before
    for rel, data in canaries:
        assert (victim / rel).read_bytes() == data, rel
    (staging / "tree").unlink()
    result = kit.pull(pub, dest_parent, store=kit.store(kit.server.endpoint_url), extract=extract)
    kit.assert_pulled(pub, result.dest, extract)
    assert listing(victim) == before


@pytest.mark.parametrize("extract", [True, False], ids=["extract", "no-extract"])
def test_rerun_after_the_committed_dataset_was_moved_away_pulls_again(kit, monkeypatch, extract):
    """Interrupted after the rename, before the staging directory was removed (its journal
    says: everything done); the user then moves the dataset away. The rerun must pull it
    again, not resume at the end into an empty tree and call the dataset damaged."""
    moto_only(kit)
    src = kit.tree(FILES)
    pub = kit.publish(src, chunk_size=CHUNK_SMALL)
    dest_parent = kit.tmp / "dest"
    fired: list = []
    with monkeypatch.context() as m:
        count_calls(m, Journal, "remove", 1, "before", fired)
        with cli_signal_handlers(), pytest.raises(KeyboardInterrupt):
            kit.pull(pub, dest_parent, store=kit.store(kit.server.endpoint_url), extract=extract)
    assert fired and (dest_parent / pub.name).is_dir()
    os.rename(dest_parent / pub.name, kit.tmp / "elsewhere")
    result = kit.pull(pub, dest_parent, store=kit.store(kit.server.endpoint_url), extract=extract)
    kit.assert_pulled(pub, result.dest, extract)
    assert sorted(os.listdir(dest_parent)) == [pub.name]
