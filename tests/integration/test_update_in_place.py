"""Pull updates a complete pull of an older generation in place (issue 13 section 2, item 1),
on moto and rclone: only new or changed members are fetched (ranged GETs of the chunks that
hold them, verified), removed members go, and the result verifies as the new generation.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from s3sync.config import Location, S3Settings, TransferSettings
from s3sync.manifest import MANIFEST_NAME
from s3sync.publish import publish
from s3sync.pull import pull
from s3sync.stores.s3 import S3Store, make_client
from s3sync.verify import verify

SMALL = TransferSettings(concurrency=4, chunk_size=64 * 1024, part_size=256 * 1024, window=8)


@pytest.fixture
def store(s3_server, bucket):
    client = make_client(S3Settings(endpoint_url=s3_server.endpoint_url))
    s = S3Store(client, bucket, concurrency=4)
    yield s
    s.close()


def make_tree(root: Path) -> Path:
    """60 images of 20-40 KiB in 3 directories, a captions file, an empty directory, a symlink."""
    for d in range(3):
        (root / "images" / f"{d:04d}").mkdir(parents=True)
        for i in range(20):
            (root / "images" / f"{d:04d}" / f"{i:09d}.jpg").write_bytes(os.urandom(20_000 + 997 * i))
    (root / "empty_dir").mkdir()
    (root / "captions.json").write_text('{"images": [], "annotations": []}')
    os.symlink("images/0000/000000001.jpg", root / "link.jpg")
    return root


def tree_of(root: Path) -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if d != ".s3sync"]
        for name in filenames + dirnames:
            p = Path(dirpath, name)
            rel = str(p.relative_to(root))
            out[rel] = "->" + os.readlink(p) if p.is_symlink() else "dir" if p.is_dir() else p.read_bytes()
    return out


def change(src: Path) -> None:
    """One changed file, one added, one removed: among 60."""
    (src / "images" / "0001" / "000000005.jpg").write_bytes(os.urandom(30_000))
    (src / "images" / "0002" / "000000100.jpg").write_bytes(os.urandom(25_000))
    (src / "images" / "0000" / "000000007.jpg").unlink()


def test_update_fetches_only_changed_members(store: S3Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src" / "ds")
    loc = Location(store.bucket, "ds")
    a = publish(src, "ds", loc, store, SMALL).manifest
    first = pull(loc, None, tmp_path / "data", store, SMALL)
    dest = first.dest
    unchanged = dest / "images" / "0000" / "000000003.jpg"
    inode = unchanged.stat().st_ino
    change(src)
    b = publish(src, "ds", loc, store, SMALL).manifest
    assert b.generation != a.generation

    second = pull(loc, None, tmp_path / "data", store, SMALL)

    assert second.updated is not None
    assert (second.updated.fetched, second.updated.removed, second.updated.old_generation) == (2, 1, a.generation)
    assert second.updated.reused == b.files - 2
    # The two members take ~55 KB: at most the 64 KiB chunks holding them (2 each, at worst).
    assert second.bytes_received <= 4 * SMALL.chunk_size < b.stream_size // 5
    assert tree_of(dest) == tree_of(src)
    assert unchanged.stat().st_ino == inode  # hard-linked, not fetched nor copied
    marker = json.loads((dest / ".s3sync" / "complete.json").read_text())
    assert marker["generation"] == b.generation and marker["updated_from"] == a.generation
    assert (dest / ".s3sync" / MANIFEST_NAME).read_bytes() == store.get(loc.key(MANIFEST_NAME))
    result = verify(dest)
    assert result.problems == ()
    assert result.generation == b.generation
    assert not any(p.name.startswith(".ds.s3sync") for p in (tmp_path / "data").iterdir())

    again = pull(loc, None, tmp_path / "data", store, SMALL)
    assert again.up_to_date and again.bytes_received == 0


def test_changed_mode_or_mtime_copies_instead_of_linking(store: S3Store, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src" / "ds")
    loc = Location(store.bucket, "ds")
    publish(src, "ds", loc, store, SMALL)
    dest = pull(loc, None, tmp_path / "data", store, SMALL).dest
    touched = "images/0002/000000002.jpg"
    old_inode = (dest / touched).stat().st_ino
    os.chmod(src / touched, 0o600)
    os.utime(src / touched, (1_000_000_000, 1_000_000_000))
    publish(src, "ds", loc, store, SMALL)

    result = pull(loc, None, tmp_path / "data", store, SMALL)

    assert result.updated is not None and result.updated.fetched == 0 and result.bytes_received == 0
    st = (dest / touched).stat()
    assert st.st_ino != old_inode and st.st_mode & 0o777 == 0o600 and int(st.st_mtime) == 1_000_000_000
    assert verify(dest).problems == ()
    assert tree_of(dest) == tree_of(src)


def test_no_index_falls_back_to_a_full_pull(store: S3Store, tmp_path: Path) -> None:
    """A generation published without a member index (before issue 13): pulled whole, then
    swapped in place of the older one, saying so."""
    src = make_tree(tmp_path / "src" / "ds")
    loc = Location(store.bucket, "ds")
    publish(src, "ds", loc, store, SMALL)
    dest = pull(loc, None, tmp_path / "data", store, SMALL).dest
    change(src)
    b = publish(src, "ds", loc, store, SMALL).manifest
    doc = json.loads(store.get(loc.key(MANIFEST_NAME)))
    del doc["index"]
    store.put(loc.key(MANIFEST_NAME), json.dumps(doc).encode())

    messages: list[str] = []

    class Recorder:
        def __getattr__(self, name):
            return lambda *a, **k: messages.append(a[0]) if name == "message" else None

    result = pull(loc, None, tmp_path / "data", store, SMALL, progress=Recorder())

    assert result.updated is None and result.bytes_received >= b.stream_size
    assert any("no member index: pulling it whole" in m for m in messages)
    assert tree_of(dest) == tree_of(src)
    assert verify(dest).problems == ()
