"""Reader leases: ``gc`` never deletes a generation a running pull (or repair) reads, on moto
and rclone (issue 13, finding of tests/breakers/test_break13.py).

A pull of a generation that is no longer current writes ``PREFIX/G/readers/<id>.json`` before it
reads G's history copy again; gc lists the reader leases before deleting the copy and again
after. The races are interleaved deterministically: a store wrapper runs the other party at an
exact call of gc (or holds the pull at its first part read), never a sleep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from s3sync import cli
from s3sync import lease as leases
from s3sync.config import Location, S3Settings, TransferSettings
from s3sync.errors import NotFoundError
from s3sync.gc import collect, stored
from s3sync.lease import Lease
from s3sync.manifest import MANIFEST_NAME, Manifest
from s3sync.publish import publish
from s3sync.pull import pull
from s3sync.readers import READERS_DIR
from s3sync.repair import repair
from s3sync.stores.s3 import S3Store, make_client

SMALL = TransferSettings(concurrency=4, chunk_size=64 * 1024, part_size=128 * 1024, window=8)
WORKTREE = Path(__file__).resolve().parents[2]


def tree(root: Path, seed: int) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for i in range(3):
        (root / f"f{i}.bin").write_bytes(bytes([seed]) * (60_000 + 1000 * i))
    (root / "seed.txt").write_text(str(seed))
    return root


def two_generations(store: S3Store, tmp: Path) -> tuple[Location, Manifest, Manifest]:
    """A dataset whose generation ``old`` is history (superseded by ``new``)."""
    loc = Location(store.bucket, "ds")
    old = publish(tree(tmp / "src0" / "ds", 0), "ds", loc, store, SMALL).manifest
    new = publish(tree(tmp / "src1" / "ds", 1), "ds", loc, store, SMALL).manifest
    return loc, old, new


def under(store: S3Store, loc: Location, generation: str) -> set[str]:
    base = loc.key(f"{generation}/")
    return {o.key[len(base):] for o in store.list(base)}


def readers_of(store: S3Store, loc: Location, generation: str) -> list[str]:
    return sorted(k for k in under(store, loc, generation) if k.startswith(READERS_DIR + "/"))


class Paused:
    """A store whose first ``method`` call on a key containing ``match`` waits for ``release``
    (by default the first part read: the reader holds its lease, has checked the history copy,
    and is fetching its parts)."""

    def __init__(self, inner: S3Store, match: str = "part-", method: str = "read_range_into") -> None:
        self.inner, self.match, self.method, self.bucket = inner, match, method, inner.bucket
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


class Hooked:
    """gc's store: runs ``hook`` at one exact call (``when(method, args)``), before forwarding it
    or (``after``) once it has been answered."""

    def __init__(self, inner: S3Store, when, hook, after: bool = False) -> None:
        self.inner, self.when, self.hook, self.after, self.bucket = inner, when, hook, after, inner.bucket
        self.fired = False

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if not callable(target):
            return target

        def call(*args: Any, **kwargs: Any) -> Any:
            fire = not self.fired and self.when(name, args)
            self.fired = self.fired or fire
            if fire and not self.after:
                self.hook()
            out = target(*args, **kwargs)
            if fire and self.after:
                if name == "list":
                    out = list(out)  # the listing is answered before the hook runs
                self.hook()
            return out

        return call


def readers_listing(loc: Location, generation: str, nth: int):
    """The ``nth`` listing of ``generation``'s reader leases (1: gc's check before deleting the
    history copy, 2: its check after)."""
    seen = [0]
    prefix = loc.key(f"{generation}/{READERS_DIR}/")

    def when(name: str, args: tuple) -> bool:
        if name == "list" and args and args[0] == prefix:
            seen[0] += 1
            return seen[0] == nth
        return False

    return when


def start_pull(paused: Paused, loc: Location, dest: Path, generation: str) -> tuple[threading.Thread, list[Any]]:
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(pull(loc, None, dest, paused, SMALL, generation=generation))
        except BaseException as err:  # noqa: BLE001 (handed to the test)
            out.append(err)
            paused.reached.set()

    t = threading.Thread(target=run)
    t.start()
    return t, out


def test_a_pull_of_a_history_generation_holds_a_lease_until_it_ends(store: S3Store, tmp_path: Path) -> None:
    loc, old, new = two_generations(store, tmp_path)
    paused = Paused(store)
    t, out = start_pull(paused, loc, tmp_path / "dest", old.generation)
    try:
        assert paused.reached.wait(60)
        (key,) = readers_of(store, loc, old.generation)
        lease = Lease.from_json(store.get(loc.key(f"{old.generation}/{key}")))
        assert lease is not None and lease.reader == "pull" and lease.pid == os.getpid()
        view = {g.name: g for g in stored(store, loc).generations}
        assert view[old.generation].readers == 1 and view[old.generation].kind == "history"
        dry = collect(store, loc, 1, grace_s=0, dry_run=True)
        assert dry.busy == ((old.generation, 1),) and dry.doomed == ()
        done = collect(store, loc, 1, grace_s=0)
        assert done.busy == ((old.generation, 1),) and done.doomed == () and done.deleted == 0
    finally:
        paused.release.set()
        t.join(60)
    assert not isinstance(out[0], BaseException), out[0]
    assert (out[0].dest / "seed.txt").read_text() == "0" and out[0].notes == ()
    assert readers_of(store, loc, old.generation) == []  # removed at the end
    # no reader now: the next gc deletes it
    assert [d.name for d in collect(store, loc, 1, grace_s=0).doomed] == [old.generation]
    assert under(store, loc, old.generation) == set()


def test_a_pull_of_the_current_generation_writes_no_lease(store: S3Store, tmp_path: Path) -> None:
    loc, old, new = two_generations(store, tmp_path)
    paused = Paused(store)
    t, out = start_pull(paused, loc, tmp_path / "dest", new.generation)
    try:
        assert paused.reached.wait(60)
        assert readers_of(store, loc, new.generation) == []
    finally:
        paused.release.set()
        t.join(60)
    assert (out[0].dest / "seed.txt").read_text() == "1"


def test_a_reader_that_appears_just_before_gc_deletes_the_copy_keeps_it_whole(
        store: S3Store, tmp_path: Path) -> None:
    """Its lease is written after gc's survey, before gc's first check of the readers."""
    loc, old, new = two_generations(store, tmp_path)
    paused = Paused(store)
    started: list[Any] = []

    def hook() -> None:
        started.append(start_pull(paused, loc, tmp_path / "dest", old.generation))
        assert paused.reached.wait(60)

    gc_store = Hooked(store, readers_listing(loc, old.generation, 1), hook)
    try:
        result = collect(gc_store, loc, 1, grace_s=0)
        assert gc_store.fired
        assert result.busy == ((old.generation, 1),) and result.doomed == () and result.deleted == 0
        assert MANIFEST_NAME in under(store, loc, old.generation)  # whole: still pullable by others
    finally:
        paused.release.set()
        started[0][0].join(60)
    assert (started[0][1][0].dest / "seed.txt").read_text() == "0"


def test_a_reader_between_gcs_two_checks_keeps_the_parts_and_the_next_gc_collects_them(
        store: S3Store, tmp_path: Path) -> None:
    """The pull writes its lease and reads the history copy just before gc deletes that copy:
    gc's second check sees the lease and leaves the parts; the pull finishes."""
    loc, old, new = two_generations(store, tmp_path)
    paused = Paused(store)
    started: list[Any] = []
    copy_key = loc.key(f"{old.generation}/{MANIFEST_NAME}")

    def hook() -> None:
        started.append(start_pull(paused, loc, tmp_path / "dest", old.generation))
        assert paused.reached.wait(60)  # lease written, history copy read, parts being fetched

    gc_store = Hooked(store, lambda name, args: name == "delete" and args[0] == [copy_key], hook)
    try:
        result = collect(gc_store, loc, 1, grace_s=0)
        assert gc_store.fired
        assert result.busy == ((old.generation, 1),) and result.doomed == ()
        assert result.deleted == 1 and any("left until no reader holds them" in n for n in result.notes)
        left = under(store, loc, old.generation)
        assert MANIFEST_NAME not in left and {p.key.split("/", 1)[1] for p in old.parts} <= left
        # no new pull can start on it: it is no longer listed as a generation one can pull
        assert [g.kind for g in stored(store, loc).generations if g.name == old.generation] == ["leftover"]
        with pytest.raises(NotFoundError, match=f"generation {old.generation} is not stored"):
            pull(loc, None, tmp_path / "other", store, SMALL, generation=old.generation)
    finally:
        paused.release.set()
        started[0][0].join(60)
    got = started[0][1][0]
    assert not isinstance(got, BaseException), got
    assert (got.dest / "seed.txt").read_text() == "0"
    # the manifest-less generation is recognised and collected once no reader holds it
    again = collect(store, loc, 1, grace_s=0)
    assert [(d.name, d.reason) for d in again.doomed] == [(old.generation, "unleased")]
    assert under(store, loc, old.generation) == set()


def test_a_reader_after_gcs_second_check_fails_cleanly_saying_gc_deleted_it(
        store: S3Store, tmp_path: Path) -> None:
    """The pull writes its lease after gc's second check: it finds the history copy gone and
    stops with a one-line 'deleted (by gc)' (not 'damaged'), removing its lease."""
    loc, old, new = two_generations(store, tmp_path)
    paused = Paused(store, f"/{READERS_DIR}/", "put")  # it has read the history copy; its lease PUT waits
    t, out = start_pull(paused, loc, tmp_path / "dest", old.generation)
    try:
        assert paused.reached.wait(60)
        result = collect(store, loc, 1, grace_s=0)  # both checks done, everything deleted
    finally:
        paused.release.set()
        t.join(60)
    errors = out
    assert len(errors) == 1
    err = errors[0]
    assert isinstance(err, NotFoundError) and "\n" not in str(err)
    assert f"generation {old.generation} of {loc.url()} was deleted (by gc)" in str(err)
    assert f"the current generation is {new.generation}" in str(err)
    assert [d.name for d in result.doomed] == [old.generation] and result.busy == ()
    assert under(store, loc, old.generation) == set()  # its lease removed too
    assert not (tmp_path / "dest" / "ds").exists()


def test_a_pull_of_the_current_generation_that_gc_collects_meanwhile_says_deleted_not_damaged(
        store: S3Store, tmp_path: Path) -> None:
    loc = Location(store.bucket, "ds")
    old = publish(tree(tmp_path / "src0" / "ds", 0), "ds", loc, store, SMALL).manifest
    paused = Paused(store, "part-00001")
    out: list[Any] = []

    def run() -> None:
        try:
            out.append(pull(loc, None, tmp_path / "dest", paused, SMALL))
        except BaseException as err:  # noqa: BLE001
            out.append(err)

    t = threading.Thread(target=run)
    t.start()
    try:
        assert paused.reached.wait(60)
        assert readers_of(store, loc, old.generation) == []  # current: no lease
        new = publish(tree(tmp_path / "src1" / "ds", 1), "ds", loc, store, SMALL).manifest
        assert [d.name for d in collect(store, loc, 1, grace_s=0).doomed] == [old.generation]
    finally:
        paused.release.set()
        t.join(60)
    err = out[0]
    assert isinstance(err, NotFoundError), err
    assert "was deleted (by gc)" in str(err) and "damaged" not in str(err)
    assert f"the current generation is {new.generation}" in str(err)


def test_a_reader_lease_of_a_dead_process_does_not_hold_gc(store: S3Store, tmp_path: Path) -> None:
    """Same host, boot and PID namespace, pid gone: dead at once (another host: after its ttl)."""
    loc, old, new = two_generations(store, tmp_path)
    me = leases.local_identity()
    proc = subprocess.Popen(["true"])
    proc.wait()
    dead = Lease(old.generation, me.host, me.boot_id, proc.pid, 1, "2026-12-06T00:00:00Z", 600.0, me.pid_ns,
                 reader="pull")
    other = Lease(old.generation, "elsewhere", "boot-x", 1, 1, "2026-12-06T00:00:00Z", 600.0, reader="pull")
    store.put(loc.key(f"{old.generation}/{READERS_DIR}/a.json"), dead.to_json())
    view = {g.name: g for g in stored(store, loc).generations}
    assert view[old.generation].readers == 0
    kept = collect(store, loc, 2, grace_s=0)  # kept by --keep: its dead reader lease is removed
    assert kept.doomed == () and kept.deleted == 1 and readers_of(store, loc, old.generation) == []
    store.put(loc.key(f"{old.generation}/{READERS_DIR}/a.json"), dead.to_json())
    store.put(loc.key(f"{old.generation}/{READERS_DIR}/b.json"), other.to_json())  # live for 600 s
    assert collect(store, loc, 1, grace_s=0).busy == ((old.generation, 1),)
    store.delete([loc.key(f"{old.generation}/{READERS_DIR}/b.json")])
    result = collect(store, loc, 1, grace_s=0)
    assert [d.name for d in result.doomed] == [old.generation]
    assert under(store, loc, old.generation) == set()  # the dead lease went with it


def test_kill_9_of_a_reader_leaves_a_lease_that_gc_judges_dead(store: S3Store, tmp_path: Path, s3_server) -> None:
    from tests.faults.proxy import FaultProxy

    loc, old, new = two_generations(store, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(WORKTREE)}
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.throttle_bps = 30_000  # the pull would take seconds: killed while it reads
        proc = subprocess.Popen([sys.executable, "-m", "s3sync", "pull", loc.url(), str(tmp_path / "data"),
                                 "--endpoint-url", proxy.url, "-q", "--generation", old.generation],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            while proxy.stats(f"{old.generation}/part-").requests == 0 and proc.poll() is None:
                time.sleep(0.02)  # polling the proxy's counters, no threshold
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert len(readers_of(store, loc, old.generation)) == 1
            assert collect(store, loc, 1, grace_s=0, dry_run=True).busy == ((old.generation, 1),)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            proc.stderr.close()
    assert len(readers_of(store, loc, old.generation)) == 1  # left behind by kill -9
    assert {g.name: g for g in stored(store, loc).generations}[old.generation].readers == 0
    result = collect(store, loc, 1, grace_s=0)
    assert [d.name for d in result.doomed] == [old.generation] and result.busy == ()
    assert under(store, loc, old.generation) == set()


def test_read_only_credentials_pull_without_a_lease_and_say_so_once(
        store: S3Store, tmp_path: Path, s3_server, capsys) -> None:
    from tests.faults.proxy import FaultProxy, Rule

    loc, old, new = two_generations(store, tmp_path)
    with FaultProxy(s3_server.endpoint_url) as proxy:
        refused = proxy.add(Rule("error", key=f"/{READERS_DIR}/", method="PUT", status=403, code="AccessDenied"))[0]
        ro = S3Store(make_client(S3Settings(endpoint_url=proxy.url)), store.bucket, concurrency=4)
        try:
            got = pull(loc, None, tmp_path / "api", ro, SMALL, generation=old.generation)
        finally:
            ro.close()
        assert refused.applied == 1
        assert (got.dest / "seed.txt").read_text() == "0"
        assert len(got.notes) == 1 and "no reader lease for this pull" in got.notes[0]
        assert "'s3sync gc' cannot see it" in got.notes[0]
        code = cli.main(["pull", loc.url(), str(tmp_path / "cli"), "--endpoint-url", proxy.url,
                         "--generation", old.generation])
        err = capsys.readouterr().err
        assert code == 0, err
        assert err.count("no reader lease for this pull") == 1 and "error" not in err
        assert refused.applied == 2
    assert readers_of(store, loc, old.generation) == []


class Watching:
    """A store that records, at every read of ``generation``'s parts or member index, the reader
    leases it holds then."""

    def __init__(self, inner: S3Store, loc: Location, generation: str) -> None:
        self.inner, self.loc, self.generation, self.bucket = inner, loc, generation, inner.bucket
        self.seen: list[list[str]] = []

    def __getattr__(self, name: str) -> Any:
        target = getattr(self.inner, name)
        if name not in ("get", "read", "read_range_into", "read_range_pieces"):
            return target

        def call(key: str, *args: Any, **kwargs: Any) -> Any:
            if key.startswith(self.loc.key(f"{self.generation}/")) and not key.endswith(MANIFEST_NAME):
                self.seen.append(readers_of(self.inner, self.loc, self.generation))
            return target(key, *args, **kwargs)
        return call


def test_a_repair_of_a_history_generation_holds_a_lease(store: S3Store, tmp_path: Path) -> None:
    loc, old, new = two_generations(store, tmp_path)
    dest = pull(loc, None, tmp_path / "data", store, SMALL, generation=old.generation).dest
    (dest / "f1.bin").write_bytes(b"broken")
    watching = Watching(store, loc, old.generation)
    result = repair(dest, loc, watching, SMALL)
    assert result.fetched == ("f1.bin",) and result.notes == ()
    assert watching.seen and all(len(s) == 1 for s in watching.seen)  # held while it fetched
    assert readers_of(store, loc, old.generation) == []


def test_an_update_in_place_and_a_partial_pull_to_a_history_generation_hold_a_lease(
        store: S3Store, tmp_path: Path) -> None:
    from s3sync.selection import Selection

    loc, old, new = two_generations(store, tmp_path)
    pull(loc, None, tmp_path / "data", store, SMALL)  # the current generation, no lease
    watching = Watching(store, loc, old.generation)
    back = pull(loc, None, tmp_path / "data", watching, SMALL, generation=old.generation)
    assert back.updated is not None and (back.dest / "seed.txt").read_text() == "0"
    part = pull(loc, None, tmp_path / "part", watching, SMALL, generation=old.generation,
                selection=Selection.make(["f1.bin"], []))
    assert part.updated is not None and part.updated.partial and (part.dest / "f1.bin").exists()
    assert len(watching.seen) >= 4 and all(len(s) == 1 for s in watching.seen)  # index and parts, each time
    assert readers_of(store, loc, old.generation) == []


def test_ls_generations_and_gc_dry_run_show_the_readers(store: S3Store, tmp_path: Path, s3_server,
                                                       capsys) -> None:
    loc, old, new = two_generations(store, tmp_path)
    me = leases.local_identity()
    mine = Lease(old.generation, me.host, me.boot_id, os.getpid(), leases.process_start(os.getpid()) or 0,
                 "2026-12-06T00:00:00Z", 600.0, me.pid_ns, reader="pull")
    store.put(loc.key(f"{old.generation}/{READERS_DIR}/r.json"), mine.to_json())
    ep = ["--endpoint-url", s3_server.endpoint_url]
    assert cli.main(["ls", loc.url(), "--generations", *ep]) == 0
    out = capsys.readouterr().out
    assert "in use by 1 reader" in [line for line in out.splitlines() if old.generation in line][0]
    assert cli.main(["gc", loc.url(), "--keep", "1", "--grace", "0", "--dry-run", *ep]) == 0
    out = capsys.readouterr().out
    assert f"kept\t{old.generation}\tin use by 1 reader" in out and "would delete" not in out
    assert cli.main(["gc", loc.url(), "--keep", "1", "--grace", "0", "--json", *ep]) == 0
    import json
    doc = json.loads(capsys.readouterr().out)
    assert doc["in_use"] == [{"generation": old.generation, "readers": 1}] and doc["deleted"] == []
    assert MANIFEST_NAME in under(store, loc, old.generation)


def test_ctrl_c_of_a_reader_removes_its_lease(store: S3Store, tmp_path: Path, s3_server) -> None:
    from tests.faults.proxy import FaultProxy

    loc, old, new = two_generations(store, tmp_path)
    env = {**os.environ, "PYTHONPATH": str(WORKTREE)}
    with FaultProxy(s3_server.endpoint_url) as proxy:
        proxy.throttle_bps = 30_000
        proc = subprocess.Popen([sys.executable, "-m", "s3sync", "pull", loc.url(), str(tmp_path / "data"),
                                 "--endpoint-url", proxy.url, "-q", "--generation", old.generation],
                                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        try:
            while proxy.stats(f"{old.generation}/part-").requests == 0 and proc.poll() is None:
                time.sleep(0.02)  # polling the proxy's counters, no threshold
            assert proc.poll() is None and len(readers_of(store, loc, old.generation)) == 1
            proc.send_signal(signal.SIGINT)
            code = proc.wait(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            err = proc.stderr.read()
            proc.stderr.close()
    assert code == 130, err
    assert readers_of(store, loc, old.generation) == []
