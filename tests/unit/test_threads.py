"""threads.wait_all keeps waiting for a worker when Ctrl-C interrupts the wait.

``Thread.join`` interrupted by KeyboardInterrupt marks a still-running thread as stopped
(CPython 3.11); the publish that trusted it removed a generation while its last part was
still uploading (a part left in the bucket, found by a flaky fault test).
"""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest

from s3sync.threads import Worker, wait_all


def _ctrl_c() -> None:
    """A real SIGINT to this process: Python's default handler raises KeyboardInterrupt in
    the main thread, waking it from a blocking lock wait (``_thread.interrupt_main`` would not)."""
    os.kill(os.getpid(), signal.SIGINT)


def test_an_interrupted_wait_goes_on_until_the_worker_has_ended() -> None:
    stop, finished = threading.Event(), threading.Event()
    interrupts = []

    def work() -> None:
        time.sleep(0.1)
        _ctrl_c()  # while the main thread waits
        stop.wait(10)
        time.sleep(0.2)  # still busy after being told to stop
        finished.set()

    worker = Worker(work, "test-worker")
    worker.start()
    with pytest.raises(KeyboardInterrupt):
        wait_all([worker], on_interrupt=lambda: (interrupts.append(1), stop.set()), poll_s=0.01)
    assert finished.is_set(), "wait_all returned while the worker was still running"
    assert worker.done.is_set() and interrupts


def test_a_second_interrupt_inside_on_interrupt_does_not_end_the_wait() -> None:
    stop, finished = threading.Event(), threading.Event()
    calls = []

    def work() -> None:
        time.sleep(0.1)
        _ctrl_c()
        stop.wait(10)
        finished.set()

    def on_interrupt() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise KeyboardInterrupt  # as if a second signal landed here
        stop.set()

    worker = Worker(work, "test-worker")
    worker.start()
    with pytest.raises(KeyboardInterrupt):
        wait_all([worker], on_interrupt=on_interrupt, poll_s=0.01)
    assert finished.is_set() and len(calls) == 2


def test_thread_join_is_not_trusted_here() -> None:
    """The CPython behaviour this module exists for; if a Python fixes it, this says so."""
    release = threading.Event()
    thread = threading.Thread(target=lambda: release.wait(10), daemon=True)
    thread.start()
    threading.Timer(0.1, _ctrl_c).start()
    with pytest.raises(KeyboardInterrupt):
        thread.join()
    still_running = thread.is_alive()
    release.set()
    if still_running:
        pytest.skip("this Python's Thread.join survives an interrupt")
    # is_alive() said False although the target was still waiting on ``release``


def test_workers_never_started_are_not_waited_for() -> None:
    wait_all([Worker(lambda: None, "never")])
