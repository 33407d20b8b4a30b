"""``s3sync build mscoco DIR``: MS COCO from its original zips, extracted while downloading."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from ..config import Settings, format_size
from ..errors import S3SyncError, UsageError
from ..ui import UI
from .common import CONCURRENCY_ENVIRONMENT, EXIT_OK, help_text, plural


def register(builds: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``mscoco`` sub-command to ``builds`` (the ``build`` command's sub-parsers)."""
    # builders.mscoco is imported by ``run`` only: every command parses this parser.
    p = builds.add_parser("mscoco", parents=[common], help="MS COCO: images, captions annotations, captions.json",
                          **help_text("Download the COCO zips of a year (train and val images, annotations), check "
                                      "their MD5s, extract them while downloading into DIR, and write "
                                      "DIR/captions.json and DIR/neuraltalk2.json. A rerun resumes.",
                                      ["s3sync build mscoco /data/mscoco",
                                       "s3sync build mscoco /data/coco2017 --year 2017 --mirror http://mirror.local/coco"],
                                      environment=CONCURRENCY_ENVIRONMENT))
    p.add_argument("dest", metavar="DIR", type=Path, help="where the dataset is built (created if missing)")
    p.add_argument("--year", type=int, choices=(2014, 2017), default=2014, help="which release (default: 2014)")
    p.add_argument("--mirror", metavar="URL",
                   help="base URL serving zips/NAME.zip and annotations/NAME.zip (default: the COCO site, "
                        "http://images.cocodataset.org)")
    p.add_argument("--checksums", metavar="FILE", type=Path,
                   help="md5sum-format file giving the zips' digests (overrides the built-in MD5s)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings, ui: UI) -> int:
    from ..builders.mscoco import COCO_SITE, build_mscoco
    from ..pieces import parse_checksums
    from ..stores.http import HttpStore

    args.mirror = args.mirror or COCO_SITE
    if not args.mirror.startswith(("http://", "https://")):
        raise UsageError(f"--mirror {args.mirror!r} is not an http:// or https:// URL",
                         hint="give the base URL that serves zips/NAME.zip, e.g. http://images.cocodataset.org")
    checksums = None
    if args.checksums is not None:
        try:
            text = args.checksums.read_text(encoding="utf-8-sig")
        except (OSError, UnicodeDecodeError) as err:
            raise UsageError(f"--checksums {args.checksums}: cannot read ({getattr(err, 'strerror', None) or err})",
                             hint="give an md5sum-format file: 'MD5  NAME.zip' per line") from err
        try:
            checksums = parse_checksums(text, str(args.checksums))
        except S3SyncError as err:
            raise UsageError(str(err), hint="give an md5sum-format file: 'MD5  NAME.zip' per line") from err
    store = HttpStore(settings.transfer, base_url=args.mirror)
    progress = ui.progress()

    def on_zip(z: Any) -> None:
        if ui.as_json:
            return
        if not z.fetched:
            ui.info(f"{z.name}: already complete ({plural(z.members, 'member')}); nothing fetched")
        else:
            ui.info(f"verified {z.name}: {z.algorithm.upper()} {z.digest}, {plural(z.members, 'member')} "
                    f"({plural(z.written, 'written', 'written')}, {format_size(z.bytes_received)} received"
                    + (f", {plural(z.refetched, 'member')} fetched again" if z.refetched else "") + ")")

    try:
        result = build_mscoco(args.dest.expanduser(), store, settings.transfer, year=args.year,
                              base_url=args.mirror, checksums=checksums, progress=progress, on_zip=on_zip)
    finally:
        getattr(progress, "close", lambda: None)()
        store.close()
    if ui.as_json:
        ui.emit_json({"command": "build", "dataset": "mscoco", "dir": str(result.dest), "year": result.year,
                      "zips_fetched": result.zips_fetched, "zips_skipped": result.zips_skipped,
                      "bytes_received": result.bytes_received, "members": result.members,
                      "images": result.images, "captions": result.captions, "elapsed_s": round(result.elapsed_s, 3),
                      "zips": [{"name": z.name, "url": z.url, "size": z.size, "fetched": z.fetched, "mode": z.mode,
                                "bytes_received": z.bytes_received, "members": z.members, "written": z.written,
                                "refetched": z.refetched, "algorithm": z.algorithm, "digest": z.digest,
                                "evidence": z.evidence} for z in result.zips]})
        return EXIT_OK
    ui.info(f"built mscoco {result.year} in {result.dest}: {plural(result.images, 'image')}, "
            f"{plural(result.captions, 'caption')} (captions.json, neuraltalk2.json); "
            f"{plural(result.zips_fetched, 'zip')} fetched, {result.zips_skipped} already complete, "
            f"{format_size(result.bytes_received)} received, {result.elapsed_s:.1f}s")
    return EXIT_OK
