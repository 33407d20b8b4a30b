"""Ctrl-C and SIGTERM that land only where the bookkeeping is consistent.

The CLI turns SIGINT and SIGTERM into ``KeyboardInterrupt`` in the main thread (Python
runs signal handlers there, between any two bytecodes). Most code may be interrupted
anywhere: the work is redone by the resumed run. A few short steps may not: e.g. taking
a finished batch of small files off the queue and recording each of its members in the
journal; interrupted half-way, the journal would skip members that are on disk (issue 10,
item 6). Such steps run inside ``with interrupts.deferred:``; a signal arriving there is
delivered as ``KeyboardInterrupt`` when the outermost such block ends.

Only the main thread may enter ``deferred`` (the only thread signal handlers run in);
blocks are meant to be short (no network wait inside), so that Ctrl-C stays prompt.
"""

from __future__ import annotations

_depth = 0
_pending = False


def deliver() -> None:
    """Interrupt the main thread: raise ``KeyboardInterrupt`` now, or, inside a ``deferred``
    block, when the outermost block ends. Called by the CLI's signal handler.

    Raises:
        KeyboardInterrupt: outside a ``deferred`` block.
    """
    global _pending
    if _depth:
        _pending = True
        return
    raise KeyboardInterrupt


class _Deferred:
    """Context manager: signals delivered through ``deliver`` wait until the block ends."""

    __slots__ = ()

    def __enter__(self) -> None:
        global _depth
        _depth += 1  # a handler running before this store raises before the block: fine

    def __exit__(self, *exc: object) -> None:
        global _depth, _pending
        _depth -= 1
        # A handler running after the store above sees depth 0 and raises itself; one that
        # ran before it left _pending for this check.
        if _pending and not _depth:
            _pending = False
            if exc[0] is None:
                raise KeyboardInterrupt
            # an exception is already on its way out: it unwinds the same way


deferred = _Deferred()
"""``with deferred:`` makes a step atomic with respect to Ctrl-C and SIGTERM (see module docstring)."""
