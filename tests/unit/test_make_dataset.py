"""scripts/make_dataset.py: layout, determinism, captions, and its command line."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "make_dataset.py"


def _load_script():
    # scripts/ is not a package; load the file as a module without touching sys.path.
    spec = importlib.util.spec_from_file_location("make_dataset", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


md = _load_script()


def _tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every regular file under root."""
    return {
        path.relative_to(root).as_posix(): hashlib.sha256(path.read_bytes()).hexdigest()
        for path in sorted(root.rglob("*"))
        if path.is_file()
    }


def test_layout_sizes_and_jpeg_markers(tmp_path: Path):
    info = md.make_dataset(tmp_path / "ds", files=7, min_bytes=100, max_bytes=300, per_dir=3, seed=1)

    images = tmp_path / "ds" / "images"
    assert sorted(p.name for p in images.iterdir()) == ["0000", "0001", "0002"]
    names = sorted(p.relative_to(images).as_posix() for p in images.rglob("*.jpg"))
    assert names == [
        "0000/000000001.jpg", "0000/000000002.jpg", "0000/000000003.jpg",
        "0001/000000004.jpg", "0001/000000005.jpg", "0001/000000006.jpg",
        "0002/000000007.jpg",
    ]
    for name in names:
        blob = (images / name).read_bytes()
        assert 100 <= len(blob) <= 300
        assert blob.startswith(b"\xff\xd8\xff\xe0\x00\x10JFIF\x00")
        assert blob.endswith(b"\xff\xd9")

    files = [p for p in (tmp_path / "ds").rglob("*") if p.is_file()]
    assert info == md.DatasetInfo(files=len(files), bytes=sum(p.stat().st_size for p in files))
    assert info.files == 7 + 1  # the images and captions.json


def test_captions_follow_the_coco_model_with_one_caption_per_image(tmp_path: Path):
    md.make_dataset(tmp_path, files=5, min_bytes=64, max_bytes=64, per_dir=2)

    doc = json.loads((tmp_path / "captions.json").read_text())
    assert set(doc) == {"info", "images", "annotations"}
    assert [image["id"] for image in doc["images"]] == [1, 2, 3, 4, 5]
    for image in doc["images"]:
        assert (tmp_path / image["file_name"]).is_file()  # relative to the root, as publish checks
        assert image["width"] > 0 and image["height"] > 0
    assert [a["image_id"] for a in doc["annotations"]] == [1, 2, 3, 4, 5]
    assert len({a["id"] for a in doc["annotations"]}) == 5
    assert all(a["caption"] and a["caption"] == a["caption"].strip() for a in doc["annotations"])


def test_output_is_a_function_of_seed_and_file_id(tmp_path: Path):
    kwargs = {"min_bytes": 50, "max_bytes": 5000, "per_dir": 4}
    md.make_dataset(tmp_path / "a", files=9, seed=7, **kwargs)
    md.make_dataset(tmp_path / "b", files=9, seed=7, **kwargs)
    md.make_dataset(tmp_path / "fewer", files=5, seed=7, **kwargs)
    md.make_dataset(tmp_path / "other", files=9, seed=8, **kwargs)

    a = _tree(tmp_path / "a")
    assert a == _tree(tmp_path / "b")
    fewer = _tree(tmp_path / "fewer")
    assert {k: v for k, v in fewer.items() if k != "captions.json"}.items() <= a.items()
    other = _tree(tmp_path / "other")
    assert other.keys() == a.keys()
    assert all(other[k] != a[k] for k in a)


def test_refuses_a_non_empty_destination(tmp_path: Path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        md.make_dataset(tmp_path, files=1)
    assert [p.name for p in tmp_path.iterdir()] == ["keep.txt"]


def test_accepts_an_existing_empty_directory(tmp_path: Path):
    assert md.make_dataset(tmp_path, files=1, min_bytes=22, max_bytes=22).files == 2


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1GiB", 1 << 30), ("1G", 1 << 30), ("1GB", 10**9), ("1.5MiB", 3 << 19), ("4096", 4096), ("2k", 2048)],
)
def test_parse_size(text: str, expected: int):
    assert md.parse_size(text) == expected


def _run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=60, check=False
    )


def test_cli_size_picks_the_file_count_from_the_mean_file_size(tmp_path: Path):
    result = _run(str(tmp_path / "ds"), "--size", "1MiB", "--min-kb", "4", "--max-kb", "12")

    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert len(list((tmp_path / "ds" / "images").rglob("*.jpg"))) == 128  # 1 MiB / 8 KiB
    assert result.stderr.count("\n") == 1 and "129 files" in result.stderr


def test_cli_fails_cleanly_on_a_non_empty_destination(tmp_path: Path):
    (tmp_path / "x").write_text("x")

    result = _run(str(tmp_path), "--files", "1")

    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
