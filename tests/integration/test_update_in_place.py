"""Pull updates a complete pull of an older generation in place (issue 13 section 2, item 1),
on moto and rclone: only new or changed members are fetched (ranged GETs of the chunks that
hold them, verified), removed members go, and the result verifies as the new generation.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from s3sync import archive, cli, update
from s3sync.config import Location, TransferSettings
from s3sync.manifest import MANIFEST_NAME
from s3sync.publish import publish
from s3sync.pull import pull
from s3sync.stores.s3 import S3Store
from s3sync.verify import verify
from tests.faults.proxy import FaultProxy, Rule

SMALL = TransferSettings(concurrency=4, chunk_size=64 * 1024, part_size=256 * 1024, window=8)


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


def test_update_with_default_chunks_fetches_about_the_changed_bytes(store: S3Store, tmp_path: Path) -> None:
    """With the default 16 MiB chunks the whole stream (~2 MB) is one chunk: the update must still
    fetch only the byte ranges of the changed members (checked against the member index's
    digests), not the chunks that hold them. The last member of the stream is changed too."""
    src = make_tree(tmp_path / "src" / "ds")
    (src / "zz-last.bin").write_bytes(os.urandom(5_000))
    loc = Location(store.bucket, "ds")
    settings = TransferSettings(concurrency=4)
    publish(src, "ds", loc, store, settings)
    dest = pull(loc, None, tmp_path / "data", store, settings).dest
    change(src)
    (src / "zz-last.bin").write_bytes(os.urandom(6_000))
    b = publish(src, "ds", loc, store, settings).manifest
    assert len(b.parts) == 1 and len(b.parts[0].chunks) == 1

    second = pull(loc, None, tmp_path / "data", store, settings)

    assert second.updated is not None and second.updated.fetched == 3
    changed = 30_000 + 25_000 + 6_000
    # each range: the members' headers and padding, the gaps (< spans.MAX_GAP) between close ones,
    # and after the last member the end-of-archive marker and tar's record padding (< 11 KiB)
    assert changed < second.bytes_received <= changed + 3 * 2048 + 11 * 1024 + 64 * 1024
    assert second.bytes_received < b.stream_size // 10
    assert tree_of(dest) == tree_of(src)
    assert verify(dest).problems == ()


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


# Interrupted updates: the old generation stays intact (or the new one is complete), the same
# pull again finishes it, and verify passes on whichever is in place. Ctrl-C is a real SIGINT
# sent to this process (signal.raise_signal) at the k-th call of each step, with the CLI's
# handler installed; a kill -9 between the two renames of the swap (no handler runs) is
# reproduced by making that state; a real kill -9 of the command lands while it updates.


def two_generations(store: S3Store, tmp_path: Path):
    """Generation A pulled into tmp/data/ds, generation B published; the sources of both."""
    src = make_tree(tmp_path / "src" / "ds")
    loc = Location(store.bucket, "ds")
    a = publish(src, "ds", loc, store, SMALL).manifest
    dest = pull(loc, None, tmp_path / "data", store, SMALL).dest
    tree_a = tree_of(dest)
    change(src)
    b = publish(src, "ds", loc, store, SMALL).manifest
    return loc, dest, a, b, tree_a, tree_of(src)


def hook(monkeypatch, owner, attr: str, k: int, fired: list) -> None:
    real = getattr(owner, attr)
    calls = itertools.count(1)

    def hooked(*args, **kwargs):
        if next(calls) == k and not fired:
            fired.append(attr)
            signal.raise_signal(signal.SIGINT)
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, attr, hooked)


STEPS = [(os, "link", 1), (os, "link", 30), (os, "mkdir", 4), (archive.SafeExtractor, "extract", 1),
         (archive.SafeExtractor, "finish_dirs", 1), (update, "_write_metadata", 1), (os, "rename", 1),
         (os, "rename", 2), (update, "_remove", 1), (update, "_remove", 2)]


@pytest.mark.parametrize(("owner", "attr", "k"), STEPS, ids=[f"{a}-{k}" for _, a, k in STEPS])
def test_ctrl_c_at_each_step_then_rerun(store: S3Store, tmp_path: Path, monkeypatch, s3_server,
                                        owner, attr: str, k: int) -> None:
    if s3_server.name != "moto":
        pytest.skip("the crash points are the client's; one server is enough")
    loc, dest, a, b, tree_a, tree_b = two_generations(store, tmp_path)
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
    now = verify(dest)
    assert now.problems == ()
    assert (now.generation, tree_of(dest)) in ((a.generation, tree_a), (b.generation, tree_b))

    again = pull(loc, None, tmp_path / "data", store, SMALL)
    assert again.up_to_date or again.updated is not None
    assert verify(dest).generation == b.generation and verify(dest).problems == ()
    assert tree_of(dest) == tree_b
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["ds"]


def test_killed_between_the_renames(store: S3Store, tmp_path: Path) -> None:
    """kill -9 after NAME went aside and before the new tree took its name: the next pull
    puts the old generation back, then updates it."""
    loc, dest, a, b, tree_a, tree_b = two_generations(store, tmp_path)
    os.rename(dest, update.old_dir(dest.parent, "ds"))
    update.update_dir(dest.parent, "ds").mkdir()  # a staged tree a kill left behind
    (update.update_dir(dest.parent, "ds") / "tree").mkdir()

    result = pull(loc, None, tmp_path / "data", store, SMALL)

    assert result.updated is not None and result.updated.old_generation == a.generation
    assert tree_of(dest) == tree_b and verify(dest).problems == ()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["ds"]


def test_killed_before_the_old_tree_was_removed(store: S3Store, tmp_path: Path) -> None:
    """kill -9 after the swap, before the old tree was removed: the dataset is complete (B);
    the next pull removes the leftover and finds nothing else to do."""
    loc, dest, a, b, tree_a, tree_b = two_generations(store, tmp_path)
    pull(loc, None, tmp_path / "data", store, SMALL)
    old = update.old_dir(dest.parent, "ds")
    (old / "x").mkdir(parents=True)
    assert verify(dest).problems == ()

    again = pull(loc, None, tmp_path / "data", store, SMALL)

    assert again.up_to_date
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["ds"]


def test_kill_9_while_fetching(store: S3Store, tmp_path: Path, s3_server) -> None:
    """A real kill -9 of ``s3sync pull`` while its update waits for the chunks of the changed
    members (a proxy holds back every GET of generation B's parts): the old generation is
    intact; the same command again finishes the update, and the proxy's counters show it
    fetched only those chunks (well below the stream size)."""
    loc, dest, a, b, tree_a, tree_b = two_generations(store, tmp_path)
    parts = f"{b.generation}/part-"
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.add(Rule("hang", key=parts, stall_s=60))
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        cmd = [sys.executable, "-m", "s3sync", "pull", f"s3://{store.bucket}/ds", str(tmp_path / "data"),
               "--endpoint-url", proxy.url, "-q"]
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while proxy.stats(parts).requests == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        proc.kill()
        proc.wait()
        proc.stderr.close()
        now = verify(dest)
        assert now.problems == () and now.generation == a.generation and tree_of(dest) == tree_a
        assert update.update_dir(dest.parent, "ds").exists()  # the staged tree the kill left

        proxy.clear()
        proxy.reset_stats()
        done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        received = proxy.bytes_sent(parts)
    assert 0 < received <= 4 * SMALL.chunk_size < b.stream_size // 5
    assert tree_of(dest) == tree_b and verify(dest).generation == b.generation and verify(dest).problems == ()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["ds"]
