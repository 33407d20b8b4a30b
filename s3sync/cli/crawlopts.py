"""What the crawling builders share (``build sbu``, ``build imagenet``): the options (the
selection of lines, the crawler's threads and timeouts, ``--retry-failed``) and the report of
a crawl (``listcrawl.ListBuildResult``): its ``--json`` fields and its summary lines."""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import UsageError
from .common import plural

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


def _rate_and_yield(r: Any) -> tuple[float, float]:
    """Items done per second in this run, and the percentage of DIR's lines that are images."""
    rate = (r.stored + r.failed_total) / max(r.elapsed_s, 1e-6)
    overall = r.images + r.failures
    return rate, (100 * r.images / overall if overall else 0.0)


def report_json(r: Any) -> dict[str, Any]:
    """The ``--json`` fields every crawl reports (a builder adds its own)."""
    rate, yield_pct = _rate_and_yield(r)
    return {"dir": str(r.dest), "requested": r.requested, "stored": r.stored, "recovered": r.recovered,
            "failed": r.failed_total, "failed_by_reason": r.failed, "skipped": r.skipped, "images": r.images,
            "failures": r.failures, "yield_percent": round(yield_pct, 2), "elapsed_s": round(r.elapsed_s, 3),
            "items_per_s": round(rate, 1)}


def report_lines(r: Any, dataset: str, of_what: str) -> tuple[str, str]:
    """The summary of this run (``built DATASET in DIR: ... of OF_WHAT, time (rate)``) and the
    state of DIR (images, failures, yield)."""
    rate, yield_pct = _rate_and_yield(r)
    reasons = ", ".join(f"{reason}: {n:,}" for reason, n in sorted(r.failed.items(), key=lambda kv: -kv[1]))
    skipped = f", {r.skipped:,} already done" if r.skipped else ""
    run = (f"built {dataset} in {r.dest}: {plural(r.stored, 'image')} stored, {r.failed_total:,} failed"
           f"{f' ({reasons})' if reasons else ''}{skipped} of {of_what}, {r.elapsed_s:.1f}s ({rate:,.1f}/s)")
    state = (f"{r.dest}: {plural(r.images, 'image')} in captions.json, {plural(r.failures, 'failure')} in "
             f"failures.tsv (yield {yield_pct:.1f}%)")
    return run, state
