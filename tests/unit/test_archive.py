"""archive.scan_tree: what a publish includes."""

from __future__ import annotations

from pathlib import Path

from s3sync import archive


def test_s3sync_state_is_left_out_at_any_depth(tmp_path: Path) -> None:
    """Publishing the parent of built or pulled datasets (after `captions merge`) must not ship
    their build journals and downloaded source lists."""
    root = tmp_path / "built"
    for rel in (".s3sync/build.json", "sbu/.s3sync/sources/urls.txt", "sbu/images/0000/0000000.jpg",
                "mscoco/.s3sync/mscoco/lock", "mscoco/captions.json", "captions.json"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("x")
    (root / "notes").mkdir()
    (root / "notes" / ".s3sync").write_text("a file of that name is the user's")
    rels = [e.rel for e in archive.scan_tree(root)]
    assert not [r for r in rels if ".s3sync/" in r or r.endswith("/.s3sync") and r != "notes/.s3sync"]
    assert rels == sorted(rels, key=lambda r: r.encode())
    assert {"captions.json", "mscoco/captions.json", "sbu/images/0000/0000000.jpg", "notes/.s3sync"} <= set(rels)
