"""``s3sync pull``: download, verify and extract a dataset or a split archive."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .. import catalog
from ..captionfiles import describe, summary_json
from ..config import Settings, format_size
from ..errors import DestinationBusyError, NotFoundError, UsageError
from ..manifest import NAME_RULE, valid_name
from ..ui import UI
from .common import EXIT_OK, S3_ENVIRONMENT, help_text, plural, store_for
from .verify import escape_field


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``pull`` sub-command to ``sub`` (argparse sub-parsers)."""
    p = sub.add_parser("pull", parents=[common], help="download, verify and extract a dataset, or a split archive",
                       **help_text(
                           "Download a dataset (or the pieces of an archive s3sync did not publish), verify every\n"
                           "chunk against the manifest's digest, and extract it while downloading into\n"
                           "DEST_PARENT/NAME. Work happens in a staging directory renamed into place at the end:\n"
                           "an interrupted pull resumes where it stopped when run again, and a finished one is\n"
                           "never mixed with a partial one. A second pull into the same directory is refused at\n"
                           "once (naming the process that holds it) unless --wait is given.\n\n"
                           "Pulling into a directory that holds a complete pull of another generation of the same\n"
                           "dataset updates it in place: only new or changed files are fetched (ranged GETs of just\n"
                           "their bytes; an old file is reused only if its content still has the new digest), removed\n"
                           "ones go, and the directory is swapped at the end. Files, symlinks and directories you\n"
                           "added to NAME are kept and reported (--delete-extra drops them; one in the way of a new\n"
                           "member is refused). --generation G pulls (or updates to) a generation still stored;\n"
                           "--include/--exclude pull only some members ('s3sync ls SOURCE --members GLOB' shows\n"
                           "what a glob selects).",
                           ["s3sync pull sbu /data                          # S3SYNC_BUCKET=my-bucket: s3://my-bucket/sbu",
                            "s3sync pull s3://my-bucket/coco-2014 /data --concurrency 16",
                            "s3sync pull s3://public-bucket/ds /data --no-sign-request --region us-west-2",
                            "s3sync pull s3://my-bucket/ds /data --json      # the result as JSON on stdout",
                            "s3sync pull sbu /data                          # again later: updates /data/sbu in place",
                            "s3sync pull sbu /data --generation 20261206T214345Z-032aabeb   # an older generation",
                            "s3sync pull sbu /data --include captions.json --include 'images/0000/'",
                            "s3sync pull https://host/a.tar.gz.00 https://host/a.tar.gz.01 /data --name a"],
                           environment=S3_ENVIRONMENT))
    p.add_argument("source", metavar="SOURCE", nargs="+",
                   help="dataset name, s3://BUCKET/PREFIX (a dataset, or the pieces of an archive), s3://BUCKET/KEY "
                        "(one archive), or the http(s):// URLs of an archive's pieces")
    p.add_argument("dest_parent", metavar="DEST_PARENT", type=Path, help="the dataset lands in DEST_PARENT/NAME")
    p.add_argument("--name", help="dataset name (default: the manifest's; for an archive, the prefix's last "
                                  "component or the first piece's name less its suffixes)")
    p.add_argument("--strip-components", type=int, default=0, metavar="N",
                   help="archives: drop N leading components of member names, as GNU tar does")
    p.add_argument("--no-extract", action="store_true", help="store the verified parts as NAME/part-NNNNN.tar")
    p.add_argument("--wait", action="store_true",
                   help="if another pull is writing the same directory, wait for it to finish, then go on "
                        "(default: fail at once, naming it)")
    p.add_argument("--generation", metavar="G", help="pull generation G (still stored: see 'ls SOURCE --generations') "
                                                     "instead of the current one")
    p.add_argument("--include", action="append", default=[], metavar="GLOB",
                   help="pull only the members matching GLOB (repeatable; gitignore-style: 'captions.json', "
                        "'images/0000/', '*.json', 'a/**/b'); a partial pull that verify checks as such")
    p.add_argument("--exclude", action="append", default=[], metavar="GLOB",
                   help="leave out the members matching GLOB (repeatable; applied after --include)")
    p.add_argument("--delete-extra", action="store_true",
                   help="updating in place: drop what DEST_PARENT/NAME holds beyond the dataset (default: keep "
                        "it in the new tree and report it; 'verify' lists it as extra)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings, ui: UI) -> int:
    """Pull; with --wait, a pull that finds another one writing the same directory waits for
    its lock, then starts again (and usually finds the dataset complete)."""
    from ..journal import wait_for_lock

    while True:
        try:
            return _run(args, settings, ui)
        except DestinationBusyError as err:
            if not args.wait:
                raise
            ui.info(f"{err}; waiting for it to finish (--wait)")
            wait_for_lock(err.staging)


def _run(args: argparse.Namespace, settings: Settings, ui: UI) -> int:
    from ..pull import pull

    if args.name is not None and not valid_name(args.name):
        raise UsageError(f"--name {args.name!r} is not a valid dataset name", hint=NAME_RULE)
    if args.strip_components < 0:
        raise UsageError(f"--strip-components {args.strip_components}: must be 0 or more")
    web = [s for s in args.source if s.startswith(("http://", "https://"))]
    if web:
        if len(web) != len(args.source):
            raise UsageError("give either http(s):// URLs of pieces or one dataset name or s3:// URL",
                             hint="run 's3sync pull --help' for usage")
        if args.generation is not None or args.include or args.exclude:
            raise UsageError("--generation, --include and --exclude apply only to s3sync datasets, not to "
                             "http(s) archives")
        return _pull_split_urls(args, settings, ui)
    if len(args.source) > 1:
        raise UsageError(f"{len(args.source)} sources given: pull takes one dataset name or s3:// URL "
                         "(several sources only as http(s):// URLs of an archive's pieces)",
                         hint="run 's3sync pull --help' for usage")
    from ..selection import Selection

    selection = Selection.make(args.include, args.exclude) if args.include or args.exclude else None
    resolved = catalog.resolve(args.source[0], settings)
    store = store_for(settings, resolved.location.bucket)
    progress = ui.progress()
    try:
        try:
            result = pull(resolved.location, args.name or resolved.name, args.dest_parent.expanduser(), store,
                          settings.transfer, extract=not args.no_extract, progress=progress,
                          generation=args.generation, selection=selection, delete_extra=args.delete_extra)
        except NotFoundError as err:
            if not err.manifest_missing or args.generation is not None or selection is not None:
                raise
            if args.no_extract:
                raise UsageError(f"{resolved.location.url()} holds no s3sync manifest: --no-extract applies only to "
                                 "s3sync datasets", hint="drop --no-extract to pull and extract the archive") from err
            from ..sources import from_s3

            archive = from_s3(store, resolved.location, args.name or resolved.name)
            return _pull_split(archive, store, args, settings, ui, progress)
    finally:
        getattr(progress, "close", lambda: None)()
        store.close()
    if args.strip_components:
        ui.info("warning: --strip-components applies only to archives; ignored for an s3sync dataset")
    for note in result.notes:  # e.g. no reader lease (read-only credentials): gc cannot see this pull
        ui.info(note)
    m = result.manifest
    u = result.updated
    if ui.as_json:
        ui.emit_json({"command": "pull", "url": resolved.location.url(), "dest": str(result.dest),
                      "generation": m.generation, "files": m.files, "extracted_size": m.extracted_size,
                      "stream_size": m.stream_size, "bytes_received": result.bytes_received,
                      "resumed_from": result.resumed_from, "retries": result.retries,
                      "up_to_date": result.up_to_date, "captions": summary_json(m.captions),
                      "updated": None if u is None else {
                          "from_generation": u.old_generation, "fetched": u.fetched,
                          "fetched_size": u.fetched_size, "reused": u.reused, "removed": u.removed,
                          "resumed": u.resumed, "partial": u.partial, "reused_size": u.reused_size,
                          "altered": u.altered, "extras": u.extras, "extra_paths": list(u.extra_paths),
                          "extras_deleted": u.extras_deleted},
                      "selection": None if selection is None else selection.to_json(),
                      "notes": list(result.notes),
                      "elapsed_s": round(result.elapsed_s, 3)})
    elif u is not None and u.partial:
        ui.info(f"pulled the selected members of {result.dest.name} into {result.dest} (generation {m.generation}"
                + (f", updated from {u.old_generation}" if u.old_generation else "")
                + f"): {plural(u.fetched + u.reused + u.resumed, 'file')} selected of {m.files}, "
                f"{plural(u.fetched, 'file')} fetched ({format_size(u.fetched_size)}), {u.reused} unchanged, "
                f"{u.removed} removed; {format_size(result.bytes_received)} received, {result.elapsed_s:.1f}s")
    elif u is not None:
        change = (f"from generation {u.old_generation} to {m.generation}" if u.old_generation != m.generation
                  else f"from a partial pull to all of generation {m.generation}")
        resumed_update = f" (resuming an interrupted update: {plural(u.resumed, 'file')} it had fetched)" \
            if u.resumed else ""
        ui.info(f"updated {result.dest.name} in {result.dest} {change}{resumed_update}: "
                f"{plural(u.fetched, 'file')} new or changed ({format_size(u.fetched_size)}), {u.reused} unchanged, "
                f"{u.removed} removed; {format_size(result.bytes_received)} received of a "
                f"{format_size(m.stream_size)} stream, {result.elapsed_s:.1f}s")
    elif result.up_to_date:
        ui.info(f"{result.dest} is already complete (generation {m.generation}); nothing to do")
    else:
        rate = m.stream_size / max(result.elapsed_s, 1e-6)
        resumed = f", resumed at {format_size(result.resumed_from)}" if result.resumed_from else ""
        what = (f"{plural(len(m.parts), 'part file')}, {format_size(m.stream_size)}" if args.no_extract
                else f"{plural(m.files, 'file')}, {format_size(m.extracted_size)}")
        notes = (["not extracted"] if args.no_extract else []) + ([describe(m.captions)] if m.captions else [])
        if notes:
            what += f" ({'; '.join(notes)})"
        ui.info(f"pulled {result.dest.name} (generation {m.generation}) into {result.dest}: {what}, "
                f"{format_size(result.bytes_received)} received, {plural(result.retries, 'retry', 'retries')}{resumed}, "
                f"{result.elapsed_s:.1f}s ({format_size(rate)}/s)")
    if u is not None and u.extras and not ui.as_json:
        shown = ", ".join(escape_field(p) for p in u.extra_paths) + (", ..." if u.extras > len(u.extra_paths) else "")
        if u.extras_deleted:
            ui.info(f"deleted {plural(u.extras, 'entry', 'entries')} that {'was' if u.extras == 1 else 'were'} "
                    f"not part of the dataset (--delete-extra): {shown}")
        else:
            ui.info(f"kept {plural(u.extras, 'entry', 'entries')} that {'is' if u.extras == 1 else 'are'} not part "
                    f"of the dataset: {shown}; 's3sync verify' lists them, --delete-extra drops them")
    return EXIT_OK


def _pull_split_urls(args: argparse.Namespace, settings: Settings, ui: UI) -> int:
    from ..sources import from_urls
    from ..stores.http import HttpStore

    if args.no_extract:
        raise UsageError("--no-extract applies only to s3sync datasets, not to http(s) archives")
    store = HttpStore(settings.transfer)
    progress = ui.progress()
    try:
        archive = from_urls(store, args.source, args.name)
        return _pull_split(archive, store, args, settings, ui, progress)
    finally:
        getattr(progress, "close", lambda: None)()
        store.close()


def _pull_split(archive: Any, store: Any, args: argparse.Namespace, settings: Settings, ui: UI,
                progress: Any) -> int:
    """Pull a split archive (sources.from_s3 / from_urls) and report it."""
    from ..pieces import describe
    from ..splitpull import pull_split

    result = pull_split(archive, args.dest_parent.expanduser(), store, settings.transfer,
                        strip_components=args.strip_components, progress=progress)
    pieces = archive.pieces
    unverified = [p for p in pieces if p.evidence.kind == "none"]
    if ui.as_json:
        ui.emit_json({"command": "pull", "url": archive.source, "dest": str(result.dest), "kind": "split-archive",
                      "codec": result.codec, "files": result.files, "members": result.members,
                      "extracted_size": result.extracted_size, "stream_size": archive.size,
                      "bytes_received": result.bytes_received, "resumed_from": result.resumed_from,
                      "retries": result.retries, "up_to_date": result.up_to_date,
                      "elapsed_s": round(result.elapsed_s, 3),
                      "pieces": [{"name": p.name, "url": p.url, "size": p.size, "etag": p.etag,
                                  "evidence": p.evidence.kind, "algorithm": p.evidence.algorithm,
                                  "expected": p.evidence.expected, "source": p.evidence.source,
                                  "verified": p.evidence.kind != "none"} for p in pieces]})
        return EXIT_OK
    if result.up_to_date:
        ui.info(f"{result.dest} is already complete; nothing to do")
        return EXIT_OK
    kinds: dict[str, int] = {}
    for p in pieces:
        if p.evidence.kind != "none":
            label = describe(p.evidence).split(" from ")[0]
            kinds[label] = kinds.get(label, 0) + 1
    summary = ", ".join(f"{n} by {label}" for label, n in kinds.items())
    rate = archive.size / max(result.elapsed_s, 1e-6)
    resumed = f", resumed at byte {result.resumed_from:,}" if result.resumed_from else ""
    ui.info(f"pulled {archive.name} into {result.dest}: {plural(result.files, 'file')}, "
            f"{format_size(result.extracted_size)} from {plural(len(pieces), 'piece')} "
            f"({result.codec if result.codec != 'none' else 'uncompressed'} tar), "
            f"{format_size(result.bytes_received)} received{resumed}, {result.elapsed_s:.1f}s "
            f"({format_size(rate)}/s)")
    if len(unverified) == len(pieces):
        ui.info(f"warning: the bytes were NOT verified: no piece has a sidecar checksum or an ETag that is an MD5 "
                f"({unverified[0].evidence.source})")
    else:
        ui.info(f"verified {len(pieces) - len(unverified)} of {plural(len(pieces), 'piece')}: {summary}"
                + (f"; warning: {len(unverified)} NOT verified ({', '.join(p.name for p in unverified[:3])}"
                   f"{', ...' if len(unverified) > 3 else ''}: {unverified[0].evidence.source})" if unverified
                   else ""))
    return EXIT_OK


