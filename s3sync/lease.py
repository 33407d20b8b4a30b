"""Publish leases: who is writing a generation, and whether that writer can still be alive.

A publish writes ``PREFIX/<generation>/lease.json`` before its first part and re-writes it
every ``refresh_s`` seconds until it has finished. A later publish of the same prefix uses it
to tell a generation that a dead publish left behind (to be cleaned up) from one that a live
publish is still writing (never to be touched).

The decision (``judge``) is pure: it takes the lease document and the facts gathered about
this machine and the server, and does no I/O. ``local_identity`` and ``process_start`` read
``/proc`` (Linux); elsewhere they return None and only the expiry rule applies.
``LeaseKeeper`` re-writes a lease object while its owner runs.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .errors import S3SyncError
from .stores.base import Store
from .threads import Worker, wait_all

LEASE_NAME = "lease.json"
LEASE_FORMAT = "s3sync-lease"


MAX_TTL_S = 24 * 3600.0
"""Longest ``ttl_s`` a lease may claim (seconds): one that claims more (``Infinity`` parses as
JSON) is not a lease, so it cannot keep a generation from gc for ever."""


@dataclass(frozen=True, slots=True)
class LeaseSettings:
    """How long a lease lives without a refresh (``ttl_s``) and how often it is refreshed
    (``refresh_s``), in seconds. Tests use seconds; the defaults survive a slow network."""

    ttl_s: float = 600.0
    refresh_s: float = 120.0


@dataclass(frozen=True, slots=True)
class Lease:
    """The content of ``lease.json``.

    Attributes:
        generation: the generation being written.
        host: the writer's host name.
        boot_id: ``/proc/sys/kernel/random/boot_id`` of that host ("" if unknown): a pid
            means the same process only within one boot.
        pid: the writer's process id.
        start_ticks: the process start time, ``/proc/PID/stat`` field 22 (clock ticks since
            boot; 0 if unknown): tells the writer from a later process that reused its pid.
        started: ISO 8601 UTC time the publish started.
        ttl_s: seconds after the lease object's LastModified at which it expires.
        pid_ns: the writer's PID namespace (``/proc/self/ns/pid``, e.g. ``pid:[4026531836]``;
            "" if unknown): containers sharing the host's name and kernel (``--network host``)
            see different process tables, so a pid means the same process only within one.
        reader: "" for a publish's lease; for a reader lease (``readers``), the command
            reading the generation (``pull``, ``repair``).
    """

    generation: str
    host: str
    boot_id: str
    pid: int
    start_ticks: int
    started: str
    ttl_s: float
    pid_ns: str = ""
    reader: str = ""

    def to_json(self) -> bytes:
        doc = {"format": LEASE_FORMAT, "generation": self.generation, "host": self.host,
               "boot_id": self.boot_id, "pid": self.pid, "start_ticks": self.start_ticks,
               "started": self.started, "ttl_s": self.ttl_s, "pid_ns": self.pid_ns}
        if self.reader:
            doc["reader"] = self.reader
        return (json.dumps(doc, indent=1) + "\n").encode()

    @classmethod
    def from_json(cls, data: bytes) -> Lease | None:
        """Parse untrusted lease bytes; None if they are not a lease (treated as no lease)."""
        try:
            doc: Any = json.loads(data.decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError):
            return None
        if not isinstance(doc, dict) or doc.get("format") != LEASE_FORMAT:
            return None
        try:
            lease = cls(str(doc["generation"]), str(doc["host"]), str(doc["boot_id"]), int(doc["pid"]),
                        int(doc["start_ticks"]), str(doc["started"]), float(doc["ttl_s"]),
                        str(doc.get("pid_ns", "")), str(doc.get("reader", "")))
        except (KeyError, TypeError, ValueError, OverflowError):  # 1e999 parses as inf: int(inf) overflows
            return None
        return lease if 0 < lease.ttl_s <= MAX_TTL_S else None  # inf, NaN, negative: not a lease


@dataclass(frozen=True, slots=True)
class Identity:
    """This machine, as a lease names it."""

    host: str
    boot_id: str
    pid_ns: str = ""


@dataclass(frozen=True, slots=True)
class Verdict:
    """``alive``: the writer may still be running; ``state`` says why, for ``ls -v``:
    ``running`` (same host, process exists), ``dead`` (same host, process gone),
    ``live`` (other host, lease not expired), ``expired`` (no refresh within ttl_s),
    ``unleased`` (no readable lease: kept, whatever its age)."""

    alive: bool
    state: str


def judge(lease: Lease | None, lease_modified: float | None, newest_modified: float | None,
          now: float, me: Identity, process_start: Callable[[int], int | None],
          default_ttl_s: float) -> Verdict:
    """Whether the publish that wrote a generation may still be running.

    Args:
        lease: the parsed lease, or None if there is none (or it is unreadable).
        lease_modified: the lease object's LastModified (seconds since the epoch).
        newest_modified: LastModified of the generation's newest object (seconds since the epoch).
        now: the current time (seconds since the epoch).
        me: this machine.
        process_start: start ticks of a local pid, None if no such process.
        default_ttl_s: unused for a generation without a lease (kept whatever its age).

    Returns:
        The verdict. On the same host, boot and PID namespace the process table decides at
        once; elsewhere (another host, or a container sharing this one's name and kernel)
        only expiry can, as a host cannot see another's processes.
    """
    if lease is None:
        # Never judged dead: every publish of this version writes its lease before its first
        # part and removes it last, so a generation without one is not a dead publish of
        # ours (e.g. a generation superseded under an s3sync without history copies, which
        # a long pull may still be reading). Removing it is gc's decision, not publish's.
        return Verdict(True, "unleased")
    if (lease.host == me.host and lease.boot_id and lease.boot_id == me.boot_id
            and (not lease.pid_ns or not me.pid_ns or lease.pid_ns == me.pid_ns)):
        ticks = process_start(lease.pid)
        # ticks 0: the process exists but its start time is unknown (/proc/PID/stat hidden or
        # unreadable): it may be the writer, so it is not judged dead.
        if ticks is None or (lease.start_ticks and ticks and ticks != lease.start_ticks):
            return Verdict(False, "dead")
        return Verdict(True, "running")
    seen = lease_modified if lease_modified is not None else newest_modified
    if seen is not None and seen + lease.ttl_s > now:
        return Verdict(True, "live")
    return Verdict(False, "expired")


def local_identity() -> Identity:
    """This host's name, boot id and PID namespace ("" where /proc has none)."""
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="ascii") as f:
            boot_id = f.read().strip()
    except OSError:
        boot_id = ""
    try:
        pid_ns = os.readlink("/proc/self/ns/pid")
    except OSError:
        pid_ns = ""
    return Identity(socket.gethostname(), boot_id, pid_ns)


def process_start(pid: int) -> int | None:
    """Start time of local process ``pid`` in clock ticks since boot (``/proc/PID/stat``
    field 22, proc(5)); None if there is no such process. 0 if it exists but /proc is absent."""
    if not 0 < pid < 2**31:  # from an untrusted lease: kill(0 or -1) would ask about a whole group
        return None
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            stat = f.read()
    except FileNotFoundError:
        # Gone, or hidden: with /proc mounted hidepid=1/2 (or a /proc of another PID
        # namespace) another user's process has no /proc/PID, yet kill(pid, 0) still sees it.
        return _exists(pid)
    except OSError:
        return _exists(pid)
    # Field 2 (comm) is in parentheses and may hold spaces: split after the last ')'.
    fields = stat[stat.rfind(b")") + 2:].split()
    try:
        return int(fields[19])  # fields[0] is field 3 (state), so field 22 is fields[19]
    except (IndexError, ValueError):
        return 0


def _exists(pid: int) -> int | None:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        return 0
    return 0


class LeaseKeeper:
    """Re-PUTs the lease every ``refresh_s`` seconds until stopped, so that a publish (or gc,
    for a reader's lease) elsewhere sees it is alive. A failed refresh is retried at the next
    tick: the lease stays valid for ``ttl_s`` after the last one that got through."""

    def __init__(self, store: Store, key: str, body: bytes, refresh_s: float) -> None:
        self._store, self._key, self._body, self._refresh_s = store, key, body, refresh_s
        self._stop = threading.Event()
        self._worker = Worker(self._run, "s3sync-lease")

    def start(self) -> None:
        self._worker.start()

    def _run(self) -> None:
        while not self._stop.wait(self._refresh_s):
            try:
                self._store.put(self._key, self._body)
            except S3SyncError:
                continue

    def stop(self) -> None:
        """Stop refreshing and wait until a refresh in flight has ended (through Ctrl-C too:
        a lease PUT landing after the lease's removal would leave it behind).

        Raises:
            KeyboardInterrupt: once the thread has ended, if one arrived while waiting.
        """
        self._stop.set()
        wait_all([self._worker])
