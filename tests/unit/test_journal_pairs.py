"""The journal persists only consistent (offset, index_size) pairs (issue 10, item 6): a
record added after the last checkpoint is not counted in the index size written with it,
wherever the pull stops, so a resumed pull extracts that member again and records it once."""

from __future__ import annotations

import json

from s3sync.archive import MemberRecord
from s3sync.journal import Journal, iter_index


def test_a_record_added_after_the_checkpoint_is_dropped_on_resume(tmp_path):
    staging = tmp_path / ".ds.s3sync-partial"
    journal = Journal(staging, b"{}", "g1", "extract")
    assert journal.open() == 0
    journal.add(MemberRecord("a", "file", 1, 0o644, 0, "d"))
    journal.checkpoint(1024, force=True)
    journal.add(MemberRecord("b", "file", 1, 0o644, 0, "d"))  # interrupted before its checkpoint
    journal.close()
    state = json.loads((staging / "journal.json").read_text())
    assert state["offset"] == 1024

    again = Journal(staging, b"{}", "g1", "extract")
    assert again.open() == 1024
    assert [r.path for r in iter_index(again.index_path)] == ["a"]
    again.close()
