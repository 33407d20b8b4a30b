"""Leases and the commit decision: pure functions, judged on facts (no server, no /proc)."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest

from s3sync.lease import Identity, Lease, judge, process_start
from s3sync.publish import Held, outcome

ME = Identity("vm", "boot-1")
TTL = 600.0
NOW = 1_000_000.0


def lease(host: str = "vm", boot: str = "boot-1", pid: int = 100, ticks: int = 555, ttl: float = TTL) -> Lease:
    return Lease("20260101T000000Z-00000000", host, boot, pid, ticks, "2026-01-01T00:00:00Z", ttl)


def alive_pids(table: dict[int, int]):
    return lambda pid: table.get(pid)


@pytest.mark.parametrize(("the_lease", "modified", "table", "want"), [
    # Same host and boot: the process table decides at once, whatever the lease's age.
    (lease(), NOW - 10 * TTL, {100: 555}, (True, "running")),
    (lease(), NOW, {}, (False, "dead")),
    (lease(), NOW, {100: 999}, (False, "dead")),           # pid reused by a later process
    (lease(), NOW, {100: 0}, (True, "running")),           # exists, start time unreadable (hidepid)
    # Same host name, another boot: the process is gone, but a host name can be shared, so
    # only expiry decides (as for another host).
    (lease(boot="boot-0"), NOW - 1, {100: 555}, (True, "live")),
    (lease(host="other"), NOW - TTL + 1, {}, (True, "live")),
    (lease(host="other"), NOW - TTL - 1, {100: 555}, (False, "expired")),
    (lease(host="other", ttl=5.0), NOW - 6, {}, (False, "expired")),
])
def test_judge(the_lease: Lease, modified: float, table: dict[int, int], want: tuple[bool, str]) -> None:
    v = judge(the_lease, modified, modified, NOW, ME, alive_pids(table), TTL)
    assert (v.alive, v.state) == want


def test_judge_in_another_pid_namespace_waits_for_expiry() -> None:
    """A container sharing this host's name and kernel (``docker run --network host``) has its
    own process table: pid 100 there is not pid 100 here, so the lease of a publish running in
    it must not be judged dead from here (it was, and its generation deleted under it)."""
    me = Identity("vm", "boot-1", "pid:[4026531836]")
    theirs = Lease("20260101T000000Z-00000000", "vm", "boot-1", 100, 555, "2026-01-01T00:00:00Z", TTL,
                   "pid:[4026532999]")
    assert (judge(theirs, NOW - 1, NOW - 1, NOW, me, alive_pids({}), TTL).state) == "live"
    assert (judge(theirs, NOW - TTL - 1, None, NOW, me, alive_pids({}), TTL).state) == "expired"
    same = dataclasses.replace(theirs, pid_ns=me.pid_ns)
    assert (judge(same, NOW - 1, NOW - 1, NOW, me, alive_pids({}), TTL).state) == "dead"
    assert Lease.from_json(theirs.to_json()) == theirs


def test_judge_without_a_lease_is_never_dead() -> None:
    assert judge(None, None, NOW - 5, NOW, ME, alive_pids({}), TTL).alive
    # A generation without a lease is not a dead publish of ours: kept whatever its age.
    assert judge(None, None, NOW - TTL - 1, NOW, ME, alive_pids({}), TTL).alive
    assert judge(None, None, None, NOW, ME, alive_pids({}), TTL).alive


def test_lease_round_trips_and_rejects_garbage() -> None:
    assert Lease.from_json(lease().to_json()) == lease()
    for bad in (b"", b"[]", b"{}", b'{"format": "s3sync-lease"}', b"\xff", lease(ttl=0).to_json()):
        assert Lease.from_json(bad) is None


@pytest.mark.parametrize("field,value", [("pid", "1e999"), ("start_ticks", "-1e999"), ("ttl_s", "1" + "0" * 400)])
def test_lease_with_numbers_out_of_range_is_no_lease(field: str, value: str) -> None:
    doc = json.loads(lease().to_json())
    doc[field] = "@@"
    data = json.dumps(doc).replace('"@@"', value).encode()
    assert Lease.from_json(data) is None


def test_process_start_of_a_process_hidden_from_proc_is_not_none(monkeypatch: pytest.MonkeyPatch) -> None:
    """/proc mounted hidepid=2 hides other users' /proc/PID: the process still exists."""
    import builtins

    real_open = builtins.open

    def hidden(path, *args, **kwargs):  # noqa: ANN001, ANN202
        if str(path).startswith("/proc/") and str(path).endswith("/stat"):
            raise FileNotFoundError(path)
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(builtins, "open", hidden)
    assert process_start(os.getpid()) == 0
    for garbage in (0, -1, 2**31, 10**30):  # a lease's pid is untrusted
        assert process_start(garbage) is None


def test_process_start_reads_this_process() -> None:
    assert process_start(os.getpid())
    assert process_start(2**22 + 12345) is None  # above pid_max's maximum (4194304)


@pytest.mark.parametrize(("held", "history", "committed"), [
    (Held(b"", '"e"', "ours", "base"), False, True),          # the manifest names ours
    (Held(b"", '"e"', "later", "ours"), False, True),         # a later publish replaced ours
    (Held(b"", '"e"', "much-later", "later"), True, True),    # ... and another: the history copy tells
    (Held(b"", '"e"', "winner", "base"), False, False),       # another publish won
    (Held(b"", '"e"', "base", None), False, False),           # the PUT never landed
    (Held(None, None, None, None), False, False),             # no manifest at all
])
def test_outcome(held: Held, history: bool, committed: bool) -> None:
    assert outcome(held, "ours", history) is committed
