"""``gc`` and the stored generations (issue 13 section 2), on moto and rclone.

gc keeps the newest N generations (the current one first, never deleted), keeps what stopped
being current less than --grace ago, removes what dead publishes left, and is safe when it dies
half-way (a crash at every delete call, then a second gc), when two run at once, during a
publish, and during a pull of the generation it would otherwise delete.
"""

from __future__ import annotations

import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from s3sync import lease as leases
from s3sync.config import Location, TransferSettings
from s3sync.errors import NotFoundError, TransientStoreError, UsageError
from s3sync.gc import collect, stored
from s3sync.manifest import INDEX_NAME, MANIFEST_NAME, Manifest
from s3sync.publish import publish
from s3sync.pull import pull
from s3sync.stores.s3 import S3Store

SMALL = TransferSettings(concurrency=4, chunk_size=64 * 1024, part_size=128 * 1024, window=8)


def tree(root: Path, seed: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        (root / f"f{i}.bin").write_bytes(bytes([seed]) * (60_000 + 1000 * i))
    (root / "seed.txt").write_text(str(seed))
    return root


def publish_n(store: S3Store, tmp: Path, n: int, loc: Location | None = None) -> list[Manifest]:
    loc = loc or Location(store.bucket, "ds")
    return [publish(tree(tmp / f"src{i}" / "ds", i), "ds", loc, store, SMALL).manifest for i in range(n)]


def keys(store: S3Store, loc: Location) -> dict[str, set[str]]:
    """Generation -> names of the objects under it (and "" -> the objects at the prefix)."""
    out: dict[str, set[str]] = {}
    for o in store.list(loc.key("")):
        rel = o.key[len(loc.key("")):]
        gen, _, rest = rel.rpartition("/")
        out.setdefault(gen, set()).add(rest)
    return out


def own(m: Manifest) -> set[str]:
    return {p.key.split("/", 1)[1] for p in m.parts} | {INDEX_NAME, MANIFEST_NAME}


def current(store: S3Store, loc: Location) -> Manifest:
    return Manifest.from_json(store.get(loc.key(MANIFEST_NAME)))


def test_stored_lists_generations_newest_first(store: S3Store, tmp_path: Path) -> None:
    ms = publish_n(store, tmp_path, 3)
    view = stored(store, Location(store.bucket, "ds"))
    assert [(g.name, g.kind) for g in view.generations] == [
        (ms[2].generation, "current"), (ms[1].generation, "history"), (ms[0].generation, "history")]
    g = view.generations[1]
    assert g.created == ms[1].created and g.files == ms[1].files == 4 and g.objects == len(own(ms[1]))
    assert g.size == sum(p.size for p in ms[1].parts) + ms[1].index.size + len(ms[1].to_json())
    assert view.generations[0].superseded is None and g.superseded is not None


def test_gc_keeps_the_newest_n_and_deletes_the_rest(store: S3Store, tmp_path: Path) -> None:
    ms = publish_n(store, tmp_path, 4)
    loc = Location(store.bucket, "ds")
    before = keys(store, loc)
    dry = collect(store, loc, 2, grace_s=0, dry_run=True)
    assert [d.name for d in dry.doomed] == [ms[0].generation, ms[1].generation]
    assert dry.kept == (ms[3].generation, ms[2].generation)
    assert sum(d.objects for d in dry.doomed) == len(own(ms[0])) + len(own(ms[1]))
    assert keys(store, loc) == before, "a dry run deleted something"
    result = collect(store, loc, 2, grace_s=0)
    assert [d.name for d in result.doomed] == [ms[0].generation, ms[1].generation]
    assert result.deleted == len(own(ms[0])) + len(own(ms[1])) and not result.failures
    left = keys(store, loc)
    assert set(left) == {"", ms[2].generation, ms[3].generation}
    assert left[ms[2].generation] == own(ms[2]) and left[ms[3].generation] == own(ms[3])
    got = pull(loc, None, tmp_path / "dest", store, SMALL)
    assert (got.dest / "seed.txt").read_text() == "3"


def test_gc_never_deletes_the_current_one_nor_a_young_one(store: S3Store, tmp_path: Path) -> None:
    ms = publish_n(store, tmp_path, 3)
    loc = Location(store.bucket, "ds")
    before = keys(store, loc)
    result = collect(store, loc, 1)  # default grace: both history generations were current a moment ago
    assert result.doomed == () and {g for g, _ in result.young} == {ms[0].generation, ms[1].generation}
    assert all(0 < left <= 3600 for _, left in result.young)
    assert keys(store, loc) == before
    result = collect(store, loc, 1, grace_s=0)
    assert set(keys(store, loc)) == {"", ms[2].generation}
    with pytest.raises(UsageError):
        collect(store, loc, 0)
    with pytest.raises(NotFoundError):
        collect(store, Location(store.bucket, "nothing-here"), 1)


class DeleteFault:
    """A store whose ``k``-th ``delete`` call fails: before it is sent, or after it was applied."""

    def __init__(self, inner: S3Store, k: int, mode: str) -> None:
        self.inner, self.k, self.mode, self.calls = inner, k, mode, 0
        self.bucket = inner.bucket

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def delete(self, keys: list[str]) -> Any:
        self.calls += 1
        if self.calls == self.k and self.mode == "before":
            raise TransientStoreError("injected before delete")
        out = self.inner.delete(keys)
        if self.calls == self.k and self.mode == "after":
            raise TransientStoreError("injected after delete")
        return out


@pytest.mark.parametrize("mode", ["before", "after"])
def test_a_gc_that_dies_at_any_delete_leaves_a_pullable_dataset_and_the_next_gc_finishes(
        store: S3Store, tmp_path: Path, mode: str) -> None:
    for k in range(1, 12):
        loc = Location(store.bucket, f"ds{k}")
        ms = publish_n(store, tmp_path / f"k{k}", 3, loc)
        faulty = DeleteFault(store, k, mode)
        try:
            collect(faulty, loc, 1, grace_s=0)
        except TransientStoreError:
            pass
        else:
            assert faulty.calls < k
            break
        # Whatever is left: the current generation whole; every other generation either whole
        # history (manifest copy, parts, index) or a leftover without its manifest copy.
        left = keys(store, loc)
        assert left[ms[2].generation] == own(ms[2])
        for m in ms[:2]:
            names = left.get(m.generation, set())
            assert MANIFEST_NAME not in names or names == own(m), (k, mode, names)
        view = stored(store, loc)
        assert [g.name for g in view.generations if g.kind == "current"] == [ms[2].generation]
        got = pull(loc, f"pulled{k}", tmp_path / "dest", store, SMALL)
        assert (got.dest / "seed.txt").read_text() == "2"
        collect(store, loc, 1, grace_s=0)  # the next gc finishes the job
        assert set(keys(store, loc)) == {"", ms[2].generation}, (k, mode)
    assert k >= 4, k  # per history generation: its history copy, then the rest


def test_two_gcs_at_once(store: S3Store, tmp_path: Path) -> None:
    ms = publish_n(store, tmp_path, 4)
    loc = Location(store.bucket, "ds")
    errors: list[BaseException] = []
    go = threading.Barrier(2)

    def run() -> None:
        try:
            go.wait()
            collect(store, loc, 1, grace_s=0)
        except BaseException as err:  # reported below
            errors.append(err)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert set(keys(store, loc)) == {"", ms[3].generation}
    assert keys(store, loc)[ms[3].generation] == own(ms[3])


class Paused:
    """A store whose first call of ``method`` on a key containing ``match`` waits for ``release``."""

    def __init__(self, inner: S3Store, method: str, match: str) -> None:
        self.inner, self.method, self.match = inner, method, match
        self.bucket = inner.bucket
        self.reached, self.release = threading.Event(), threading.Event()
        self._once = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if name != self.method:
            return target

        def call(key: str, *args: Any, **kwargs: Any) -> Any:
            if self.match in key and self._once.acquire(blocking=False):
                self.reached.set()
                assert self.release.wait(60)
            return target(key, *args, **kwargs)

        return call


def test_gc_during_a_publish_leaves_the_running_publish_alone(store: S3Store, tmp_path: Path) -> None:
    ms = publish_n(store, tmp_path, 2)
    loc = Location(store.bucket, "ds")
    paused = Paused(store, "upload", "part-00001.tar")  # the publish holds its lease and a part
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(publish(tree(tmp_path / "late" / "ds", 9), "ds", loc, paused,
                                                           SMALL)))
    t.start()
    try:
        assert paused.reached.wait(60)
        result = collect(store, loc, 1, grace_s=0)
        assert [d.name for d in result.doomed] == [ms[0].generation]
    finally:
        paused.release.set()
        t.join(60)
    assert out, "the publish failed"
    m = out[0].manifest
    assert current(store, loc).generation == m.generation
    got = pull(loc, None, tmp_path / "dest", store, SMALL)
    assert (got.dest / "seed.txt").read_text() == "9"


def test_gc_during_a_pull_of_the_generation_it_would_delete_waits_for_the_grace(
        store: S3Store, tmp_path: Path) -> None:
    loc = Location(store.bucket, "ds")
    (old,) = publish_n(store, tmp_path, 1)
    paused = Paused(store, "read_range_into", "part-00001.tar")
    out: list[Any] = []
    t = threading.Thread(target=lambda: out.append(pull(loc, None, tmp_path / "dest", paused, SMALL)))
    t.start()
    try:
        assert paused.reached.wait(60)
        publish(tree(tmp_path / "new" / "ds", 5), "ds", loc, store, SMALL)  # the pull's generation is history now
        result = collect(store, loc, 1, grace_s=3600)
        assert result.doomed == () and [g for g, _ in result.young] == [old.generation]
    finally:
        paused.release.set()
        t.join(60)
    assert out and (out[0].dest / "seed.txt").read_text() == "0"


def _reaped_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_gc_removes_what_dead_publishes_left_but_not_a_live_one(store: S3Store, tmp_path: Path) -> None:
    (m,) = publish_n(store, tmp_path, 1)
    loc = Location(store.bucket, "ds")
    me = leases.local_identity()
    dead, live = "20260101T000000Z-0000dead", "20260101T000000Z-00000a11"
    store.put(loc.key(f"{dead}/lease.json"),
              leases.Lease(dead, me.host, me.boot_id, _reaped_pid(), 1, "2026-01-01T00:00:00Z", 600.0).to_json())
    store.put(loc.key(f"{dead}/part-00000.tar"), b"x" * 1000)
    store.put(loc.key(f"{live}/lease.json"),
              leases.Lease(live, "elsewhere.example", "b", 1, 1, "2026-01-01T00:00:00Z", 600.0).to_json())
    store.put(loc.key(f"{live}/part-00000.tar"), b"y" * 1000)
    dry = collect(store, loc, 1, grace_s=0, dry_run=True)
    assert [(d.name, d.reason, d.objects) for d in dry.doomed] == [(dead, "leftover", 2)]
    result = collect(store, loc, 1, grace_s=0)
    assert [(d.name, d.reason) for d in result.doomed] == [(dead, "leftover")] and result.deleted == 2
    assert set(keys(store, loc)) == {"", m.generation, live}


def test_an_unleased_leftover_is_removed_once_older_than_the_grace(store: S3Store, tmp_path: Path) -> None:
    (m,) = publish_n(store, tmp_path, 1)
    loc = Location(store.bucket, "ds")
    gen = "20260101T000000Z-0000beef"  # what a gc cut after deleting the history copy leaves
    store.put(loc.key(f"{gen}/part-00000.tar"), b"x" * 1000)
    result = collect(store, loc, 1, grace_s=3600)
    assert result.doomed == () and [g for g, _ in result.young] == [gen]
    result = collect(store, loc, 1, grace_s=0)
    assert [(d.name, d.reason) for d in result.doomed] == [(gen, "unleased")]
    assert set(keys(store, loc)) == {"", m.generation}


def test_a_foreign_directory_under_the_prefix_is_never_touched(store: S3Store, tmp_path: Path) -> None:
    (m,) = publish_n(store, tmp_path, 1)
    loc = Location(store.bucket, "ds")
    store.put(loc.key("20260101T000000Z-00000abc/notes.txt"), b"mine")
    collect(store, loc, 1, grace_s=0)
    assert keys(store, loc)["20260101T000000Z-00000abc"] == {"notes.txt"}


def test_gc_on_a_versioned_bucket_says_the_versions_remain(store: S3Store, tmp_path: Path, s3_server) -> None:
    if s3_server.name != "moto":
        pytest.skip("rclone serve s3 has no bucket versioning")
    client = store.client
    client.put_bucket_versioning(Bucket=store.bucket, VersioningConfiguration={"Status": "Enabled"})
    try:
        publish_n(store, tmp_path, 2)
        result = collect(store, Location(store.bucket, "ds"), 1, grace_s=0)
        assert result.deleted and result.versioned is True
        assert any("noncurrent versions" in n for n in result.notes)
    finally:  # the bucket fixture deletes current objects only
        versions = client.list_object_versions(Bucket=store.bucket)
        for v in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
            client.delete_object(Bucket=store.bucket, Key=v["Key"], VersionId=v["VersionId"])
