"""``s3sync gc``: delete history generations beyond the newest N, and what dead publishes left."""

from __future__ import annotations

import argparse
from typing import Any

from .. import catalog
from ..config import Settings, format_size
from ..ui import UI
from .common import EXIT_OK, S3_ENVIRONMENT, help_text, plural, store_for

EXIT_PARTIAL = 1
"""Some keys could not be deleted (the server refused them): the rest was done."""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``gc`` sub-command to ``sub`` (argparse sub-parsers)."""
    from ..gc import DEFAULT_GRACE_S

    p = sub.add_parser(
        "gc", parents=[common], help="delete old generations of a dataset and what dead publishes left",
        **help_text(
        description="Delete the history generations of a dataset beyond the newest N (the current one\n"
                    "counts first and is never deleted), and what dead publishes left. A generation that\n"
                    "stopped being current less than --grace seconds ago is kept, so that pulls started\n"
                    "on it finish; so is one that a running pull, update or repair is reading (its reader\n"
                    "lease, PREFIX/GENERATION/readers/), whatever its age.",
        examples=["s3sync gc s3://my-bucket/sbu --keep 2 --dry-run", "s3sync gc sbu --keep 1 --grace 0"],
        environment=S3_ENVIRONMENT,
        exit_codes=((0, "done"), (1, "the server refused some keys (named)"), (2, "usage"), (130, "interrupted"))))
    p.add_argument("source", metavar="SOURCE", help="dataset name or s3://BUCKET/PREFIX")
    p.add_argument("--keep", type=int, required=True, metavar="N",
                   help="generations to keep, the current one included (N >= 1)")
    p.add_argument("--grace", type=float, default=DEFAULT_GRACE_S, metavar="SECONDS",
                   help=f"keep generations that stopped being current less than this long ago (default "
                        f"{DEFAULT_GRACE_S:g}), by the server's clock")
    p.add_argument("--dry-run", action="store_true", help="list what would be deleted, delete nothing")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings, ui: UI) -> int:
    from ..gc import collect

    resolved = catalog.resolve(args.source, settings)
    store = store_for(settings, resolved.location.bucket)
    try:
        result = collect(store, resolved.location, args.keep, grace_s=args.grace, dry_run=args.dry_run,
                         concurrency=settings.transfer.concurrency, progress=ui.progress())
    finally:
        store.close()
    url = resolved.location.url()
    objects = sum(d.objects for d in result.doomed)
    size = sum(d.size for d in result.doomed)
    if ui.as_json:
        ui.emit_json({
            "command": "gc", "url": url, "dry_run": result.dry_run, "keep": args.keep, "grace_s": args.grace,
            "kept": list(result.kept),
            "young": [{"generation": g, "seconds_left": round(s, 1)} for g, s in result.young],
            "in_use": [{"generation": g, "readers": n} for g, n in result.busy],
            "deleted" if not result.dry_run else "would_delete": [
                {"generation": d.name, "reason": d.reason, "objects": d.objects, "size": d.size,
                 "incomplete_uploads": d.uploads} for d in result.doomed],
            "objects": objects if result.dry_run else result.deleted,
            "bytes": size if result.dry_run else result.deleted_bytes,
            "aborted_uploads": result.aborted,
            "failures": [{"key": f.key, "code": f.code, "message": f.message} for f in result.failures],
            "versioned": result.versioned, "notes": list(result.notes)})
    else:
        reasons = {"history": "history beyond --keep", "leftover": "left by a dead publish",
                   "unleased": "left without a lease (an interrupted gc?)"}
        verb = "would delete" if result.dry_run else "deleted"
        for d in result.doomed:
            ui.line(f"{verb}\t{d.name}\t{reasons.get(d.reason, d.reason)}\t{plural(d.objects, 'object')}, "
                    f"{format_size(d.size)}" + (f", {plural(d.uploads, 'incomplete upload')}" if d.uploads else ""))
        for g, left in result.young:
            ui.line(f"kept\t{g}\tyounger than --grace ({left:.0f} s left)")
        for g, n in result.busy:
            ui.line(f"kept\t{g}\tin use by {plural(n, 'reader')} (a pull, update or repair reading it)")
        for line in result.notes:
            ui.info(line)
        total = (f"{plural(objects, 'object')}, {format_size(size)}" if result.dry_run
                 else f"{plural(result.deleted, 'object')}, {format_size(result.deleted_bytes)}")
        # Every generation kept: the newest --keep (current first), those a live publish
        # writes, and those younger than --grace (listed above as "kept" lines).
        kept = [*result.kept, *(f"{g}: younger than --grace" for g, _ in result.young)]
        ui.info(f"gc {url}: {verb} {plural(len(result.doomed), 'generation')} ({total}); kept "
                f"{plural(len(kept), 'generation')} ({', '.join(kept)})")
    return EXIT_PARTIAL if result.failures else EXIT_OK
