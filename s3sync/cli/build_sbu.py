"""``s3sync build sbu DIR``: crawl the SBU Captioned Photo Dataset from its URL list."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import Settings
from ..ui import UI
from . import crawlopts
from .common import EXIT_OK, help_text, plural


def register(builds: Any, common: argparse.ArgumentParser) -> None:
    """Add ``sbu`` to the ``build`` sub-parsers (the builder itself, with the crawler and Pillow,
    is imported only when the command runs: every command pays for building the parser)."""
    p = builds.add_parser(
        "sbu", parents=[common], help="crawl the SBU Captioned Photo Dataset (about 1M Flickr URLs, one caption each)",
        **help_text("Crawl the images of the SBU Captioned Photo Dataset into DIR/images/, with DIR/captions.json "
                    "(COCO model) and DIR/failures.tsv. Run the same command again to resume: no URL already stored "
                    "or already failed is fetched again.",
                    ["s3sync build sbu /data/sbu --threads 32",
                     "s3sync build sbu /data/sbu-test --first 0 --count 1000",
                     "s3sync build sbu /data/sbu --retry-failed"]))
    p.add_argument("dir", metavar="DIR", type=Path, help="the dataset directory (created if missing)")
    p.add_argument("--urls", metavar="F|URL", help="the URL list, one a line (default: from the SBU archive)")
    p.add_argument("--captions", metavar="F|URL", help="the caption list, line-aligned with --urls")
    p.add_argument("--archive", metavar="F|URL",
                   help="the SBU distribution archive used when --urls and --captions are not given "
                        "(default: the official one, at the University of Virginia)")
    p.add_argument("--archive-md5", metavar="HEX",
                   help="the archive's MD5, checked after download ('' to skip; default: the official one)")
    crawlopts.add(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings, ui: UI) -> int:
    from ..builders.sbu import ARCHIVE_MD5, ARCHIVE_URL, PER_DIR, build_sbu

    crawl = crawlopts.settings(args)
    progress = ui.progress()
    try:
        built = build_sbu(args.dir.expanduser(), urls=args.urls, captions=args.captions, first=args.first,
                          count=args.count, settings=crawl, per_dir=args.per_dir or PER_DIR,
                          retry_failed=args.retry_failed, archive_url=args.archive or ARCHIVE_URL,
                          archive_md5=ARCHIVE_MD5 if args.archive_md5 is None else args.archive_md5,
                          progress=progress)
    finally:
        getattr(progress, "close", lambda: None)()
    r = built.crawl
    if ui.as_json:
        ui.emit_json({"command": "build", "dataset": "sbu", "urls": built.urls, "captions": built.captions,
                      "lines": built.lines, "first": args.first, **crawlopts.report_json(r)})
        return EXIT_OK
    for line in crawlopts.report_lines(r, "sbu", plural(r.requested, "line")):
        ui.info(line)
    return EXIT_OK
