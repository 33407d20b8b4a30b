"""``s3sync publish``: pack a directory and upload it as a dataset."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import catalog
from ..captionfiles import describe, summary_json
from ..config import Settings, format_size
from ..errors import SourceError, UsageError
from ..manifest import NAME_RULE, valid_name
from ..ui import UI
from .common import EXIT_OK, S3_ENVIRONMENT, help_text, plural, store_for


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``publish`` sub-command to ``sub`` (argparse sub-parsers)."""
    p = sub.add_parser("publish", parents=[common], help="pack a directory and upload it as a dataset",
                       **help_text(
                           "Pack SRC_DIR into one tar stream cut into parts of about --part-size, upload them as a\n"
                           "new generation with a digest for every chunk, and swap the manifest last: a pull in\n"
                           "progress never mixes two generations, and an interrupted publish leaves the dataset\n"
                           "as it was. A captions.json in SRC_DIR is checked first and its counts recorded.",
                           ["s3sync publish /data/sbu                       # to s3://$S3SYNC_BUCKET/sbu",
                            "s3sync publish /data/coco --to s3://my-bucket/datasets/coco-2014 --name coco-2014",
                            "s3sync publish /data/sbu --part-size 1GiB --chunk-size 64MiB --endpoint-url http://127.0.0.1:9000"],
                           environment=S3_ENVIRONMENT + (("S3SYNC_PART_SIZE, S3SYNC_CHUNK_SIZE",
                                                          "as --part-size, --chunk-size"),)))
    p.add_argument("src", metavar="SRC_DIR", type=Path)
    p.add_argument("--to", metavar="s3://BUCKET/PREFIX", help="destination (default s3://$S3SYNC_BUCKET/NAME)")
    p.add_argument("--name", help="dataset name (default: SRC_DIR's basename)")
    p.add_argument("--part-size", metavar="SIZE", help="bytes per part object (default 10GiB)")
    p.add_argument("--chunk-size", metavar="SIZE", help="bytes per verified chunk (default 16MiB)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings, ui: UI) -> int:
    from ..publish import publish

    src = args.src.expanduser()
    # `--name ''` is refused, not taken as "no --name" (issue 10 item 11).
    name = args.name if args.name is not None else src.resolve().name
    if not valid_name(name):
        given = "--name" if args.name is not None else "SRC_DIR's basename"
        raise UsageError(f"{given} {name!r} is not a valid dataset name",
                         hint=f"{NAME_RULE}; pass --name NAME")
    if not src.is_dir():
        raise SourceError(f"{src}: {'not a directory' if src.exists() else 'no such directory'}",
                          hint="give the dataset's directory as SRC_DIR")
    if args.to and not args.to.startswith("s3://"):
        raise UsageError(f"--to {args.to!r} is not an s3:// URL", hint="write --to s3://BUCKET/PREFIX")
    location = catalog.resolve(args.to, settings).location if args.to else catalog.location_for_name(name, settings)
    store = store_for(settings, location.bucket)
    progress = ui.progress()
    try:
        result = publish(src, name, location, store, settings.transfer, progress)
    finally:
        getattr(progress, "close", lambda: None)()
        store.close()
    m = result.manifest
    if ui.as_json:
        ui.emit_json({"command": "publish", "url": location.url(), "name": m.name, "generation": m.generation,
                      "parts": len(m.parts), "stream_size": m.stream_size, "files": m.files,
                      "extracted_size": m.extracted_size, "elapsed_s": round(result.elapsed_s, 3),
                      "previous": m.previous, "captions": summary_json(m.captions),
                      "removed_leftovers": result.cleanup.generations if result.cleanup else [],
                      "notes": list(result.notes)})
    elif not ui.quiet:
        for note in result.notes:
            ui.info(note)
        rate = m.stream_size / max(result.elapsed_s, 1e-6)
        counted = f" ({describe(m.captions)}, checked)" if m.captions is not None else ""
        ui.info(f"published {m.name} to {location.url()}: {plural(m.files, 'file')}, {format_size(m.extracted_size)}"
                f"{counted} in {plural(len(m.parts), 'part')}, generation {m.generation}, "
                f"{result.elapsed_s:.1f}s ({format_size(rate)}/s)")
    return EXIT_OK


