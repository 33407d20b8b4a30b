"""The options the crawling builders share (``build sbu``, ``build imagenet``): the selection
of lines, the crawler's threads and timeouts, ``--retry-failed``."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import UsageError

DEFAULT_TIMEOUT_S = 10.0
DEADLINE_FACTOR = 6
"""A URL may take ``DEADLINE_FACTOR * --timeout`` seconds in all (retries, redirects, a slow
body), at least ``MIN_DEADLINE_S``."""
MIN_DEADLINE_S = 30.0
MAX_TIMEOUT_S = 3600.0
"""The longest ``--timeout`` accepted (an hour per read is already no timeout at all)."""


def add(p: argparse.ArgumentParser) -> None:
    """Add ``--first``, ``--count``, ``--threads``, ``--timeout``, ``--retry-failed`` (and the
    hidden ``--per-dir`` the tests use) to a builder's parser."""
    p.add_argument("--first", type=int, default=0, metavar="N", help="first line to build, 0-based (default: 0)")
    p.add_argument("--count", type=int, metavar="M", help="lines to build from --first (default: to the end)")
    p.add_argument("--threads", type=int, default=10, metavar="N", help="parallel downloads (default: 10)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="S",
                   help=f"seconds to connect and to wait for each read (default: {DEFAULT_TIMEOUT_S:g}); one URL "
                        f"takes at most {DEADLINE_FACTOR}x this in all, retries included")
    p.add_argument("--retry-failed", action="store_true",
                   help="fetch again the URLs whose failure was not permanent (timeouts, 5xx, connection)")
    p.add_argument("--per-dir", type=int, default=None, help=argparse.SUPPRESS)  # tests: a small directory limit


def check_timeout(timeout_s: float) -> None:
    """Refuse a ``--timeout`` that is not a positive, finite number of at most ``MAX_TIMEOUT_S``.

    Raises:
        UsageError: it is not.
    """
    if not 0 < timeout_s <= MAX_TIMEOUT_S:  # also refuses nan and inf
        raise UsageError(f"--timeout {timeout_s:g}: must be more than 0 and at most {MAX_TIMEOUT_S:g} seconds")


def settings(args: argparse.Namespace) -> Any:
    """The ``crawl.CrawlSettings`` of the options ``add`` added.

    Raises:
        UsageError: ``--threads``, ``--timeout`` or ``--per-dir`` out of range.
    """
    from ..crawl import CrawlSettings

    if args.threads < 1:
        raise UsageError(f"--threads {args.threads}: must be 1 or more")
    check_timeout(args.timeout)
    if args.per_dir is not None and args.per_dir < 1:
        raise UsageError(f"--per-dir {args.per_dir}: must be 1 or more")
    return CrawlSettings(threads=args.threads, timeout_s=args.timeout,
                         deadline_s=max(MIN_DEADLINE_S, DEADLINE_FACTOR * args.timeout))
