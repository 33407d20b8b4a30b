"""Hostile or damaged local state found by a resuming pull (issue 10, item 2), beyond symlinks:
- a FIFO planted where pull reopens its own files (the index, a part file): the pull refuses
  clearly instead of waiting for ever in open(2) for a reader;
- an index that lost records (deleted or cut short, e.g. by following an earlier hint to remove
  tree/.s3sync): the rerun starts over and completes, instead of resuming at the journal's
  offset and calling the dataset damaged because the counts come up short.
"""

from __future__ import annotations

import os
import threading

import pytest

from s3sync.errors import DestinationError
from s3sync.journal import Journal, staging_dir

from .test_pull_crash_points import (
    CHUNK_SMALL,
    FILES,
    cli_signal_handlers,
    count_calls,
    moto_only,
    small_batches,  # noqa: F401
)


def interrupt(kit, pub, dest_parent, monkeypatch, extract: bool) -> None:
    """One pull stopped by Ctrl-C after its third index record (extract) or checkpoint."""
    fired: list = []
    with monkeypatch.context() as m:
        count_calls(m, Journal, "add" if extract else "checkpoint", 3, "after", fired)
        with cli_signal_handlers():
            try:
                kit.pull(pub, dest_parent, store=kit.store(kit.server.endpoint_url), extract=extract)
            except KeyboardInterrupt:
                pass
    assert fired


@pytest.mark.parametrize("rel, extract", [("tree/.s3sync/index.jsonl", True), ("tree/part-00000.tar", False)],
                         ids=["index", "part-file"])
def test_fifo_planted_where_a_resume_reopens_its_files_is_refused_not_waited_on(
        kit, monkeypatch, small_batches, rel, extract):  # noqa: F811
    moto_only(kit)
    src = kit.tree(FILES)
    pub = kit.publish(src, chunk_size=CHUNK_SMALL, part_size=64 * 1024)
    dest_parent = kit.tmp / "dest"
    interrupt(kit, pub, dest_parent, monkeypatch, extract)
    staging = staging_dir(dest_parent, pub.name)
    fifo = staging / rel
    fifo.unlink()
    os.mkfifo(fifo)
    outcome: list = []

    def run() -> None:
        try:
            kit.pull(pub, dest_parent, store=kit.store(kit.server.endpoint_url), extract=extract)
            outcome.append("completed")
        except BaseException as err:  # noqa: BLE001 - reported below
            outcome.append(err)

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(120)  # a guard against a hang, not a timing assertion
    if worker.is_alive():
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))  # release the open(2) to end the test
        worker.join(30)
        pytest.fail(f"the pull waited on the FIFO {fifo} (open(2) for writing blocks until a reader comes)")
    err = outcome[0]
    assert isinstance(err, DestinationError), err
    assert str(fifo) in str(err) and str(staging) in err.hint
    # Following the hint: a fresh pull completes.
    os.unlink(fifo)
    os.rename(staging, kit.tmp / "removed")  # "remove" it (kept for a look on failure)
    result = kit.pull(pub, dest_parent, store=kit.store(kit.server.endpoint_url), extract=extract)
    kit.assert_pulled(pub, result.dest, extract)


@pytest.mark.parametrize("damage", ["index-deleted", "index-cut-short", "metadata-dir-deleted"])
def test_index_that_lost_records_makes_the_rerun_start_over(kit, monkeypatch, small_batches, damage):  # noqa: F811
    moto_only(kit)
    src = kit.tree(FILES)
    pub = kit.publish(src, chunk_size=CHUNK_SMALL)
    dest_parent = kit.tmp / "dest"
    interrupt(kit, pub, dest_parent, monkeypatch, True)
    meta = staging_dir(dest_parent, pub.name) / "tree" / ".s3sync"
    index = meta / "index.jsonl"
    assert index.stat().st_size > 0
    if damage == "index-deleted":
        index.unlink()
    elif damage == "index-cut-short":
        os.truncate(index, index.stat().st_size // 2)
    else:
        for p in meta.iterdir():
            p.unlink()
        meta.rmdir()
    result = kit.pull(pub, dest_parent, store=kit.store(kit.server.endpoint_url))
    assert result.resumed_from == 0
    kit.assert_same_tree(src, result.dest)


def test_index_garbled_on_disk_is_a_clear_error_and_the_rerun_starts_over(kit, monkeypatch, small_batches):  # noqa: F811
    """Records overwritten with zeros (as an OS crash can leave unsynced data), size unchanged:
    no JSONDecodeError ("internal error"); a DestinationError saying the resume state was
    discarded, and the rerun starts over and completes."""
    moto_only(kit)
    src = kit.tree(FILES)
    pub = kit.publish(src, chunk_size=CHUNK_SMALL)
    dest_parent = kit.tmp / "dest"
    interrupt(kit, pub, dest_parent, monkeypatch, True)
    index = staging_dir(dest_parent, pub.name) / "tree" / ".s3sync" / "index.jsonl"
    index.write_bytes(bytes(index.stat().st_size))
    with pytest.raises(DestinationError) as caught:
        kit.pull(pub, dest_parent, store=kit.store(kit.server.endpoint_url))
    assert str(index) in str(caught.value) and "starts the pull over" in caught.value.hint
    result = kit.pull(pub, dest_parent, store=kit.store(kit.server.endpoint_url))
    assert result.resumed_from == 0
    kit.assert_same_tree(src, result.dest)
