"""Worker threads whose end can be waited for through Ctrl-C and SIGTERM.

``threading.Thread.join`` cannot be trusted when ``KeyboardInterrupt`` interrupts it: in
CPython 3.11 (``Thread._wait_for_tstate_lock``) an interrupted join of a thread that is
still running releases that thread's state lock and marks it stopped, so ``is_alive()``
turns False while it is still, say, completing an upload. Code that then deletes what the
thread writes would race it. A ``Worker`` therefore signals its end with its own
``threading.Event``, set in a ``finally`` when its target returns, and ``wait`` waits on
that event, never on the thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable


class Worker:
    """A daemon thread running ``target()`` once; ``done`` is set when it has returned or raised.

    An exception escaping ``target`` is the target's business to record (the thread only
    prints it, as ``threading`` does): workers here catch and hand over their own errors.
    """

    def __init__(self, target: Callable[[], object], name: str) -> None:
        self.done = threading.Event()
        self._target = target
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        try:
            self._target()
        finally:
            self.done.set()

    def start(self) -> None:
        self._thread.start()

    @property
    def started(self) -> bool:
        return self._thread.ident is not None


def wait_all(workers: Iterable[Worker], on_interrupt: Callable[[], object] | None = None,
             poll_s: float = 0.2, between: Callable[[], object] | None = None) -> None:
    """Wait until every started worker has ended, even through Ctrl-C or SIGTERM.

    ``on_interrupt`` runs each time a ``KeyboardInterrupt`` lands while waiting (typically:
    set the event that tells the workers to stop); the wait then goes on. ``between`` runs
    every ``poll_s`` seconds while a worker is still running (e.g. to make room in a queue
    a worker may be blocked on).

    Raises:
        KeyboardInterrupt: once every worker has ended, if one arrived while waiting.
    """
    workers = [w for w in workers if w.started]
    interrupt: BaseException | None = None
    while True:
        try:
            if interrupt is not None and on_interrupt is not None:
                on_interrupt()  # inside the try: a second signal landing here is caught too
            for worker in workers:
                while not worker.done.is_set():
                    if between is not None:
                        between()
                    worker.done.wait(poll_s)
            break
        except KeyboardInterrupt as err:
            interrupt = err
    if interrupt is not None:
        raise interrupt
