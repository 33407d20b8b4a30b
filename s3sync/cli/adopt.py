"""``s3sync adopt``: write a manifest for a split archive already in S3."""

from __future__ import annotations

import argparse
from typing import Any

from ..config import Settings, format_size, parse_s3_url
from ..errors import UsageError
from ..manifest import NAME_RULE, valid_name
from ..ui import UI
from .common import EXIT_OK, S3_ENVIRONMENT, help_text, plural, store_for


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``adopt`` sub-command to ``sub`` (argparse sub-parsers)."""
    p = sub.add_parser("adopt", parents=[common], help="write a manifest for a split archive already in S3, "
                                                       "naming its pieces in place",
                       **help_text("Read the split archive at SOURCE once (every piece checked against its sidecar "
                                   "or ETag, every member checked as a pull would), then write "
                                   "PREFIX/manifest.json (format version 2) naming the pieces where they are: no "
                                   "piece is uploaded again, changed or deleted. For one object s3://B/DIR/KEY the "
                                   "manifest goes at s3://B/DIR/manifest.json and names that one piece. Only s3:// "
                                   "sources: adopt writes a manifest beside the pieces.",
                                   ["s3sync adopt s3://my-bucket/archives/laion-part",
                                    "s3sync adopt s3://my-bucket/dumps/data.tar.zst --name data --replace"],
                                   environment=S3_ENVIRONMENT))
    p.add_argument("source", metavar="SOURCE", help="s3://BUCKET/PREFIX holding the pieces, or s3://BUCKET/KEY (one "
                                                    "archive)")
    p.add_argument("--name", help="dataset name (default: the prefix's last component, or the object's name less "
                                  "its suffixes)")
    p.add_argument("--replace", action="store_true",
                   help="replace an existing s3sync manifest (kept as a history copy); never another object")
    p.add_argument("--chunk-size", metavar="SIZE", help="bytes per verified chunk in the manifest (default 16MiB)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings, ui: UI) -> int:
    from ..adopt import adopt

    # With -v, a line per piece comes from the progress messages as each piece is checked.
    if args.source.startswith(("http://", "https://")):
        raise UsageError("adopt writes a manifest beside the pieces: only s3:// sources",
                         hint="pull the http(s) archive with 's3sync pull URL... DEST_PARENT' instead")
    if args.name is not None and not valid_name(args.name):
        raise UsageError(f"--name {args.name!r} is not a valid dataset name", hint=NAME_RULE)
    location = parse_s3_url(args.source)
    store = store_for(settings, location.bucket)
    progress = ui.progress()
    try:
        result = adopt(location, store, settings.transfer, name=args.name, replace=args.replace, progress=progress)
    finally:
        getattr(progress, "close", lambda: None)()
        store.close()
    m = result.manifest
    if ui.as_json:
        ui.emit_json({"command": "adopt", "url": result.url, "name": m.name, "generation": m.generation,
                      "replaced": result.replaced, "compression": m.compression, "files": m.files,
                      "members": m.members, "extracted_size": m.extracted_size, "stream_size": m.stream_size,
                      "tar_size": m.tar_stream_size, "bytes_received": result.bytes_received,
                      "elapsed_s": round(result.elapsed_s, 3),
                      "pieces": [{"name": p.name, "url": p.url, "size": p.size, "etag": p.etag,
                                  "evidence": p.evidence.kind, "algorithm": p.evidence.algorithm,
                                  "expected": p.evidence.expected, "source": p.evidence.source,
                                  "verified": p.evidence.kind != "none"} for p in result.pieces]})
        return EXIT_OK
    verified = len(result.pieces) - len(result.unverified)
    ui.info(f"adopted {m.name} at {result.url}: {plural(m.files, 'file')}, {format_size(m.extracted_size)} in "
            f"{plural(len(result.pieces), 'piece')} ({m.compression if m.compressed else 'uncompressed'} tar), "
            f"{verified} verified, generation {m.generation}"
            + (f" (replaced {result.replaced})" if result.replaced else "") + f", {result.elapsed_s:.1f}s")
    if result.unverified:
        ui.info(f"warning: {len(result.unverified)} pieces had no checksum ({', '.join(result.unverified[:3])}"
                f"{', ...' if len(result.unverified) > 3 else ''}): the manifest pins bytes that were never checked "
                "against a checksum")
    return EXIT_OK


