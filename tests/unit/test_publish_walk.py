"""Publish walks the tree twice and never holds it whole (issue 13): the second walk, which
the tar is written from, must meet the first, or the publish stops before committing."""

from __future__ import annotations

import importlib
import json
import os
import stat
from pathlib import Path

import pytest

from s3sync import archive
from s3sync.captionfiles import check_tree
from s3sync.errors import SourceError

publish = importlib.import_module("s3sync.publish")  # `from s3sync import publish` is the API's function


def _tree(root: Path, files: int = 5) -> Path:
    for i in range(files):
        (root / "images" / f"{i // 2}").mkdir(parents=True, exist_ok=True)
        (root / "images" / f"{i // 2}" / f"{i}.jpg").write_bytes(b"x" * i)
    (root / "captions.json").write_text(json.dumps({
        "images": [{"id": i, "file_name": f"images/{i // 2}/{i}.jpg"} for i in range(files)],
        "annotations": [{"id": i, "image_id": i, "caption": "a cat"} for i in range(files)]}))
    (root / "link").symlink_to("images/0/0.jpg")
    return root


def _survey(src: Path) -> tuple[archive.TreeSurvey, list[archive._Entry]]:
    tree, checked = archive.TreeSurvey(), []
    check_tree(src, tree.watch(archive.walk_tree(src)), checked)
    return tree, checked


def test_walk_is_the_scan_and_the_survey_counts_it(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    entries = archive.scan_tree(src)
    assert [e.rel for e in archive.walk_tree(src)] == [e.rel for e in entries]
    tree, checked = _survey(src)
    assert tree.members == len(entries)
    regular = [e for e in entries if e.link is None and stat.S_ISREG(e.st.st_mode)]
    assert (tree.files, tree.file_bytes) == (len(regular), sum(e.st.st_size for e in regular)) == (6, 10 + len(
        (src / "captions.json").read_bytes()))
    assert [e.rel for e in checked] == ["captions.json"]
    assert [e.rel for e in publish._rewalk(src, tree, checked)] == [e.rel for e in entries]


def test_a_file_added_between_the_walks_stops_the_publish(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    tree, checked = _survey(src)
    (src / "images" / "0" / "new.jpg").write_bytes(b"new")
    with pytest.raises(SourceError, match="appeared while publishing"):
        list(publish._rewalk(src, tree, checked))


def test_a_file_removed_between_the_walks_stops_the_publish(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    tree, checked = _survey(src)
    (src / "images" / "2" / "4.jpg").unlink()
    with pytest.raises(SourceError, match="1 entries vanished"):
        list(publish._rewalk(src, tree, checked))


def test_captions_changed_after_the_check_stops_the_publish(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src")
    tree, checked = _survey(src)
    text = (src / "captions.json").read_text()
    (src / "captions.json").write_text(text.replace("a cat", "a dog"))  # same size, new bytes
    with pytest.raises(SourceError, match="changed after its captions were checked"):
        list(publish._rewalk(src, tree, checked))


def test_captions_appearing_during_the_first_walk_is_refused(tmp_path: Path) -> None:
    src = tmp_path / "src"
    (src / "a").mkdir(parents=True)
    (src / "a" / "f").write_bytes(b"1")

    def walk():
        yield from archive.walk_tree(src)
        yield archive._Entry("captions.json", str(src / "captions.json"), os.lstat(src / "a" / "f"), None)

    with pytest.raises(SourceError, match="appeared while the tree was being scanned"):
        check_tree(src, walk())


def test_unreadable_warning_is_the_same_from_the_survey(tmp_path: Path) -> None:
    src = _tree(tmp_path / "src", files=9)
    for i in range(5):
        os.chmod(src / "images" / f"{i // 2}" / f"{i}.jpg", 0o200)
    os.chmod(src / "images" / "4", 0o300)
    try:
        tree = archive.TreeSurvey()
        entries = list(tree.watch(archive.walk_tree(src)))
        assert tree.unreadable_warning() == archive.owner_unreadable_warning(entries)
        assert "6 entries" in tree.unreadable_warning()
    finally:
        os.chmod(src / "images" / "4", 0o755)


def _second_walk_lstats(src: Path, tree: archive.TreeSurvey, checked, monkeypatch: pytest.MonkeyPatch
                        ) -> tuple[list[str], list[archive._Entry]]:
    """The paths the second walk lstat-s (it lists every entry: returned with them)."""
    real, seen = os.lstat, []

    def lstat(path, *a, **kw):
        seen.append(os.fspath(path))
        return real(path, *a, **kw)

    with monkeypatch.context() as patch:
        patch.setattr(os, "lstat", lstat)
        entries = list(publish._rewalk(src, tree, checked))
    return seen, entries


def test_the_second_walk_takes_regular_files_stats_from_the_first(tmp_path: Path, monkeypatch) -> None:
    src = _tree(tmp_path / "src")
    entries = archive.scan_tree(src)
    tree, checked = archive.TreeSurvey(keep_stats=100), []
    check_tree(src, tree.watch(archive.walk_tree(src)), checked)
    seen, again = _second_walk_lstats(src, tree, checked, monkeypatch)
    assert [(e.rel, e.link) for e in again] == [(e.rel, e.link) for e in entries]
    for old, new in zip(entries, again, strict=True):
        for field in ("st_mode", "st_size", "st_mtime", "st_mtime_ns", "st_ctime_ns", "st_dev", "st_ino"):
            assert getattr(old.st, field) == getattr(new.st, field), (old.rel, field)
    # Directories, symlinks and the checked captions file are stat-ed again; the images are not.
    assert sorted(os.path.relpath(p, src) for p in seen) == ["captions.json", "images", "images/0", "images/1",
                                                             "images/2", "link"]


def test_without_kept_stats_the_second_walk_stats_everything(tmp_path: Path, monkeypatch) -> None:
    src = _tree(tmp_path / "src")
    tree, checked = archive.TreeSurvey(keep_stats=3), []  # fewer than the tree has: none kept
    check_tree(src, tree.watch(archive.walk_tree(src)), checked)
    seen, again = _second_walk_lstats(src, tree, checked, monkeypatch)
    assert len(seen) == len(again) == tree.members


def test_a_file_rewritten_between_the_walks_is_refused_when_written(tmp_path: Path) -> None:
    import io

    src = _tree(tmp_path / "src")
    tree, checked = archive.TreeSurvey(keep_stats=100), []
    check_tree(src, tree.watch(archive.walk_tree(src)), checked)
    victim = src / "images" / "1" / "3.jpg"
    before = os.lstat(victim)
    while os.lstat(victim).st_ctime_ns == before.st_ctime_ns:  # a new timestamp tick
        victim.write_bytes(b"y" * 3)  # same size, same inode
    with pytest.raises(SourceError, match="3.jpg: changed while being read") as info:
        archive.write_tar(publish._rewalk(src, tree, checked), io.BytesIO(), lambda span: None)
    assert "modified since the scan" in str(info.value)


def test_a_file_replaced_between_the_walks_is_refused_when_written(tmp_path: Path) -> None:
    import io

    src = _tree(tmp_path / "src")
    tree, checked = archive.TreeSurvey(keep_stats=100), []
    check_tree(src, tree.watch(archive.walk_tree(src)), checked)
    victim = src / "images" / "1" / "3.jpg"
    victim.unlink()
    victim.mkdir()  # same name, now a directory: the walk does not look, the open does
    with pytest.raises(SourceError, match="3.jpg: cannot read"):
        archive.write_tar(publish._rewalk(src, tree, checked), io.BytesIO(), lambda span: None)
