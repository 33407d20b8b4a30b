"""The ``s3sync`` command: argument parsing, settings resolution, error-to-exit-code mapping.

The only place that prints (through ``ui``) or exits. Each command resolves its
settings once and calls one pipeline function.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tomllib
import traceback
from pathlib import Path
from typing import Any, NoReturn

from . import catalog, interrupts
from .config import Settings, format_size, parse_s3_url, resolve
from .errors import (
    ConfigError,
    Interrupted,
    NotFoundError,
    S3SyncError,
    SourceError,
    TransientStoreError,
    UsageError,
    VerifyFailed,
    VerifyIncomplete,
)
from .manifest import NAME_RULE, valid_name
from .ui import UI

EXIT_OK = 0


class _Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of printing usage and exiting."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message, hint=f"run '{self.prog} --help' for usage")


def _common(suppress: bool) -> argparse.ArgumentParser:
    """Options accepted before and after the command (``s3sync -q ls`` and ``s3sync ls -q``).

    The copies on the sub-commands default to SUPPRESS so that they do not overwrite a
    value given before the command (an argparse pitfall).
    """
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("common options")
    d = {"default": argparse.SUPPRESS} if suppress else {}
    flag = {"default": argparse.SUPPRESS} if suppress else {"default": False}
    g.add_argument("--endpoint-url", metavar="URL", help="S3 endpoint (default: boto3's, e.g. AWS_ENDPOINT_URL_S3)", **d)
    g.add_argument("--profile", help="AWS profile from ~/.aws/config", **d)
    g.add_argument("--region", help="AWS region", **d)
    g.add_argument("--no-sign-request", action="store_true", help="anonymous requests (public buckets)", **flag)
    g.add_argument("--concurrency", type=int, metavar="N", help="parallel requests (default: 2 per CPU, 4 to 32)", **d)
    g.add_argument("-q", "--quiet", action="store_true", help="print errors only", **flag)
    g.add_argument("-v", "--verbose", action="store_true", help="more detail: retries and resume points (pull), history and leftovers (ls)", **flag)
    g.add_argument("--json", action="store_true", help="print the result as one JSON document on stdout", **flag)
    g.add_argument("--debug", action="store_true", help="show tracebacks", **flag)
    return p


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``s3sync`` command."""
    common = _common(suppress=True)
    parser = _Parser(prog="s3sync", parents=[_common(suppress=False)],
                     description="Publish and pull ML datasets through S3, verified and resumable.")
    parser.add_argument("--version", action=_VersionAction, nargs=0, help="show the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser("publish", parents=[common], help="pack a directory and upload it as a dataset")
    p.add_argument("src", metavar="SRC_DIR", type=Path)
    p.add_argument("--to", metavar="s3://BUCKET/PREFIX", help="destination (default s3://$S3SYNC_BUCKET/NAME)")
    p.add_argument("--name", help="dataset name (default: SRC_DIR's basename)")
    p.add_argument("--part-size", metavar="SIZE", help="bytes per part object (default 10GiB)")
    p.add_argument("--chunk-size", metavar="SIZE", help="bytes per verified chunk (default 16MiB)")
    p.set_defaults(func=cmd_publish)

    p = sub.add_parser("pull", parents=[common], help="download, verify and extract a dataset, or a split archive")
    p.add_argument("source", metavar="SOURCE", nargs="+",
                   help="dataset name, s3://BUCKET/PREFIX (a dataset, or the pieces of an archive), s3://BUCKET/KEY "
                        "(one archive), or the http(s):// URLs of an archive's pieces")
    p.add_argument("dest_parent", metavar="DEST_PARENT", type=Path, help="the dataset lands in DEST_PARENT/NAME")
    p.add_argument("--name", help="dataset name (default: the manifest's; for an archive, the prefix's last "
                                  "component or the first piece's name less its suffixes)")
    p.add_argument("--strip-components", type=int, default=0, metavar="N",
                   help="archives: drop N leading components of member names, as GNU tar does")
    p.add_argument("--no-extract", action="store_true", help="store the verified parts as NAME/part-NNNNN.tar")
    p.set_defaults(func=cmd_pull)

    p = sub.add_parser("adopt", parents=[common], help="write a manifest for a split archive already in S3, "
                                                       "naming its pieces in place",
                       description="Read the split archive at SOURCE once (every piece checked against its sidecar "
                                   "or ETag, every member checked as a pull would), then write "
                                   "PREFIX/manifest.json (format version 2) naming the pieces where they are: no "
                                   "piece is uploaded again, changed or deleted. For one object s3://B/DIR/KEY the "
                                   "manifest goes at s3://B/DIR/manifest.json and names that one piece. Only s3:// "
                                   "sources: adopt writes a manifest beside the pieces.")
    p.add_argument("source", metavar="SOURCE", help="s3://BUCKET/PREFIX holding the pieces, or s3://BUCKET/KEY (one "
                                                    "archive)")
    p.add_argument("--name", help="dataset name (default: the prefix's last component, or the object's name less "
                                  "its suffixes)")
    p.add_argument("--replace", action="store_true",
                   help="replace an existing s3sync manifest (kept as a history copy); never another object")
    p.add_argument("--chunk-size", metavar="SIZE", help="bytes per verified chunk in the manifest (default 16MiB)")
    p.set_defaults(func=cmd_adopt)

    p = sub.add_parser("verify", parents=[common], help="re-hash a pulled dataset and name what differs")
    p.add_argument("dir", metavar="DIR", type=Path, help="a directory created by 's3sync pull'")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("ls", parents=[common], help="list dataset names, or summarise one manifest "
                                                    "(-v: also history generations and leftovers of publishes)")
    p.add_argument("source", metavar="SOURCE", nargs="?")
    p.set_defaults(func=cmd_ls)
    return parser


class _VersionAction(argparse.Action):
    """``--version``, looked up only when asked (importlib.metadata costs ~40 ms of start-up)."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001
        print(f"s3sync {_version()}")
        parser.exit()


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("s3sync-datasets")
    except PackageNotFoundError:
        return "unknown"


def load_settings(args: argparse.Namespace, env: dict[str, str]) -> Settings:
    """Resolve settings from the config file, ``S3SYNC_*`` variables and flags.

    The config file is ``$S3SYNC_CONFIG`` or ``$XDG_CONFIG_HOME/s3sync/config.toml``
    (``~/.config/...``); a missing default file is not an error.

    Raises:
        ConfigError: the file is unreadable or not valid TOML.
    """
    explicit = env.get("S3SYNC_CONFIG")
    base = env.get("XDG_CONFIG_HOME") or os.path.join(os.path.expanduser("~"), ".config")
    path = Path(explicit) if explicit else Path(base) / "s3sync" / "config.toml"
    doc: dict[str, Any] = {}
    if explicit or path.exists():
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"{path}: cannot read config ({err.strerror})") from err
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML ({err})") from err
        except UnicodeDecodeError as err:
            raise ConfigError(f"{path}: not valid TOML (not UTF-8: byte {err.object[err.start]:#04x} "
                              f"at offset {err.start})") from err
    flags = {
        "endpoint_url": args.endpoint_url, "profile": args.profile, "region": args.region,
        "no_sign_request": args.no_sign_request or None, "concurrency": args.concurrency,
        "chunk_size": getattr(args, "chunk_size", None), "part_size": getattr(args, "part_size", None),
    }
    return resolve(doc, env, flags, str(path), cpus=os.cpu_count())


def _store(settings: Settings, bucket: str) -> Any:
    from .stores.s3 import S3Store, make_client

    client = make_client(settings.s3, max_connections=settings.transfer.concurrency + 4)
    return S3Store(client, bucket, concurrency=settings.transfer.concurrency)


def cmd_publish(args: argparse.Namespace, settings: Settings, ui: UI) -> int:
    from .publish import publish

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
    store = _store(settings, location.bucket)
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
                      "previous": m.previous,
                      "removed_leftovers": result.cleanup.generations if result.cleanup else [],
                      "notes": list(result.notes)})
    elif not ui.quiet:
        for note in result.notes:
            ui.info(note)
        rate = m.stream_size / max(result.elapsed_s, 1e-6)
        ui.info(f"published {m.name} to {location.url()}: {_plural(m.files, 'file')}, {format_size(m.extracted_size)} "
                f"in {_plural(len(m.parts), 'part')}, generation {m.generation}, "
                f"{result.elapsed_s:.1f}s ({format_size(rate)}/s)")
    return EXIT_OK


def cmd_pull(args: argparse.Namespace, settings: Settings, ui: UI) -> int:
    from .pull import pull

    if args.name is not None and not valid_name(args.name):
        raise UsageError(f"--name {args.name!r} is not a valid dataset name", hint=NAME_RULE)
    if args.strip_components < 0:
        raise UsageError(f"--strip-components {args.strip_components}: must be 0 or more")
    web = [s for s in args.source if s.startswith(("http://", "https://"))]
    if web:
        if len(web) != len(args.source):
            raise UsageError("give either http(s):// URLs of pieces or one dataset name or s3:// URL",
                             hint="run 's3sync pull --help' for usage")
        return _pull_split_urls(args, settings, ui)
    if len(args.source) > 1:
        raise UsageError(f"{len(args.source)} sources given: pull takes one dataset name or s3:// URL "
                         "(several sources only as http(s):// URLs of an archive's pieces)",
                         hint="run 's3sync pull --help' for usage")
    resolved = catalog.resolve(args.source[0], settings)
    store = _store(settings, resolved.location.bucket)
    progress = ui.progress()
    try:
        try:
            result = pull(resolved.location, args.name or resolved.name, args.dest_parent.expanduser(), store,
                          settings.transfer, extract=not args.no_extract, progress=progress)
        except NotFoundError as err:
            if not err.manifest_missing:
                raise
            if args.no_extract:
                raise UsageError(f"{resolved.location.url()} holds no s3sync manifest: --no-extract applies only to "
                                 "s3sync datasets", hint="drop --no-extract to pull and extract the archive") from err
            from .sources import from_s3

            archive = from_s3(store, resolved.location, args.name or resolved.name)
            return _pull_split(archive, store, args, settings, ui, progress)
    finally:
        getattr(progress, "close", lambda: None)()
        store.close()
    if args.strip_components:
        ui.info("warning: --strip-components applies only to archives; ignored for an s3sync dataset")
    m = result.manifest
    if ui.as_json:
        ui.emit_json({"command": "pull", "url": resolved.location.url(), "dest": str(result.dest),
                      "generation": m.generation, "files": m.files, "extracted_size": m.extracted_size,
                      "stream_size": m.stream_size, "bytes_received": result.bytes_received,
                      "resumed_from": result.resumed_from, "retries": result.retries,
                      "up_to_date": result.up_to_date, "elapsed_s": round(result.elapsed_s, 3)})
    elif result.up_to_date:
        ui.info(f"{result.dest} is already complete (generation {m.generation}); nothing to do")
    else:
        rate = m.stream_size / max(result.elapsed_s, 1e-6)
        resumed = f", resumed at {format_size(result.resumed_from)}" if result.resumed_from else ""
        what = (f"{_plural(len(m.parts), 'part file')}, {format_size(m.stream_size)} (not extracted)" if args.no_extract
                else f"{_plural(m.files, 'file')}, {format_size(m.extracted_size)}")
        ui.info(f"pulled {result.dest.name} into {result.dest}: {what}, "
                f"{format_size(result.bytes_received)} received, {_plural(result.retries, 'retry', 'retries')}{resumed}, "
                f"{result.elapsed_s:.1f}s ({format_size(rate)}/s)")
    return EXIT_OK


def _pull_split_urls(args: argparse.Namespace, settings: Settings, ui: UI) -> int:
    from .sources import from_urls
    from .stores.http import HttpStore

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
    from .pieces import describe
    from .splitpull import pull_split

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
    ui.info(f"pulled {archive.name} into {result.dest}: {_plural(result.files, 'file')}, "
            f"{format_size(result.extracted_size)} from {_plural(len(pieces), 'piece')} "
            f"({result.codec if result.codec != 'none' else 'uncompressed'} tar), "
            f"{format_size(result.bytes_received)} received{resumed}, {result.elapsed_s:.1f}s "
            f"({format_size(rate)}/s)")
    if len(unverified) == len(pieces):
        ui.info(f"warning: the bytes were NOT verified: no piece has a sidecar checksum or an ETag that is an MD5 "
                f"({unverified[0].evidence.source})")
    else:
        ui.info(f"verified {len(pieces) - len(unverified)} of {_plural(len(pieces), 'piece')}: {summary}"
                + (f"; warning: {len(unverified)} NOT verified ({', '.join(p.name for p in unverified[:3])}"
                   f"{', ...' if len(unverified) > 3 else ''}: {unverified[0].evidence.source})" if unverified
                   else ""))
    return EXIT_OK


def cmd_verify(args: argparse.Namespace, settings: Settings, ui: UI) -> int:
    from .verify import verify

    progress = ui.progress()
    try:
        result = verify(args.dir.expanduser(), settings.transfer.concurrency, progress)
    finally:
        getattr(progress, "close", lambda: None)()
    if ui.as_json:
        ui.emit_json({"command": "verify", "dir": str(result.dest), "name": result.name,
                      "generation": result.generation, "checked": result.checked,
                      "checked_bytes": result.checked_bytes, "ok": not result.problems,
                      "problems": [{"path": p.path, "kind": p.kind, "detail": p.detail} for p in result.problems],
                      "elapsed_s": round(result.elapsed_s, 3)})
    else:
        for p in result.problems:
            ui.line(f"{p.kind}\t{escape_field(p.path)}\t{escape_field(p.detail)}")
    if result.problems:
        # A file published without owner read permission is "unverifiable" to a non-root
        # user: not a difference, and pulling again cannot change it.
        unverifiable = {p.path for p in result.problems if p.kind == "unverifiable"}
        extra = {p.path for p in result.problems if p.kind == "extra"}  # not among the checked entries
        differ = {p.path for p in result.problems if p.kind not in ("unverifiable", "extra")}
        if not differ and not extra:
            raise VerifyIncomplete(f"{result.dest}: {len(unverifiable)} of {result.checked} entries cannot be read "
                                   f"back by this user (published without owner read permission); the rest match "
                                   f"generation {result.generation}")
        also = (f", and {len(extra)} extra {'entry is' if len(extra) == 1 else 'entries are'} not part of it"
                if extra else "")
        raise VerifyFailed(f"{result.dest}: {len(differ)} of {result.checked} entries differ from "
                           f"generation {result.generation}{also}",
                           hint=f"{VerifyFailed.hint}; run verify as root to check the {len(unverifiable)} "
                                f"it cannot read" if unverifiable else None)
    ui.info(f"{result.dest}: {_plural(result.checked, 'entry', 'entries')}, "
            f"{format_size(result.checked_bytes)} verified OK "
            f"({result.elapsed_s:.1f}s)")
    return EXIT_OK


_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}


def escape_field(text: str) -> str:
    """``text`` as one tab-free line for verify's plain output (``--json`` keeps raw strings).

    A backslash, tab, newline and carriage return become ``\\\\``, ``\\t``, ``\\n``, ``\\r``;
    other ASCII control characters ``\\xHH``; a byte of a name that is not UTF-8 (carried
    as a surrogate escape, PEP 383) ``\\xHH`` too (80-FF: never an ASCII control); any other
    non-printable character (Unicode categories C and Z but space: U+0085, U+2028,
    U+200B...) ``\\uHHHH`` or ``\\UHHHHHHHH``. Everything else is kept, so the escaping is
    reversible and one problem is always one line of three tab-separated fields.
    """
    if text.isprintable() and "\\" not in text:
        return text
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ch.isprintable():
            out.append(ch)
        elif code < 0x80 or 0xDC80 <= code <= 0xDCFF:
            out.append(f"\\x{code & 0xFF:02x}")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(f"\\U{code:08x}")
    return "".join(out)


def cmd_adopt(args: argparse.Namespace, settings: Settings, ui: UI) -> int:
    from .adopt import adopt

    # With -v, a line per piece comes from the progress messages as each piece is checked.
    if args.source.startswith(("http://", "https://")):
        raise UsageError("adopt writes a manifest beside the pieces: only s3:// sources",
                         hint="pull the http(s) archive with 's3sync pull URL... DEST_PARENT' instead")
    if args.name is not None and not valid_name(args.name):
        raise UsageError(f"--name {args.name!r} is not a valid dataset name", hint=NAME_RULE)
    location = parse_s3_url(args.source)
    store = _store(settings, location.bucket)
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
    ui.info(f"adopted {m.name} at {result.url}: {_plural(m.files, 'file')}, {format_size(m.extracted_size)} in "
            f"{_plural(len(result.pieces), 'piece')} ({m.compression if m.compressed else 'uncompressed'} tar), "
            f"{verified} verified, generation {m.generation}"
            + (f" (replaced {result.replaced})" if result.replaced else "") + f", {result.elapsed_s:.1f}s")
    if result.unverified:
        ui.info(f"warning: {len(result.unverified)} pieces had no checksum ({', '.join(result.unverified[:3])}"
                f"{', ...' if len(result.unverified) > 3 else ''}): the manifest pins bytes that were never checked "
                "against a checksum")
    return EXIT_OK


def cmd_ls(args: argparse.Namespace, settings: Settings, ui: UI) -> int:
    if args.source is None:
        rows = []
        docs = []
        for name, entry, loc in catalog.names(settings):
            rows.append([name, entry.title if entry else "", format_size(entry.approx_size) if entry and entry.approx_size else "",
                         f"{entry.approx_files:,}" if entry and entry.approx_files else "",
                         loc.url() if loc else "(set S3SYNC_BUCKET)", entry.licence if entry else ""])
            docs.append({"name": name, "title": entry.title if entry else None,
                         "url": loc.url() if loc else None, "licence": entry.licence if entry else None,
                         "approx_size": (entry.approx_size or None) if entry else None,
                         "approx_files": (entry.approx_files or None) if entry else None})
        if ui.as_json:
            ui.emit_json({"command": "ls", "datasets": docs})
        else:
            ui.table("datasets", ["name", "title", "size", "files", "location", "licence"], rows)
        return EXIT_OK
    from .pull import fetch_manifest

    resolved = catalog.resolve(args.source, settings)
    store = _store(settings, resolved.location.bucket)
    found = None
    try:
        try:
            m, _ = fetch_manifest(store, resolved.location)
        except NotFoundError as err:
            if err.manifest_missing:
                from .sources import from_s3

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
               "adopted": m.adopted.source if m.adopted else None}
        if found is not None:
            doc.update(_survey_json(found))
        ui.emit_json(doc)
    else:
        ui.kv([("url", resolved.location.url()), ("name", m.name), ("generation", m.generation),
               ("created", m.created), ("files", f"{m.files:,}"),
               ("extracted", f"{format_size(m.extracted_size)} ({m.extracted_size:,} bytes)"),
               ("stream", f"{format_size(m.stream_size)} in {_plural(len(m.parts), 'part')}, "
                          f"{_plural(sum(len(p.chunks) for p in m.parts), 'chunk')} of {format_size(m.chunk_size)}"),
               ("hash", m.hash)]
              + ([("adopted", f"from {m.adopted.source} (format version {m.version}; pieces in place)"),
                  ("compression", m.compression)] if m.adopted else []))
        if found is not None:
            for line in _survey_lines(found):
                ui.line(line)
    return EXIT_OK


def _ls_split(archive: Any, store: Any, settings: Settings, ui: UI) -> int:
    """``ls`` of a prefix (or object) holding an archive s3sync did not publish: its pieces,
    their evidence and the compression (one 512-byte read), as a pull would see them."""
    from .pieces import describe
    from .splitpull import archive_codec

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
           ("size", f"{format_size(archive.size)} in {_plural(len(archive.pieces), 'piece')}"
                    + (f"; {unverified} without a checksum: a pull cannot verify them" if unverified else ""))])
    ui.table("pieces", ["piece", "size", "evidence"],
             [[p.name, format_size(p.size), describe(p.evidence)] for p in archive.pieces])
    return EXIT_OK


def _survey(store: Any, location: Any, current: str | None) -> Any:
    """``ls -v``'s survey of history generations and leftovers, leases judged by the server's
    clock (the Date of a HEAD of the bucket), as publish judges them."""
    from .leftovers import survey

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
        lines.append(f"history\t{g.name}\t{_plural(len(g.objects), 'object')}, {format_size(g.size)}")
    states = {"running": "running", "live": "live (lease not expired)", "dead": "dead", "expired": "expired",
              "unleased": "no lease"}
    for g in found.leftovers:
        who = f" on {g.lease.host} pid {g.lease.pid}" if g.lease else ""
        state = states.get(g.state, g.state) + who
        if not g.alive:
            state += ", removed by the next publish"
        uploads = f", {_plural(len(g.uploads), 'incomplete multipart upload')}" if g.uploads else ""
        kind = "publishing" if g.alive and g.lease is not None else "leftover"
        lines.append(f"{kind}\t{g.name}\t{state}\t{_plural(len(g.objects), 'object')}, "
                     f"{format_size(g.size)}{uploads}")
    if not found.leftovers:
        lines.append("leftovers\tnone")
    return lines


def _plural(n: int, singular: str, plural: str | None = None) -> str:
    return f"{n:,} {singular if n == 1 else plural or singular + 's'}"


_INTERRUPTED_HINTS = {
    "pull": "run the same command again: the pull resumes where it stopped, keeping the verified chunks",
    "publish": "run the same command again: the publish starts over; what was published before is unchanged",
}


def for_command(err: S3SyncError, command: str | None) -> S3SyncError:
    """Give ``err`` the hint that fits ``command``, where the pipelines cannot know it.

    A missing bucket is created before a publish but only checked before a pull or ``ls``;
    an interrupted (or network-failed) pull resumes, a publish starts over. Hints a
    pipeline chose for the case itself are kept.
    """
    if isinstance(err, NotFoundError) and err.bucket_missing and command == "publish":
        err.hint = "create the bucket first (e.g. 'aws s3 mb s3://BUCKET'), or check its name and --endpoint-url"
    elif isinstance(err, Interrupted) and "hint" not in vars(err):
        err.hint = _INTERRUPTED_HINTS.get(command or "", "run the same command again")
    elif isinstance(err, TransientStoreError) and "hint" not in vars(err) and command != "pull":
        # The class's hint speaks of a pull resuming.
        err.hint = "check --endpoint-url and the network, then run the same command again" + (
            " (the publish starts over; what was published before is unchanged)" if command == "publish" else "")
    return err


def main(argv: list[str] | None = None) -> int:
    """Run the command; return its exit code (0 ok, 1 failure, 2 usage, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else argv
    debug = "--debug" in argv
    ui = UI()
    command: str | None = None
    try:
        args = build_parser().parse_args(argv)
        command = args.command
        ui = UI(quiet=args.quiet, as_json=args.json, verbose=args.verbose)
        settings = load_settings(args, dict(os.environ))
        return args.func(args, settings, ui)
    except S3SyncError as err:
        if debug:
            traceback.print_exc()
        ui.error(for_command(err, command))
        return err.exit_code
    except BrokenPipeError:
        # stdout was closed early (`s3sync ls --json | head -1`): not an error of ours.
        # Point stdout at /dev/null so the interpreter's final flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        if debug:
            traceback.print_exc()
        ui.error(for_command(Interrupted("interrupted"), command))
        return Interrupted.exit_code
    except Exception as err:  # a bug: say so in one line unless --debug
        if debug:
            traceback.print_exc()
        ui.error(S3SyncError(f"internal error: {type(err).__name__}: {err}",
                             hint="rerun with --debug and report the traceback"))
        return 1


def on_interrupt(signum: int, frame: object) -> None:
    """Handler of the first SIGINT or SIGTERM: a second one exits at once; this one raises
    KeyboardInterrupt in the main thread, at once or, inside a step the journal must see
    whole, at its end (``interrupts.deferred``).

    Raises:
        KeyboardInterrupt: see above.
    """
    signal.signal(signal.SIGINT, _exit_now)
    signal.signal(signal.SIGTERM, _exit_now)
    interrupts.deliver()


_AGAIN = (b"error: interrupted again: stopped at once, without the cleanup the first interrupt started\n"
          b"hint: a pull resumes from its last checkpoint when run again; what a publish left is removed "
          b"by the next publish of the same prefix ('s3sync ls URL -v' lists it)\n")


def _exit_now(signum: int, frame: object) -> None:
    """Handler of a second SIGINT or SIGTERM: say what was skipped, exit 130 at once."""
    try:
        os.write(2, _AGAIN)  # no print(): the interrupted code may hold the stderr buffer's lock
    except OSError:
        pass
    os._exit(Interrupted.exit_code)


def run() -> NoReturn:
    """Console-script entry point.

    SIGTERM is handled like Ctrl-C. After the first interrupt the pipeline flushes its
    resume state and unwinds; a second Ctrl-C exits at once. The process leaves with
    ``os._exit`` once output is flushed, so that worker threads still blocked in a
    network read after an interrupt do not delay the exit (their work is simply redone
    by the resumed run).
    """
    signal.signal(signal.SIGINT, on_interrupt)
    signal.signal(signal.SIGTERM, on_interrupt)
    # Started with stdout or stderr closed (``s3sync ls >&-``): Python sets them to None;
    # write that output nowhere rather than fail with a traceback.
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - lives until os._exit
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every file s3sync writes is closed by now; skipping the interpreter's teardown
    # (garbage-collecting botocore's models, joining idle pool threads) saves ~50 ms.
    os._exit(code)


if __name__ == "__main__":
    run()
