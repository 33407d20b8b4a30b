"""``s3sync build imagenet DIR --urls F|URL``: crawl ImageNet images from a ``fall11_urls.txt``-style list."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import Settings
from ..ui import UI
from . import crawlopts
from .common import EXIT_OK, help_text, plural


def register(builds: Any, common: argparse.ArgumentParser) -> None:
    """Add ``imagenet`` to the ``build`` sub-parsers."""
    p = builds.add_parser(
        "imagenet", parents=[common], help="crawl ImageNet images from its URL list (WNID_N<TAB>URL a line)",
        **help_text("Crawl the images of an ImageNet URL list (fall11_urls.txt: WNID_N<TAB>URL a line) into "
                    "DIR/WNID/WNID_N.jpg, with DIR/captions.json (COCO model; caption: the synset's words) and "
                    "DIR/failures.tsv. Lines that cannot be decoded or parsed are skipped and reported ('bad line' "
                    "in failures.tsv). Run the same command again to resume: no URL already stored or already "
                    "failed is fetched again.",
                    ["s3sync build imagenet /data/imagenet --urls fall11_urls.txt --words words.txt",
                     "s3sync build imagenet /data/in1k --urls imagenet_fall11_urls.tgz --wnids ilsvrc2012_wnids.txt"]))
    p.add_argument("dir", metavar="DIR", type=Path, help="the dataset directory (created if missing)")
    p.add_argument("--urls", metavar="F|URL", required=True,
                   help="the URL list (fall11_urls.txt, or the imagenet_fall11_urls.tgz holding it), a file or a URL")
    p.add_argument("--wnids", metavar="F|URL",
                   help="keep only these synsets, one WNID a line (e.g. the 1,000 ILSVRC-2012 classes)")
    p.add_argument("--words", metavar="F|URL",
                   help="words.txt (WNID<TAB>words): each image's caption (default: its WNID)")
    crawlopts.add(p)
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings, ui: UI) -> int:
    from ..builders.imagenet import PER_DIR, REASON_BAD_LINE, build_imagenet

    crawl = crawlopts.settings(args)
    progress = ui.progress()
    try:
        built = build_imagenet(args.dir.expanduser(), urls=args.urls, wnids=args.wnids, words=args.words,
                               first=args.first, count=args.count, settings=crawl, per_dir=args.per_dir or PER_DIR,
                               retry_failed=args.retry_failed, progress=progress)
    finally:
        getattr(progress, "close", lambda: None)()
    r = built.crawl
    if ui.as_json:
        ui.emit_json({"command": "build", "dataset": "imagenet", "urls": built.urls, "wnids": args.wnids,
                      "words": built.words or None, "lines": built.lines, "first": args.first,
                      "synsets": built.synsets, "split_synsets": list(built.split_synsets),
                      "bad_lines": built.bad_lines, "bad_line_numbers": list(built.bad_line_numbers),
                      **crawlopts.report_json(r)})
        return EXIT_OK
    run_line, state_line = crawlopts.report_lines(
        r, "imagenet", f"{plural(r.requested, 'line')} selected ({plural(built.synsets, 'synset')}; the list has "
                       f"{plural(built.lines, 'line')})")
    ui.info(run_line)
    if built.bad_lines:
        more = ", ..." if built.bad_lines > len(built.bad_line_numbers) else ""
        ui.info(f"{plural(built.bad_lines, 'bad line')} skipped (not UTF-8 or not WNID_N<TAB>URL; 0-based line "
                f"{', '.join(map(str, built.bad_line_numbers))}{more}): in failures.tsv as '{REASON_BAD_LINE}'")
    if built.split_synsets:
        ui.info(f"{plural(len(built.split_synsets), 'synset')} with more than {args.per_dir or PER_DIR:,} lines "
                f"stored in sub-directories WNID/NNNN/")
    ui.info(state_line)
    return EXIT_OK
