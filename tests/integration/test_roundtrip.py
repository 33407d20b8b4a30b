"""Publish + pull round trips on real S3 servers (moto and ``rclone serve s3``).

Issue 2's "done means": the running interpreter's standard library and the sample dataset
come back byte-identical with the same modes, symlinks and mtimes; the concatenated parts
are one tar that GNU tar extracts to the same tree; an empty dataset round-trips; a second
publish makes a new generation that a pull then gets.

The pipelines are called directly (``publish.publish`` and ``pull.pull``) with small part
and chunk sizes so that several parts, multipart upload parts and chunks are exercised.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from s3sync.config import Location, TransferSettings
from s3sync.manifest import MANIFEST_NAME, Manifest
from s3sync.planning import MiB
from s3sync.publish import publish
from s3sync.pull import pull
from s3sync.stores.s3 import S3Store

REPO = Path(__file__).resolve().parents[2]
METADATA_DIR = ".s3sync"  # what pull adds at the top of a dataset; not part of the data

# Several parts and several multipart-upload parts per part for the larger trees
# (the stdlib holds a ~45 MB libpython.a): 8 MiB parts, 1 MiB chunks.
BIG = TransferSettings(concurrency=4, chunk_size=1 * MiB, part_size=8 * MiB, window=8)
# Tiny parts and the smallest chunk the manifest allows, for the small edge-case tree.
SMALL = TransferSettings(concurrency=4, chunk_size=64 * 1024, part_size=256 * 1024, window=8)


# --------------------------------------------------------------------------- helpers


def snapshot(root: Path, *, skip_metadata: bool = False, dir_mtimes: bool = True) -> dict[str, tuple]:
    """Relative path -> comparable description of every entry under ``root``.

    Files: ("file", sha256, mode, int mtime); symlinks: ("link", target); directories:
    ("dir", mode, int mtime).
    """
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        if rel_dir == "." and skip_metadata and METADATA_DIR in dirnames:
            dirnames.remove(METADATA_DIR)
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            st = os.lstat(path)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = ("link", os.readlink(path))
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = ("dir", stat.S_IMODE(st.st_mode), int(st.st_mtime) if dir_mtimes else None)
            elif stat.S_ISREG(st.st_mode):
                with open(path, "rb") as f:
                    digest = hashlib.file_digest(f, "sha256").hexdigest()
                out[rel] = ("file", digest, stat.S_IMODE(st.st_mode), int(st.st_mtime))
            else:
                out[rel] = ("other", stat.S_IFMT(st.st_mode))
    return out


def assert_same_tree(src: Path, dst: Path) -> None:
    want = snapshot(src)
    got = snapshot(dst, skip_metadata=True)
    assert sorted(got) == sorted(want), (
        f"missing: {sorted(set(want) - set(got))[:10]}, extra: {sorted(set(got) - set(want))[:10]}")
    diffs = {k: (want[k], got[k]) for k in want if want[k] != got[k]}
    assert not diffs, f"{len(diffs)} entries differ, e.g. {list(diffs.items())[:5]}"


def roundtrip(src: Path, name: str, store: S3Store, tmp: Path, settings: TransferSettings,
              *, gnu_tar: bool = True) -> Manifest:
    """Publish ``src``, pull it (extracted and as parts), compare everything; return the manifest."""
    location = Location(store.bucket, f"datasets/{name}")
    result = publish(src, name, location, store, settings)
    m = result.manifest

    # The committed manifest is the one the store now holds, and it validates.
    stored = Manifest.from_json(store.get(location.key(MANIFEST_NAME)))
    assert stored == m
    assert m.name == name

    pulled = pull(location, name, tmp / "extracted", store, settings)
    assert pulled.dest == tmp / "extracted" / name
    assert not pulled.up_to_date
    assert_same_tree(src, pulled.dest)
    files = sum(1 for k in snapshot(src).values() if k[0] == "file")
    assert m.files == files
    assert m.extracted_size == sum(p.stat().st_size for p in src.rglob("*") if p.is_file() and not p.is_symlink())

    if gnu_tar:
        parts = pull(location, name, tmp / "parts", store, settings, extract=False)
        part_files = sorted(p for p in parts.dest.iterdir() if p.name.startswith("part-"))
        assert [p.name for p in part_files] == [f"part-{i:05d}.tar" for i in range(len(m.parts))]
        assert [p.stat().st_size for p in part_files] == [p.size for p in m.parts]
        assert_parts_start_at_members(part_files, settings.part_size)
        tar = shutil.which("tar")
        assert tar, "GNU tar is needed"
        out = tmp / "gnutar"
        out.mkdir()
        proc = subprocess.Popen([tar, "-xf", "-", "-C", str(out)], stdin=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        for p in part_files:
            with open(p, "rb") as f:
                shutil.copyfileobj(f, proc.stdin, 1024 * 1024)
        proc.stdin.close()
        err = proc.stderr.read()
        assert proc.wait() == 0, err.decode(errors="replace")
        # GNU tar (running as root here) restores contents, modes, links and mtimes as stored.
        assert snapshot(out) == snapshot(src)
    return m


def _link_or_copy(src: str, dst: str) -> None:
    # Hard links make the copy near-instant; the test only reads the source tree.
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def assert_parts_start_at_members(part_files: list[Path], part_size: int) -> None:
    """A part cut early (shorter than ``part_size``) was cut at a member boundary, so the next
    part starts with a tar header and is usable on its own; only a full part may end inside
    a member larger than what was left of it."""
    import tarfile

    for prev, part in zip(part_files, part_files[1:]):
        if prev.stat().st_size < part_size:
            with open(part, "rb") as f:
                block = f.read(tarfile.BLOCKSIZE)
            try:
                tarfile.TarInfo.frombuf(block, "utf-8", "surrogateescape")
            except tarfile.HeaderError as err:
                raise AssertionError(f"{part.name} does not start with a tar header after the "
                                     f"short part {prev.name}: {err}") from err


def copy_stdlib(dest: Path) -> Path:
    stdlib = Path(sysconfig.get_paths()["stdlib"])
    shutil.copytree(stdlib, dest, symlinks=True, copy_function=_link_or_copy,
                    ignore=shutil.ignore_patterns("__pycache__", "site-packages"))
    return dest


def load_make_dataset():
    path = REPO / "scripts" / "make_dataset.py"
    spec = importlib.util.spec_from_file_location("s3sync_make_dataset", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses resolves annotations through sys.modules
    spec.loader.exec_module(module)
    return module


def make_edge_tree(root: Path) -> Path:
    """A small tree with every kind of entry and name publish must carry."""
    root.mkdir()
    (root / "empty").mkdir()
    (root / "nested" / "empty" / "deeper").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "data" / "file.txt").write_text("hello\n")
    (root / "zero.bin").write_bytes(b"")
    run = root / "run.sh"
    run.write_text("#!/bin/sh\necho hi\n")
    run.chmod(0o755)
    secret = root / "private.key"
    secret.write_bytes(b"k" * 100)
    secret.chmod(0o600)
    (root / "link-to-file").symlink_to("data/file.txt")
    (root / "link-to-dir").symlink_to("data")
    (root / "data" / "up").symlink_to("../zero.bin")
    (root / "dangling-inside").symlink_to("data/not-there-yet")
    odd = root / "spaces and + plus"
    odd.mkdir()
    (odd / "café à la crème ñ ü.txt").write_text("accents\n")
    (odd / "日本語 ファイル.txt").write_text("cjk\n")
    (odd / "a+b=c & d's (1).txt").write_text("punct\n")
    (root / ("long-" + "x" * 150 + ".txt")).write_text("long name\n")
    deep = root / "deep"
    for i in range(6):
        deep = deep / f"level-{i:02d}-{'y' * 45}"
    deep.mkdir(parents=True)
    deep_file = deep / ("file-" + "z" * 60 + ".bin")
    deep_file.write_bytes(os.urandom(3000))
    assert len(str(deep_file.relative_to(root)).encode()) > 255
    # Bigger than a part (256 KiB): cut inside the member, across several parts and chunks.
    (root / "big.bin").write_bytes(os.urandom(700 * 1024 + 17))
    # Exactly one chunk, and a chunk plus one byte.
    (root / "one-chunk.bin").write_bytes(os.urandom(64 * 1024))
    (root / "dir-0700").mkdir()
    (root / "dir-0700" / "inside.txt").write_text("x")
    # Specific mtimes (set last, and on directories after their contents).
    stamps = {
        "data/file.txt": 1_000_000_000, "zero.bin": 1_234_567_890.75, "run.sh": 1_600_000_000,
        "private.key": 86_400, "big.bin": 1_700_000_000, "spaces and + plus/café à la crème ñ ü.txt": 1_500_000_000,
    }
    for rel, t in stamps.items():
        os.utime(root / rel, (t, t))
    (root / "dir-0700").chmod(0o700)
    for d in sorted((p for p in root.rglob("*") if p.is_dir() and not p.is_symlink()),
                    key=lambda p: len(p.parts), reverse=True):
        os.utime(d, (1_650_000_000, 1_650_000_000))
    return root


# --------------------------------------------------------------------------- tests


@pytest.fixture(scope="module")
def stdlib_copy(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One copy of the interpreter's standard library (no __pycache__, no site-packages)."""
    return copy_stdlib(tmp_path_factory.mktemp("stdlib") / "stdlib")


def test_stdlib_round_trip(store: S3Store, stdlib_copy: Path, tmp_path: Path) -> None:
    src = stdlib_copy
    m = roundtrip(src, "stdlib", store, tmp_path, BIG)
    assert m.files > 1000
    assert len(m.parts) > 5
    assert all(p.size <= BIG.part_size for p in m.parts)
    assert sum(len(p.chunks) for p in m.parts) > 50


def test_sample_dataset_round_trip(store: S3Store, tmp_path: Path) -> None:
    md = load_make_dataset()
    info = md.make_dataset(tmp_path / "sbu", files=300, min_bytes=2 * 1024, max_bytes=40 * 1024)
    m = roundtrip(tmp_path / "sbu", "sbu", store, tmp_path, BIG)
    assert m.files == info.files == 301
    assert m.extracted_size == info.bytes


def test_edge_case_tree_round_trip(store: S3Store, tmp_path: Path) -> None:
    src = make_edge_tree(tmp_path / "edge")
    m = roundtrip(src, "edge", store, tmp_path, SMALL)
    assert len(m.parts) >= 3  # big.bin alone spans three 256 KiB parts
    assert all(p.size <= SMALL.part_size for p in m.parts)


def test_empty_dataset_round_trip(store: S3Store, tmp_path: Path) -> None:
    src = tmp_path / "nothing"
    src.mkdir()
    m = roundtrip(src, "nothing", store, tmp_path, SMALL)
    assert m.files == 0 and m.extracted_size == 0
    dest = tmp_path / "extracted" / "nothing"
    assert [p.name for p in dest.iterdir()] == [METADATA_DIR]


def test_second_publish_makes_a_new_generation(store: S3Store, tmp_path: Path) -> None:
    src = tmp_path / "ds"
    src.mkdir()
    (src / "a.txt").write_text("first\n")
    location = Location(store.bucket, "ds")
    first = publish(src, "ds", location, store, SMALL).manifest
    pull(location, "ds", tmp_path / "old", store, SMALL)

    (src / "a.txt").write_text("second version\n")
    (src / "b.txt").write_text("new file\n")
    second = publish(src, "ds", location, store, SMALL).manifest
    assert second.generation != first.generation
    assert all(p.key.startswith(second.generation + "/") for p in second.parts)
    assert Manifest.from_json(store.get(location.key(MANIFEST_NAME))).generation == second.generation

    new = pull(location, "ds", tmp_path / "new", store, SMALL)
    assert new.manifest.generation == second.generation
    assert_same_tree(src, new.dest)

    # The destination pulled from the first generation is updated in place (issue 13), never mixed.
    updated = pull(location, "ds", tmp_path / "old", store, SMALL)
    assert updated.updated is not None and updated.updated.old_generation == first.generation
    assert_same_tree(src, updated.dest)

    # Pulling the current generation again into its complete destination is a no-op.
    again = pull(location, "ds", tmp_path / "new", store, SMALL)
    assert again.up_to_date and again.bytes_received == 0


def test_special_mode_bits_are_dropped(store: S3Store, tmp_path: Path) -> None:
    """setuid/setgid/sticky bits never come back from a pull (tarfile's data filter, PEP 706)."""
    src = tmp_path / "modes"
    src.mkdir()
    for mode in (0o4755, 0o2755, 0o1755):
        p = src / f"f{mode:o}"
        p.write_text("x")
        p.chmod(mode)
    location = Location(store.bucket, "modes")
    publish(src, "modes", location, store, SMALL)
    dest = pull(location, "modes", tmp_path / "out", store, SMALL).dest
    for mode in (0o4755, 0o2755, 0o1755):
        assert stat.S_IMODE((dest / f"f{mode:o}").stat().st_mode) == 0o755


def test_group_writable_and_read_only_file_modes_survive(store: S3Store, tmp_path: Path) -> None:
    src = tmp_path / "modes"
    src.mkdir()
    for mode in (0o664, 0o444, 0o660, 0o640, 0o604):
        p = src / f"f{mode:o}"
        p.write_text("x")
        p.chmod(mode)
    d = src / "d775"
    d.mkdir()
    (d / "inside").write_text("y")
    os.utime(d, (1_650_000_000, 1_650_000_000))
    d.chmod(0o775)
    location = Location(store.bucket, "modes")
    publish(src, "modes", location, store, SMALL)
    dest = pull(location, "modes", tmp_path / "out", store, SMALL).dest
    assert_same_tree(src, dest)


def test_read_only_directory_mode_survives(store: S3Store, tmp_path: Path) -> None:
    src = tmp_path / "modes"
    d = src / "d555"
    d.mkdir(parents=True)
    (d / "inside").write_text("y")
    os.utime(d, (1_650_000_000, 1_650_000_000))
    d.chmod(0o555)
    location = Location(store.bucket, "modes")
    dest = None
    try:
        publish(src, "modes", location, store, SMALL)
        dest = pull(location, "modes", tmp_path / "out", store, SMALL).dest
        assert stat.S_IMODE((dest / "d555").stat().st_mode) == 0o555
        assert_same_tree(src, dest)
    finally:
        for path in (d, dest / "d555" if dest else None):
            if path is not None and path.exists():
                path.chmod(0o755)  # let pytest clean up
