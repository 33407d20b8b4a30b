"""Interruptions of the installed ``s3sync pull`` command: ``kill -9`` and Ctrl-C mid-transfer,
then the same command again (issue 3, "Interruptions").

The pull runs through the fault proxy, throttled so the transfer is still going when the
signal arrives; the proxy's byte counter tells when enough has arrived and, over both runs,
how many bytes the interruption cost.
"""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest

from s3sync.journal import staging_dir
from s3sync.verify import verify

from .conftest import CHUNK, REPORT, KiB, Kit, MiB, Published, standard_files
from .proxy import Rule

WINDOW = 2 * 4  # the CLI's window for --concurrency 4: max(4, 2 * concurrency) chunks
THROTTLE_BPS = 512 * KiB


def wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if proc is not None and proc.poll() is not None:
            _out, err = proc.communicate()
            pytest.fail(f"s3sync exited with {proc.returncode} before {what}:\n{err.decode()}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout_s} s waiting for {what}")
        time.sleep(0.02)


def settle(kit: Kit, key: str = "part-", quiet_s: float = 0.3, timeout_s: float = 5.0) -> int:
    """The proxy's byte count once it has stopped moving (sends to a dead client fail fast)."""
    deadline = time.monotonic() + timeout_s
    last, since = kit.sent(key), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = kit.sent(key)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            break
    return last


def pull_cmd(kit: Kit, pub: Published, dest_parent, *extra: str) -> subprocess.Popen:
    return kit.cli("pull", pub.url, dest_parent, "--endpoint-url", kit.proxy.url, "--concurrency", "4",
                   "--json", *extra)


def finish(proc: subprocess.Popen, timeout_s: float = 30, kit: Kit | None = None) -> tuple[int, dict | None, str]:
    out, err = proc.communicate(timeout=timeout_s)
    if kit is not None:
        kit.idle()
    doc = json.loads(out) if proc.returncode == 0 and out.strip() else None
    return proc.returncode, doc, err.decode()


def verify_ok(kit: Kit, dest) -> None:
    proc = kit.cli("verify", dest)
    code, _, err = finish(proc)
    assert code == 0, f"s3sync verify failed after a resumed pull:\n{err}"


def journal_offset(dest_parent, name: str) -> int:
    try:
        return json.loads((staging_dir(dest_parent, name) / "journal.json").read_text())["offset"]
    except (OSError, ValueError, KeyError):
        return -1


def hold_at(kit: Kit, part: str, offset: int = 0, after: tuple[str, int] | None = None) -> None:
    """Freeze the network (every response body) at the first GET of ``part`` from ``offset`` on;
    with ``after=(key, n)``, only once the proxy has sent ``n`` body bytes of ``key`` (the GET
    may come early, within the fetch window, while earlier chunks are still on their way)."""

    def hook(req) -> None:
        if after is not None:
            deadline = time.monotonic() + 10
            while kit.sent(after[0]) < after[1] and time.monotonic() < deadline:
                time.sleep(0.01)
        kit.proxy.hold()

    kit.add(Rule("hook", key=part, times=1, match=lambda req: (req.range_start or 0) >= offset, hook=hook))


def kill(proc: subprocess.Popen, sig: int) -> None:
    if proc.poll() is None:
        proc.send_signal(sig)


@pytest.mark.parametrize("extract", [True, False], ids=["extract", "no-extract"])
def test_kill_9_then_rerun_resumes(kit, extract):
    """A burst of 2 MiB, then a trickle; kill -9 a moment after the first checkpoint of the
    trickle; the same command again completes and re-fetches about the in-flight window."""
    flags = () if extract else ("--no-extract",)
    pub = kit.publish(kit.tree(standard_files(4 * MiB, 32)))
    dest_parent = kit.tmp / "dest"
    stream = pub.manifest.stream_size
    # From the first GET of the 3rd part (stream offset 2 MiB) on, the network slows down.
    kit.add(Rule("hook", key="part-00002", times=1,
                 hook=lambda req: setattr(kit.proxy, "throttle_bps", THROTTLE_BPS)))
    proc = pull_cmd(kit, pub, dest_parent, *flags)
    try:
        wait_for(lambda: journal_offset(dest_parent, pub.name) >= MiB, 30, "a checkpoint past 1 MiB", proc)
        time.sleep(0.3)
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(timeout=10) == -signal.SIGKILL
    finally:
        kill(proc, signal.SIGKILL)
        proc.wait()
    first_run = settle(kit)
    checkpoint = journal_offset(dest_parent, pub.name)
    assert not (dest_parent / pub.name).exists()

    kit.proxy.clear()
    code, doc, err = finish(pull_cmd(kit, pub, dest_parent, *flags), kit=kit)
    assert code == 0, err
    second_run = kit.sent("part-") - first_run
    kit.assert_pulled(pub, dest_parent / pub.name, extract)
    verify_ok(kit, dest_parent / pub.name)

    refetched = first_run + second_run - stream
    # the window, plus a chunk for the member/chunk alignment and a chunk of slack
    bound = WINDOW * CHUNK + 2 * CHUNK
    REPORT[f"kill-9/{'extract' if extract else 'no-extract'}/{kit.server.name}"] = (
        f"stream {stream} B; first run got {first_run} B, durable checkpoint {checkpoint} B; rerun resumed "
        f"at {doc['resumed_from']} and fetched {second_run} B; re-fetched {refetched} B = "
        f"{refetched / CHUNK:.1f} chunks of 256 KiB (window {WINDOW} chunks, bound {bound} B)")
    assert doc["resumed_from"] == checkpoint >= MiB
    assert refetched <= bound


def test_kill_9_after_a_fast_burst_refetches_at_most_the_window(kit):
    """An unthrottled burst of ~1.5 MiB in 64 KiB chunks, then the network hangs, then kill -9.
    Everything verified and extracted before the hang should survive, minus the window.
    (At commit db646cc the journal wrote at most one checkpoint per second, and this re-fetched
    the whole burst: 1.4 MiB = 22 chunks.) The rerun runs in-process: only its bytes matter."""
    chunk = 64 * KiB
    pub = kit.publish(kit.tree(standard_files(5 * MiB // 2, 40)), chunk_size=chunk)
    dest_parent = kit.tmp / "dest"
    hold_at(kit, "part-00001", 512 * KiB)
    proc = pull_cmd(kit, pub, dest_parent)
    try:
        wait_for(lambda: not kit.proxy._gate.is_set(), 30, "the hang", proc)
        first_run = settle(kit, quiet_s=0.2)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        kill(proc, signal.SIGKILL)
        proc.wait()
    kit.proxy.clear()
    checkpoint = journal_offset(dest_parent, pub.name)
    result = kit.pull(pub, dest_parent)
    assert result.resumed_from == checkpoint
    kit.assert_same_tree(pub.src, dest_parent / pub.name)
    refetched = kit.sent("part-") - pub.manifest.stream_size
    REPORT[f"kill-9-burst/{kit.server.name}"] = (
        f"first run got {first_run} B before the hang, durable checkpoint {checkpoint} B; re-fetched "
        f"{refetched} B = {refetched / chunk:.1f} chunks of 64 KiB (window {WINDOW} chunks)")
    assert refetched <= WINDOW * chunk + 2 * chunk


def test_kill_9_twice_at_arbitrary_moments_then_rerun_completes(kit):
    """Two kills at moments chosen by bytes received only (not by checkpoints), through a 1.5 MiB/s
    link; a third run completes; the tree is identical and verify finds nothing wrong."""
    pub = kit.publish(kit.tree(standard_files(4 * MiB, 32)))
    dest_parent = kit.tmp / "dest"
    kit.proxy.throttle_bps = 3 * MiB // 2
    offsets, sent = [], []
    for threshold in (MiB * 5 // 4, MiB):
        start = kit.sent("part-")
        proc = pull_cmd(kit, pub, dest_parent)
        try:
            wait_for(lambda s=start, t=threshold: kit.sent("part-") - s >= t, 30, "bytes to arrive", proc)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            kill(proc, signal.SIGKILL)
            proc.wait()
        sent.append(settle(kit) - start)
        offsets.append(journal_offset(dest_parent, pub.name))
    kit.proxy.clear()
    start = kit.sent("part-")
    result = kit.pull(pub, dest_parent)  # in-process: the CLI rerun is covered above
    sent.append(kit.sent("part-") - start)
    kit.assert_same_tree(pub.src, result.dest)
    assert verify(result.dest).problems == ()
    refetched = sum(sent) - pub.manifest.stream_size
    REPORT[f"kill-9-twice/{kit.server.name}"] = (
        f"runs fetched {sent} B, checkpoints after the kills {offsets} B; re-fetched {refetched} B in total "
        f"= {refetched / CHUNK:.1f} chunks for 2 kills")
    assert 0 <= offsets[0] <= offsets[1]
    assert result.resumed_from == offsets[1]
    assert refetched <= 2 * (WINDOW * CHUNK + 2 * CHUNK)


# --------------------------------------------------------------------------- Ctrl-C


@pytest.mark.parametrize("presses", [1, 2])
def test_ctrl_c_exits_130_promptly_then_rerun_completes(kit, presses):
    """Ctrl-C while every response body is frozen (a hung network, beyond the CLI's read
    timeout): exit 130 within a few seconds, resume state on disk; a second Ctrl-C exits at
    once. A rerun (in-process, to keep the suite fast) resumes and completes."""
    src = kit.tree()
    pub = kit.publish(src)
    dest_parent = kit.tmp / "dest"
    # Part 0 delivered before the freeze: the Ctrl-C must then save a resume point past it.
    hold_at(kit, "part-00001", 512 * KiB, after=("part-00000", pub.manifest.parts[0].size))
    proc = pull_cmd(kit, pub, dest_parent)
    try:
        wait_for(lambda: not kit.proxy._gate.is_set(), 30, "the hang", proc)
        settle(kit, quiet_s=0.2)
        sent_at = time.monotonic()
        proc.send_signal(signal.SIGINT)
        if presses == 2:
            time.sleep(0.02)
            kill(proc, signal.SIGINT)
        code, _, err = finish(proc, timeout_s=20)
        elapsed = time.monotonic() - sent_at
    finally:
        kill(proc, signal.SIGKILL)
        proc.wait()
    kit.proxy.clear()
    assert code == 130, err
    assert elapsed < 3.0, f"Ctrl-C took {elapsed:.1f} s"
    assert "Traceback" not in err
    checkpoint = journal_offset(dest_parent, pub.name)
    assert checkpoint >= 0 and not (dest_parent / pub.name).exists()

    result = kit.pull(pub, dest_parent)
    assert result.resumed_from == checkpoint
    if presses == 1:
        assert checkpoint > 512, "the first Ctrl-C did not flush the resume state"
    kit.assert_same_tree(src, dest_parent / pub.name)
    REPORT[f"ctrl-c-x{presses}/{kit.server.name}"] = (
        f"exit 130 after {elapsed:.2f} s; rerun resumed at {checkpoint} B")


def test_interrupted_just_before_commit_then_rerun_completes(kit, monkeypatch):
    """Killed after the last member is extracted, before the completion marker and the rename
    (simulated in-process: ``_commit`` raises KeyboardInterrupt once). The rerun fetches nothing,
    presents an identical tree, and ``s3sync verify`` still checks every member against it."""
    import importlib

    pull_module = importlib.import_module("s3sync.pull")  # s3sync.pull is the API's function

    src = kit.tree()
    pub = kit.publish(src)
    dest_parent = kit.tmp / "dest"
    real_commit = pull_module._commit
    calls = []

    def interrupted_commit(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt
        return real_commit(*args, **kwargs)

    monkeypatch.setattr(pull_module, "_commit", interrupted_commit)
    with pytest.raises(KeyboardInterrupt):
        kit.pull(pub, dest_parent)
    assert not (dest_parent / pub.name).exists()

    before = kit.sent("part-")
    result = kit.pull(pub, dest_parent)
    assert kit.sent("part-") == before, "the rerun fetched data although everything was extracted"
    kit.assert_same_tree(src, result.dest)
    checked = verify(result.dest)
    assert checked.problems == ()
    # every file and directory of the source is in the index verify checks
    assert checked.checked == len(list(src.rglob("*")))
