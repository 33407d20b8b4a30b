"""``s3sync ls``: list dataset names, or summarise one manifest or archive."""

from __future__ import annotations

import argparse
from typing import Any

from .. import catalog
from ..captionfiles import describe, summary_json
from ..config import Settings, format_size
from ..errors import NotFoundError, UsageError
from ..ui import UI
from .common import EXIT_OK, S3_ENVIRONMENT, help_text, plural, store_for


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    """Add the ``ls`` sub-command to ``sub`` (argparse sub-parsers)."""
    p = sub.add_parser("ls", parents=[common], help="list catalog names (and whether each is published), the "
                                                    "datasets in s3://BUCKET[/PREFIX], or summarise one dataset "
                                                    "(-v: also history generations and leftovers of publishes)",
                       **help_text(
                           "Without SOURCE: the catalog's names, where each lives and whether it is published.\n"
                           "With a dataset: its summary (generation, files, sizes, parts, captions); -v adds the\n"
                           "history generations and what dead publishes left. With s3://BUCKET[/PREFIX] above\n"
                           "datasets: the datasets published there. With the pieces of an archive s3sync did not\n"
                           "publish: the pieces and the evidence a pull would check them against.",
                           ["s3sync ls",
                            "s3sync ls sbu -v",
                            "s3sync ls s3://my-bucket                     # every dataset in the bucket",
                            "s3sync ls s3://my-bucket/sbu --generations --json",
                            "s3sync ls sbu --members 'images/0000/*' captions.json   # check an --include"],
                           environment=S3_ENVIRONMENT))
    p.add_argument("source", metavar="SOURCE", nargs="?",
                   help="a dataset name or s3://BUCKET/PREFIX of one dataset (its summary), or s3://BUCKET[/PREFIX] "
                        "above datasets (those published one or two levels down)")
    p.add_argument("--generations", action="store_true",
                   help="list the generations of SOURCE still stored: current, history copies, leftovers")
    p.add_argument("--members", nargs="*", metavar="GLOB", default=None,
                   help="list the member paths of SOURCE (SIZE<TAB>PATH; a directory's path ends in '/') from its "
                        "member index, only those the GLOBs select if given (gitignore-style, as pull --include "
                        "takes them): check a selection before pulling")
    p.add_argument("--generation", metavar="G",
                   help="with --members: list generation G (still stored, see --generations) instead of the "
                        "current one, as 'pull --generation G' would pull it")
    p.set_defaults(func=run)


def run(args: argparse.Namespace, settings: Settings, ui: UI) -> int:
    if args.source is None:
        if args.generations or args.members is not None:
            flag = "--generations" if args.generations else "--members"
            raise UsageError(f"{flag} needs a SOURCE", hint=f"s3sync ls s3://BUCKET/PREFIX {flag}")
        return _ls_catalog(settings, ui)
    if args.generations and args.members is not None:
        raise UsageError("--generations and --members: give one of them")
    if args.generation is not None and args.members is None:
        raise UsageError("--generation G goes with --members", hint="s3sync ls SOURCE --members --generation G")
    from ..pull import fetch_manifest

    resolved = catalog.resolve(args.source, settings)
    store = store_for(settings, resolved.location.bucket)
    if args.members is not None:
        try:
            return _ls_members(store, resolved.location, args.members, ui, args.generation)
        finally:
            store.close()
    if args.generations:
        try:
            return _ls_generations(store, resolved.location, settings, ui)
        finally:
            store.close()
    found = None
    try:
        try:
            m, _ = fetch_manifest(store, resolved.location)
        except NotFoundError as err:
            if err.manifest_missing and resolved.name is None:
                listing = catalog.discover(store, resolved.location, concurrency=settings.transfer.concurrency)
                if listing.datasets:  # s3://BUCKET[/PREFIX] above datasets
                    return _ls_bucket(resolved.location, listing, ui)
            if err.manifest_missing:
                from ..sources import from_s3

                try:
                    archive = from_s3(store, resolved.location, resolved.name)
                except NotFoundError:
                    archive = None
                if archive is not None:  # the pieces of an archive s3sync did not publish
                    return _ls_split(archive, store, settings, ui)
            if not args.verbose or err.bucket_missing:
                raise
            # Nothing committed: what a first publish, running or dead, left is still worth showing.
            found = _survey(store, resolved.location, None)
            if not found.leftovers and not found.history:
                raise
            return _ls_uncommitted(resolved.location, found, ui)
        if args.verbose:
            found = _survey(store, resolved.location, m.generation)
    finally:
        store.close()
    if ui.as_json:
        doc = {"command": "ls", "url": resolved.location.url(), "name": m.name, "generation": m.generation,
               "previous": m.previous, "created": m.created, "hash": m.hash, "chunk_size": m.chunk_size,
               "stream_size": m.stream_size, "files": m.files, "extracted_size": m.extracted_size,
               "members": m.members,
               "parts": [{"key": p.key, "size": p.size, "chunks": len(p.chunks)} for p in m.parts],
               "version": m.version, "compression": m.compression, "tar_size": m.tar_stream_size,
               "adopted": m.adopted.source if m.adopted else None, "captions": summary_json(m.captions),
               "index": {"key": m.index.key, "size": m.index.size, "digest": m.index.digest} if m.index else None}
        if found is not None:
            doc.update(_survey_json(found))
        ui.emit_json(doc)
    else:
        ui.kv([("url", resolved.location.url()), ("name", m.name), ("generation", m.generation),
               ("created", m.created), ("files", f"{m.files:,}"),
               ("extracted", f"{format_size(m.extracted_size)} ({m.extracted_size:,} bytes)"),
               ("stream", f"{format_size(m.stream_size)} in {plural(len(m.parts), 'part')}, "
                          f"{plural(sum(len(p.chunks) for p in m.parts), 'chunk')} of {format_size(m.chunk_size)}"),
               ("hash", m.hash)]
              + ([("captions", describe(m.captions))] if m.captions else [])
              + ([("member index", f"{m.index.key} ({format_size(m.index.size)})")] if m.index else [])
              + ([("adopted", f"from {m.adopted.source} (format version {m.version}; pieces in place)"),
                  ("compression", m.compression)] if m.adopted else []))
        if found is not None:
            for line in _survey_lines(found):
                ui.line(line)
    return EXIT_OK


def _ls_members(store: Any, location: Any, globs: list[str], ui: UI, generation: str | None = None) -> int:
    """``ls SOURCE --members [GLOB...] [--generation G]``: the members of the current generation
    (or of G) from its member index, streamed; those the globs select (as ``pull --include``) if any."""
    from ..indexfile import members
    from ..pull import fetch_generation, fetch_manifest
    from ..selection import Selection
    from .verify import escape_field

    selection = Selection.make(globs) if globs else None
    m, _ = fetch_generation(store, location, generation) if generation is not None else fetch_manifest(store, location)
    matched = files = size = 0
    docs = []
    for r in members(store, location, m):
        is_dir = r.kind == "dir"
        if selection is not None and not selection.selects(r.path, is_dir):
            continue
        matched += 1
        if r.kind in ("file", "hardlink"):
            files, size = files + 1, size + r.size
        if ui.as_json:
            docs.append({"path": r.path, "kind": r.kind, "size": r.size, **({"link": r.link} if r.link else {})})
        else:
            shown = escape_field(r.path) + ("/" if is_dir else f" -> {escape_field(r.link)}" if r.kind == "symlink"
                                            else "")
            ui.line(f"{r.size if not is_dir and r.kind != 'symlink' else '-'}\t{shown}")
    if ui.as_json:
        ui.emit_json({"command": "ls", "url": location.url(), "name": m.name, "generation": m.generation,
                      "globs": globs, "matched": matched, "files": files, "size": size, "members": docs})
    what = " ".join(globs)
    if selection is not None and not matched:
        raise UsageError(f"{what} matches no member of {m.name} (generation {m.generation})",
                         hint=selection.empty_hint(m.name).partition("; ")[0])
    if not ui.as_json:
        ui.info(f"{m.name} (generation {m.generation}): {plural(matched, 'member')}"
                + (f" {'matches' if matched == 1 else 'match'} {what}" if globs else "") + f", {plural(files, 'file')}, {format_size(size)}")
    return EXIT_OK


def _ls_split(archive: Any, store: Any, settings: Settings, ui: UI) -> int:
    """``ls`` of a prefix (or object) holding an archive s3sync did not publish: its pieces,
    their evidence and the compression (one 512-byte read), as a pull would see them."""
    from ..pieces import describe
    from ..splitpull import archive_codec

    codec = archive_codec(archive, store, settings.transfer)
    if ui.as_json:
        ui.emit_json({"command": "ls", "url": archive.source, "kind": "split-archive", "name": archive.name,
                      "codec": codec, "stream_size": archive.size,
                      "pieces": [{"name": p.name, "url": p.url, "size": p.size, "etag": p.etag,
                                  "evidence": p.evidence.kind, "algorithm": p.evidence.algorithm,
                                  "expected": p.evidence.expected, "source": p.evidence.source}
                                 for p in archive.pieces]})
        return EXIT_OK
    unverified = sum(p.evidence.kind == "none" for p in archive.pieces)
    ui.kv([("url", archive.source), ("name", archive.name),
           ("kind", "an archive s3sync did not publish: 's3sync pull' extracts it, 's3sync adopt' makes it a dataset"),
           ("compression", codec if codec != "none" else "none (a plain tar)"),
           ("size", f"{format_size(archive.size)} in {plural(len(archive.pieces), 'piece')}"
                    + (f"; {unverified} without a checksum: a pull cannot verify them" if unverified else ""))])
    ui.table("pieces", ["piece", "size", "evidence"],
             [[p.name, format_size(p.size), describe(p.evidence)] for p in archive.pieces])
    return EXIT_OK


def _survey(store: Any, location: Any, current: str | None) -> Any:
    """``ls -v``'s survey of history generations and leftovers, leases judged by the server's
    clock (the Date of a HEAD of the bucket), as publish judges them."""
    from ..leftovers import survey

    store.check_bucket()
    return survey(store, location, current, now=store.server_time())


def _survey_json(found: Any) -> dict[str, Any]:
    """``ls -v --json``: the history generations and leftovers of a survey."""
    return {
        "history": [{"generation": g.name, "objects": len(g.objects), "size": g.size} for g in found.history],
        "leftovers": [{"generation": g.name, "state": g.state, "alive": g.alive,
                       "host": g.lease.host if g.lease else None, "pid": g.lease.pid if g.lease else None,
                       "objects": len(g.objects), "size": g.size,
                       "incomplete_uploads": [u.key for u in g.uploads]} for g in found.leftovers],
    }


def _ls_uncommitted(location: Any, found: Any, ui: UI) -> int:
    """``ls URL -v`` where no manifest was ever committed, but publishes left objects."""
    if ui.as_json:
        ui.emit_json({"command": "ls", "url": location.url(), "name": None, "generation": None,
                      **_survey_json(found)})
    else:
        ui.kv([("url", location.url()), ("generation", "none committed (no manifest.json)")])
        for line in _survey_lines(found):
            ui.line(line)
    return EXIT_OK


def _survey_lines(found: Any) -> list[str]:
    """``ls -v``: one tab-separated line per history generation and leftover."""
    lines = []
    for g in found.history:
        lines.append(f"history\t{g.name}\t{plural(len(g.objects), 'object')}, {format_size(g.size)}")
    states = {"running": "running", "live": "live (lease not expired)", "dead": "dead", "expired": "expired",
              "unleased": "no lease"}
    for g in found.leftovers:
        who = f" on {g.lease.host} pid {g.lease.pid}" if g.lease else ""
        state = states.get(g.state, g.state) + who
        if not g.alive:
            state += ", removed by the next publish"
        uploads = f", {plural(len(g.uploads), 'incomplete multipart upload')}" if g.uploads else ""
        kind = "publishing" if g.alive and g.lease is not None else "leftover"
        lines.append(f"{kind}\t{g.name}\t{state}\t{plural(len(g.objects), 'object')}, "
                     f"{format_size(g.size)}{uploads}")
    if not found.leftovers:
        lines.append("leftovers\tnone")
    return lines




def _ls_catalog(settings: Settings, ui: UI) -> int:
    """``ls`` without SOURCE: every catalog name, and whether it is published at its location
    (one HEAD per name, in parallel; "unknown" without a bucket or credentials)."""
    names = catalog.names(settings)
    found = catalog.presence([loc for _, _, loc in names], lambda bucket: store_for(settings, bucket),
                             settings.transfer.concurrency)
    rows = []
    docs = []
    for (name, entry, loc), here in zip(names, found, strict=True):
        state = here.state + (f" ({here.detail})" if here.detail and here.state != catalog.UNKNOWN else "")
        rows.append([name, entry.title if entry else "", format_size(entry.approx_size) if entry and entry.approx_size else "",
                     f"{entry.approx_files:,}" if entry and entry.approx_files else "",
                     loc.url() if loc else "(set S3SYNC_BUCKET)", state, entry.licence if entry else ""])
        docs.append({"name": name, "title": entry.title if entry else None,
                     "url": loc.url() if loc else None, "licence": entry.licence if entry else None,
                     "approx_size": (entry.approx_size or None) if entry else None,
                     "approx_files": (entry.approx_files or None) if entry else None,
                     "published": {catalog.PUBLISHED: True, catalog.NOT_PUBLISHED: False}.get(here.state),
                     "published_detail": here.detail or None})
    if ui.as_json:
        ui.emit_json({"command": "ls", "datasets": docs})
    else:
        ui.table("datasets", ["name", "title", "size", "files", "location", "published", "licence"], rows)
        unknown = [h.detail for h in found if h.state == catalog.UNKNOWN and h.detail]
        if unknown and not all(d.startswith("no bucket configured") for d in unknown):
            ui.info(f"published: unknown for {plural(len(unknown), 'name')}: "
                    f"{next(d for d in unknown if not d.startswith('no bucket configured'))}")
    return EXIT_OK


def _ls_bucket(location: Any, listing: Any, ui: UI) -> int:
    """``ls s3://BUCKET[/PREFIX]`` above datasets: one row per dataset found."""
    docs = []
    rows = []
    for d in listing.datasets:
        m = d.manifest
        if m is None:
            docs.append({"url": d.location.url(), "error": d.error})
            rows.append(["?", d.location.url(), "", "", "", "", f"damaged: {d.error}"])
            continue
        docs.append({"url": d.location.url(), "name": m.name, "generation": m.generation, "created": m.created,
                     "files": m.files, "extracted_size": m.extracted_size, "stream_size": m.stream_size,
                     "version": m.version, "captions": summary_json(m.captions)})
        rows.append([m.name, d.location.url(), m.generation, m.created, f"{m.files:,}", format_size(m.extracted_size),
                     describe(m.captions) if m.captions else ""])
    if ui.as_json:
        ui.emit_json({"command": "ls", "url": location.url(), "datasets": docs, "complete": listing.complete})
        return EXIT_OK
    ui.table(f"datasets in {location.url() or 's3://' + location.bucket}",
             ["name", "url", "generation", "published", "files", "size", "captions"], rows)
    if not listing.complete:
        ui.info(f"stopped after listing {catalog.MAX_DIRECTORIES:,} directories: some datasets may be missing; "
                "give a longer prefix")
    return EXIT_OK


def _ls_generations(store: Any, location: Any, settings: Settings, ui: UI) -> int:
    """``ls SOURCE --generations``: every generation stored, newest first."""
    from ..gc import stored

    view = stored(store, location, concurrency=settings.transfer.concurrency)
    if not view.generations:
        raise NotFoundError(f"no generation stored at {location.url()}", manifest_missing=True,
                            hint="check the name with 's3sync ls', the bucket and --endpoint-url")
    if ui.as_json:
        ui.emit_json({"command": "ls", "url": location.url(), "generations": [
            {"generation": g.name, "kind": g.kind, "created": g.created or None, "files": g.files,
             "extracted_size": g.extracted_size, "objects": g.objects, "size": g.size, "state": g.state or None,
             "superseded_s_ago": round(view.now - g.superseded, 1) if g.superseded is not None else None,
             "readers": g.readers}
            for g in view.generations]})
        return EXIT_OK
    rows = [[g.name, g.kind + (f" ({g.state})" if g.state else "")
             + (f", in use by {plural(g.readers, 'reader')}" if g.readers else ""), g.created, f"{g.files:,}" if g.files is not None
             else "", format_size(g.extracted_size) if g.extracted_size is not None else "",
             f"{plural(g.objects, 'object')}, {format_size(g.size)}"] for g in view.generations]
    ui.table(f"generations of {location.url()}", ["generation", "kind", "published", "files", "size", "stored"], rows)
    return EXIT_OK
